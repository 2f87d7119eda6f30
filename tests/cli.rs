//! The `raftlock` binary as a user runs it: bad flags and a damaged data
//! directory give a clear error and exit code 2, and touch nothing.
#![cfg(not(madsim))]

use std::process::Command;

fn raftlock(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftlock"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run raftlock");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

/// `raftlock serve --id 1 --data-dir x` followed by `rest`.
fn serve(rest: &[&str]) -> (i32, String) {
    let mut args = vec!["serve", "--insecure", "--id", "1", "--data-dir", "x"];
    args.extend_from_slice(rest);
    raftlock(&args)
}

#[test]
fn a_node_missing_from_its_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d").display().to_string();
    let (code, text) = raftlock(&[
        "serve",
        "--insecure",
        "--id",
        "4",
        "--data-dir",
        &data,
        "--listen-peer",
        "127.0.0.1:0",
        "--initial-cluster",
        "1=127.0.0.1:7401,2=127.0.0.1:7402",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--id 4 is not in --initial-cluster"),
        "{text}"
    );
}

#[test]
fn malformed_flags_name_what_is_wrong() {
    let (code, text) = serve(&[
        "--listen-peer",
        "nope",
        "--initial-cluster",
        "1=127.0.0.1:1",
    ]);
    assert_eq!(code, 2);
    assert!(text.contains("--listen-peer"), "{text}");
    let (code, text) = serve(&[
        "--listen-peer",
        "127.0.0.1:1",
        "--initial-cluster",
        "1=127.0.0.1:1,1=127.0.0.1:2",
    ]);
    assert_eq!(code, 2);
    assert!(text.contains("node 1 is listed twice"), "{text}");
    let (code, text) = serve(&["--listen-peer", "127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("--initial-cluster") || text.contains("--join"),
        "{text}"
    );
}

/// `serve` as node `id` of a one-node cluster on a free port, on `data`.
fn serve_alone(id: u64, data: &std::path::Path) -> (i32, String) {
    serve_alone_with(id, data, &["--insecure"])
}

/// The same with `flags` (TLS or `--insecure`).
fn serve_alone_with(id: u64, data: &std::path::Path, flags: &[&str]) -> (i32, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let id = id.to_string();
    let data = data.display().to_string();
    let cluster = format!("{id}={addr}");
    let mut args = vec![
        "serve",
        "--id",
        &id,
        "--data-dir",
        &data,
        "--listen-peer",
        &addr,
        "--initial-cluster",
        &cluster,
    ];
    args.extend_from_slice(flags);
    raftlock(&args)
}

#[test]
fn a_corrupt_journal_stops_start_up_naming_file_and_offset_and_is_left_as_it_was() {
    use raftlock::raft::{Entry, Payload, PersistOp};
    use raftlock::storage::raft_store::JOURNAL_FILE;
    use raftlock::storage::{FsDir, RaftStore};
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _, _) = RaftStore::open(FsDir::open(dir.path()).unwrap()).unwrap();
        for i in 1..=3u64 {
            let entry = Entry {
                term: 1,
                index: i,
                payload: Payload::Command(vec![i as u8; 8]),
            };
            store.write(&PersistOp::Append(vec![entry])).unwrap();
        }
        store.sync().unwrap();
    }
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff; // inside the first record; two valid ones follow
    std::fs::write(&path, &bytes).unwrap();

    let (code, text) = serve_alone(1, dir.path());
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("raft.journal is corrupt at byte offset 0"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "nothing was truncated or rewritten"
    );
}

#[test]
fn a_data_dir_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("raftlock.node"), "node_id=1\n").unwrap();
    let (code, text) = serve_alone(2, dir.path());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("belongs to node 1, not node 2"), "{text}");
}

#[test]
fn a_data_dir_of_another_cluster_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("raftlock.node");
    std::fs::write(&identity, "node_id=2\ncluster=staging\n").unwrap();
    let (code, text) = serve_alone(2, dir.path());
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("belongs to cluster \"staging\", not \"raftlock\""),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&identity).unwrap(),
        "node_id=2\ncluster=staging\n"
    );
}

#[test]
fn a_bad_cluster_name_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let (code, text) = raftlock(&[
        "serve",
        "--insecure",
        "--id",
        "1",
        "--data-dir",
        &data,
        "--listen-peer",
        "127.0.0.1:1",
        "--initial-cluster",
        "1=127.0.0.1:1",
        "--cluster-name",
        "no spaces",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cluster name \"no spaces\""), "{text}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

/// `serve` with `--certs-dir DIR` on a free port, node `id` of a one-node
/// cluster.
fn serve_with_certs(certs: &std::path::Path, id: u64) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs.display().to_string();
    serve_alone_with(id, &dir.path().join("d"), &["--certs-dir", &certs])
}

#[test]
fn serve_is_secure_by_default_and_says_what_its_tls_lacks() {
    // Neither TLS material nor --insecure: refused, naming the flag.
    let (code, text) = raftlock(&[
        "serve",
        "--id",
        "1",
        "--data-dir",
        "x",
        "--listen-peer",
        "127.0.0.1:1",
        "--initial-cluster",
        "1=127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--certs-dir"), "{text}");
    let certs = tempfile::tempdir().unwrap();
    // An empty directory: the file it lacks is named.
    let (code, text) = serve_with_certs(certs.path(), 1);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("ca.pem"), "{text}");
    // A CA and node 2's certificate, started as node 1.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_raftlock"))
            .arg("certs")
            .args(args)
            .arg("--certs-dir")
            .arg(certs.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    run(&["create-ca"]);
    run(&["create-node", "--id", "2"]);
    let (code, text) = serve_with_certs(certs.path(), 1);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("node-1.pem"), "{text}");
    // Node 2's certificate copied in as node 1's: refused at start-up, not
    // by every peer later.
    for ext in ["pem", "key"] {
        std::fs::copy(
            certs.path().join(format!("node-2.{ext}")),
            certs.path().join(format!("node-1.{ext}")),
        )
        .unwrap();
    }
    let (code, text) = serve_with_certs(certs.path(), 1);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not usable for node 1"), "{text}");
    // The files it writes are its owner's only, and it never overwrites.
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.key", "ca.pem", "node-2.key", "node-2.pem"] {
        let mode = std::fs::metadata(certs.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_raftlock"))
        .args(["certs", "create-ca", "--certs-dir"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{out:?}"
    );
}

#[test]
fn a_malformed_native_address_is_refused_naming_the_flag() {
    let (code, text) = serve(&[
        "--listen-peer",
        "127.0.0.1:1",
        "--initial-cluster",
        "1=127.0.0.1:1",
        "--listen-native",
        "nowhere",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--listen-native"), "{text}");
    assert!(text.contains("host:port or off"), "{text}");
}
