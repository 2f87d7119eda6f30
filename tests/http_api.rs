#![cfg(not(madsim))]
//! The HTTP API of a real 3-node cluster in one process on 127.0.0.1 (real
//! TCP, real fsync), spoken to over plain HTTP/1.1. Waits poll with a
//! deadline; nothing sleeps to synchronise.

use raftlock::http::{self, HttpConfig};
use raftlock::lock::{LockConfig, LockMachine};
use raftlock::raft;
use raftlock::runtime::{Node, NodeConfig};
use serde_json::{json, Value};
mod common;

use common::{wait_for, WAIT_S_MAX};
use raftlock::http::client::HttpClient;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

struct Cluster {
    http: Vec<SocketAddr>,
    nodes: Vec<Arc<Node<LockMachine>>>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn cluster(lock_delay_ms: u64) -> Cluster {
    let mut peers = BTreeMap::new();
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap());
        listeners.push((id, l));
    }
    let mut c = Cluster {
        http: Vec::new(),
        nodes: Vec::new(),
        _dirs: Vec::new(),
    };
    for (id, listener) in listeners {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig {
            id,
            data_dir: dir.path().to_path_buf(),
            peers: peers.clone(),
            join: None,
            // Elections slow enough that nine three-node clusters sharing
            // two loaded CI cores keep their leaders: these tests assert
            // exact outcomes, and a leader change mid-request is a 503.
            raft: raft::Config {
                election_timeout_min: Duration::from_millis(600),
                election_timeout_max: Duration::from_millis(1200),
                heartbeat_interval: Duration::from_millis(50),
                ..raft::Config::default()
            },
            cluster: raftlock::runtime::Cluster::new("http-test").unwrap(),
            tls: None,
        };
        let machine = LockMachine::new(LockConfig {
            lock_delay: Duration::from_millis(lock_delay_ms),
            ..LockConfig::default()
        });
        let node = Arc::new(Node::start_with(cfg, listener, machine).unwrap());
        let h = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        c.http.push(h.local_addr().unwrap());
        let server = http::serve(
            node.clone(),
            h,
            HttpConfig {
                workers: 1,
                // The API's semantics, without credentials; the checks of
                // credentials run against real processes (tests/auth.rs).
                auth_required: false,
                ..HttpConfig::default()
            },
        )
        .unwrap();
        actix_rt::spawn(server);
        c.nodes.push(node);
        c._dirs.push(dir);
    }
    // Ready once some node reports a leader through /health.
    wait_for("a leader", || async {
        let (status, _) = call(c.http[0], "GET", "/health", "").await;
        (status == 200).then_some(())
    })
    .await;
    c
}

/// One HTTP exchange through the project's own client; the body parsed
/// as JSON (Null if empty or not JSON).
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, raw) = text(addr, method, path, body).await;
    (status, serde_json::from_str(&raw).unwrap_or(Value::Null))
}

async fn text(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, raw) = HttpClient::new(addr)
        .call(method, path, body.as_bytes())
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&raw).into_owned())
}

impl Cluster {
    fn stop(self) {
        for n in &self.nodes {
            n.stop_shared();
        }
    }
}

#[actix_rt::test]
async fn locks_through_any_node_queue_fairly_and_tokens_increase() {
    let c = cluster(0).await;
    let [a, b, d] = [c.http[0], c.http[1], c.http[2]];

    let (status, got) = call(a, "POST", "/API/v1/locks/job", r#"{"ttl_ms": 30000}"#).await;
    assert_eq!(status, 200, "{got}");
    let (s1, t1) = (
        got["session"].as_u64().unwrap(),
        got["token"].as_u64().unwrap(),
    );
    assert_eq!(got["mode"], json!("exclusive"));

    // Taken: a try-lock through another node gets 409.
    let (status, err) = call(b, "POST", "/API/v1/locks/job", "").await;
    assert_eq!((status, err["code"].clone()), (409, json!("conflict")));

    // A waiter through a third node is granted when the holder releases.
    let waiter =
        tokio::spawn(
            async move { call(d, "POST", "/API/v1/locks/job", r#"{"wait_ms": 20000}"#).await },
        );
    wait_for("the waiter to queue", || async {
        let (_, info) = call(a, "GET", "/API/v1/locks/job", "").await;
        (info["waiters"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let path = format!("/API/v1/locks/job?token={t1}&session={s1}");
    let (status, _) = call(b, "DELETE", &path, "").await;
    assert_eq!(status, 200);
    let (status, got) = waiter.await.unwrap();
    assert_eq!(status, 200, "{got}");
    let t2 = got["token"].as_u64().unwrap();
    assert!(t2 > t1, "tokens must increase: {t1} then {t2}");

    // The old token no longer releases anything.
    let (status, _) = call(a, "DELETE", &path, "").await;
    assert_eq!(status, 409);
    let (_, info) = call(b, "GET", "/API/v1/locks/job", "").await;
    assert_eq!(info["holders"][0]["token"], json!(t2));
    c.stop();
}

#[actix_rt::test]
async fn shared_locks_and_semaphores_over_http() {
    let c = cluster(0).await;
    let a = c.http[0];
    for _ in 0..2 {
        let (status, got) = call(a, "POST", "/API/v1/locks/rw", r#"{"mode": "shared"}"#).await;
        assert_eq!(status, 200, "{got}");
    }
    let (status, _) = call(a, "POST", "/API/v1/locks/rw", "").await;
    assert_eq!(status, 409, "a writer waits for the readers");
    let sem = r#"{"mode": "semaphore", "limit": 2}"#;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (status, got) = call(a, "POST", "/API/v1/locks/pool", sem).await;
        assert_eq!(status, 200, "{got}");
        tokens.push(got["token"].as_u64().unwrap());
    }
    assert_ne!(tokens[0], tokens[1], "each grant has its own token");
    let (status, _) = call(a, "POST", "/API/v1/locks/pool", sem).await;
    assert_eq!(status, 409);
    c.stop();
}

#[actix_rt::test]
async fn an_expired_session_loses_its_lock_and_its_stale_token_is_refused() {
    let c = cluster(100).await;
    let [a, b, _] = [c.http[0], c.http[1], c.http[2]];
    let (_, got) = call(a, "POST", "/API/v1/locks/f", r#"{"ttl_ms": 1000}"#).await;
    let (s1, t1) = (
        got["session"].as_u64().unwrap(),
        got["token"].as_u64().unwrap(),
    );
    let body = json!({"session": s1, "token": t1, "data": "one;"}).to_string();
    let (status, got) = call(b, "POST", "/API/v1/files/f/append", &body).await;
    assert_eq!(status, 200, "{got}");

    // No keepalives: the session expires, the lock goes to someone else.
    let (s2, t2) = wait_for("another client to get the lock", || async {
        let (status, got) = call(b, "POST", "/API/v1/locks/f", r#"{"ttl_ms": 30000}"#).await;
        (status == 200).then(|| {
            (
                got["session"].as_u64().unwrap(),
                got["token"].as_u64().unwrap(),
            )
        })
    })
    .await;
    assert!(t2 > t1);
    let (status, err) = call(a, "POST", &format!("/API/v1/sessions/{s1}/keepalive"), "").await;
    assert_eq!(
        (status, err["code"].clone()),
        (410, json!("session_expired"))
    );

    // The paused holder wakes up and writes with its stale token: refused.
    let stale = json!({"session": s1, "token": t1, "data": "stale;"}).to_string();
    let (status, _) = call(a, "POST", "/API/v1/files/f/append", &stale).await;
    assert_eq!(status, 410, "its session is gone");
    let fresh = json!({"session": s2, "token": t2, "data": "two;"}).to_string();
    let (status, _) = call(a, "POST", "/API/v1/files/f/append", &fresh).await;
    assert_eq!(status, 200);
    let (_, file) = call(b, "GET", "/API/v1/files/f", "").await;
    assert_eq!(file["data"], json!("one;two;"));
    assert_eq!(file["token"], json!(t2));
    c.stop();
}

#[actix_rt::test]
async fn bad_input_gets_a_clear_json_error_and_changes_nothing() {
    let c = cluster(0).await;
    let a = c.http[0];
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "POST",
            "/API/v1/locks/x".into(),
            "{not json",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/API/v1/locks/x".into(),
            r#"{"bogus": 1}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/API/v1/locks/x".into(),
            r#"{"ttl_ms": 5}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            format!("/API/v1/locks/{}", "n".repeat(300)),
            "",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/API/v1/locks/x".into(),
            r#"{"mode": "shared", "limit": 3}"#,
            400,
            "bad_request",
        ),
        ("DELETE", "/API/v1/locks/x".into(), "", 400, "bad_request"),
        (
            "DELETE",
            "/API/v1/locks/none?token=1&session=1".into(),
            "",
            410,
            "session_expired",
        ),
        (
            "POST",
            "/API/v1/sessions/12345/keepalive".into(),
            "",
            410,
            "session_expired",
        ),
        ("GET", "/API/v1/files/none".into(), "", 404, "not_found"),
        ("GET", "/no/such/route".into(), "", 404, "not_found"),
    ];
    for (method, path, body, want, code) in cases {
        let (status, err) = call(a, method, &path, body).await;
        assert_eq!(status, want, "{method} {path} {body}: {err}");
        assert_eq!(err["code"], json!(code), "{method} {path}: {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let big = format!(r#"{{"ttl_ms": 1000, "pad": "{}"}}"#, "x".repeat(2 << 20));
    let (status, _) = call(a, "POST", "/API/v1/sessions", &big).await;
    assert_eq!(status, 413);
    // Nothing was created by the refused calls.
    let (_, list) = call(a, "GET", "/API/v1/sessions", "").await;
    assert_eq!(list["sessions"], json!([]));
    c.stop();
}

mod client_library {
    use super::*;
    use raftlock::client::{Client, ClientError};
    use raftlock::lock::LockError;
    use raftlock::session::CallError;

    #[actix_rt::test]
    async fn guards_hold_locks_queue_for_them_and_release_on_drop() {
        let c = cluster(0).await;
        let ttl = Duration::from_secs(10);
        let alice = Client::connect(c.http.clone(), ttl).await.unwrap();
        let bob = Client::connect(c.http[1..].to_vec(), ttl).await.unwrap();
        let g = alice.lock("res").acquire().await.unwrap();
        let busy = bob.lock("res").acquire().await;
        assert!(
            matches!(
                busy,
                Err(ClientError::Call(CallError::Lock(LockError::Busy)))
            ),
            "{:?}",
            busy.err()
        );
        let first = g.token();
        let waiting = tokio::spawn(async move {
            let g2 = bob
                .lock("res")
                .wait(Duration::from_secs(20))
                .acquire()
                .await;
            (g2.map(|g| g.token()), bob)
        });
        // Give the waiter time to queue, then let go by dropping the guard.
        wait_for("the waiter to queue", || async {
            let (_, info) = call(c.http[0], "GET", "/API/v1/locks/res", "").await;
            (info["waiters"].as_array()?.len() == 1).then_some(())
        })
        .await;
        drop(g);
        let (second, _bob) = waiting.await.unwrap();
        let second = second.unwrap();
        assert!(second > first, "{first} then {second}");
        // The fenced file takes the holder's token only.
        let offset = alice.append("res", first, b"stale".to_vec()).await;
        assert!(offset.is_err(), "a released token must not append");
        c.stop();
    }

    #[actix_rt::test]
    async fn a_guard_reports_its_lock_lost_when_the_lease_runs_out() {
        let c = cluster(0).await;
        let client = Client::connect(c.http.clone(), Duration::from_millis(1_000))
            .await
            .unwrap();
        let g = client.lock("res").acquire().await.unwrap();
        assert!(!g.is_lost());
        // The cluster goes away: keepalives fail and the lease runs out.
        c.stop();
        tokio::time::timeout(Duration::from_secs(WAIT_S_MAX), g.lost())
            .await
            .expect("lost() resolves once the lease is over");
        assert!(g.is_lost());
    }
}

#[actix_rt::test]
async fn admin_calls_go_to_the_leader_and_move_leadership() {
    let c = cluster(0).await;
    let (_, s) = call(c.http[0], "GET", "/API/v1/cluster", "").await;
    assert_eq!(s["cluster"], json!("http-test"), "{s}");
    assert_eq!(s["cluster_id"].as_str().map(str::len), Some(16), "{s}");
    let leader = s["leader"].as_u64().unwrap();
    let follower = (1..=3u64).find(|&i| i != leader).unwrap();
    let at = |id: u64| c.http[(id - 1) as usize];
    // A follower says who leads instead (421), and changes nothing.
    let body = json!({ "to": follower }).to_string();
    let (status, err) = call(at(follower), "POST", "/API/v1/cluster/leader", &body).await;
    assert_eq!((status, err["code"].clone()), (421, json!("not_leader")));
    // The leader hands over.
    let (status, got) = call(at(leader), "POST", "/API/v1/cluster/leader", &body).await;
    assert_eq!(status, 200, "{got}");
    wait_for("the new leader", || async {
        let (_, s) = call(at(follower), "GET", "/API/v1/cluster", "").await;
        (s["leader"].as_u64() == Some(follower) && s["role"] == json!("Leader")).then_some(())
    })
    .await;
    let (status, err) = call(at(follower), "DELETE", "/API/v1/cluster/members/9", "").await;
    assert_eq!((status, err["code"].clone()), (409, json!("conflict")));
    c.stop();
}

#[actix_rt::test]
async fn metrics_count_operations_and_report_the_lock_tables() {
    let c = cluster(0).await;
    let a = c.http[0];
    let (status, held) = call(a, "POST", "/API/v1/locks/m", "").await;
    assert_eq!(status, 200, "{held}");
    let (status, body) = call(a, "POST", "/API/v1/locks/m", "").await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = call(a, "POST", "/API/v1/locks/m", r#"{"wait_ms": 50}"#).await;
    assert_eq!(status, 409, "{body}");
    let wrong = format!(
        "/API/v1/locks/m?session={}&token={}",
        held["session"],
        held["token"].as_u64().unwrap() + 1
    );
    let (status, _) = call(a, "DELETE", &wrong, "").await;
    assert_eq!(status, 409);
    let (_, raw) = text(a, "GET", "/metrics", "").await;
    let op = |op: &str, result: &str, n: u32| {
        format!("raftlock_operations_total{{op=\"{op}\",result=\"{result}\"}} {n}\n")
    };
    for want in [
        op("open", "opened", 3),
        op("try_acquire", "granted", 1),
        op("try_acquire", "busy", 1),
        op("acquire", "queued", 1),
        op("wait", "timed_out", 1),
        op("cancel", "cancelled", 1),
        op("release", "not_holder", 1),
        // The refused acquires' one-lock sessions were closed again.
        op("close", "closed", 2),
        "raftlock_sessions 1\n".into(),
        "raftlock_locks 1\n".into(),
        "raftlock_pending_requests 0\n".into(),
        "raftlock_peer_send_queue{peer=\"2\"} ".into(),
        "raftlock_peer_send_queue{peer=\"3\"} ".into(),
        "raftlock_inbound_queue ".into(),
        "raftlock_commit_seconds_count".into(),
        "raftlock_fsync_seconds_bucket{le=\"+Inf\"}".into(),
    ] {
        assert!(raw.contains(&want), "missing {want} in:\n{raw}");
    }
    c.stop();
}

#[actix_rt::test]
async fn the_api_describes_itself_offline() {
    let c = cluster(0).await;
    let (status, spec) = call(c.http[0], "GET", "/openapi.json", "").await;
    assert_eq!(status, 200);
    assert_eq!(spec["openapi"], json!("3.1.0"));
    // Every route the spec names is served (not the 404 of unknown routes).
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete = path.replace("{name}", "n").replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let (status, body) = call(c.http[0], &method.to_uppercase(), &concrete, "").await;
            assert!(
                !(status == 404 && body["message"] == json!("no such route; see /docs")),
                "{method} {path} is in openapi.json but not routed"
            );
        }
    }
    let (_, page) = text(c.http[0], "GET", "/docs", "").await;
    assert!(
        page.contains("raftlock HTTP API") && !page.contains("http://cdn"),
        "{page}"
    );
    c.stop();
}

/// Issue 11, item 8: a session-less waiting acquire opened a session and
/// never renewed it while waiting, so a wait longer than the TTL could not
/// succeed. The node keeps the one-lock session alive while it waits, and
/// the answer says how much of the lease is left.
#[actix_rt::test]
async fn a_wait_longer_than_its_ttl_is_kept_alive_and_reports_its_lease() {
    let c = cluster(0).await;
    let [a, b] = [c.http[0], c.http[1]];
    let (status, held) = call(a, "POST", "/API/v1/locks/long", r#"{"ttl_ms": 30000}"#).await;
    assert_eq!(status, 200, "{held}");
    let waiter = tokio::spawn(async move {
        call(
            b,
            "POST",
            "/API/v1/locks/long",
            r#"{"ttl_ms": 1000, "wait_ms": 20000}"#,
        )
        .await
    });
    // Three TTLs of waiting.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let path = format!(
        "/API/v1/locks/long?session={}&token={}",
        held["session"], held["token"]
    );
    assert_eq!(call(a, "DELETE", &path, "").await.0, 200);
    let (status, got) = waiter.await.unwrap();
    assert_eq!(status, 200, "the waiting session expired: {got}");
    assert_eq!(got["ttl_ms"], json!(1000));
    let lease = got["lease_ms"].as_u64().expect("lease_ms");
    assert!(lease > 0 && lease <= 990, "{got}");
    c.stop();
}

/// Issue 11, item 8: a client that disconnected while waiting left its
/// wait queued, and then an unknown holder for TTL plus lock-delay. The
/// wait is cancelled (and the one-lock session closed) when the request
/// ends.
#[actix_rt::test]
async fn a_client_that_goes_away_while_waiting_leaves_nothing_queued() {
    use tokio::io::AsyncWriteExt;
    let c = cluster(0).await;
    let a = c.http[0];
    let (status, held) = call(a, "POST", "/API/v1/locks/gone", r#"{"ttl_ms": 30000}"#).await;
    assert_eq!(status, 200, "{held}");
    let body = r#"{"ttl_ms": 30000, "wait_ms": 60000}"#;
    let mut conn = tokio::net::TcpStream::connect(c.http[1]).await.unwrap();
    let request = format!(
        "POST /API/v1/locks/gone HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    wait_for("the wait to be queued", || async {
        let (_, info) = call(a, "GET", "/API/v1/locks/gone", "").await;
        (info["waiters"].as_array()?.len() == 1).then_some(())
    })
    .await;
    drop(conn);
    wait_for("the abandoned wait to be cancelled", || async {
        let (_, info) = call(a, "GET", "/API/v1/locks/gone", "").await;
        info["waiters"].as_array()?.is_empty().then_some(())
    })
    .await;
    // The holder lets go: nobody invisible takes the lock.
    let path = format!(
        "/API/v1/locks/gone?session={}&token={}",
        held["session"], held["token"]
    );
    assert_eq!(call(a, "DELETE", &path, "").await.0, 200);
    let (status, info) = call(a, "GET", "/API/v1/locks/gone", "").await;
    assert_eq!(status, 200);
    assert_eq!(info["holders"], json!([]), "{info}");
    c.stop();
}
