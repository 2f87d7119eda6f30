#![cfg(not(madsim))]
//! Real `raftlock serve` processes on 127.0.0.1: kill -9 of the leader,
//! SIGSTOP past the election timeout, restart from the data directory.
//! Bounded: every wait polls with a deadline; every child is killed when
//! the test ends, pass or fail.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT_S_MAX: u64 = 60;
const POLL_MS: u64 = 50;
const HTTP_TIMEOUT_MS: u64 = 5_000;

struct Proc {
    id: u64,
    peer: SocketAddr,
    http: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

/// Three nodes; children die with it.
struct Cluster {
    procs: Vec<Proc>,
    cluster_flag: String,
    _root: tempfile::TempDir,
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
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal(&self.0, libc::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

impl Cluster {
    fn start() -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let procs: Vec<Proc> = (1..=3)
            .map(|id| Proc {
                id,
                peer: free_addr(),
                http: free_addr(),
                dir: root.path().join(format!("n{id}")),
                child: None,
            })
            .collect();
        let cluster_flag = procs
            .iter()
            .map(|p| format!("{}={}", p.id, p.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            procs,
            cluster_flag,
            _root: root,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let p = &self.procs[i];
        let child = Command::new(env!("CARGO_BIN_EXE_raftlock"))
            .args(["serve", "--id", &p.id.to_string()])
            .arg("--data-dir")
            .arg(&p.dir)
            .args(["--listen-peer", &p.peer.to_string()])
            .args(["--listen-http", &p.http.to_string()])
            .args(["--initial-cluster", &self.cluster_flag])
            .args(["--lock-delay-ms", "200"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs[i].child = Some(child);
    }

    fn index_of(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    /// The leader as a majority of live nodes report it.
    fn leader(&self, among: &[usize]) -> Option<u64> {
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

/// One HTTP/1.1 exchange; None if the node does not answer in time.
fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let timeout = Duration::from_millis(HTTP_TIMEOUT_MS);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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
fn acquire(c: &Cluster, node: usize, lock: &str) -> (u64, u64) {
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

fn holders(c: &Cluster, node: usize, lock: &str) -> Option<Vec<(u64, u64)>> {
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

#[test]
fn killing_the_leader_loses_no_granted_lock_and_tokens_keep_increasing() {
    let mut c = Cluster::start();
    let all = [0, 1, 2];
    let leader = wait_for("a leader", || c.leader(&all));
    let (s1, t1) = acquire(&c, 0, "held");

    // kill -9 the leader.
    let li = c.index_of(leader);
    if let Some(mut child) = c.procs[li].child.take() {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != li).collect();
    let new_leader = wait_for("a new leader", || {
        c.leader(&survivors).filter(|&l| l != leader)
    });
    assert_ne!(new_leader, leader);

    // The grant survived, and new grants carry larger tokens.
    let held = wait_for("the lock's holders", || holders(&c, survivors[0], "held"));
    assert_eq!(held, vec![(s1, t1)]);
    let (_, t2) = acquire(&c, survivors[1], "other");
    assert!(t2 > t1, "token went from {t1} to {t2}");

    // The killed node restarts from its data directory and catches up.
    c.spawn(li);
    wait_for("the restarted node to see the lock", || {
        (holders(&c, li, "held")? == vec![(s1, t1)]).then_some(())
    });
    let (_, t3) = acquire(&c, li, "third");
    assert!(t3 > t2);
}

#[test]
fn a_leader_stopped_past_its_election_timeout_steps_down_and_no_lock_is_granted_twice() {
    let c = Cluster::start();
    let all = [0, 1, 2];
    let leader = wait_for("a leader", || c.leader(&all));
    let (s1, t1) = acquire(&c, 0, "x");
    let li = c.index_of(leader);
    let child = c.procs[li].child.as_ref().unwrap();
    signal(child, libc::SIGSTOP);
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != li).collect();
    wait_for("the others to elect a new leader", || {
        c.leader(&others).filter(|&l| l != leader)
    });
    // While the old leader sleeps, the lock stays taken.
    let (status, _) = call(c.procs[others[0]].http, "POST", "/API/v1/locks/x", "").unwrap();
    assert_eq!(status, 409);
    signal(child, libc::SIGCONT);
    // It wakes, learns of the new term and steps down; everyone agrees on
    // the one holder.
    wait_for("the old leader to step down", || {
        let (_, s) = call(c.procs[li].http, "GET", "/API/v1/cluster", "")?;
        (s["role"] == json!("Follower") && s["leader"].as_u64() != Some(leader)).then_some(())
    });
    for i in all {
        let held = wait_for("holders", || holders(&c, i, "x"));
        assert_eq!(held, vec![(s1, t1)], "node {}", i + 1);
    }
}

#[test]
fn a_client_process_stopped_past_its_ttl_loses_its_lock_and_its_stale_token_is_refused() {
    let c = Cluster::start();
    wait_for("a leader", || c.leader(&[0, 1, 2]));
    let endpoints = c
        .procs
        .iter()
        .map(|p| p.http.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // `raftlock lock` holds f while its command runs.
    let mut holder = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_raftlock"))
            .args(["lock", "f", "--ttl-ms", "1000", "--endpoints", &endpoints])
            .args(["--", "sleep", "60"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (s1, t1) = wait_for("the lock command to hold f", || {
        holders(&c, 0, "f")?.first().copied()
    });
    // Its first append, with its token, is accepted.
    let body = json!({"session": s1, "token": t1, "data": "first;"}).to_string();
    assert_eq!(
        call(c.procs[1].http, "POST", "/API/v1/files/f/append", &body).map(|r| r.0),
        Some(200)
    );

    // The client process stops (a GC pause, a frozen VM) past its TTL.
    signal(&holder.0, libc::SIGSTOP);
    let (s2, t2) = acquire(&c, 1, "f");
    assert!(t2 > t1);
    // It wakes up and tries to write with its stale token: refused.
    signal(&holder.0, libc::SIGCONT);
    let stale = json!({"session": s1, "token": t1, "data": "stale;"}).to_string();
    let (status, _) = call(c.procs[2].http, "POST", "/API/v1/files/f/append", &stale).unwrap();
    assert!(
        status == 410 || status == 409,
        "stale write answered {status}"
    );
    let fresh = json!({"session": s2, "token": t2, "data": "second;"}).to_string();
    assert_eq!(
        call(c.procs[0].http, "POST", "/API/v1/files/f/append", &fresh).map(|r| r.0),
        Some(200)
    );
    let (_, file) = call(c.procs[0].http, "GET", "/API/v1/files/f", "").unwrap();
    assert_eq!(file["data"], json!("first;second;"));
    // The lock command notices its lease is gone, kills its command and
    // exits with status 3.
    let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
    let status = loop {
        if let Some(s) = holder.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the lock command did not exit");
        std::thread::sleep(Duration::from_millis(POLL_MS));
    };
    assert_eq!(status.code(), Some(3));
}
