//! Real `raftlock serve` processes on 127.0.0.1 for tests: a three-node
//! cluster whose children die with it, a blocking HTTP call, bounded waits.
//! Every wait polls with a deadline; every child is killed when the test
//! ends, pass or fail.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WAIT_S_MAX: u64 = 60;
pub const POLL_MS: u64 = 50;
pub const HTTP_TIMEOUT_MS: u64 = 5_000;

pub struct Proc {
    pub id: u64,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    /// The native protocol's address (`--listen-native`).
    pub native: SocketAddr,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

/// The running cluster's admin credential, sent by `call` and `call_raw`
/// (one cluster at a time per binary: `ONE_CLUSTER_AT_A_TIME`).
static ADMIN: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The running cluster's CA, as its HTTPS clients trust it.
static TLS: std::sync::Mutex<Option<std::sync::Arc<rustls::ClientConfig>>> =
    std::sync::Mutex::new(None);

fn tls() -> Option<std::sync::Arc<rustls::ClientConfig>> {
    TLS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// What the library and the CLI need to reach the running cluster: its
/// admin credential and its CA.
pub fn access() -> raftlock::http::client::Access {
    raftlock::http::client::Access {
        credential: Some(admin()),
        tls: tls(),
    }
}

/// The running cluster's admin credential.
pub fn admin() -> String {
    ADMIN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .expect("no cluster running")
}

/// One real-process cluster at a time per test binary: three nodes each
/// (fsync on) running beside another test's three on two cores make
/// elections a matter of scheduling, not of what the test does.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Three nodes; children die with it.
pub struct Cluster {
    _turn: std::sync::MutexGuard<'static, ()>,
    pub procs: Vec<Proc>,
    cluster_flag: String,
    /// Flags every node is started with, after the ones it always gets.
    extra: Vec<String>,
    /// The peers' TLS material, made with `raftlock certs`.
    pub certs: PathBuf,
    root: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                // A stopped child must be continued to die cleanly.
                signal(&c, libc::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A child killed (after a SIGCONT, in case it is stopped) when the test
/// ends, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal(&self.0, libc::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `raftlock` binary under test: this build's, or `RAFTLOCK_TEST_BIN`
/// (to show that a test fails on an older build).
pub fn bin() -> PathBuf {
    std::env::var_os("RAFTLOCK_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_raftlock")))
}

/// Where node `id`'s stderr goes (appended across restarts): a file
/// under `RAFTLOCK_TEST_LOG_DIR` when set, else in the cluster's own dir,
/// shown if the cluster does not start.
fn log_path(cluster_dir: &std::path::Path, id: u64) -> PathBuf {
    std::env::var_os("RAFTLOCK_TEST_LOG_DIR")
        .map_or_else(|| cluster_dir.to_path_buf(), PathBuf::from)
        .join(format!("node-{id}.log"))
}

fn log_file(path: &std::path::Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The last lines of a node's log, for a failure message.
const LOG_TAIL_LINES: usize = 20;

/// A CA and node certificates in `dir`, made as an operator would: with
/// `raftlock certs`.
pub fn make_certs(dir: &std::path::Path, ids: &[u64]) {
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("certs")
            .args(args)
            .arg("--certs-dir")
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "raftlock certs {args:?}: {out:?}");
    };
    run(&["create-ca"]);
    for id in ids {
        run(&["create-node", "--id", &id.to_string()]);
    }
}

/// The CA and node certificates of nodes 1 to 3, made once per test
/// binary (in cargo's scratch dir for integration tests) and copied into
/// each cluster's own dir, which tests may add certificates to.
fn shared_certs() -> &'static std::path::Path {
    static CERTS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("certs-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        make_certs(&dir, &[1, 2, 3]);
        dir
    })
}

/// Copies the certificate files of `from` into a new dir `to` (modes
/// kept: keys stay 0600).
fn copy_certs(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

pub fn free_addr() -> SocketAddr {
    let [addr] = free_addrs();
    addr
}

/// `N` distinct free ports: each listener is held until all are picked.
/// Picked one at a time and dropped at once, the OS may hand the same port
/// out twice (a CI run gave node 2 node 1's HTTP port as its native one,
/// and node 2 never started).
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap())
}

pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Three nodes, each also started with `extra` flags.
    pub fn start_with(extra: &[&str]) -> Cluster {
        // The turn first, then the ports: picked earlier, a port could be
        // taken (by another cluster's connections, for one) while this test
        // waited its turn, and a node that cannot bind never starts.
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let root = tempfile::tempdir().unwrap();
        let ports: [SocketAddr; 9] = free_addrs();
        let procs: Vec<Proc> = (1..=3)
            .zip(ports.chunks(3))
            .map(|(id, p)| Proc {
                id,
                peer: p[0],
                http: p[1],
                native: p[2],
                dir: root.path().join(format!("n{id}")),
                child: None,
            })
            .collect();
        let cluster_flag = procs
            .iter()
            .map(|p| format!("{}={}", p.id, p.peer))
            .collect::<Vec<_>>()
            .join(",");
        let certs = root.path().join("certs");
        copy_certs(shared_certs(), &certs);
        let ca =
            raftlock::tls::api_client_config(&raftlock::tls::ca_cert_path(&certs), None).unwrap();
        *TLS.lock().unwrap_or_else(|e| e.into_inner()) = Some(ca);
        let mut c = Cluster {
            _turn: turn,
            procs,
            cluster_flag,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            certs,
            root,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c.await_admin();
        c
    }

    /// Waits for node 1 to write the admin credential and for every node
    /// to know it (the bootstrap entry applied everywhere).
    fn await_admin(&self) {
        let file = self.procs[0].dir.join("admin.token");
        let bearer = wait_for("node 1 to write admin.token", || {
            std::fs::read_to_string(&file)
                .ok()
                .filter(|s| s.ends_with('\n'))
        });
        let bearer = bearer.trim().to_string();
        *ADMIN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bearer.clone());
        for p in &self.procs {
            let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
            while call_as(p.http, Some(&bearer), "GET", "/API/v1/cluster", "")
                .is_none_or(|(status, _)| status != 200)
            {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for node {} to know the admin credential\n{}",
                    p.id,
                    self.diagnosis()
                );
                std::thread::sleep(Duration::from_millis(POLL_MS));
            }
        }
    }

    /// Each node's addresses, whether its process still runs, and the end
    /// of its log: what a failed start needs explained.
    fn diagnosis(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            // The third field of /proc/PID/stat is the state; Z: exited,
            // not yet reaped.
            let status = match p.child.as_ref().map(|c| c.id()) {
                Some(pid) => match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Ok(stat) if stat.split_whitespace().nth(2) != Some("Z") => {
                        format!("pid {pid} running")
                    }
                    _ => format!("pid {pid} exited"),
                },
                None => "not started".into(),
            };
            let log = std::fs::read_to_string(log_path(self.root.path(), p.id)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n  ");
            out.push_str(&format!(
                "node {} (peer {}, http {}, native {}): {status}; log:\n  {tail}\n",
                p.id, p.peer, p.http, p.native
            ));
        }
        out
    }

    pub fn spawn(&mut self, i: usize) {
        let p = &self.procs[i];
        let child = Command::new(bin())
            .args(["serve", "--id", &p.id.to_string()])
            .arg("--data-dir")
            .arg(&p.dir)
            .args(["--listen-peer", &p.peer.to_string()])
            .args(["--listen-http", &p.http.to_string()])
            .args(["--listen-native", &p.native.to_string()])
            .args(["--initial-cluster", &self.cluster_flag])
            .args(["--lock-delay-ms", "200"])
            .arg("--certs-dir")
            .arg(&self.certs)
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("RAFTLOCK_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log_file(&log_path(self.root.path(), p.id)))
            .spawn()
            .unwrap();
        self.procs[i].child = Some(child);
    }

    /// kill -9 of node `i` (its data dir stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].child.take() {
            signal(&child, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every node's HTTP address, as `--endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.procs
            .iter()
            .map(|p| p.http.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn index_of(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    /// The leader as a majority of live nodes report it.
    pub fn leader(&self, among: &[usize]) -> Option<u64> {
        let mut seen = Vec::new();
        for &i in among {
            let (status, s) = call(self.procs[i].http, "GET", "/API/v1/cluster", "")?;
            if status == 200 {
                seen.push((s["leader"].as_u64(), s["term"].as_u64()));
            }
        }
        let first = seen.first()?.0?;
        seen.iter()
            .all(|(l, _)| *l == Some(first))
            .then_some(first)
            .filter(|_| seen.len() == among.len())
    }
}

/// One HTTP/1.1 exchange with a JSON body, with the admin credential;
/// None if the node does not answer in time.
pub fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    call_as(addr, Some(&admin()), method, path, body)
}

/// `call` with `credential` (None: without one).
pub fn call_as(
    addr: SocketAddr,
    credential: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> Option<(u16, Value)> {
    let (status, body) = call_raw_as(addr, credential, method, path, body.as_bytes())?;
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// One HTTP/1.1 exchange with raw bytes either way (the native protocol),
/// with the admin credential.
pub fn call_raw(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    call_raw_as(addr, Some(&admin()), method, path, body)
}

pub fn call_raw_as(
    addr: SocketAddr,
    credential: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    call_raw_over(addr, tls(), credential, method, path, body)
}

/// One exchange over TLS trusting `tls`'s CA, or plain (None).
pub fn call_raw_over(
    addr: SocketAddr,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    credential: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let timeout = Duration::from_millis(HTTP_TIMEOUT_MS);
    let tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let mut s: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(config, name).ok()?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let auth = credential.map_or(String::new(), |c| format!("Authorization: Bearer {c}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    // A TLS server may close without close_notify: keep what came.
    if let Err(e) = s.read_to_end(&mut raw) {
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return None;
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[split + 4..].to_vec()))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// Acquires `lock` through `node` with a long TTL; (session, token).
pub fn acquire(c: &Cluster, node: usize, lock: &str) -> (u64, u64) {
    wait_for(&format!("{lock} to be granted"), || {
        let (status, got) = call(
            c.procs[node].http,
            "POST",
            &format!("/API/v1/locks/{lock}"),
            r#"{"ttl_ms": 60000}"#,
        )?;
        (status == 200).then(|| {
            (
                got["session"].as_u64().unwrap(),
                got["token"].as_u64().unwrap(),
            )
        })
    })
}

pub fn holders(c: &Cluster, node: usize, lock: &str) -> Option<Vec<(u64, u64)>> {
    let (status, info) = call(
        c.procs[node].http,
        "GET",
        &format!("/API/v1/locks/{lock}"),
        "",
    )?;
    if status != 200 {
        return None;
    }
    Some(
        info["holders"]
            .as_array()?
            .iter()
            .map(|h| {
                (
                    h["session"].as_u64().unwrap_or(0),
                    h["token"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
    )
}
