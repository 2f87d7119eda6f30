//! Raft commit throughput and latency: a 3-node cluster on 127.0.0.1 with
//! the production driver, real TCP and real fsync, fed by 1, 16 and 64
//! concurrent proposers of small entries.
//!
//! Run: `cargo bench --bench raft` (RAFTLOCK_BENCH_SECS per level, default
//! 5; RAFTLOCK_BENCH_DIR for the data directory, default a temp dir).

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() {
    bench::main()
}

#[cfg(not(madsim))]
mod bench {
    use raftlock::raft::{self, Role};
    use raftlock::runtime::{Node, NodeConfig};
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::time::{Duration, Instant};
    use tokio::net::TcpListener;

    const PROPOSERS: &[usize] = &[1, 16, 64];
    const ENTRY_BYTES: usize = 16;
    /// Give up waiting for a leader after this long.
    const LEADER_WAIT_S_MAX: u64 = 30;

    pub fn main() {
        let secs: u64 = std::env::var("RAFTLOCK_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        let base = match std::env::var_os("RAFTLOCK_BENCH_DIR") {
            Some(d) => std::path::PathBuf::from(d),
            None => std::env::temp_dir().join(format!("raftlock-bench-{}", std::process::id())),
        };
        let system = actix_rt::System::new();
        system.block_on(run(secs, base.clone()));
        let _ = std::fs::remove_dir_all(&base);
    }

    async fn run(secs: u64, base: std::path::PathBuf) {
        let mut peers = BTreeMap::new();
        let mut listeners = Vec::new();
        for id in 1..=3u64 {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1");
            peers.insert(id, l.local_addr().expect("local addr"));
            listeners.push((id, l));
        }
        let mut nodes = Vec::new();
        for (id, l) in listeners {
            let cfg = NodeConfig {
                id,
                data_dir: base.join(format!("node{id}")),
                peers: peers.clone(),
                join: None,
                raft: raft::Config::default(),
                cluster: Default::default(),
                tls: None,
            };
            nodes.push(Node::start(cfg, l).expect("node starts"));
        }
        let deadline = Instant::now() + Duration::from_secs(LEADER_WAIT_S_MAX);
        let leader = loop {
            let mut found = None;
            for (i, n) in nodes.iter().enumerate() {
                if n.status().await.is_ok_and(|s| s.role == Role::Leader) {
                    found = Some(i);
                }
            }
            if let Some(i) = found {
                break i;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {LEADER_WAIT_S_MAX}s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let nodes: Vec<Rc<Node>> = nodes.into_iter().map(Rc::new).collect();
        println!("raftlock Raft benchmark: 3 nodes on 127.0.0.1, fsync on, {ENTRY_BYTES}-byte entries, {secs}s per level");
        println!(
            "{:>10} {:>12} {:>12} {:>12} {:>10}",
            "proposers", "entries/s", "p50 ms", "p99 ms", "errors"
        );
        for &c in PROPOSERS {
            let latencies = Rc::new(RefCell::new(Vec::new()));
            let errors = Rc::new(RefCell::new(0u64));
            let stop = Instant::now() + Duration::from_secs(secs);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for p in 0..c {
                let node = nodes[leader].clone();
                let latencies = latencies.clone();
                let errors = errors.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let mut n = 0u64;
                    while Instant::now() < stop {
                        let mut cmd = format!("{p:04}-{n:010}").into_bytes();
                        cmd.resize(ENTRY_BYTES, b'.');
                        n += 1;
                        let t = Instant::now();
                        match node.propose(cmd).await {
                            Ok(_) => latencies.borrow_mut().push(t.elapsed()),
                            Err(_) => *errors.borrow_mut() += 1,
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let wall = started.elapsed().as_secs_f64();
            let mut l = latencies.borrow_mut();
            l.sort_unstable();
            let pct = |q: f64| {
                l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
                    .map_or(0.0, |d| d.as_secs_f64() * 1e3)
            };
            println!(
                "{:>10} {:>12.0} {:>12.3} {:>12.3} {:>10}",
                c,
                l.len() as f64 / wall,
                pct(0.50),
                pct(0.99),
                errors.borrow()
            );
        }
        for n in nodes {
            if let Ok(n) = Rc::try_unwrap(n) {
                n.stop();
            }
        }
    }
}
