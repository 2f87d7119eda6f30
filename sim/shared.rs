//! What the supervisor, the nodes and the clients of one run share: the
//! checker, the clocks, the protected resource, the views the supervisor
//! aims faults by. A leaf module, so that the node driver (`cluster.rs`)
//! and the clients depend on it and not on each other.

use crate::checker::lock_history::CallKey;
use crate::checker::Checker;
use crate::clock::Clock;
use raftlock::actor::NodeId;
use raftlock::credential::Bearer;
use raftlock::linearizability as lin;
use raftlock::lock::fence::FenceVerifier;
use raftlock::lock::{Grant, LockConfig, Token};
use raftlock::raft::{self, Membership};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Locks whose histories are checked for linearizability and that every
/// front end only try-locks (session clients, library users and HTTP
/// users contend for them).
pub const LIN_TRY_LOCKS: &[&str] = &["lin-0", "lin-1"];
/// A checked lock that library and HTTP users only wait for (the history
/// model has no queue, so a try-lock's `Busy` is not checked beside
/// waiters: see `lin::Op::Acquire`).
pub const LIN_WAIT_LOCK: &str = "lin-w";

/// The bounds of a tight-limits run, scaled down from production's so
/// that a 20 s run reaches each: a leader that answers `Busy`, entries
/// near the largest a client may propose and an append batch that holds
/// one of them, compaction by bytes and a log that fills, snapshot
/// installs while followers' forwards are in flight, and one-lock waits
/// longer than 50 of their session's TTLs.
pub struct TightLimits;

impl TightLimits {
    pub const PENDING_PROPOSALS_MAX: usize = 8;
    pub const ENTRY_BYTES_MAX: usize = 16 * 1024;
    pub const APPEND_BYTES_MAX: usize = 16 * 1024;
    pub const INFLIGHT_BYTES_MAX: usize = 64 * 1024;
    pub const SNAPSHOT_THRESHOLD_BYTES: usize = 128 * 1024;
    /// Twice the threshold, as production's defaults: room for a leader to
    /// hold off compaction while a follower installs a snapshot.
    pub const LOG_BYTES_MAX: usize = 2 * Self::SNAPSHOT_THRESHOLD_BYTES;
    pub const SNAPSHOT_CHUNK_BYTES: usize = 16 * 1024;
    pub const FILE_BYTES_MAX: usize = 256 * 1024;
    /// The TTL of a long wait's one-lock session.
    pub const SHORT_TTL_MS: u64 = 100;
    /// A long wait lasts this many of its session's TTLs, at least.
    pub const LONG_WAIT_TTLS: u64 = 50;
    /// A long wait lasts at most this many TTLs more.
    pub const LONG_WAIT_EXTRA_TTLS_MAX: u64 = 10;

    /// The longest call a client makes in such a run (a long wait, and
    /// its client's slack past it).
    pub fn longest_call() -> Duration {
        let ttls = Self::LONG_WAIT_TTLS + 1 + Self::LONG_WAIT_EXTRA_TTLS_MAX;
        let slack = crate::http_client::TIGHT_ANSWER_SLACK_MS;
        Duration::from_millis(Self::SHORT_TTL_MS * ttls + slack)
    }
}

/// Out-of-band admin requests from the supervisor to a node.
#[derive(Clone, Copy, Debug)]
pub enum Control {
    TransferLeadership { to: NodeId },
    RemoveVoter { id: NodeId },
}

/// State shared by the supervisor, the nodes and the client of one run.
pub struct Shared {
    pub checker: Mutex<Checker>,
    pub clocks: Mutex<BTreeMap<NodeId, Clock>>,
    pub client: Mutex<ClientStats>,
    pub start: std::time::Instant,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    /// The initial configuration; nodes outside it start empty and join.
    pub bootstrap: Membership,
    pub config: raft::Config,
    pub controls: Mutex<BTreeMap<NodeId, Vec<Control>>>,
    /// Transfers a leader reported as handed over (TimeoutNow sent).
    pub transfers_done: Mutex<u64>,
    pub lock_config: LockConfig,
    /// A tight-limits run (`scenario::TightLimits`): clients push at the
    /// bounds.
    pub tight_limits: bool,
    /// Nodes run the lock machine (else the Raft test recorder).
    pub lock_workload: bool,
    /// Locks whose histories are checked for linearizability.
    pub lin_locks: Vec<String>,
    pub resource: Mutex<SimResource>,
    /// One per simulated lock client (index = client number).
    pub client_views: Vec<Mutex<ClientView>>,
    /// One per simulated library user (index = its number).
    pub library_views: Vec<Mutex<LibraryView>>,
    /// Deliberate bugs of the client library (negative controls).
    pub client_bugs: raftlock::client::ClientBugs,
    /// Deliberate bugs of the request layer (negative controls).
    pub gateway_bugs: raftlock::gateway::GatewayBugs,
    /// The admin credential the lowest-id node bootstraps the cluster
    /// with (production writes it to `admin.token`); clients' own
    /// credentials are created with it (`credentials.rs`).
    pub admin: Bearer,
    /// Deliberate bug of the nodes' door (a negative control): any secret
    /// passes for a known id.
    pub skip_secret_check: bool,
    /// The latest grants any replica applied, for the intruder to aim at
    /// (a perfect guesser of session ids and tokens).
    pub recent_grants: Mutex<VecDeque<Grant>>,
}

/// Grants kept in `Shared::recent_grants`.
pub const RECENT_GRANTS_MAX: usize = 64;

/// The `Authorization` value a client sends with `bearer`.
pub fn authorization(bearer: &Bearer) -> String {
    format!("Bearer {}", bearer.encode())
}

/// The admin credential of every run: fixed, so that making it draws
/// nothing from the seed (the Raft-only scenarios, which never use it,
/// keep their seeds' meaning).
pub fn sim_admin() -> Bearer {
    Bearer::from_parts(1, [0xad; raftlock::credential::SECRET_BYTES])
}

/// A credential drawn from the run's seed.
pub fn random_bearer() -> Bearer {
    use rand::Rng;
    let mut rng = madsim::rand::thread_rng();
    let mut secret = [0u8; raftlock::credential::SECRET_BYTES];
    rng.fill(&mut secret[..]);
    Bearer::from_parts(rng.gen(), secret)
}

#[derive(Debug, Default)]
pub struct ClientStats {
    pub committed: u64,
    pub reads: u64,
    /// Invocation time of the latest proposal that committed.
    pub last_commit_invoked: Option<Duration>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn elapsed(&self) -> Duration {
        std::time::Instant::now().duration_since(self.start)
    }

    /// A checked call is sent now: it is open (ambiguous if the run ends
    /// first) until `lin_complete`.
    pub fn lin_invoke(&self, key: CallKey, lock_name: &str, op: lin::Op) -> lin::Event {
        let event = lin::Event {
            lock: lock_name.to_string(),
            op,
            invoked: self.elapsed().as_nanos() as u64,
            completed: 0,
            outcome: lin::Outcome::Unknown,
        };
        lock(&self.checker)
            .locks
            .history
            .invoked(key, event.clone());
        event
    }

    /// A checked call's answer came now (`Unknown`: it may or may not have
    /// taken effect).
    pub fn lin_complete(&self, key: CallKey, mut event: lin::Event, outcome: lin::Outcome) {
        event.completed = self.elapsed().as_nanos() as u64;
        event.outcome = outcome;
        lock(&self.checker)
            .locks
            .history
            .completed(key, event, &self.lin_locks);
    }
}

/// A lock query's answer as the history records it: holders by session.
pub fn holders_seen(info: &raftlock::lock::LockInfo) -> lin::Outcome {
    let mut holders: Vec<_> = info.holders.iter().map(|h| (h.session, h.token)).collect();
    holders.sort();
    lin::Outcome::Holders(holders)
}

/// The protected resource: accepts a write only with a token at least the
/// highest it has seen (`FenceVerifier`), unless the negative control
/// turned the check off.
pub struct SimResource {
    verifier: FenceVerifier,
    pub check_tokens: bool,
    pub stale_rejected: u64,
}

impl SimResource {
    pub fn new(check_tokens: bool) -> Self {
        SimResource {
            verifier: FenceVerifier::default(),
            check_tokens,
            stale_rejected: 0,
        }
    }
}

/// A write to the resource; true if accepted.
pub fn write_resource(shared: &Shared, resource: &str, token: Token, client: u64) -> bool {
    let accepted = {
        let mut r = lock(&shared.resource);
        let stale = r.check_tokens && r.verifier.check(resource, token).is_err();
        r.stale_rejected += u64::from(stale);
        !stale
    };
    let mut checker = lock(&shared.checker);
    checker.now = shared.elapsed();
    use crate::trace::V;
    let kind = if accepted {
        "resource_accept"
    } else {
        "resource_reject"
    };
    let fields = [("resource", V::S(resource)), ("token", V::N(token))];
    checker.trace_event(client, kind, &fields);
    if accepted {
        checker.on_resource_write(resource, token, client);
    }
    accepted
}

/// Per-client facts the supervisor reads (to aim GC pauses).
#[derive(Clone, Debug, Default)]
pub struct ClientView {
    /// Holding a fenced lock with a write pending.
    pub working: bool,
}

/// What the supervisor reads of a library client (to aim pauses).
#[derive(Clone, Debug, Default)]
pub struct LibraryView {
    /// An acquire is waiting in a queue.
    pub waiting: bool,
}

pub fn lock_view(shared: &Shared, k: u64) -> std::sync::MutexGuard<'_, ClientView> {
    let views = &shared.client_views;
    lock(&views[k as usize])
}
