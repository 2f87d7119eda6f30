//! The Raft replica: a deterministic actor (see `crate::actor`).
//!
//! Follows the Raft paper (Ongaro & Ousterhout 2014, "paper N.N") and
//! Ongaro's thesis (2014, "thesis N.N"): randomized election timeouts drawn
//! from a seeded RNG, PreVote (thesis 9.6), CheckQuorum (thesis 6.2),
//! AppendEntries with the consistency check and fast conflict back-off
//! (paper 5.3), the commitment rule for the current term (paper 5.4.2) with a
//! no-op at the start of each term (thesis 6.4), and in-order apply.

use super::config::{Config, ConfigError};
use super::log::Log;
use super::membership::{ConfChange, Membership, MembershipError};
use super::message::{
    AppendRequest, AppendResponse, AppendResult, Entry, Index, InstallSnapshotRequest,
    InstallSnapshotResponse, Message, Payload, Snapshot, Term, VoteRequest, VoteResponse,
};
use super::state_machine::{FrozenState, RestoreError, SnapshotError, StateMachine};
use crate::actor::{Instant, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use thiserror::Error;

mod commit;
mod election;
mod forward;
mod members;
mod read;
mod replication;
mod snapshot;
mod transfer;
mod types;

pub use types::*;

use forward::Forwarded;
pub use forward::FORWARD_OUTPUTS_KEPT_MAX;
use read::{FollowerRead, LeaderRead};
pub use snapshot::COMPACTION_DEFER_THRESHOLDS;
pub use snapshot::SNAPSHOT_BYTES_PER_LOG_BYTE_MAX;
use snapshot::{Building, Incoming};
use transfer::Transfer;

/// Heartbeats without an answer before a snapshot chunk is sent again.
pub const SNAPSHOT_RESEND_TICKS: u32 = 4;
/// Heartbeats in a row without progress before in-flight appends are
/// presumed lost and sent again.
pub const RETRANSMIT_TICKS: u32 = 4;

/// Correlates a client proposal with its reply; chosen by the driver.
pub type RequestId = u64;

/// Leader's view of one follower (paper 5.3 nextIndex/matchIndex).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Progress {
    next: Index,
    matched: Index,
    /// Probe: one AppendEntries at a time until the follower's log position is
    /// known. Replicate: stream entries optimistically.
    replicating: bool,
    /// Last index and command bytes of each in-flight AppendEntries
    /// (bounded by count and by bytes).
    inflight: VecDeque<(Index, usize)>,
    /// Heartbeats in a row without progress while appends were in flight.
    stalled_ticks: u32,
    /// `matched` at the previous heartbeat: no progress across a whole
    /// heartbeat interval means messages were lost, so fall back to probing.
    matched_at_last_tick: Index,
    /// Highest ReadIndex round this follower answered.
    read_round_acked: u64,
    /// The snapshot being sent to this follower, and the offset it expects
    /// next. The leader finishes the snapshot it started even if it has
    /// taken a newer one since: restarting with each new snapshot never
    /// finished where compaction outpaced a transfer (soak seed 9300032 of
    /// `locks_limits_3`). It holds at most one snapshot per follower.
    snapshot: Option<(Arc<Snapshot>, u64)>,
    /// Heartbeats since the last snapshot chunk went out unanswered.
    snapshot_silent_ticks: u32,
    /// The commit index this follower can have learned from us (what we
    /// sent, capped by what it had), and the one it waits for: it forwarded
    /// a proposal to that index, or asked for a read there. While the
    /// second is ahead of the first, each commit it can use is sent at
    /// once, not at the next heartbeat.
    commit_sent: Index,
    commit_wanted: Index,
}

impl Progress {
    fn new(next: Index) -> Self {
        Progress {
            next,
            matched: 0,
            replicating: false,
            inflight: VecDeque::new(),
            stalled_ticks: 0,
            matched_at_last_tick: 0,
            read_round_acked: 0,
            snapshot: None,
            snapshot_silent_ticks: 0,
            commit_sent: 0,
            commit_wanted: 0,
        }
    }
}

pub struct Raft<S> {
    id: NodeId,
    /// The configuration in effect: the latest in the log (thesis 4.1),
    /// the index of the entry that set it (or of the snapshot), and the one
    /// at the snapshot point (or the bootstrap one).
    membership: Membership,
    membership_index: Index,
    base_membership: Membership,
    /// Learners that asked to join, promoted once caught up.
    auto_promote: BTreeSet<NodeId>,
    config: Config,
    rng: ChaCha8Rng,

    // Durable (paper figure 2), mirrored to storage through `PersistOp`s.
    term: Term,
    voted_for: Option<NodeId>,
    log: Log,

    role: Role,
    leader: Option<NodeId>,
    commit: Index,
    applied: Index,
    /// The log is durable up to here (reported by the driver).
    persisted: Index,
    /// When this node last heard from a leader of its current term; a node
    /// that has refuses (pre-)votes for a while (thesis 4.2.3, 9.6).
    leader_contact: Option<Instant>,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    /// Followers heard from since the last CheckQuorum (thesis 6.2).
    heard_since_check: BTreeSet<NodeId>,
    pending: BTreeMap<Index, RequestId>,
    /// ReadIndex state (read.rs): the leader's round counter, the index of
    /// its term's no-op, queued reads; a follower's forwarded reads.
    read_round: u64,
    term_start: Index,
    leader_reads: VecDeque<LeaderRead>,
    follower_reads: BTreeMap<u64, FollowerRead>,
    next_forward_id: u64,
    /// Proposals this follower forwarded to its leader (forward.rs), and
    /// recent outputs for those whose answer is late: (index, term, output).
    forwarded: BTreeMap<u64, Forwarded>,
    forward_outputs: VecDeque<(Index, Term, Vec<u8>)>,
    transfer: Option<Transfer>,
    /// The latest snapshot, kept to send to followers that need it.
    snapshot: Option<Arc<Snapshot>>,
    /// The snapshot a driver is serializing for us (`Effect::BuildSnapshot`).
    building: Option<Building>,
    incoming: Option<Incoming>,
    /// Armed timers. Drivers learn of changes through `SetTimer` and
    /// `CancelTimer`, emitted once per step at its end.
    election_at: Option<Instant>,
    heartbeat_at: Option<Instant>,

    sm: S,
    out: Vec<Effect>,
    /// The local time of the input being handled, for the state machine.
    now: Instant,
}

impl<S: StateMachine> Raft<S> {
    /// Builds a replica from its recovered durable state. `bootstrap` is the
    /// initial configuration, used until the log or a snapshot holds one;
    /// a server joining a running cluster starts with an empty one.
    /// `seed` feeds the election-timeout RNG.
    pub fn new(
        id: NodeId,
        bootstrap: Membership,
        config: Config,
        recovered: Recovered,
        sm: S,
        seed: u64,
    ) -> Result<Self, RaftError> {
        config.validate()?;
        if id == 0 {
            return Err(RaftError::ZeroId);
        }
        let logged = recovered.snapshot.is_some()
            || recovered
                .entries
                .iter()
                .any(|e| matches!(e.payload, Payload::Config(_)));
        if !logged && !bootstrap.is_empty() && !bootstrap.contains(id) {
            return Err(RaftError::NotAVoter(id, bootstrap.voters().collect()));
        }
        let base_membership = match &recovered.snapshot {
            Some(snap) => snap.membership.clone(),
            None => bootstrap,
        };
        let mut sm = sm;
        let (base_index, base_term) = match &recovered.snapshot {
            Some(snap) => {
                sm.restore(&snap.data)?;
                (snap.index, snap.term)
            }
            None => (0, 0),
        };
        if let Some(pos) = recovered
            .entries
            .iter()
            .enumerate()
            .position(|(i, e)| e.index != base_index + i as u64 + 1)
        {
            return Err(RaftError::GappedLog(pos));
        }
        let mut raft = Raft {
            id,
            membership: base_membership.clone(),
            membership_index: base_index,
            base_membership,
            auto_promote: BTreeSet::new(),
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            term: recovered.hard_state.term,
            voted_for: recovered.hard_state.voted_for,
            log: Log::from_parts(base_index, base_term, recovered.entries),
            role: Role::Follower,
            leader: None,
            commit: base_index,
            applied: base_index,
            persisted: 0,
            leader_contact: None,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            heard_since_check: BTreeSet::new(),
            pending: BTreeMap::new(),
            read_round: 0,
            term_start: 0,
            leader_reads: VecDeque::new(),
            follower_reads: BTreeMap::new(),
            next_forward_id: 0,
            forwarded: BTreeMap::new(),
            forward_outputs: VecDeque::new(),
            transfer: None,
            snapshot: recovered.snapshot.map(Arc::new),
            building: None,
            incoming: None,
            election_at: None,
            heartbeat_at: None,
            sm,
            out: Vec::new(),
            now: Instant::ZERO,
        };
        raft.refresh_membership();
        // Everything recovered from disk is durable.
        raft.persisted = raft.log.last_index();
        Ok(raft)
    }

    // ---- observation (drivers, checkers, status pages) ----

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    pub fn log(&self) -> &Log {
        &self.log
    }
    /// The configuration in effect (the latest in the log).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// For drivers that drain outputs the machine keeps (the lock
    /// service's grant notifications).
    pub fn state_machine_mut(&mut self) -> &mut S {
        &mut self.sm
    }

    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    // ---- input ----

    /// Feeds one input at local time `now`; returns the effects, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::Timer(Timer::Election) => self.election_at = None,
            Input::Timer(Timer::Heartbeat) => self.heartbeat_at = None,
            _ => {}
        }
        let timers_before = (self.election_at, self.heartbeat_at);
        if !self.follower_reads.is_empty() {
            self.expire_follower_reads(now);
        }
        if !self.forwarded.is_empty() {
            self.expire_forwarded(now);
        }
        match input {
            Input::Start => self.handle_start(now),
            Input::Message { from, msg } => self.handle_message(now, from, msg),
            Input::Timer(Timer::Election) => self.handle_election_timer(now),
            Input::Timer(Timer::Heartbeat) => self.handle_heartbeat_timer(now),
            Input::Propose { id, command } => self.handle_propose(now, id, command),
            Input::ProposeBatch(proposals) => self.handle_propose_batch(now, proposals),
            Input::Read { id, query } => self.handle_read(now, id, query),
            Input::TransferLeadership { id, to } => self.handle_transfer(now, id, to),
            Input::ChangeMembership { id, change } => self.handle_change(id, change),
            Input::Persisted { index, term } => self.handle_persisted(index, term),
            Input::SnapshotBuilt { index, result } => self.handle_snapshot_built(index, result),
        }
        self.step_down_if_removed(now);
        self.emit_timer_changes(timers_before);
        self.check_invariants();
        std::mem::take(&mut self.out)
    }

    fn emit_timer_changes(&mut self, (election, heartbeat): (Option<Instant>, Option<Instant>)) {
        for (timer, before, after) in [
            (Timer::Election, election, self.election_at),
            (Timer::Heartbeat, heartbeat, self.heartbeat_at),
        ] {
            match after {
                Some(at) if after != before => self.out.push(Effect::SetTimer { timer, at }),
                None if before.is_some() => self.out.push(Effect::CancelTimer(timer)),
                _ => {}
            }
        }
    }

    fn handle_persisted(&mut self, index: Index, term: Term) {
        // A report from before a truncation names an entry no longer in the
        // log (same index, other term): it proves nothing now.
        if index > self.persisted && self.log.term_at(index) == Some(term) {
            self.persisted = index;
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
    }

    fn handle_start(&mut self, now: Instant) {
        self.reset_election_timer(now);
    }

    /// Answers a request only a leader can serve with where to go instead.
    fn reply_not_leader(&mut self, id: RequestId) {
        let leader = self.leader;
        self.out.push(Effect::Reply {
            id,
            result: Err(RequestError::NotLeader { leader }),
        });
    }

    fn handle_propose(&mut self, now: Instant, id: RequestId, command: Vec<u8>) {
        if self.propose_one(now, id, command) {
            self.maybe_commit();
            self.broadcast_append();
        }
    }

    fn handle_propose_batch(&mut self, now: Instant, proposals: Vec<(RequestId, Vec<u8>)>) {
        let mut appended = false;
        for (id, command) in proposals {
            appended |= self.propose_one(now, id, command);
        }
        if appended {
            self.maybe_commit();
            self.broadcast_append();
        }
    }

    /// Appends one proposal as leader (true), or forwards or refuses it.
    fn propose_one(&mut self, now: Instant, id: RequestId, command: Vec<u8>) -> bool {
        if let Err(e) = self.admit(&command) {
            self.out.push(Effect::Reply { id, result: Err(e) });
            return false;
        }
        if self.role != Role::Leader {
            self.forward_proposal(now, id, command);
            return false;
        }
        // A leader handing over leadership takes no new writes (thesis 3.10).
        if self.too_busy(command.len()) {
            self.out.push(Effect::Reply {
                id,
                result: Err(RequestError::Busy),
            });
            return false;
        }
        let index = self.append_as_leader(Payload::Command(command));
        self.pending.insert(index, id);
        true
    }

    /// Whether a leader must refuse a new client proposal of `bytes` for
    /// now: its pending table is full, its log holds as many bytes as it
    /// may, or it is handing leadership over (thesis 3.10).
    pub(super) fn too_busy(&self, bytes: usize) -> bool {
        self.pending.len() >= self.config.pending_proposals_max
            || self.log.payload_bytes().saturating_add(bytes) > self.config.log_bytes_max
            || self.transferring()
    }

    /// Whether a client's command may be appended at all: within the entry
    /// size bound (so every message carrying it fits a frame), and not one
    /// the state machine keeps for its leader.
    fn admit(&self, command: &[u8]) -> Result<(), RequestError> {
        let max = self.config.entry_bytes_max;
        if command.len() > max {
            return Err(RequestError::TooLarge {
                bytes: command.len(),
                max,
            });
        }
        self.sm
            .admits_from_client(command)
            .map_err(RequestError::NotAllowed)
    }

    fn handle_heartbeat_timer(&mut self, now: Instant) {
        if self.role != Role::Leader {
            return;
        }
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            if let Some(p) = self.progress.get_mut(&peer) {
                if p.matched == p.matched_at_last_tick && !p.inflight.is_empty() {
                    p.stalled_ticks += 1;
                } else {
                    p.stalled_ticks = 0;
                }
                if p.stalled_ticks >= RETRANSMIT_TICKS {
                    // Several intervals without progress: assume the
                    // in-flight messages were lost, and probe again from
                    // what is known. (Not after one: a follower writing
                    // megabytes may take longer than a heartbeat to answer,
                    // and resending would only bury it deeper.)
                    p.inflight.clear();
                    p.replicating = false;
                    p.next = p.matched + 1;
                    p.stalled_ticks = 0;
                }
                p.matched_at_last_tick = p.matched;
            }
            self.send_append(peer, true);
        }
        self.end_transfer(Some(now));
        self.promote_caught_up_learners();
        self.propose_machine_commands(now);
        self.heartbeat_at = Some(now + self.config.heartbeat_interval);
    }

    /// Proposes what the state machine asks its leader to (the lock
    /// service's expiries); nobody waits for a reply. Every command it
    /// returns is appended: the machine counts it as proposed, so dropping
    /// one (when clients fill the pending table) would leave a dead
    /// client's locks held until the next leader. The machine bounds how
    /// many it returns per tick. Not while handing over: the successor
    /// will decide.
    fn propose_machine_commands(&mut self, now: Instant) {
        if self.transferring() {
            return;
        }
        let commands = self.sm.leader_tick(now, self.term);
        if commands.is_empty() {
            return;
        }
        for command in commands {
            self.append_as_leader(Payload::Command(command));
        }
        self.maybe_commit();
        self.broadcast_append();
    }

    fn handle_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        if from == self.id {
            return;
        }
        // From outside the configuration only leader traffic (judged by its
        // term, and needed by a joining server) and join requests count: a
        // removed or misconfigured server cannot push terms up (thesis 4.2.3).
        let leader_traffic = matches!(
            msg,
            Message::Append(_) | Message::InstallSnapshot(_) | Message::Join { .. }
        );
        if !self.membership.contains(from) && !leader_traffic {
            return;
        }
        if let Message::Append(req) = &msg {
            if !Self::well_formed(req) {
                tracing::warn!(from, "dropping a malformed AppendEntries");
                return;
            }
        }
        // A snapshot's last entry cannot be from a term after its sender's.
        if let Message::InstallSnapshot(req) = &msg {
            if req.last_term > req.term {
                tracing::warn!(from, "dropping a malformed InstallSnapshot");
                return;
            }
        }
        // Pre-votes never change anyone's term (thesis 9.6).
        if let Message::PreVote(req) = &msg {
            let req = req.clone();
            return self.handle_pre_vote(now, from, req);
        }
        if msg.term() > self.term {
            if let Message::Vote(req) = &msg {
                // Thesis 4.2.3: while a node hears from a current leader it
                // ignores vote requests, so a partitioned node rejoining with
                // a high term cannot depose a healthy leader.
                if self.leader_lease_active(now) && !req.transfer {
                    let term = self.term;
                    self.send(
                        from,
                        Message::VoteResponse(VoteResponse {
                            term,
                            granted: false,
                        }),
                    );
                    return;
                }
            }
            let granted_pre_vote = matches!(&msg, Message::PreVoteResponse(r) if r.granted);
            if !granted_pre_vote {
                let from_leader = matches!(msg, Message::Append(_) | Message::InstallSnapshot(_));
                let leader = from_leader.then_some(from);
                self.become_follower(now, msg.term(), leader);
            }
        }
        match msg {
            Message::PreVote(_) => {}
            Message::PreVoteResponse(resp) => self.handle_pre_vote_response(now, from, resp),
            Message::Vote(req) => self.handle_vote(now, from, req),
            Message::VoteResponse(resp) => self.handle_vote_response(now, from, resp),
            Message::Append(req) => self.handle_append(now, from, req),
            Message::AppendResponse(resp) => self.handle_append_response(from, resp),
            Message::InstallSnapshot(req) => self.handle_install_snapshot(now, from, req),
            Message::InstallSnapshotResponse(resp) => {
                self.handle_install_snapshot_response(from, resp)
            }
            Message::TimeoutNow { term } => self.handle_timeout_now(now, from, term),
            Message::Join { id, addr } => self.handle_join(id, addr),
            Message::ReadIndex { id, .. } => self.handle_read_index(from, id),
            Message::Forward { id, command, .. } => self.handle_forward(from, id, command),
            Message::ForwardResponse { term, id, at } => {
                self.handle_forward_response(from, term, id, at)
            }
            Message::ReadIndexResponse { id, index, .. } => {
                self.handle_read_index_response(from, id, index)
            }
        }
    }

    // ---- transitions ----

    // ---- leader helpers ----

    // ---- common helpers ----

    fn persist_hard_state(&mut self) {
        let hs = HardState {
            term: self.term,
            voted_for: self.voted_for,
        };
        self.persist(PersistOp::HardState(hs));
    }

    fn persist(&mut self, op: PersistOp) {
        let sync = !self.config.skip_fsync();
        self.out.push(Effect::Persist { op, sync });
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.out.push(Effect::Send { to, msg });
    }

    /// Every other member, learners included: replication targets.
    fn peers(&self) -> impl Iterator<Item = NodeId> + 'static {
        let me = self.id;
        let ids: Vec<NodeId> = self.membership.members.keys().copied().collect();
        ids.into_iter().filter(move |&v| v != me)
    }

    /// Every other voter: whom to ask for votes.
    fn voter_peers(&self) -> impl Iterator<Item = NodeId> + 'static {
        let me = self.id;
        let ids: Vec<NodeId> = self.membership.voters().collect();
        ids.into_iter().filter(move |&v| v != me)
    }

    fn quorum(&self) -> usize {
        self.membership.quorum()
    }

    /// Postconditions of every step (TigerBeetle style: assert, don't hope).
    fn check_invariants(&self) {
        debug_assert!(self.applied <= self.commit);
        debug_assert!(self.commit <= self.log.last_index());
        debug_assert!(self.persisted <= self.log.last_index() || self.log.entries().is_empty());
        debug_assert!(self.role != Role::Leader || self.leader == Some(self.id));
        debug_assert!(self.role == Role::Leader || self.pending.is_empty());
        debug_assert!(self.pending.len() <= self.config.pending_proposals_max);
        debug_assert!(self.log.last_term() <= self.term);
        debug_assert!(self.role == Role::Leader || self.leader_reads.is_empty());
        debug_assert!(self.role == Role::Leader || self.transfer.is_none());
        debug_assert!(
            self.leader_reads.len() + self.follower_reads.len() <= self.config.pending_reads_max
        );
        debug_assert!(self
            .progress
            .values()
            .all(|p| p.matched <= self.log.last_index()));
    }
}
