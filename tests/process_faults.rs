#![cfg(not(madsim))]
//! Real `raftlock serve` processes on 127.0.0.1: kill -9 of the leader,
//! SIGSTOP past the election timeout, restart from the data directory.
//! Bounded: every wait polls with a deadline; every child is killed when
//! the test ends, pass or fail.

mod procs;

use procs::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        Command::new(bin())
            .args(["lock", "f", "--ttl-ms", "1000", "--endpoints", &endpoints])
            .args(["--", "sleep", "60"])
            .env("RUST_LOG", "warn")
            .env("RAFTLOCK_CREDENTIAL", admin())
            .env("RAFTLOCK_CA", raftlock::tls::ca_cert_path(&c.certs))
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
