#![cfg(not(madsim))]
//! Hostile clients against real `raftlock serve` processes (issue 13):
//! no credential, a malformed or wrong one, a wrong prefix, another
//! owner's session with its ids known, forged native commands, admin
//! calls by a non-admin, and a credential revoked while in use. Each is
//! refused with the documented status and leaves every lock, session and
//! member as it was.

mod procs;

use procs::*;
use raftlock::lock::{encode, Command, Op, Query, Request};
use serde_json::Value;

/// Creates a credential through node `node` as the admin; its bearer.
fn create(c: &Cluster, node: usize, body: &str) -> (String, String) {
    let (status, v) = call(c.procs[node].http, "POST", "/API/v1/credentials", body).unwrap();
    assert_eq!(status, 200, "{v}");
    (
        v["credential"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// A credential allowed to take and look at locks under `prefix`.
fn locker(c: &Cluster, name: &str, prefix: &str) -> String {
    let body = format!(
        r#"{{"name": "{name}", "rules": [{{"prefix": "{prefix}", "allow": ["acquire", "status", "append", "read"]}}]}}"#
    );
    create(c, 0, &body).0
}

fn status_of(
    addr: std::net::SocketAddr,
    who: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    call_as(addr, who, method, path, body).expect("the node answers")
}

/// A refusal: the status, and the JSON error body clients parse.
fn refused(got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
}

#[test]
fn callers_without_a_valid_credential_get_401_and_health_stays_open() {
    let c = Cluster::start();
    let node = c.procs[1].http;
    let wrong_secret = {
        let admin = admin();
        let (head, last) = admin.split_at(admin.len() - 1);
        format!("{head}{}", if last == "0" { "1" } else { "0" })
    };
    for who in [None, Some("not-a-credential"), Some(wrong_secret.as_str())] {
        for (method, path, body) in [
            ("POST", "/API/v1/locks/orders", ""),
            ("GET", "/API/v1/locks/orders", ""),
            ("POST", "/API/v1/sessions", ""),
            ("GET", "/API/v1/sessions", ""),
            ("GET", "/API/v1/cluster", ""),
            ("GET", "/API/v1/credentials", ""),
            ("POST", "/API/v1/cluster/leader", r#"{"to": 2}"#),
            ("DELETE", "/API/v1/cluster/members/3", ""),
        ] {
            let got = status_of(node, who, method, path, body);
            assert_eq!(got.0, 401, "{who:?} {method} {path}: {}", got.1);
            assert_eq!(got.1["code"], "unauthorized");
        }
        let raw = call_raw_as(node, who, "POST", "/API/v1/native/propose", &[0]).unwrap();
        assert_eq!(raw.0, 401, "{who:?} native");
    }
    assert_eq!(status_of(node, None, "GET", "/health", "").0, 200);
    assert_eq!(status_of(node, None, "GET", "/metrics", "").0, 200);
    // Nothing was taken, no member removed.
    let (_, lock) = call(node, "GET", "/API/v1/locks/orders", "").unwrap();
    assert_eq!(lock["holders"], serde_json::json!([]));
    let (_, cluster) = call(node, "GET", "/API/v1/cluster", "").unwrap();
    assert_eq!(cluster["members"].as_array().unwrap().len(), 3);
}

#[test]
fn another_credentials_session_cannot_be_used_whatever_ids_it_knows() {
    let c = Cluster::start();
    let alice = locker(&c, "alice", "orders/");
    let bob = locker(&c, "bob", "orders/");
    let (n1, n2) = (c.procs[0].http, c.procs[1].http);
    let (status, got) = status_of(
        n1,
        Some(&alice),
        "POST",
        "/API/v1/locks/orders/1",
        r#"{"ttl_ms": 60000}"#,
    );
    assert_eq!(status, 200, "{got}");
    let (session, token) = (
        got["session"].as_u64().unwrap(),
        got["token"].as_u64().unwrap(),
    );
    // Bob knows alice's session and token (lock status shows both).
    let (status, info) = status_of(n2, Some(&bob), "GET", "/API/v1/locks/orders/1", "");
    assert_eq!(status, 200);
    assert_eq!(info["holders"][0]["session"], session);
    for (method, path, body) in [
        (
            "DELETE",
            format!("/API/v1/locks/orders/1?token={token}&session={session}"),
            String::new(),
        ),
        (
            "POST",
            format!("/API/v1/sessions/{session}/keepalive"),
            String::new(),
        ),
        (
            "DELETE",
            format!("/API/v1/sessions/{session}"),
            String::new(),
        ),
        ("GET", format!("/API/v1/sessions/{session}"), String::new()),
        (
            "POST",
            "/API/v1/locks/orders/2".into(),
            format!(r#"{{"session": {session}}}"#),
        ),
        (
            "POST",
            "/API/v1/files/orders/1/append".into(),
            format!(r#"{{"session": {session}, "token": {token}, "data": "forged"}}"#),
        ),
    ] {
        for node in [n1, n2] {
            refused(
                status_of(node, Some(&bob), method, &path, &body),
                403,
                "forbidden",
            );
        }
    }
    // Through the native endpoint too, sequenced or not.
    let steal = Command::Unsequenced {
        session,
        op: Op::Close,
    };
    let (status, raw) = call_raw_as(
        n2,
        Some(&bob),
        "POST",
        "/API/v1/native/propose",
        &encode(&steal),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&raw).contains("another credential"),
        "{raw:?}"
    );
    let seq = Command::Request(Request {
        session,
        seq: 1,
        acked: 0,
        op: Op::KeepAlive,
    });
    let (_, raw) = call_raw_as(
        n2,
        Some(&bob),
        "POST",
        "/API/v1/native/propose",
        &encode(&seq),
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&raw).contains("another credential"),
        "{raw:?}"
    );
    // Bob's list of sessions is his own: empty.
    let (status, list) = status_of(n2, Some(&bob), "GET", "/API/v1/sessions", "");
    assert_eq!(status, 200);
    assert_eq!(list["sessions"], serde_json::json!([]));
    // Alice still holds it, with the same token, and her file is empty.
    let (_, info) = call(n1, "GET", "/API/v1/locks/orders/1", "").unwrap();
    assert_eq!(info["holders"].as_array().unwrap().len(), 1);
    assert_eq!(info["holders"][0]["token"], token);
    assert_eq!(
        call(n1, "GET", "/API/v1/files/orders/1", "").unwrap().0,
        404
    );
    // And she can release it.
    let path = format!("/API/v1/locks/orders/1?token={token}&session={session}");
    assert_eq!(status_of(n2, Some(&alice), "DELETE", &path, "").0, 200);
}

#[test]
fn a_policy_allows_its_prefixes_and_actions_only_and_admin_calls_need_admin() {
    let c = Cluster::start();
    let reader = create(
        &c,
        0,
        r#"{"name": "reader", "rules": [{"prefix": "orders/", "allow": ["status"]}]}"#,
    )
    .0;
    let alice = locker(&c, "alice", "orders/");
    let n3 = c.procs[2].http;
    refused(
        status_of(n3, Some(&alice), "POST", "/API/v1/locks/payroll", ""),
        403,
        "forbidden",
    );
    refused(
        status_of(n3, Some(&alice), "GET", "/API/v1/locks/payroll", ""),
        403,
        "forbidden",
    );
    refused(
        status_of(n3, Some(&reader), "POST", "/API/v1/locks/orders/1", ""),
        403,
        "forbidden",
    );
    refused(
        status_of(n3, Some(&reader), "POST", "/API/v1/sessions", ""),
        403,
        "forbidden",
    );
    assert_eq!(
        status_of(n3, Some(&reader), "GET", "/API/v1/locks/orders/1", "").0,
        200
    );
    for (method, path, body) in [
        ("POST", "/API/v1/cluster/leader", r#"{"to": 2}"#),
        ("DELETE", "/API/v1/cluster/members/3", ""),
        (
            "POST",
            "/API/v1/cluster/members",
            r#"{"id": 9, "peer_addr": "127.0.0.1:1"}"#,
        ),
        ("GET", "/API/v1/credentials", ""),
        (
            "POST",
            "/API/v1/credentials",
            r#"{"name": "me", "admin": true}"#,
        ),
    ] {
        refused(
            status_of(n3, Some(&alice), method, path, body),
            403,
            "forbidden",
        );
    }
    // Forged native commands: only a client's own session commands pass.
    let forged = [
        encode(&Command::As {
            credential: 1,
            command: encode(&Command::Open {
                nonce: 1,
                ttl_ms: 10_000,
            }),
        }),
        encode(&Command::Bootstrap {
            id: 5,
            hash: [0; 32],
        }),
        encode(&Command::RevokeCredential { id: 1 }),
    ];
    for bytes in forged {
        let (status, _) =
            call_raw_as(n3, Some(&alice), "POST", "/API/v1/native/propose", &bytes).unwrap();
        assert_eq!(status, 403);
    }
    // As in As in As...: refused, and the node is still there.
    let deep: Vec<u8> = [5u8, 0].repeat(100_000);
    let (status, _) =
        call_raw_as(n3, Some(&alice), "POST", "/API/v1/native/propose", &deep).unwrap();
    assert!(status == 400 || status == 403, "{status}");
    let (status, _) = call_raw_as(n3, Some(&alice), "POST", "/API/v1/native/read", &deep).unwrap();
    assert!(status == 400 || status == 403, "{status}");
    let as_admin = encode(&Query::As {
        credential: 1,
        query: encode(&Query::Credentials),
    });
    assert_eq!(
        call_raw_as(n3, Some(&alice), "POST", "/API/v1/native/read", &as_admin)
            .unwrap()
            .0,
        403
    );
    // Nothing changed: no lock, no new credential, all members.
    let (_, lock) = call(n3, "GET", "/API/v1/locks/payroll", "").unwrap();
    assert_eq!(lock["holders"], serde_json::json!([]));
    let (_, list) = call(n3, "GET", "/API/v1/credentials", "").unwrap();
    assert_eq!(list["credentials"].as_array().unwrap().len(), 3, "{list}");
    let (_, cluster) = call(n3, "GET", "/API/v1/cluster", "").unwrap();
    assert_eq!(cluster["members"].as_array().unwrap().len(), 3);
}

#[test]
fn a_credential_revoked_while_in_use_stops_working_on_every_node_at_once() {
    let c = Cluster::start();
    let (alice, id) = {
        let body =
            r#"{"name": "alice", "rules": [{"prefix": "", "allow": ["acquire", "status"]}]}"#;
        create(&c, 0, body)
    };
    let mut last = None;
    for p in &c.procs {
        let (status, got) = status_of(
            p.http,
            Some(&alice),
            "POST",
            "/API/v1/locks/job",
            r#"{"ttl_ms": 60000}"#,
        );
        if status == 200 {
            last = Some(got);
        }
    }
    let got = last.expect("alice took the lock");
    let session = got["session"].as_u64().unwrap();
    // Revoked through one node; at once refused through every node, for
    // writes and reads (the lock machine checks at apply, and reads are
    // answered after the revocation's entry).
    let path = format!("/API/v1/credentials/{id}");
    let (status, v) = call(c.procs[0].http, "DELETE", &path, "").unwrap();
    assert_eq!(status, 200, "{v}");
    for p in &c.procs {
        let keepalive = format!("/API/v1/sessions/{session}/keepalive");
        refused(
            status_of(p.http, Some(&alice), "POST", &keepalive, ""),
            401,
            "unauthorized",
        );
        refused(
            status_of(p.http, Some(&alice), "GET", "/API/v1/locks/job", ""),
            401,
            "unauthorized",
        );
        refused(
            status_of(p.http, Some(&alice), "POST", "/API/v1/locks/other", ""),
            401,
            "unauthorized",
        );
    }
    // A second revocation finds nothing.
    refused(
        call(c.procs[1].http, "DELETE", &path, "").unwrap(),
        404,
        "not_found",
    );
}

#[test]
fn the_first_admin_credential_is_its_operators_alone_and_the_cli_manages_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start();
    let file = c.procs[0].dir.join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin.token is {mode:o}");
    // Only the bootstrapping node wrote one.
    assert!(!c.procs[1].dir.join("admin.token").exists());
    let cli = |credential: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(args).args(["--endpoints", &c.endpoints()]);
        cmd.env_remove("RAFTLOCK_CREDENTIAL");
        cmd.env("RAFTLOCK_CA", raftlock::tls::ca_cert_path(&c.certs));
        if let Some(cred) = credential {
            cmd.env("RAFTLOCK_CREDENTIAL", cred);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let admin = admin();
    let (code, out, err) = cli(
        Some(&admin),
        &["token", "create", "ci", "--allow", "ci/=acquire+status"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let ci = created["credential"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let (code, out, _) = cli(Some(&admin), &["token", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && !out.contains(&ci[21..]),
        "list shows ids, never secrets: {out}"
    );
    // The new credential takes a lock under its prefix, not elsewhere.
    let (code, out, err) = cli(Some(&ci), &["acquire", "ci/build", "--ttl-ms", "5000"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(Some(&ci), &["acquire", "prod/deploy"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("403"), "{err}");
    // Without a credential the CLI is told why.
    let (code, _, err) = cli(None, &["status", "ci/build"]);
    assert_eq!(code, 1);
    assert!(err.contains("401") && err.contains("credential"), "{err}");
    // Revoked: it stops working.
    let (code, _, err) = cli(Some(&admin), &["token", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(Some(&ci), &["status", "ci/build"]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn the_api_speaks_tls_only_and_only_with_the_clusters_ca() {
    let c = Cluster::start();
    let node = c.procs[0].http;
    let admin = admin();
    // Plain HTTP to the TLS port: no HTTP answer at all.
    let plain = call_raw_over(node, None, Some(&admin), "GET", "/API/v1/cluster", b"");
    assert_eq!(plain, None);
    // A client trusting another CA refuses the node's certificate.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), &[1]);
    let wrong =
        raftlock::tls::api_client_config(&raftlock::tls::ca_cert_path(other.path()), None).unwrap();
    let answer = call_raw_over(
        node,
        Some(wrong),
        Some(&admin),
        "GET",
        "/API/v1/cluster",
        b"",
    );
    assert_eq!(answer, None);
    // The cluster's CA: answered.
    assert_eq!(call(node, "GET", "/API/v1/cluster", "").unwrap().0, 200);
    // The CLI without the CA says what is missing.
    let out = std::process::Command::new(bin())
        .args(["status", "x", "--endpoints", &node.to_string()])
        .env("RAFTLOCK_CREDENTIAL", &admin)
        .env_remove("RAFTLOCK_CA")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("speaks TLS") && err.contains("RAFTLOCK_CA"),
        "{err}"
    );
}

#[test]
fn a_credential_over_its_call_rate_gets_429_and_the_others_do_not_notice() {
    let c = Cluster::start_with(&["--credential-calls-per-s", "5"]);
    let alice = locker(&c, "alice", "");
    let bob = locker(&c, "bob", "");
    let (n1, n2) = (c.procs[0].http, c.procs[1].http);
    let statuses: Vec<u16> = (0..30)
        .map(|_| status_of(n1, Some(&alice), "GET", "/API/v1/locks/x", "").0)
        .collect();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!(limited >= 10, "a burst of 10 then 5/s: {statuses:?}");
    refused(
        status_of(n1, Some(&alice), "GET", "/API/v1/locks/x", ""),
        429,
        "limit_reached",
    );
    // Bob, the admin, and alice through another node are not held back.
    assert_eq!(
        status_of(n1, Some(&bob), "GET", "/API/v1/locks/x", "").0,
        200
    );
    assert_eq!(call(n1, "GET", "/API/v1/locks/x", "").unwrap().0, 200);
    assert_eq!(
        status_of(n2, Some(&alice), "GET", "/API/v1/locks/x", "").0,
        200
    );
}

#[test]
fn a_client_certificate_speaks_for_its_credential_until_it_is_revoked() {
    use raftlock::tls::{api_client_config, ca_cert_path};
    let c = Cluster::start();
    let body =
        r#"{"name": "cert-app", "rules": [{"prefix": "app/", "allow": ["acquire", "status"]}]}"#;
    let (_, id) = create(&c, 0, body);
    let out = std::process::Command::new(bin())
        .args(["certs", "create-client", "--credential", &id, "--certs-dir"])
        .arg(&c.certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (cert, key) = (
        c.certs.join(format!("client-{id}.pem")),
        c.certs.join(format!("client-{id}.key")),
    );
    let ca = ca_cert_path(&c.certs);
    let with_cert = api_client_config(&ca, Some((&cert, &key))).unwrap();
    let as_cert = |node: usize, method: &str, path: &str| {
        let addr = c.procs[node].http;
        let (status, body) =
            call_raw_over(addr, Some(with_cert.clone()), None, method, path, b"").unwrap();
        (
            status,
            serde_json::from_slice::<Value>(&body).unwrap_or_default(),
        )
    };
    // No bearer: the certificate is the credential, its policy applies.
    assert_eq!(as_cert(1, "POST", "/API/v1/locks/app/1").0, 200);
    refused(as_cert(2, "POST", "/API/v1/locks/other"), 403, "forbidden");
    refused(as_cert(2, "GET", "/API/v1/credentials"), 403, "forbidden");
    // A node's certificate names no credential: no caller.
    let node_cert = api_client_config(
        &ca,
        Some((&c.certs.join("node-1.pem"), &c.certs.join("node-1.key"))),
    )
    .unwrap();
    let addr = c.procs[0].http;
    let (status, _) = call_raw_over(
        addr,
        Some(node_cert),
        None,
        "GET",
        "/API/v1/locks/app/1",
        b"",
    )
    .unwrap();
    assert_eq!(status, 401);
    // A client certificate from another CA: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path(), &[1]);
    let out = std::process::Command::new(bin())
        .args(["certs", "create-client", "--credential", &id, "--certs-dir"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let foreign = api_client_config(
        &ca,
        Some((
            &other.path().join(format!("client-{id}.pem")),
            &other.path().join(format!("client-{id}.key")),
        )),
    )
    .unwrap();
    assert_eq!(
        call_raw_over(addr, Some(foreign), None, "GET", "/API/v1/locks/app/1", b""),
        None
    );
    // The CLI presents it too.
    let out = std::process::Command::new(bin())
        .args([
            "status",
            "app/1",
            "--endpoints",
            &c.endpoints(),
            "--ca-file",
        ])
        .arg(&ca)
        .arg("--client-cert")
        .arg(&cert)
        .arg("--client-key")
        .arg(&key)
        .env_remove("RAFTLOCK_CREDENTIAL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Revoked: the certificate stops working on every node.
    let (status, v) = call(
        c.procs[0].http,
        "DELETE",
        &format!("/API/v1/credentials/{id}"),
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{v}");
    for node in 0..3 {
        refused(
            as_cert(node, "GET", "/API/v1/locks/app/1"),
            401,
            "unauthorized",
        );
    }
}
