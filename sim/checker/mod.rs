//! The invariant checkers, one file each, fed by the simulation driver as the
//! run goes (not only at the end), so a violation is caught at the step that
//! causes it, with the simulated time at which it happened.

mod access;
mod beliefs;
mod durability;
mod election_safety;
mod exactly_once;
mod fenced_exclusion;
mod leader_completeness;
mod lease_safety;
pub mod lock_history;
mod locks;
mod log_matching;
mod read_linearizability;
mod request_liveness;
mod state_machine_safety;
mod token_order;
mod waiter_liveness;

use raftlock::actor::NodeId;
use raftlock::raft::{
    Effect, Entry, Index, Log, Membership, Message, Payload, PersistOp, Recovered, Role, Term,
};
use std::collections::btree_map::Entry as BTreeEntry;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use access::Access;
pub use beliefs::{self_check as beliefs_self_check, Believed};
pub use durability::Durability;
pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use lock_history::self_check as lock_history_self_check;
pub use locks::LockChecks;
pub use log_matching::LogMatching;
pub use read_linearizability::ReadLinearizability;
pub use state_machine_safety::StateMachineSafety;

/// A broken invariant, with the simulated time it was seen at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: &'static str,
    pub at: Duration,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] at {:?}: {}", self.checker, self.at, self.message)
    }
}

/// A fingerprint of an entry: its term and a hash of its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryId {
    pub term: Term,
    pub digest: u32,
}

impl EntryId {
    pub fn of(entry: &Entry) -> Self {
        let digest = match &entry.payload {
            Payload::Noop => 0,
            Payload::Command(c) => crc32fast::hash(c) | 1,
            Payload::Config(m) => {
                crc32fast::hash(&postcard::to_allocvec(m).unwrap_or_default()) | 2
            }
        };
        EntryId {
            term: entry.term,
            digest,
        }
    }
}

/// What the checkers know of every node and of the whole run.
#[derive(Default)]
pub struct Checker {
    pub now: Duration,
    /// The latest configuration known committed, and its index.
    committed_config: (Index, Membership),
    /// Configurations seen appended to any log after it, by index.
    pending_configs: BTreeMap<Index, Membership>,
    /// Each node's log as the checker mirrors it from persist effects.
    logs: BTreeMap<NodeId, Vec<EntryId>>,
    roles: BTreeMap<NodeId, (Term, Role)>,
    /// Entries known committed: index -> id (from any node's commit index).
    committed: BTreeMap<Index, EntryId>,
    /// The term of the node that first reported each commit: an entry of
    /// an older term may be committed only later, by a later leader, and a
    /// leader of a term in between need not hold it (paper figure 3).
    commit_terms: BTreeMap<Index, Term>,
    election: ElectionSafety,
    matching: LogMatching,
    completeness: LeaderCompleteness,
    state_machine: StateMachineSafety,
    durability: Durability,
    pub reads: ReadLinearizability,
    pub locks: LockChecks,
    pub access: Access,
    violations: Vec<Violation>,
    /// The event trace, when this run records one (`crate::trace`).
    pub trace: Option<crate::trace::Trace>,
    /// Rolling hash of everything observed: equal across two runs of one seed.
    trace_hash: u64,
    pub stats: Stats,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub leaders_elected: u64,
    /// Snapshots persisted (compactions and installs).
    pub snapshots: u64,
    /// InstallSnapshot messages carrying a snapshot's last chunk.
    pub snapshots_sent: u64,
    /// Committed configurations that differ from the one before.
    pub config_changes: u64,
    /// Lock histories too costly to decide within the step bound.
    pub linearizability_inconclusive: u64,
    /// Keepalive entries (`Command::KeepAlives`) carrying more than one
    /// keepalive: the batching path under faults.
    pub shared_keepalive_entries: u64,
    /// What a tight-limits run reached (`scenario::TightLimits`).
    pub limits: LimitsReached,
}

/// How often a run met each bound: a tight-limits scenario fails if one
/// was never met, since then it tested nothing there.
#[derive(Clone, Debug, Default)]
pub struct LimitsReached {
    /// Proposals and reads a node refused `Busy`.
    pub busy: u64,
    /// Forwarded proposals whose entry a snapshot install covered.
    pub applied_by_snapshot: u64,
    /// Proposals refused as larger than an entry may be.
    pub too_large: u64,
    /// Appends accepted with at least half the largest entry's bytes.
    pub large_appends: u64,
    /// One-lock waits answered (granted or timed out) after more than
    /// `LONG_WAIT_TTLS` of their session's TTLs.
    pub long_waits: u64,
}

impl LimitsReached {
    pub fn add(&mut self, other: &LimitsReached) {
        self.busy += other.busy;
        self.applied_by_snapshot += other.applied_by_snapshot;
        self.too_large += other.too_large;
        self.large_appends += other.large_appends;
        self.long_waits += other.long_waits;
    }

    /// The counts, named, for the sweep line.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("Busy refusals", self.busy),
            ("forwards applied by a snapshot", self.applied_by_snapshot),
            ("proposals too large", self.too_large),
            ("large appends accepted", self.large_appends),
            ("one-lock waits over 50 TTLs", self.long_waits),
        ]
    }

    pub fn on_result<T>(&mut self, result: &Result<T, raftlock::raft::RequestError>) {
        use raftlock::raft::RequestError as E;
        match result {
            Err(E::Busy) => self.busy += 1,
            Err(E::AppliedBySnapshot) => self.applied_by_snapshot += 1,
            Err(E::TooLarge { .. }) => self.too_large += 1,
            _ => {}
        }
    }
}

impl Checker {
    pub fn new(bootstrap: Membership) -> Self {
        Checker {
            committed_config: (0, bootstrap),
            ..Default::default()
        }
    }

    /// Voters of the latest configuration known committed.
    pub fn voters(&self) -> Vec<NodeId> {
        self.committed_config.1.voters().collect()
    }

    /// Voter sets an entry may be committed by: the latest committed
    /// configuration and any appended after it (in effect on some node,
    /// thesis 4.1). With single-server changes their majorities overlap.
    fn candidate_voters(&self) -> Vec<Vec<NodeId>> {
        let mut sets = vec![self.voters()];
        for (_, m) in self.pending_configs.range(self.committed_config.0 + 1..) {
            sets.push(m.voters().collect());
        }
        sets
    }

    fn note_committed_config(&mut self, index: Index, membership: &Membership) {
        self.pending_configs = self.pending_configs.split_off(&(index + 1));
        if index > self.committed_config.0 {
            if membership != &self.committed_config.1 {
                self.stats.config_changes += 1;
            }
            self.committed_config = (index, membership.clone());
        }
    }

    /// Adds an event to the trace, if one is recorded; `node` 0 is the
    /// harness.
    pub fn trace_event(&mut self, node: u64, kind: &str, fields: &[(&str, crate::trace::V)]) {
        if let Some(t) = self.trace.as_mut() {
            t.event(self.now, node, kind, fields);
        }
    }

    fn fail(&mut self, checker: &'static str, message: String) {
        use crate::trace::V;
        self.trace_event(
            0,
            "violation",
            &[("checker", V::S(checker)), ("message", V::S(&message))],
        );
        let v = Violation {
            checker,
            at: self.now,
            message,
        };
        if self.violations.len() < 16 {
            self.violations.push(v);
        }
    }

    pub fn first_violation(&self) -> Option<&Violation> {
        self.violations.first()
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    fn mix(&mut self, values: &[u64]) {
        let mut h = crc32fast::Hasher::new_with_initial(self.trace_hash as u32);
        for v in values {
            h.update(&v.to_le_bytes());
        }
        self.trace_hash =
            (self.trace_hash << 17) ^ (self.trace_hash >> 47) ^ u64::from(h.finalize());
    }

    /// A node (re)started with this state recovered from its disk.
    pub fn on_recovered(&mut self, node: NodeId, recovered: &Recovered) {
        let base = recovered.snapshot.as_ref().map_or(0, |s| s.index);
        let log = self.mirror_after_snapshot(base, &recovered.entries);
        self.mix(&[1, node, log.len() as u64, recovered.hard_state.term]);
        if let Err(m) = self.matching.check_log(node, &log) {
            self.fail(LogMatching::NAME, m);
        }
        self.logs.insert(node, log);
        self.roles.remove(&node);
        if let Err(m) = self
            .durability
            .check(&self.committed, &self.logs, &self.candidate_voters())
        {
            self.fail(
                Durability::NAME,
                format!("after node {node} restarted: {m}"),
            );
        }
    }

    /// A node stepped: its effects, and its state after the step.
    pub fn on_step(
        &mut self,
        node: NodeId,
        effects: &[Effect],
        term: Term,
        role: Role,
        commit: Index,
        log: &Log,
    ) {
        for effect in effects {
            if let Effect::Send {
                msg: Message::InstallSnapshot(req),
                ..
            } = effect
            {
                self.stats.snapshots_sent += u64::from(req.done);
            }
            let Effect::Persist { op, .. } = effect else {
                continue;
            };
            let mirror = self.logs.entry(node).or_default();
            match op {
                PersistOp::TruncateFrom(i) => {
                    let i = *i;
                    if let Some(&id) = self.committed.get(&i) {
                        if mirror.get(i as usize - 1) == Some(&id) {
                            let m = format!("node {node} truncates committed entry {i} ({id:?})");
                            self.fail(Durability::NAME, m);
                        }
                    }
                    self.logs.entry(node).or_default().truncate(i as usize - 1);
                }
                PersistOp::Append(entries) => {
                    for e in entries {
                        let mirror = self.logs.entry(node).or_default();
                        if e.index != mirror.len() as u64 + 1 {
                            let m =
                                format!("node {node} appends {} after {}", e.index, mirror.len());
                            self.fail(LogMatching::NAME, m);
                            continue;
                        }
                        mirror.push(EntryId::of(e));
                        if let Payload::Config(m) = &e.payload {
                            if e.index > self.committed_config.0 {
                                self.pending_configs.insert(e.index, m.clone());
                            }
                        }
                        if let Err(m) = self.matching.on_append(node, &self.logs[&node]) {
                            self.fail(LogMatching::NAME, m);
                        }
                    }
                }
                PersistOp::HardState(_) => {}
                PersistOp::Snapshot { snapshot, tail, .. } => {
                    self.stats.snapshots += 1;
                    self.note_committed_config(snapshot.index, &snapshot.membership);
                    // A snapshot covers applied, hence committed, entries; the
                    // step that committed them may be this one, so record them
                    // from the node's log before it is compacted away.
                    let before = self.logs.get(&node).cloned().unwrap_or_default();
                    for index in 1..=snapshot.index {
                        let Some(&id) = before.get(index as usize - 1) else {
                            continue;
                        };
                        if let BTreeEntry::Vacant(slot) = self.committed.entry(index) {
                            slot.insert(id);
                            self.commit_terms.insert(index, term);
                            self.mix(&[3, index, id.term, u64::from(id.digest)]);
                        }
                    }
                    let mirror = self.mirror_after_snapshot(snapshot.index, tail);
                    if let Err(m) = self.matching.check_log(node, &mirror) {
                        self.fail(LogMatching::NAME, m);
                    }
                    self.logs.insert(node, mirror);
                }
            }
        }
        let before = self.roles.insert(node, (term, role));
        if before != Some((term, role)) {
            use crate::trace::V;
            let role_name = format!("{role:?}");
            self.trace_event(
                node,
                "role",
                &[("role", V::S(&role_name)), ("term", V::N(term))],
            );
        }
        if role == Role::Leader && before != Some((term, Role::Leader)) {
            self.stats.leaders_elected += 1;
            self.mix(&[2, node, term]);
            if let Err(m) = self.election.on_leader(node, term) {
                self.fail(ElectionSafety::NAME, m);
            }
            if let Err(m) =
                self.completeness
                    .on_leader(node, term, &self.committed, &self.commit_terms, log)
            {
                self.fail(LeaderCompleteness::NAME, m);
            }
        }
        if commit > 0 {
            self.on_commit(node, term, commit, log);
        }
    }

    /// A node's log after a snapshot at `base`: the snapshot covers only
    /// committed entries, so the prefix is what was committed there.
    fn mirror_after_snapshot(&self, base: Index, tail: &[Entry]) -> Vec<EntryId> {
        let unknown = EntryId { term: 0, digest: 0 };
        let mut log: Vec<EntryId> = (1..=base)
            .map(|i| self.committed.get(&i).copied().unwrap_or(unknown))
            .collect();
        log.extend(tail.iter().map(EntryId::of));
        log
    }

    fn on_commit(&mut self, node: NodeId, term: Term, commit: Index, log: &Log) {
        let known = self
            .committed
            .range(..=commit)
            .next_back()
            .map_or(0, |(&i, _)| i);
        if commit <= known && self.committed.contains_key(&commit) {
            // Fast path: check only the newest committed entry.
            if let Some(e) = log.get(commit) {
                let id = EntryId::of(e);
                if self.committed[&commit] != id {
                    let m = format!(
                        "node {node} commits {id:?} at {commit}, but {:?} was committed there",
                        self.committed[&commit]
                    );
                    self.fail(StateMachineSafety::NAME, m);
                }
            }
            return;
        }
        for index in (known + 1).max(log.first_index())..=commit {
            let Some(e) = log.get(index) else { break };
            let id = EntryId::of(e);
            match self.committed.get(&index) {
                Some(&c) if c != id => {
                    let m = format!(
                        "node {node} commits {id:?} at {index}, but {c:?} was committed there"
                    );
                    self.fail(StateMachineSafety::NAME, m);
                    return;
                }
                Some(_) => {}
                None => {
                    if let Payload::Config(m) = &e.payload {
                        self.note_committed_config(index, m);
                    }
                    self.committed.insert(index, id);
                    self.commit_terms.insert(index, term);
                    self.mix(&[3, index, id.term, u64::from(id.digest)]);
                }
            }
        }
    }

    /// A node applied `entry` to its state machine.
    pub fn on_applied(&mut self, node: NodeId, entry: &Entry) {
        if let Err(m) = self
            .state_machine
            .on_applied(node, entry.index, EntryId::of(entry))
        {
            self.fail(StateMachineSafety::NAME, m);
        }
    }

    pub fn roles_snapshot(&self) -> BTreeMap<NodeId, (Term, Role)> {
        self.roles.clone()
    }

    /// A client read returned `seen`; writes up to `floor` had completed.
    pub fn on_read(&mut self, node: NodeId, floor: u64, seen: u64) {
        self.mix(&[4, node, seen]);
        if let Err(m) = self.reads.on_read(node, floor, seen) {
            self.fail(ReadLinearizability::NAME, m);
        }
    }

    pub fn fail_liveness(&mut self, message: String) {
        self.fail("liveness", message);
    }

    /// End of run: the durability check over the final state.
    pub fn finish(&mut self) {
        if let Err(m) = self
            .durability
            .check(&self.committed, &self.logs, &self.candidate_voters())
        {
            self.fail(Durability::NAME, format!("at the end of the run: {m}"));
        }
    }
}
