//! `raftlock-etcd-bench`: the workloads of `raftlock bench` against etcd,
//! through its gRPC Lock API with a lease per client (what etcd users run),
//! printed in the same table so scripts/bench-vs-etcd.sh can put the two
//! side by side. Clients are spread round-robin over the endpoints.
//!
//!   raftlock-etcd-bench --endpoints H:P,H:P,H:P --secs 8 --workloads a,b64,c16

use etcd_client::{Client, LockOptions};
use std::time::{Duration, Instant};

/// Lease TTL of a benchmark client: outlives any run.
const LEASE_TTL_S: i64 = 120;
/// Clients one workload may run.
const CLIENTS_MAX: usize = 1024;

#[derive(Clone, Copy)]
enum Workload {
    Sequential,
    OwnLocks(usize),
    Contended(usize),
}

impl Workload {
    fn parse(w: &str) -> Result<Workload, String> {
        let n = |s: &str| {
            s.parse::<usize>()
                .map_err(|e| format!("workload '{w}': {e}"))
        };
        match w.split_at(1) {
            ("a", "") => Ok(Workload::Sequential),
            ("b", rest) => Ok(Workload::OwnLocks(n(rest)?)),
            ("c", rest) => Ok(Workload::Contended(n(rest)?)),
            _ => Err(format!("unknown workload '{w}' (a, bN or cN)")),
        }
    }

    /// The same names `raftlock bench` prints.
    fn name(self) -> String {
        match self {
            Workload::Sequential => "(a) 1 client, 1 lock".into(),
            Workload::OwnLocks(n) => format!("(b) {n} clients, own locks"),
            Workload::Contended(n) => format!("(c) {n} clients, 1 lock"),
        }
    }

    fn clients(self) -> usize {
        match self {
            Workload::Sequential => 1,
            Workload::OwnLocks(n) | Workload::Contended(n) => n,
        }
    }
}

struct Args {
    endpoints: Vec<String>,
    secs: f64,
    workloads: Vec<Workload>,
}

fn args() -> Result<Args, String> {
    let mut endpoints = Vec::new();
    let mut secs = 5.0;
    let mut workloads = vec![Workload::Sequential];
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => endpoints = value.split(',').map(str::to_string).collect(),
            "--secs" => secs = value.parse().map_err(|e| format!("--secs: {e}"))?,
            "--workloads" => {
                workloads = value
                    .split(',')
                    .map(Workload::parse)
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if endpoints.is_empty() {
        return Err("--endpoints H:P[,H:P...] is required".into());
    }
    Ok(Args {
        endpoints,
        secs,
        workloads,
    })
}

/// One client: its connection (to one endpoint) and its lease.
async fn open(endpoint: &str) -> Result<(Client, i64), etcd_client::Error> {
    let mut client = Client::connect([endpoint], None).await?;
    let lease = client.lease_grant(LEASE_TTL_S, None).await?.id();
    Ok((client, lease))
}

/// Lock then unlock `lock`; how long the lock took.
async fn pair(client: &mut Client, lease: i64, lock: &str) -> Result<Duration, etcd_client::Error> {
    let start = Instant::now();
    let held = client
        .lock(lock, Some(LockOptions::new().with_lease(lease)))
        .await?;
    let took = start.elapsed();
    client.unlock(held.key()).await?;
    Ok(took)
}

struct Report {
    pairs: usize,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

async fn run(endpoints: &[String], workload: Workload, secs: f64) -> Result<Report, String> {
    let n = workload.clients();
    if n > CLIENTS_MAX {
        return Err(format!("at most {CLIENTS_MAX} clients"));
    }
    let mut clients = Vec::new();
    for i in 0..n {
        let endpoint = &endpoints[i % endpoints.len()];
        clients.push(
            open(endpoint)
                .await
                .map_err(|e| format!("{endpoint}: {e}"))?,
        );
    }
    let run_id = std::process::id();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (mut client, lease))| {
            let lock = match workload {
                Workload::Contended(_) => format!("bench-{run_id}-shared"),
                _ => format!("bench-{run_id}-{i}"),
            };
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    match pair(&mut client, lease, &lock).await {
                        Ok(took) => latencies.push(took),
                        Err(_) => errors += 1,
                    }
                }
                let _ = client.lease_revoke(lease).await;
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| match all.len() {
        0 => 0.0,
        len => all[((len as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0,
    };
    Ok(Report {
        pairs: all.len(),
        secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    })
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("raftlock-etcd-bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "etcd (grpc) via all at {}, {} s per workload",
        args.endpoints.join(","),
        args.secs
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>8}",
        "workload", "pairs/s", "p50 ms", "p99 ms", "errors"
    );
    for w in args.workloads {
        match run(&args.endpoints, w, args.secs).await {
            Ok(r) => println!(
                "{:<28} {:>12.0} {:>12.2} {:>12.2} {:>8}",
                w.name(),
                r.pairs as f64 / r.secs.max(1e-9),
                r.p50_ms,
                r.p99_ms,
                r.errors
            ),
            Err(e) => {
                eprintln!("raftlock-etcd-bench: {}: {e}", w.name());
                std::process::exit(1);
            }
        }
    }
}
