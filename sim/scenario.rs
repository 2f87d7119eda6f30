//! Scenarios: a cluster size, the faults the seed may pick from, a fault
//! phase, and a liveness phase after every fault is healed. Clock drift is
//! the exception: real clocks keep drifting, so it stays through liveness.

use crate::checker::{Checker, Violation};
use crate::clock::Clock;
use crate::cluster::{self, run_client, run_node, CLIENT_ADDR};
use crate::http_client::{http_addr, run_http_client, HTTP_ID_BASE};
use crate::library_client::{library_addr, run_library_client, LIBRARY_ID_BASE};
use crate::lock_client::{self, run_lock_client, CLIENT_ID_BASE};
use crate::shared::{
    lock, lock_view, ClientView, Control, LibraryView, Shared, SimResource, TightLimits,
    LIN_TRY_LOCKS, LIN_WAIT_LOCK,
};
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use madsim::time::sleep;
use raftlock::actor::NodeId;
use raftlock::lock::{LockConfig, LockMachine};
use raftlock::raft::Recorder;
use raftlock::raft::{self, Membership, Role};
use raftlock::storage::raft_store::JOURNAL_TMP_FILE;
use raftlock::storage::{Dir, SimDisk};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// After faults heal, a leader must be elected and a new entry committed
/// within this much simulated time.
pub const LIVENESS_BOUND_MS: u64 = 10_000;
/// How long `CrashMidWrite` waits for a node in the middle of a write.
const MID_WRITE_POLL_US: u64 = 100;
const MID_WRITE_POLLS_MAX: u32 = 20_000;
/// Largest clock drift a node may get, in parts per million (5%).
pub const CLOCK_DRIFT_PPM_MAX: u64 = 50_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Crash,
    Partition,
    OneWay,
    IsolateLeader,
    Loss,
    Latency,
    Pause,
    ClockDrift,
    TransferLeader,
    /// Removes a random voter (when more than three), through the leader.
    RemoveVoter,
    /// Waits for a node caught between a write and its fsync (a compaction
    /// in progress, preferably) and crashes it right then.
    CrashMidWrite,
    /// Pauses a lock client, preferably one about to write to the fenced
    /// resource, for longer than its session TTL: the GC-pause case.
    PauseClient,
    /// Cuts a lock client off from every node for a while.
    IsolateClient,
}

/// What runs against the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The Raft checks: a client proposing opaque commands and reading.
    Raft,
    /// The lock service, with `clients` session clients (the session
    /// actor driven directly), `library` users of the client library and
    /// `http` users of the HTTP API.
    Locks {
        clients: u64,
        library: u64,
        http: u64,
    },
}

/// Deliberate mistakes for the lock checkers' negative controls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockControls {
    /// The protected resource accepts any token.
    pub unfenced_resource: bool,
    /// Cluster and clients forget the drift bound (ρ = 0) while clocks
    /// still drift.
    pub no_drift_margin: bool,
    /// The lock machine executes retried requests again.
    pub skip_dedup: bool,
    /// The lock machine forgets its token counter on restore.
    pub reset_tokens_on_restore: bool,
    /// The history leaves out completed releases (the linearizability
    /// check must still fail, ambiguous open calls notwithstanding).
    pub drop_completed_releases: bool,
    /// The lock machine answers a re-acquire in another mode with the grant
    /// held (the hole of issue 11: two exclusive believers).
    pub reacquire_ignores_mode: bool,
    /// The client library makes a guard's lost-watch after the step that
    /// granted it (a grant after the lease's end is never reported lost).
    pub late_grant_never_lost: bool,
    /// The request layer answers a wait with any grant of its session and
    /// lock (the hole of issue 11: a replayed grant's old token).
    pub match_grants_by_name: bool,
    /// The lock machine lets any credential use any session (the hole of
    /// issue 13: guessed ids).
    pub skip_ownership: bool,
    /// The nodes' door takes any secret for a known credential id.
    pub skip_secret_check: bool,
}

pub const ALL_FAULTS: &[Fault] = &[
    Fault::Crash,
    Fault::Partition,
    Fault::OneWay,
    Fault::IsolateLeader,
    Fault::Loss,
    Fault::Latency,
    Fault::Pause,
    Fault::ClockDrift,
    Fault::TransferLeader,
    Fault::CrashMidWrite,
];

#[derive(Clone, Debug)]
pub struct Scenario {
    pub nodes: u64,
    pub faults: &'static [Fault],
    pub fault_phase: Duration,
    pub bugs: raft::config::Bugs,
    /// Applied entries before a replica snapshots and compacts its log.
    pub snapshot_threshold_entries: u64,
    /// Bytes per InstallSnapshot chunk (small values force many chunks).
    pub snapshot_chunk_bytes: usize,
    /// Nodes outside the initial configuration; they ask to join.
    pub spare_nodes: u64,
    pub workload: Workload,
    pub lock_controls: LockControls,
    /// The bounds scaled down so a run reaches them (`TightLimits`).
    pub tight_limits: bool,
}

impl Scenario {
    /// How long after faults heal the liveness phase waits: longer where
    /// a client's calls are long (a tight-limits run's long waits), since
    /// one begun as the cluster settles may be followed by another.
    pub fn liveness_bound(&self) -> Duration {
        let bound = Duration::from_millis(LIVENESS_BOUND_MS);
        match self.tight_limits {
            true => bound + 2 * TightLimits::longest_call(),
            false => bound,
        }
    }
}

/// The lock service's settings in simulation: the drift bound covers the
/// largest drift the simulator gives any clock.
pub fn lock_config(controls: LockControls, tight: bool) -> LockConfig {
    let mut limits = raftlock::lock::Limits::default();
    if tight {
        limits.ttl_ms_min = TightLimits::SHORT_TTL_MS;
        limits.file_bytes_max = TightLimits::FILE_BYTES_MAX;
    }
    LockConfig {
        limits,
        drift_ppm: if controls.no_drift_margin {
            0
        } else {
            CLOCK_DRIFT_PPM_MAX as u32
        },
        lock_delay: Duration::from_millis(500),
        bugs: raftlock::lock::LockBugs {
            skip_dedup: controls.skip_dedup,
            reset_tokens_on_restore: controls.reset_tokens_on_restore,
            reacquire_ignores_mode: controls.reacquire_ignores_mode,
            skip_ownership: controls.skip_ownership,
        },
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub violation: Option<Violation>,
    pub trace_hash: u64,
    pub sim_time: Duration,
    pub committed: u64,
    pub leaders: u64,
    pub faults: u64,
    pub crashes_mid_write: u64,
    pub crashes_mid_compaction: u64,
    pub reads: u64,
    pub transfers: u64,
    pub stats: crate::checker::Stats,
    pub locks: LockStats,
    /// The event trace, if this run recorded one.
    pub trace: Option<crate::trace::Trace>,
}

#[derive(Debug, Default)]
pub struct LockStats {
    pub grants: u64,
    pub requests: u64,
    pub writes_accepted: u64,
    pub stale_writes_rejected: u64,
    pub expiries_checked: u64,
    pub linearizability_ops: u64,
    /// Checked calls still unanswered when the run ended (ambiguous).
    pub calls_open_at_end: u64,
    /// Checked calls answered definitely, by front end (`FRONT_ENDS`).
    pub lin_definite: [u64; 3],
    pub client_pauses_past_ttl: u64,
    /// Grants and holds the clients' side checker looked at.
    pub beliefs_checked: u64,
    pub guards_told_lost: u64,
    /// Calls HTTP-style clients made, and those they gave up on.
    pub http_calls: u64,
    pub http_given_up: u64,
    /// The intruder's calls refused, and credentials revoked in use.
    pub intrusions_refused: u64,
    pub revocations: u64,
}

fn raft_config(scenario: &Scenario) -> raft::Config {
    let config = raft::Config {
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(30),
        bugs: scenario.bugs.clone(),
        snapshot_threshold_entries: scenario.snapshot_threshold_entries,
        snapshot_chunk_bytes: scenario.snapshot_chunk_bytes,
        ..raft::Config::default()
    };
    if !scenario.tight_limits {
        return config;
    }
    raft::Config {
        pending_proposals_max: TightLimits::PENDING_PROPOSALS_MAX,
        entry_bytes_max: TightLimits::ENTRY_BYTES_MAX,
        append_bytes_max: TightLimits::APPEND_BYTES_MAX,
        inflight_bytes_max: TightLimits::INFLIGHT_BYTES_MAX,
        snapshot_threshold_bytes: TightLimits::SNAPSHOT_THRESHOLD_BYTES,
        log_bytes_max: TightLimits::LOG_BYTES_MAX,
        snapshot_chunk_bytes: TightLimits::SNAPSHOT_CHUNK_BYTES,
        ..config
    }
}

/// `run_seed`, recording the event trace (`crate::trace`) in the outcome.
pub fn run_seed_traced(scenario: &Scenario, seed: u64) -> Outcome {
    crate::trace::set_replaying(true);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(scenario, seed)));
    crate::trace::set_replaying(false);
    outcome.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Runs one seed of a scenario to completion in a fresh madsim runtime.
pub fn run_seed(scenario: &Scenario, seed: u64) -> Outcome {
    let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.set_time_limit(scenario.fault_phase + scenario.liveness_bound() + Duration::from_secs(60));
    let scenario = scenario.clone();
    rt.block_on(async move { supervise(scenario).await })
}

struct Faults {
    handle: Handle,
    net: Arc<NetSim>,
    ids: BTreeMap<NodeId, madsim::runtime::NodeHandle>,
    disks: BTreeMap<NodeId, SimDisk>,
    down: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    /// Reference counts of clogged links, so overlapping partitions heal right.
    clogs: BTreeMap<(NodeId, NodeId), u32>,
    heals: Vec<(Duration, Heal)>,
    injected: u64,
    /// Crashes that caught unsynced bytes on the disk (lost or torn).
    crashes_mid_write: u64,
    clients: BTreeMap<u64, madsim::runtime::NodeHandle>,
    /// Client nodes no fault aims at (HTTP users, the Raft workload's
    /// client), kept to be released at the end.
    others: Vec<madsim::runtime::NodeHandle>,
    client_pauses_past_ttl: u64,
    /// Of those, crashes while a compacted journal was not yet renamed.
    crashes_mid_compaction: u64,
}

#[derive(Debug)]
enum Heal {
    Restart(NodeId),
    Resume(NodeId),
    ResumeClient(u64),
    UnclogRaw(Vec<(madsim::task::NodeId, madsim::task::NodeId)>),
    Unclog(Vec<(NodeId, NodeId)>),
    Loss,
    Latency,
}

impl Faults {
    fn clog(&mut self, links: &[(NodeId, NodeId)]) {
        for &(a, b) in links {
            let c = self.clogs.entry((a, b)).or_default();
            if *c == 0 {
                self.net.clog_link(self.ids[&a].id(), self.ids[&b].id());
            }
            *c += 1;
        }
    }

    fn unclog(&mut self, links: &[(NodeId, NodeId)]) {
        for &(a, b) in links {
            if let Some(c) = self.clogs.get_mut(&(a, b)) {
                *c -= 1;
                if *c == 0 {
                    self.clogs.remove(&(a, b));
                    self.net.unclog_link(self.ids[&a].id(), self.ids[&b].id());
                }
            }
        }
    }

    fn apply(&mut self, heal: Heal) {
        match heal {
            Heal::Restart(n) => {
                if self.down.remove(&n) {
                    self.handle.restart(self.ids[&n].id());
                }
            }
            Heal::UnclogRaw(links) => {
                for (a, b) in links {
                    self.net.unclog_link(a, b);
                }
            }
            Heal::ResumeClient(k) => {
                if let Some(node) = self.clients.get(&k) {
                    self.handle.resume(node.id());
                }
            }
            Heal::Resume(n) => {
                if self.paused.remove(&n) {
                    self.handle.resume(self.ids[&n].id());
                }
            }
            Heal::Unclog(links) => self.unclog(&links),
            Heal::Loss => self.net.update_config(|c| c.packet_loss_rate = 0.0),
            Heal::Latency => {
                let normal = madsim::net::Config::default().send_latency;
                self.net.update_config(|c| c.send_latency = normal);
            }
        }
    }

    /// Applies the heals due by `now`; returns what they were (for the trace).
    fn heal_due(&mut self, now: Duration) -> Vec<String> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heals)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.heals = later;
        due.into_iter()
            .map(|(_, h)| {
                let what = format!("{h:?}");
                self.apply(h);
                what
            })
            .collect()
    }

    fn heal_all(&mut self) -> Vec<String> {
        self.heal_due(Duration::MAX)
    }
}

fn symmetric(a: &[NodeId], b: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    let mut links = Vec::new();
    for &x in a {
        for &y in b {
            links.push((x, y));
            links.push((y, x));
        }
    }
    links
}

async fn supervise(scenario: Scenario) -> Outcome {
    let mut run = Run::start(scenario);
    run.fault_phase().await;
    run.liveness_phase().await;
    let outcome = run.outcome();
    run.release();
    outcome
}

/// One run's supervisor: what it set up, and the faults it injects and
/// heals.
struct Run {
    scenario: Scenario,
    handle: Handle,
    shared: Arc<Shared>,
    faults: Faults,
    node_ids: Vec<NodeId>,
    lock_clients: u64,
    library_clients: u64,
    http_clients: u64,
    /// When the liveness phase healed every fault.
    healed_at: Duration,
}

impl Run {
    /// Clocks, the shared state, the nodes and the clients.
    fn start(scenario: Scenario) -> Run {
        let handle = Handle::current();
        let mut rng = madsim::rand::thread_rng();
        let node_ids: Vec<NodeId> = (1..=scenario.nodes + scenario.spare_nodes).collect();
        let bootstrap = Membership::voters_at(
            (1..=scenario.nodes).map(|id| (id, cluster::addr_of(id).to_string())),
        );
        let (lock_clients, library_clients, http_clients) = match scenario.workload {
            Workload::Raft => (0, 0, 0),
            Workload::Locks {
                clients,
                library,
                http,
            } => (clients, library, http),
        };
        let mut clocks: BTreeMap<NodeId, Clock> = node_ids
            .iter()
            .map(|&id| {
                let offset = rng.gen_range(0..1_000_000_000_000u64);
                (id, Clock::new(offset, 1.0))
            })
            .collect();
        // Clients' clocks are skewed and drift too, within the bound, for
        // the whole run (the lease checker converts their readings to real time).
        let client_ids = (1..=lock_clients)
            .map(|k| CLIENT_ID_BASE + k)
            .chain((1..=library_clients).map(|k| LIBRARY_ID_BASE + k))
            .chain((1..=http_clients).map(|k| HTTP_ID_BASE + k));
        for id in client_ids {
            let offset = rng.gen_range(0..1_000_000_000_000u64);
            let ppm = rng.gen_range(0..=CLOCK_DRIFT_PPM_MAX) as f64;
            let rate = if rng.gen_bool(0.5) {
                1.0 + ppm / 1e6
            } else {
                1.0 - ppm / 1e6
            };
            clocks.insert(id, Clock::new(offset, rate));
        }
        let shared = Arc::new(Shared {
            checker: Mutex::new({
                let mut c = Checker::new(bootstrap.clone());
                c.trace = crate::trace::on().then(crate::trace::Trace::default);
                c.locks.history.drop_completed_releases =
                    scenario.lock_controls.drop_completed_releases;
                c
            }),
            bootstrap,
            clocks: Mutex::new(clocks),
            client: Mutex::new(Default::default()),
            start: std::time::Instant::now(),
            addrs: node_ids
                .iter()
                .map(|&id| (id, cluster::addr_of(id)))
                .collect(),
            config: raft_config(&scenario),
            controls: Mutex::new(BTreeMap::new()),
            transfers_done: Mutex::new(0),
            lock_config: lock_config(scenario.lock_controls, scenario.tight_limits),
            tight_limits: scenario.tight_limits,
            lock_workload: lock_clients > 0,
            lin_locks: LIN_TRY_LOCKS
                .iter()
                .chain([&LIN_WAIT_LOCK])
                .map(|s| s.to_string())
                .collect(),
            resource: Mutex::new(SimResource::new(!scenario.lock_controls.unfenced_resource)),
            client_views: (0..=lock_clients)
                .map(|_| Mutex::new(ClientView::default()))
                .collect(),
            library_views: (0..=library_clients)
                .map(|_| Mutex::new(LibraryView::default()))
                .collect(),
            client_bugs: raftlock::client::ClientBugs {
                late_grant_never_lost: scenario.lock_controls.late_grant_never_lost,
            },
            gateway_bugs: raftlock::gateway::GatewayBugs {
                match_grants_by_name: scenario.lock_controls.match_grants_by_name,
            },
            admin: crate::shared::sim_admin(),
            skip_secret_check: scenario.lock_controls.skip_secret_check,
            recent_grants: Mutex::new(Default::default()),
        });
        if crate::trace::on() {
            // Each node's and client's clock: local reading at start and drift.
            let clocks: Vec<(NodeId, u64, f64)> = lock(&shared.clocks)
                .iter()
                .map(|(&id, c)| (id, c.local(Duration::ZERO).as_micros(), c.rate()))
                .collect();
            let mut checker = lock(&shared.checker);
            for (id, local_us, rate) in clocks {
                let ppm = ((rate - 1.0) * 1e6).round() as i64;
                checker.trace_event(
                    id,
                    "clock",
                    &[
                        ("local_us", crate::trace::V::N(local_us)),
                        ("drift_ppm", crate::trace::V::S(&ppm.to_string())),
                    ],
                );
            }
        }
        let mut faults = Faults {
            handle: handle.clone(),
            net: NetSim::current(),
            ids: BTreeMap::new(),
            disks: BTreeMap::new(),
            down: BTreeSet::new(),
            paused: BTreeSet::new(),
            clogs: BTreeMap::new(),
            heals: Vec::new(),
            injected: 0,
            crashes_mid_write: 0,
            crashes_mid_compaction: 0,
            clients: BTreeMap::new(),
            others: Vec::new(),
            client_pauses_past_ttl: 0,
        };
        for &id in &node_ids {
            let disk = SimDisk::new();
            faults.disks.insert(id, disk.clone());
            let shared = shared.clone();
            let node = handle
                .create_node()
                .name(format!("n{id}"))
                .ip(cluster::addr_of(id).ip())
                .init(move || {
                    let (disk, shared) = (disk.clone(), shared.clone());
                    async move {
                        match shared.lock_workload {
                            true => run_node::<LockMachine>(id, disk, shared).await,
                            false => run_node::<Recorder>(id, disk, shared).await,
                        }
                    }
                })
                .build();
            faults.ids.insert(id, node);
        }
        if lock_clients == 0 {
            let client_shared = shared.clone();
            let node = handle
                .create_node()
                .name("client")
                .ip(CLIENT_ADDR.ip())
                .init(move || run_client(client_shared.clone()))
                .build();
            faults.others.push(node);
        }
        for k in 1..=lock_clients {
            let client_shared = shared.clone();
            let node = handle
                .create_node()
                .name(format!("client{k}"))
                .ip(lock_client::client_addr(k).ip())
                .init(move || run_lock_client(k, client_shared.clone()))
                .build();
            faults.clients.insert(k, node);
        }
        for k in 1..=library_clients {
            let client_shared = shared.clone();
            let node = handle
                .create_node()
                .name(format!("library{k}"))
                .ip(library_addr(k).ip())
                .init(move || run_library_client(k, client_shared.clone()))
                .build();
            faults.clients.insert(LIBRARY_ID_BASE + k, node);
        }
        if lock_clients > 0 {
            let client_shared = shared.clone();
            let node = handle
                .create_node()
                .name("intruder")
                .ip(crate::intruder::intruder_addr().ip())
                .init(move || crate::intruder::run_intruder(client_shared.clone()))
                .build();
            faults.others.push(node);
        }
        for k in 1..=http_clients {
            let client_shared = shared.clone();
            let node = handle
                .create_node()
                .name(format!("http{k}"))
                .ip(http_addr(k).ip())
                .init(move || run_http_client(k, client_shared.clone()))
                .build();
            faults.others.push(node);
        }
        Run {
            scenario,
            handle,
            shared,
            faults,
            node_ids,
            lock_clients,
            library_clients,
            http_clients,
            healed_at: Duration::ZERO,
        }
    }

    /// The fault phase: the seed picks what breaks, where, and for how long.
    async fn fault_phase(&mut self) {
        let shared = self.shared.clone();
        let (node_ids, scenario) = (self.node_ids.clone(), self.scenario.clone());
        let mut rng = madsim::rand::thread_rng();
        while shared.elapsed() < scenario.fault_phase && !scenario.faults.is_empty() {
            sleep(Duration::from_millis(rng.gen_range(50..1500))).await;
            let now = shared.elapsed();
            let faults = &mut self.faults;
            let healed = faults.heal_due(now);
            trace_heals(&shared, now, &healed);
            if lock(&shared.checker).first_violation().is_some() {
                break;
            }
            let Some(&fault) = scenario.faults.choose(&mut rng) else {
                break;
            };
            let up: Vec<NodeId> = node_ids
                .iter()
                .copied()
                .filter(|n| !faults.down.contains(n) && !faults.paused.contains(n))
                .collect();
            let heal_after = Duration::from_millis(rng.gen_range(200..4000));
            let injected_before = faults.heals.len();
            self.inject(fault, now, heal_after, &up).await;
            let faults = &mut self.faults;
            faults.injected += (faults.heals.len() - injected_before) as u64;
            if faults.heals.len() > injected_before || fault == Fault::ClockDrift {
                use crate::trace::V;
                let name = format!("{fault:?}");
                let added = &faults.heals[injected_before..];
                let heals: Vec<String> = added
                    .iter()
                    .map(|(at, h)| format!("{h:?} at {at:?}"))
                    .collect();
                // Until the last of its heals (a clock drift is never undone).
                let until = added.iter().map(|(at, _)| *at).max().unwrap_or(now);
                let mut checker = lock(&shared.checker);
                checker.now = now;
                checker.trace_event(
                    0,
                    "fault",
                    &[
                        ("fault", V::S(&name)),
                        ("heals", V::S(&heals.join("; "))),
                        ("until_us", V::N(until.as_micros() as u64)),
                    ],
                );
            }
        }
    }

    /// Injects one fault of kind `fault` at `now` (nothing, when it has no
    /// target).
    async fn inject(&mut self, fault: Fault, now: Duration, heal_after: Duration, up: &[NodeId]) {
        let (lock_clients, library_clients) = (self.lock_clients, self.library_clients);
        let (shared, handle, node_ids) = (self.shared.clone(), &self.handle, &self.node_ids);
        let faults = &mut self.faults;
        let mut rng = madsim::rand::thread_rng();
        match fault {
            Fault::Crash => {
                let Some(&n) = up.choose(&mut rng) else {
                    return;
                };
                handle.kill(faults.ids[&n].id());
                let report = faults.disks[&n].crash(&mut rng, true);
                if report.bytes_lost + report.bytes_kept_torn > 0 {
                    faults.crashes_mid_write += 1;
                }
                faults.down.insert(n);
                faults.heals.push((now + heal_after, Heal::Restart(n)));
            }
            Fault::CrashMidWrite => {
                let mut victim = None;
                for _ in 0..MID_WRITE_POLLS_MAX {
                    sleep(Duration::from_micros(MID_WRITE_POLL_US)).await;
                    let candidates: Vec<NodeId> = up
                        .iter()
                        .copied()
                        .filter(|n| {
                            !faults.down.contains(n) && faults.disks[n].unsynced_bytes() > 0
                        })
                        .collect();
                    let compacting = candidates.iter().copied().find(|n| {
                        faults.disks[n]
                            .read(JOURNAL_TMP_FILE)
                            .ok()
                            .flatten()
                            .is_some()
                    });
                    victim = compacting.or(candidates.first().copied());
                    if victim.is_some() {
                        if compacting.is_some() {
                            faults.crashes_mid_compaction += 1;
                        }
                        break;
                    }
                }
                let Some(n) = victim else { return };
                handle.kill(faults.ids[&n].id());
                faults.disks[&n].crash(&mut rng, true);
                faults.crashes_mid_write += 1;
                faults.down.insert(n);
                faults.heals.push((now + heal_after, Heal::Restart(n)));
            }
            Fault::IsolateClient => {
                let Some((_, node)) = faults
                    .clients
                    .iter()
                    .nth(rng.gen_range(0..faults.clients.len().max(1)))
                else {
                    return;
                };
                let client = node.id();
                let links: Vec<(madsim::task::NodeId, madsim::task::NodeId)> = faults
                    .ids
                    .values()
                    .flat_map(|n| [(client, n.id()), (n.id(), client)])
                    .collect();
                for &(a, b) in &links {
                    faults.net.clog_link(a, b);
                }
                faults
                    .heals
                    .push((now + heal_after, Heal::UnclogRaw(links)));
            }
            Fault::PauseClient => {
                // A session client between its lease check and its write
                // (the GC pause), or a library user waiting for a grant (a
                // grant that arrives after its lease ended).
                let working: Vec<u64> = (1..=lock_clients)
                    .filter(|&k| lock_view(&shared, k).working)
                    .collect();
                let waiting: Vec<u64> = (1..=library_clients)
                    .filter(|&k| lock(&shared.library_views[k as usize]).waiting)
                    .map(|k| LIBRARY_ID_BASE + k)
                    .collect();
                let aimed = if waiting.is_empty() || (!working.is_empty() && rng.gen_bool(0.5)) {
                    working.choose(&mut rng)
                } else {
                    waiting.choose(&mut rng)
                };
                let Some(&k) = aimed.or(faults.clients.keys().next()) else {
                    return;
                };
                // Longer than the TTL, the drift margin and the lock-delay:
                // the session expires and someone else may take the lock.
                let ttl = lock_client::SIM_TTL_MS;
                let pause = Duration::from_millis(rng.gen_range(ttl * 3 / 2..ttl * 3));
                let Some(node) = faults.clients.get(&k) else {
                    return;
                };
                handle.pause(node.id());
                faults.client_pauses_past_ttl += 1;
                faults.heals.push((now + pause, Heal::ResumeClient(k)));
            }
            Fault::Pause => {
                let Some(&n) = up.choose(&mut rng) else {
                    return;
                };
                handle.pause(faults.ids[&n].id());
                faults.paused.insert(n);
                faults.heals.push((now + heal_after, Heal::Resume(n)));
            }
            Fault::Partition => {
                let mut shuffled = node_ids.clone();
                shuffled.shuffle(&mut rng);
                let minority = rng.gen_range(1..=(node_ids.len() - 1) / 2);
                let links = symmetric(&shuffled[..minority], &shuffled[minority..]);
                faults.clog(&links);
                faults.heals.push((now + heal_after, Heal::Unclog(links)));
            }
            Fault::IsolateLeader => {
                let leader = lock(&shared.checker).current_leader();
                let Some(leader) = leader else { return };
                let others: Vec<NodeId> =
                    node_ids.iter().copied().filter(|&n| n != leader).collect();
                let links = symmetric(&[leader], &others);
                faults.clog(&links);
                faults.heals.push((now + heal_after, Heal::Unclog(links)));
            }
            Fault::OneWay => {
                let a = node_ids[rng.gen_range(0..node_ids.len())];
                let links: Vec<(NodeId, NodeId)> = if rng.gen_bool(0.5) {
                    // One node can send but not hear (or the reverse).
                    let out = rng.gen_bool(0.5);
                    node_ids
                        .iter()
                        .filter(|&&b| b != a)
                        .map(|&b| if out { (a, b) } else { (b, a) })
                        .collect()
                } else {
                    let b = node_ids[rng.gen_range(0..node_ids.len())];
                    if a == b {
                        return;
                    } else {
                        vec![(a, b)]
                    }
                };
                faults.clog(&links);
                faults.heals.push((now + heal_after, Heal::Unclog(links)));
            }
            Fault::Loss => {
                let rate = rng.gen_range(0.01..0.3);
                faults.net.update_config(|c| c.packet_loss_rate = rate);
                faults.heals.push((now + heal_after, Heal::Loss));
            }
            Fault::Latency => {
                let max = rng.gen_range(10..150);
                faults.net.update_config(|c| {
                    c.send_latency = Duration::from_millis(1)..Duration::from_millis(max)
                });
                faults.heals.push((now + heal_after, Heal::Latency));
            }
            Fault::RemoveVoter => {
                // Keep at least three voters; the removed node (maybe the
                // leader, maybe a dead one) keeps running and asks to rejoin.
                let (leader, voters) = {
                    let checker = lock(&shared.checker);
                    (checker.current_leader(), checker.voters())
                };
                let Some(leader) = leader else { return };
                if voters.len() <= 3 {
                    return;
                }
                let Some(&id) = voters.choose(&mut rng) else {
                    return;
                };
                lock(&shared.controls)
                    .entry(leader)
                    .or_default()
                    .push(Control::RemoveVoter { id });
                faults.injected += 1;
            }
            Fault::TransferLeader => {
                let leader = lock(&shared.checker).current_leader();
                let Some(leader) = leader else { return };
                let others: Vec<NodeId> =
                    node_ids.iter().copied().filter(|&n| n != leader).collect();
                let Some(&to) = others.choose(&mut rng) else {
                    return;
                };
                lock(&shared.controls)
                    .entry(leader)
                    .or_default()
                    .push(Control::TransferLeadership { to });
                faults.injected += 1;
            }
            Fault::ClockDrift => {
                let n = node_ids[rng.gen_range(0..node_ids.len())];
                let ppm = rng.gen_range(0..=CLOCK_DRIFT_PPM_MAX) as f64;
                let rate = if rng.gen_bool(0.5) {
                    1.0 + ppm / 1e6
                } else {
                    1.0 - ppm / 1e6
                };
                if let Some(c) = lock(&shared.clocks).get_mut(&n) {
                    c.set_rate(now, rate);
                }
                faults.injected += 1;
                let ppm = ((rate - 1.0) * 1e6).round() as i64;
                let mut checker = lock(&shared.checker);
                checker.now = now;
                checker.trace_event(
                    n,
                    "clock",
                    &[("drift_ppm", crate::trace::V::S(&ppm.to_string()))],
                );
            }
        }
    }

    /// The liveness phase: heal everything; a leader must commit a new
    /// entry, every client's waits end, every request is answered.
    async fn liveness_phase(&mut self) {
        let (lock_clients, http_clients) = (self.lock_clients, self.http_clients);
        let shared = self.shared.clone();
        let faults = &mut self.faults;
        let healed = faults.heal_all();
        let healed_at = shared.elapsed();
        trace_heals(&shared, healed_at, &healed);
        let bound = self.scenario.liveness_bound();
        loop {
            sleep(Duration::from_millis(100)).await;
            if lock(&shared.checker).first_violation().is_some() {
                break;
            }
            if lock_clients > 0 {
                // Every client's waits end and every client gets a lock again.
                let clients: Vec<u64> = (1..=lock_clients).map(|k| CLIENT_ID_BASE + k).collect();
                let mut checker = lock(&shared.checker);
                checker.now = shared.elapsed();
                let http: Vec<u64> = (1..=http_clients).map(|k| HTTP_ID_BASE + k).collect();
                let requests_done = checker.check_requests(&http, healed_at, bound);
                if checker.check_waiters(&clients, healed_at, bound) && requests_done {
                    break;
                }
                if checker.first_violation().is_some() {
                    break;
                }
                continue;
            }
            let stats = lock(&shared.client);
            if stats.last_commit_invoked.is_some_and(|t| t >= healed_at) {
                break;
            }
            drop(stats);
            if shared.elapsed() > healed_at + bound {
                let mut checker = lock(&shared.checker);
                let leader = checker.current_leader();
                checker.fail_liveness(format!(
                    "no new entry committed within {bound:?} after faults healed at {healed_at:?} (leader: {leader:?})"
                ));
                break;
            }
        }
        self.healed_at = healed_at;
    }

    /// Frees what a run leaves behind. madsim keeps every node's tasks and
    /// its init closure (which holds `Shared` and the node's disk) after
    /// the runtime is dropped: a soak grew by 10 MB a seed of
    /// `locks_limits_3` until the OOM killer stopped it. Killing the nodes
    /// drops their tasks; the disks and the checker are emptied in place.
    fn release(&mut self) {
        let faults = &self.faults;
        let nodes = faults.ids.values().chain(faults.clients.values());
        let nodes = nodes.chain(faults.others.iter());
        for node in nodes {
            self.handle.kill(node.id());
        }
        for disk in self.faults.disks.values() {
            disk.discard();
        }
        *lock(&self.shared.checker) = Checker::default();
    }

    /// What the checkers found and counted.
    fn outcome(&mut self) -> Outcome {
        let lock_clients = self.lock_clients;
        let shared = self.shared.clone();
        let faults = &mut self.faults;
        let mut checker = lock(&shared.checker);
        checker.now = shared.elapsed();
        checker.finish();
        if lock_clients > 0 {
            checker.finish_locks(&shared.lin_locks);
            checker.trace_event(0, "run_end", &[]);
        }
        let locks = LockStats {
            grants: checker.locks.tokens.grants() as u64,
            requests: checker.locks.once.requests() as u64,
            writes_accepted: checker.locks.writes_accepted,
            stale_writes_rejected: lock(&shared.resource).stale_rejected,
            expiries_checked: checker.locks.leases.expiries_checked,
            linearizability_ops: checker.locks.linearizability_ops,
            calls_open_at_end: checker.locks.history.open_at_end,
            lin_definite: checker.locks.history.definite_by_front_end,
            client_pauses_past_ttl: faults.client_pauses_past_ttl,
            beliefs_checked: checker.locks.beliefs.beliefs_checked,
            guards_told_lost: checker.locks.beliefs.guards_told_lost,
            http_calls: checker.locks.requests.calls,
            http_given_up: checker.locks.requests.given_up,
            intrusions_refused: checker.access.intrusions_refused,
            revocations: checker.access.revocations,
        };
        let (committed, reads) = {
            let client = lock(&shared.client);
            (client.committed, client.reads)
        };
        let transfers = *lock(&shared.transfers_done);
        let outcome = Outcome {
            violation: checker.first_violation().cloned(),
            trace_hash: checker.trace_hash(),
            sim_time: shared.elapsed(),
            committed,
            leaders: checker.stats.leaders_elected,
            faults: faults.injected,
            crashes_mid_write: faults.crashes_mid_write,
            crashes_mid_compaction: faults.crashes_mid_compaction,
            reads,
            transfers,
            stats: checker.stats.clone(),
            locks,
            trace: checker.trace.take(),
        };
        outcome
    }
}

impl Checker {
    /// The leader of the highest term any node currently leads in.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.roles_snapshot()
            .into_iter()
            .filter(|(_, (_, r))| *r == Role::Leader)
            .max_by_key(|(_, (t, _))| *t)
            .map(|(n, _)| n)
    }
}

/// Records heals in the trace, if one is kept.
fn trace_heals(shared: &Shared, now: Duration, healed: &[String]) {
    if healed.is_empty() {
        return;
    }
    let mut checker = lock(&shared.checker);
    if checker.trace.is_none() {
        return;
    }
    checker.now = now;
    for h in healed {
        checker.trace_event(0, "heal", &[("heal", crate::trace::V::S(h))]);
    }
}
