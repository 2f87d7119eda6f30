//! `raftlock bench`: acquire+release workloads against raftlock, through
//! its HTTP API or its Rust client library, or, for comparison, etcd's v3
//! Lock API through its JSON gateway. Every client has its own session
//! (raftlock) or lease (etcd), hold time zero. Clients are spread over
//! every endpoint by default (`Via::All`): a benchmark of the leader alone
//! hides what users of a follower see. See docs/PERFORMANCE.md.

use crate::http::client::{HttpClient, HttpClientError};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Session / lease TTL of benchmark clients: outlives any run.
pub const BENCH_TTL_S: u64 = 120;
/// How long a contended acquire may wait.
pub const BENCH_WAIT_MS: u64 = 60_000;
/// Clients one workload may run.
pub const BENCH_CLIENTS_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// raftlock over plain HTTP/JSON.
    Raftlock,
    /// raftlock through the Rust client library, over `Door` (the native
    /// protocol on a persistent connection, or its calls over HTTP).
    RaftlockLibrary(crate::client::Door),
    Etcd,
}

/// Which endpoints the clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Every endpoint, round-robin.
    All,
    /// The leader only.
    Leader,
    /// The followers only, round-robin.
    Followers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// (a) one client, one lock, acquire then release, sequentially.
    Sequential,
    /// (b) `n` clients, each on its own lock.
    OwnLocks(usize),
    /// (c) `n` clients on one lock: handoffs.
    Contended(usize),
    /// `n` sessions kept alive (every TTL/3) for the whole run: counts
    /// spurious expiries (raftlock only).
    Sessions(usize),
}

impl Workload {
    pub fn name(&self) -> String {
        match self {
            Workload::Sequential => "(a) 1 client, 1 lock".into(),
            Workload::OwnLocks(n) => format!("(b) {n} clients, own locks"),
            Workload::Contended(n) => format!("(c) {n} clients, 1 lock"),
            Workload::Sessions(n) => format!("{n} sessions kept alive"),
        }
    }

    fn clients(&self) -> usize {
        match self {
            Workload::Sequential => 1,
            Workload::OwnLocks(n) | Workload::Contended(n) => *n,
            Workload::Sessions(_) => 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub workload: Workload,
    pub pairs: u64,
    pub secs: f64,
    pub acquire_p50_ms: f64,
    pub acquire_p99_ms: f64,
    pub errors: u64,
    /// The first error a client met, so a run with errors says why.
    pub first_error: Option<String>,
}

impl Report {
    pub fn pairs_per_s(&self) -> f64 {
        self.pairs as f64 / self.secs.max(1e-9)
    }
}

#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Http(#[from] HttpClientError),
    #[error("{0}")]
    Refused(String),
    #[error("at most {BENCH_CLIENTS_MAX} clients")]
    TooManyClients,
}

/// A connection to `addr`: raftlock's with the credential and CA in the
/// environment (`RAFTLOCK_CREDENTIAL`, `RAFTLOCK_CA`), etcd's plain.
fn http_for(target: Target, addr: SocketAddr) -> HttpClient {
    match target {
        Target::Etcd => HttpClient::new(addr),
        _ => {
            let access = crate::http::client::Access::from_env().unwrap_or_else(|e| {
                tracing::warn!("{}: {e}; going without TLS", crate::http::client::CA_ENV);
                Default::default()
            });
            HttpClient::with_access(addr, &access)
        }
    }
}

/// One benchmark client: its connection, and its session or lease; or a
/// client library `Client` (its own session).
enum Client {
    Http {
        target: Target,
        http: HttpClient,
        /// raftlock session id, or etcd lease id.
        owner: String,
    },
    Library(crate::client::Client),
}

impl Client {
    async fn open(target: Target, addr: SocketAddr) -> Result<Client, BenchError> {
        if let Target::RaftlockLibrary(door) = target {
            let ttl = Duration::from_secs(BENCH_TTL_S);
            let access = crate::http::client::Access::from_env()
                .map_err(|e| BenchError::Refused(e.to_string()))?;
            let options = crate::client::ConnectOptions {
                access,
                door,
                in_order: true,
            };
            let client = crate::client::Client::connect_with(vec![addr], ttl, options)
                .await
                .map_err(|e| BenchError::Refused(e.to_string()))?;
            return Ok(Client::Library(client));
        }
        let mut http = http_for(target, addr);
        let owner = match target {
            Target::Raftlock | Target::RaftlockLibrary(_) => {
                let (status, v) = http
                    .json(
                        "POST",
                        "/API/v1/sessions",
                        &json!({ "ttl_ms": BENCH_TTL_S * 1000 }),
                    )
                    .await?;
                field(status, &v, "session")?
            }
            Target::Etcd => {
                let (status, v) = http
                    .json("POST", "/v3/lease/grant", &json!({ "TTL": BENCH_TTL_S }))
                    .await?;
                field(status, &v, "ID")?
            }
        };
        Ok(Client::Http {
            target,
            http,
            owner,
        })
    }

    /// Acquires `lock`, then releases it; returns how long the acquire took.
    async fn pair(&mut self, lock: &str) -> Result<Duration, BenchError> {
        let t = Instant::now();
        let (target, http, owner) = match self {
            Client::Library(c) => {
                let guard = c
                    .lock(lock)
                    .wait(Duration::from_millis(BENCH_WAIT_MS))
                    .acquire()
                    .await
                    .map_err(|e| BenchError::Refused(e.to_string()))?;
                let took = t.elapsed();
                guard
                    .release()
                    .await
                    .map_err(|e| BenchError::Refused(e.to_string()))?;
                return Ok(took);
            }
            Client::Http {
                target,
                http,
                owner,
            } => (*target, http, owner),
        };
        let held = match target {
            Target::Etcd => {
                let body = json!({ "name": base64(lock.as_bytes()), "lease": owner });
                let (status, v) = http.json("POST", "/v3/lock/lock", &body).await?;
                field(status, &v, "key")?
            }
            _ => {
                let body = json!({ "session": owner.parse::<u64>().unwrap_or(0), "wait_ms": BENCH_WAIT_MS });
                let (status, v) = http
                    .json("POST", &format!("/API/v1/locks/{lock}"), &body)
                    .await?;
                field(status, &v, "token")?
            }
        };
        let took = t.elapsed();
        let (status, v) = match target {
            Target::Etcd => {
                http.json("POST", "/v3/lock/unlock", &json!({ "key": held }))
                    .await?
            }
            _ => {
                let path = format!("/API/v1/locks/{lock}?token={held}&session={owner}");
                http.json("DELETE", &path, &Value::Null).await?
            }
        };
        if status != 200 {
            return Err(BenchError::Refused(format!("release: {status} {v}")));
        }
        Ok(took)
    }
}

/// A string or number field of a 200 answer, as a string.
fn field(status: u16, v: &Value, name: &str) -> Result<String, BenchError> {
    if status != 200 {
        return Err(BenchError::Refused(format!("{status} {v}")));
    }
    match &v[name] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(BenchError::Refused(format!("no \"{name}\" in {v}"))),
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The endpoints `via` selects: all, the leader's, or the followers'.
pub async fn endpoints_via(
    target: Target,
    endpoints: &[SocketAddr],
    via: Via,
) -> Result<Vec<SocketAddr>, BenchError> {
    if via == Via::All {
        return Ok(endpoints.to_vec());
    }
    let leader = find_leader(target, endpoints).await.ok_or_else(|| {
        BenchError::Refused("no endpoint says it is the leader (is the cluster up?)".into())
    })?;
    Ok(match via {
        Via::Leader => vec![leader],
        _ => endpoints.iter().copied().filter(|&e| e != leader).collect(),
    })
}

/// The endpoint of the current leader, if the cluster says which it is.
pub async fn find_leader(target: Target, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
    for &addr in endpoints {
        let mut http = http_for(target, addr);
        let (own, leader) = match target {
            Target::Raftlock | Target::RaftlockLibrary(_) => {
                let (_, v) = http
                    .json("GET", "/API/v1/cluster", &Value::Null)
                    .await
                    .ok()?;
                (
                    v["id"].as_u64()?.to_string(),
                    v["leader"].as_u64()?.to_string(),
                )
            }
            Target::Etcd => {
                let (_, v) = http
                    .json("POST", "/v3/maintenance/status", &json!({}))
                    .await
                    .ok()?;
                (
                    v["header"]["member_id"].as_str()?.to_string(),
                    v["leader"].as_str()?.to_string(),
                )
            }
        };
        if own == leader {
            return Some(addr);
        }
    }
    None
}

/// Connections the session workload uses.
pub const SESSION_CONNECTIONS: usize = 32;
/// Sessions a session workload may keep.
pub const BENCH_SESSIONS_MAX: usize = 1_000_000;

#[derive(Clone, Debug, Default)]
pub struct SessionReport {
    pub opened: u64,
    pub open_secs: f64,
    pub keepalives: u64,
    /// Keepalives answered "session expired": a session was lost although
    /// it was renewed in time.
    pub expired: u64,
    pub errors: u64,
}

/// What both session workloads refuse: too many sessions, no endpoint.
fn check_sessions_args(endpoints: &[SocketAddr], n: usize) -> Result<(), BenchError> {
    if n > BENCH_SESSIONS_MAX {
        return Err(BenchError::TooManyClients);
    }
    if endpoints.is_empty() {
        return Err(BenchError::Refused("no endpoint to send to".into()));
    }
    Ok(())
}

/// Opens `n` sessions with `ttl`, then renews each every `ttl / 3` for
/// `duration`, over `SESSION_CONNECTIONS` connections spread round-robin
/// over `endpoints` (followers forward their batches of keepalives).
pub async fn sessions(
    endpoints: &[SocketAddr],
    n: usize,
    ttl: Duration,
    duration: Duration,
) -> Result<SessionReport, BenchError> {
    check_sessions_args(endpoints, n)?;
    let started = Instant::now();
    let per = n.div_ceil(SESSION_CONNECTIONS);
    let ttl_ms = ttl.as_millis() as u64;
    let endpoint_of = |i: usize| endpoints[i % endpoints.len()];
    let openers: Vec<_> = (0..SESSION_CONNECTIONS)
        .map(|i| {
            let endpoint = endpoint_of(i);
            actix_rt::spawn(async move {
                let mut http = http_for(Target::Raftlock, endpoint);
                let mut ids = Vec::new();
                for _ in 0..per {
                    let r = http
                        .json("POST", "/API/v1/sessions", &json!({ "ttl_ms": ttl_ms }))
                        .await;
                    if let Ok((200, v)) = r {
                        if let Some(id) = v["session"].as_u64() {
                            ids.push(id);
                        }
                    }
                }
                ids
            })
        })
        .collect();
    let mut groups = Vec::new();
    for o in openers {
        groups.push(o.await.unwrap_or_default());
    }
    let mut report = SessionReport {
        opened: groups.iter().map(|g| g.len() as u64).sum(),
        open_secs: started.elapsed().as_secs_f64(),
        ..SessionReport::default()
    };
    let period = ttl / 3;
    let deadline = Instant::now() + duration;
    let renewers: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(i, ids)| {
            let endpoint = endpoint_of(i);
            actix_rt::spawn(async move {
                let mut http = http_for(Target::Raftlock, endpoint);
                let (mut ok, mut expired, mut errors) = (0u64, 0u64, 0u64);
                while Instant::now() < deadline {
                    let round = Instant::now();
                    for id in &ids {
                        let path = format!("/API/v1/sessions/{id}/keepalive");
                        match http.json("POST", &path, &Value::Null).await {
                            Ok((200, _)) => ok += 1,
                            Ok((410, _)) => expired += 1,
                            _ => errors += 1,
                        }
                    }
                    let spent = round.elapsed();
                    if spent < period {
                        tokio::time::sleep(period - spent).await;
                    }
                }
                (ok, expired, errors)
            })
        })
        .collect();
    for r in renewers {
        if let Ok((ok, expired, errors)) = r.await {
            report.keepalives += ok;
            report.expired += expired;
            report.errors += errors;
        }
    }
    Ok(report)
}

/// Keepalives one native connection of the session workload has in
/// flight at once: all connections together stay within what one node
/// lets one credential have in progress (more would be refused as too
/// many).
pub const SESSION_KEEPALIVES_IN_FLIGHT_MAX: usize =
    crate::gateway::CALLS_PER_CREDENTIAL_MAX / SESSION_CONNECTIONS;
const _: () = assert!(SESSION_KEEPALIVES_IN_FLIGHT_MAX > 0);
/// Tries of one session open that a node answers "unavailable" (busy, or
/// an outcome unknown: the retry carries the same nonce and opens once).
pub const SESSION_OPEN_ATTEMPTS_MAX: u32 = 100;
pub const SESSION_OPEN_RETRY_MS: u64 = 20;
/// Opens one native connection has in flight: each is a log entry of its
/// own (keepalives share entries), and through a follower each is one
/// forward, of which a follower takes `FORWARDS_IN_FLIGHT_MAX`; a third of
/// the connections' opens at once stay within that.
pub const SESSION_OPENS_IN_FLIGHT_MAX: usize =
    crate::raft::config::FORWARDS_IN_FLIGHT_MAX * 3 / SESSION_CONNECTIONS;

/// `sessions` over the native protocol: one persistent connection per
/// group of sessions, with up to `SESSION_KEEPALIVES_IN_FLIGHT_MAX`
/// keepalives (`SESSION_OPENS_IN_FLIGHT_MAX` opens) in flight on it (what a
/// process holding many sessions, or a proxy for many clients, would do).
/// A group renews the sessions it has opened every `ttl / 3` while it
/// opens the rest, so no session waits for the others to open; `duration`
/// counts from when the last group has opened all of its own.
pub async fn sessions_native(
    endpoints: &[SocketAddr],
    n: usize,
    ttl: Duration,
    duration: Duration,
) -> Result<SessionReport, BenchError> {
    use crate::client::NativeConnection;
    check_sessions_args(endpoints, n)?;
    let access =
        crate::http::client::Access::from_env().map_err(|e| BenchError::Refused(e.to_string()))?;
    let mut natives = Vec::new();
    for &e in endpoints {
        natives.push(native_addr(e).await?);
    }
    let per = n.div_ceil(SESSION_CONNECTIONS);
    let nonce_base =
        crate::entropy::random_u64().map_err(|e| BenchError::Refused(e.to_string()))?;
    let (opened_tx, opened_rx) = tokio::sync::watch::channel(0usize);
    let opened_tx = std::rc::Rc::new(opened_tx);
    let mut groups = Vec::new();
    for i in 0..SESSION_CONNECTIONS {
        let addr = natives[i % natives.len()];
        let conn = NativeConnection::open(addr, &access)
            .await
            .map_err(BenchError::Refused)?;
        let group = Group {
            conn,
            ttl,
            per,
            nonce: nonce_base.wrapping_add((i * per) as u64),
        };
        let (opened_tx, mut all_opened) = (opened_tx.clone(), opened_rx.clone());
        groups.push(actix_rt::spawn(async move {
            group
                .run(duration, &opened_tx, &mut all_opened, SESSION_CONNECTIONS)
                .await
        }));
    }
    let mut report = SessionReport::default();
    for g in groups {
        if let Ok(r) = g.await {
            report.opened += r.opened;
            report.open_secs = report.open_secs.max(r.open_secs);
            report.keepalives += r.keepalives;
            report.expired += r.expired;
            report.errors += r.errors;
        }
    }
    Ok(report)
}

/// One connection's share of the native session workload.
struct Group {
    conn: crate::client::NativeConnection,
    ttl: Duration,
    /// Sessions to open.
    per: usize,
    /// The first open's nonce (each retry of an open reuses its own).
    nonce: u64,
}

/// Sessions a group opens between two looks at whether a renewal is due.
const SESSION_OPEN_CHUNK: usize = 512;

impl Group {
    /// Opens and renews until `duration` after every group has opened all
    /// of its sessions (`opened` counts the groups done).
    async fn run(
        self,
        duration: Duration,
        opened: &tokio::sync::watch::Sender<usize>,
        all_opened: &mut tokio::sync::watch::Receiver<usize>,
        groups: usize,
    ) -> SessionReport {
        let started = Instant::now();
        let period = self.ttl / 3;
        let mut report = SessionReport::default();
        let mut ids = Vec::new();
        let mut next_open = 0;
        let mut next_round = Instant::now() + period;
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() && *all_opened.borrow() >= groups {
                deadline = Some(Instant::now() + duration);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return report;
            }
            if Instant::now() >= next_round {
                next_round += period;
                self.renew(&ids, &mut report, deadline.is_some()).await;
                continue;
            }
            if next_open < self.per {
                let chunk = SESSION_OPEN_CHUNK.min(self.per - next_open);
                self.open(next_open, chunk, &mut ids, &mut report).await;
                next_open += chunk;
                if next_open == self.per {
                    report.open_secs = started.elapsed().as_secs_f64();
                    opened.send_modify(|n| *n += 1);
                }
                continue;
            }
            let wake = deadline.map_or(next_round, |d| d.min(next_round));
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = all_opened.changed(), if deadline.is_none() => {}
            }
        }
    }

    async fn open(
        &self,
        first: usize,
        count: usize,
        ids: &mut Vec<u64>,
        report: &mut SessionReport,
    ) {
        use futures_util::stream::{self, StreamExt};
        let ttl_ms = self.ttl.as_millis() as u64;
        let opens = (first..first + count).map(|k| {
            let nonce = self.nonce.wrapping_add(k as u64);
            let command = crate::lock::encode(&crate::lock::Command::Open { nonce, ttl_ms });
            async move {
                // Retried as a client would: a node may be busy or between
                // leaders, and an open with the same nonce opens once.
                let mut reply = crate::session::NodeReply::Unavailable;
                for _ in 0..SESSION_OPEN_ATTEMPTS_MAX {
                    reply = self
                        .conn
                        .call(crate::session::ToNode::Propose(command.clone()))
                        .await;
                    if !matches!(
                        reply,
                        crate::session::NodeReply::Unavailable
                            | crate::session::NodeReply::NotLeader(_)
                    ) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(SESSION_OPEN_RETRY_MS)).await;
                }
                reply
            }
        });
        let replies: Vec<_> = stream::iter(opens)
            .buffer_unordered(SESSION_OPENS_IN_FLIGHT_MAX)
            .collect()
            .await;
        for r in replies {
            match native_response(r) {
                Ok(crate::lock::Reply::Opened { session, .. }) => {
                    ids.push(session);
                    report.opened += 1;
                }
                _ => report.errors += 1,
            }
        }
    }

    /// Renews `ids` once; counts the renewals if `counted` (inside the
    /// measured window), expiries and errors always.
    async fn renew(&self, ids: &[u64], report: &mut SessionReport, counted: bool) {
        use futures_util::stream::{self, StreamExt};
        let renewals = ids.iter().map(|&session| {
            let command = crate::lock::encode(&crate::lock::Command::Unsequenced {
                session,
                op: crate::lock::Op::KeepAlive,
            });
            async move {
                self.conn
                    .call(crate::session::ToNode::Propose(command))
                    .await
            }
        });
        let replies: Vec<_> = stream::iter(renewals)
            .buffer_unordered(SESSION_KEEPALIVES_IN_FLIGHT_MAX)
            .collect()
            .await;
        for r in replies {
            match native_response(r) {
                Ok(crate::lock::Reply::Renewed) => report.keepalives += u64::from(counted),
                Err(Some(crate::lock::LockError::SessionNotFound(_))) => report.expired += 1,
                _ => report.errors += 1,
            }
        }
    }
}

/// The lock machine's answer in a native reply; `Err(None)` for no answer
/// (unavailable, refused, undecodable).
fn native_response(
    reply: crate::session::NodeReply,
) -> Result<crate::lock::Reply, Option<crate::lock::LockError>> {
    match reply {
        crate::session::NodeReply::Output(o) => {
            match postcard::from_bytes::<crate::lock::Response>(&o) {
                Ok(response) => response.map_err(Some),
                Err(_) => Err(None),
            }
        }
        _ => Err(None),
    }
}

/// Where the node behind HTTP endpoint `endpoint` serves the native
/// protocol (its `/API/v1/cluster` says).
async fn native_addr(endpoint: SocketAddr) -> Result<SocketAddr, BenchError> {
    let (status, v) = http_for(Target::Raftlock, endpoint)
        .json("GET", "/API/v1/cluster", &Value::Null)
        .await?;
    match v["native_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
    {
        Some(port) if status == 200 => Ok(SocketAddr::new(endpoint.ip(), port)),
        _ => Err(BenchError::Refused(format!(
            "{endpoint} serves no native protocol: {status} {v}"
        ))),
    }
}

/// Runs one workload for `duration` with clients spread over `endpoints`.
pub async fn run(
    target: Target,
    endpoints: &[SocketAddr],
    workload: Workload,
    duration: Duration,
) -> Result<Report, BenchError> {
    let n = workload.clients();
    if n > BENCH_CLIENTS_MAX {
        return Err(BenchError::TooManyClients);
    }
    if endpoints.is_empty() {
        return Err(BenchError::Refused("no endpoint to send to".into()));
    }
    let mut clients = Vec::new();
    for i in 0..n {
        let addr = endpoints[i % endpoints.len().max(1)];
        clients.push(Client::open(target, addr).await?);
    }
    let run_id = std::process::id();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let lock = match workload {
                Workload::Contended(_) => format!("bench-{run_id}-shared"),
                _ => format!("bench-{run_id}-{i}"),
            };
            actix_rt::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut first = None;
                while Instant::now() < deadline {
                    match c.pair(&lock).await {
                        Ok(took) => latencies.push(took),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (latencies, errors, first)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        if let Ok((l, e, first)) = t.await {
            all.extend(l);
            errors += e;
            first_error = first_error.or(first);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i.min(all.len() - 1)].as_secs_f64() * 1000.0
    };
    Ok(Report {
        workload,
        pairs: all.len() as u64,
        secs,
        acquire_p50_ms: pct(0.50),
        acquire_p99_ms: pct(0.99),
        errors,
        first_error,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(super::base64(b"bench"), "YmVuY2g=");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
    }
}
