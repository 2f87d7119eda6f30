//! What the supervisor, the nodes and the clients of one run share: the
//! checker, the clocks, the protected resource, the views the supervisor
//! aims faults by. A leaf module, so that the node driver (`cluster.rs`)
//! and the clients depend on it and not on each other.

use crate::checker::Checker;
use crate::clock::Clock;
use raftlock::actor::NodeId;
use raftlock::lock::fence::FenceVerifier;
use raftlock::lock::{LockConfig, Token};
use raftlock::raft::{self, Membership};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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
