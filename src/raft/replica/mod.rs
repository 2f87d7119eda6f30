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
use super::state_machine::{RestoreError, StateMachine};
use crate::actor::{Instant, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;

mod forward;
mod members;
mod read;
mod snapshot;
mod transfer;

use forward::Forwarded;
pub use forward::FORWARD_OUTPUTS_KEPT_MAX;
use read::{FollowerRead, LeaderRead};
use snapshot::Incoming;
use transfer::Transfer;

/// Heartbeats without an answer before a snapshot chunk is sent again.
pub const SNAPSHOT_RESEND_TICKS: u32 = 4;
/// Heartbeats in a row without progress before in-flight appends are
/// presumed lost and sent again.
pub const RETRANSMIT_TICKS: u32 = 4;

/// Correlates a client proposal with its reply; chosen by the driver.
pub type RequestId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// Followers and candidates: start an election. Leaders: CheckQuorum.
    Election,
    /// Leaders only: heartbeat and retransmission.
    Heartbeat,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// First input after construction from the recovered durable state.
    Start,
    Message {
        from: NodeId,
        msg: Message,
    },
    Timer(Timer),
    Propose {
        id: RequestId,
        command: Vec<u8>,
    },
    /// Several proposals at once: the same as proposing each in turn,
    /// except that a leader sends them in one AppendEntries per follower
    /// instead of one each (a driver batches what arrived together).
    ProposeBatch(Vec<(RequestId, Vec<u8>)>),
    /// A linearizable read-only query (ReadIndex, thesis 6.4).
    Read {
        id: RequestId,
        query: Vec<u8>,
    },
    /// Hand leadership to `to` (thesis 3.10). Answered once `TimeoutNow`
    /// is sent, or with `TransferFailed`.
    TransferLeadership {
        id: RequestId,
        to: NodeId,
    },
    /// Change membership by one server (thesis 4.1); answered once the
    /// new configuration commits.
    ChangeMembership {
        id: RequestId,
        change: ConfChange,
    },
    /// The driver made the log durable up to this entry. A leader counts
    /// itself toward commit only up to here, which lets it send entries
    /// before its own fsync (thesis 10.2.1).
    Persisted {
        index: Index,
        term: Term,
    },
}

/// Durable state as recovered from storage at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The latest snapshot; `entries` follow it.
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

/// A durable write. Storage applies these in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistOp {
    HardState(HardState),
    /// Entries to append right after the current end of the durable log.
    Append(Vec<Entry>),
    /// Remove every entry at this index and after.
    TruncateFrom(Index),
    /// Replace the whole durable state: the hard state, a snapshot, and the
    /// entries after it (log compaction or an installed snapshot).
    Snapshot {
        snapshot: Snapshot,
        hard_state: HardState,
        tail: Vec<Entry>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: Index,
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum RequestError {
    #[error("not the leader; leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("too many proposals in flight; retry later")]
    Busy,
    /// The entry may or may not commit: the outcome is unknown.
    #[error("leadership lost before the proposal committed; outcome unknown")]
    LeadershipLost,
    #[error("node {0} is not a voter of this cluster")]
    UnknownNode(NodeId),
    #[error("leadership transfer did not complete within an election timeout")]
    TransferFailed,
    #[error("node {0} has not caught up with the log yet")]
    NotCaughtUp(NodeId),
    /// The entry was applied here as part of an installed snapshot, so its
    /// output is not known on this node.
    #[error("the entry was applied through a snapshot; outcome unknown")]
    AppliedBySnapshot,
    /// Larger than `Config::entry_bytes_max`; nothing was appended.
    #[error("command of {bytes} bytes exceeds the limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    /// The state machine refuses this command from a client (only the
    /// leader may propose it); nothing was appended.
    #[error("refused: {0}")]
    NotAllowed(String),
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Send {
        to: NodeId,
        msg: Message,
    },
    SetTimer {
        timer: Timer,
        at: Instant,
    },
    CancelTimer(Timer),
    Persist {
        op: PersistOp,
        sync: bool,
    },
    Reply {
        id: RequestId,
        result: Result<Applied, RequestError>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RaftError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node {0} is not among the voters {1:?}")]
    NotAVoter(NodeId, Vec<NodeId>),
    #[error("node id 0 is reserved")]
    ZeroId,
    #[error("recovered log is not contiguous at position {0}")]
    GappedLog(usize),
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

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
    /// (snapshot index, next offset) while sending it a snapshot.
    snapshot: Option<(Index, u64)>,
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
    snapshot: Option<Snapshot>,
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
            snapshot: recovered.snapshot,
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

    fn handle_election_timer(&mut self, now: Instant) {
        if self.role == Role::Leader {
            // CheckQuorum (thesis 6.2): a leader that has not heard from a
            // majority within an election timeout steps down, so a leader cut
            // off by a partition stops acting as one.
            let membership = &self.membership;
            let heard = self
                .heard_since_check
                .iter()
                .filter(|&&id| membership.is_voter(id))
                .count()
                + usize::from(membership.is_voter(self.id));
            self.heard_since_check.clear();
            if heard < self.quorum() {
                tracing::info!(
                    node = self.id,
                    term = self.term,
                    heard,
                    quorum = self.quorum(),
                    "CheckQuorum failed; stepping down"
                );
                self.become_follower(now, self.term, None);
            } else {
                self.election_at = Some(now + self.config.election_timeout_min);
            }
            return;
        }
        self.start_pre_vote(now);
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

    fn handle_pre_vote(&mut self, now: Instant, from: NodeId, req: VoteRequest) {
        let granted = req.term > self.term
            && !self.leader_lease_active(now)
            && self.role != Role::Leader
            && self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term);
        let term = if granted { req.term } else { self.term };
        self.send(
            from,
            Message::PreVoteResponse(VoteResponse { term, granted }),
        );
    }

    fn handle_pre_vote_response(&mut self, now: Instant, from: NodeId, resp: VoteResponse) {
        if self.role != Role::PreCandidate
            || !resp.granted
            || resp.term != self.term + 1
            || !self.membership.is_voter(from)
        {
            return;
        }
        self.votes.insert(from);
        if self.votes.len() >= self.quorum() {
            self.start_election(now, false);
        }
    }

    fn handle_vote(&mut self, now: Instant, from: NodeId, req: VoteRequest) {
        let can_vote = self.voted_for.is_none()
            || self.voted_for == Some(from)
            || self.config.vote_twice_per_term();
        // A pre-candidate has not voted in this term yet, so it may vote too.
        let eligible = matches!(self.role, Role::Follower | Role::PreCandidate);
        let granted = req.term == self.term
            && can_vote
            && eligible
            && self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term);
        if granted {
            self.role = Role::Follower;
            self.votes.clear();
            self.voted_for = Some(from);
            self.persist_hard_state();
            // Paper 5.2: granting a vote resets the election timer.
            self.reset_election_timer(now);
        }
        let term = self.term;
        self.send(from, Message::VoteResponse(VoteResponse { term, granted }));
    }

    fn handle_vote_response(&mut self, now: Instant, from: NodeId, resp: VoteResponse) {
        if self.role != Role::Candidate
            || resp.term != self.term
            || !resp.granted
            || !self.membership.is_voter(from)
        {
            return;
        }
        self.votes.insert(from);
        if self.votes.len() >= self.quorum() {
            self.become_leader(now);
        }
    }

    fn handle_append(&mut self, now: Instant, from: NodeId, req: AppendRequest) {
        if req.term < self.term {
            let term = self.term;
            self.send(
                from,
                Message::AppendResponse(AppendResponse {
                    term,
                    read_round: req.read_round,
                    result: AppendResult::StaleTerm,
                }),
            );
            return;
        }
        // Same term: a candidate learns it lost (paper 5.2).
        if self.role != Role::Follower {
            self.become_follower(now, req.term, Some(from));
        }
        self.leader = Some(from);
        self.leader_contact = Some(now);
        self.reset_election_timer(now);

        let Some(result) = self.append_from_leader(&req) else {
            return;
        };
        let term = self.term;
        self.send(
            from,
            Message::AppendResponse(AppendResponse {
                term,
                result,
                read_round: req.read_round,
            }),
        );
    }

    /// Entries must follow `prev_index` contiguously, with terms that never
    /// decrease, start no lower than `prev_term` and end no higher than the
    /// request's term. Anything else is not from a correct leader.
    fn well_formed(req: &AppendRequest) -> bool {
        let mut term = req.prev_term;
        req.prev_term <= req.term
            && req.entries.iter().enumerate().all(|(i, e)| {
                let ok = e.index == req.prev_index + 1 + i as u64
                    && e.term >= term
                    && e.term <= req.term;
                term = e.term;
                ok
            })
    }

    /// Paper 5.3: the consistency check, conflict truncation, and append.
    /// None: the request contradicts a committed entry and is dropped.
    fn append_from_leader(&mut self, req: &AppendRequest) -> Option<AppendResult> {
        let snapshot_index = self.log.snapshot_index();
        if req.prev_index < snapshot_index {
            // Entries up to this node's snapshot are committed, so they match
            // the leader's (leader completeness): check from the snapshot on.
            let Some(snapshot_term) = self.log.term_at(snapshot_index) else {
                return Some(AppendResult::StaleTerm);
            };
            let trimmed = AppendRequest {
                prev_index: snapshot_index,
                prev_term: snapshot_term,
                entries: req
                    .entries
                    .iter()
                    .filter(|e| e.index > snapshot_index)
                    .cloned()
                    .collect(),
                ..req.clone()
            };
            // A correct leader's entries after our snapshot have terms at
            // least the snapshot's; anything else is dropped.
            if !Self::well_formed(&trimmed) {
                tracing::error!(
                    node = self.id,
                    "AppendEntries inconsistent with our snapshot; dropped"
                );
                return None;
            }
            return self.append_from_leader(&trimmed);
        }
        match self.log.term_at(req.prev_index) {
            None => {
                return Some(AppendResult::Conflict {
                    prev_index: req.prev_index,
                    conflict_term: None,
                    first_index: self.log.last_index() + 1,
                })
            }
            Some(t) if t != req.prev_term && !self.config.skip_consistency_check() => {
                return Some(AppendResult::Conflict {
                    prev_index: req.prev_index,
                    conflict_term: Some(t),
                    first_index: self.log.first_index_of_term(t, req.prev_index),
                })
            }
            Some(_) => {}
        }
        let mut new_entries = Vec::new();
        let mut membership_changed = false;
        for entry in &req.entries {
            match self.log.term_at(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    // Committed entries never conflict (leader completeness):
                    // only a broken or hostile peer says otherwise. Keep the
                    // committed entry and drop the message; nothing of it has
                    // been applied yet (this is its first mismatch).
                    if entry.index <= self.commit {
                        tracing::error!(
                            node = self.id,
                            index = entry.index,
                            "a peer contradicts a committed entry; message dropped"
                        );
                        return None;
                    }
                    self.log.truncate_from(entry.index);
                    self.persisted = self.persisted.min(entry.index - 1);
                    self.persist(PersistOp::TruncateFrom(entry.index));
                    membership_changed = true;
                }
                None => {}
            }
            membership_changed |= matches!(entry.payload, Payload::Config(_));
            self.log.append(entry.clone());
            new_entries.push(entry.clone());
        }
        if !new_entries.is_empty() {
            self.persist(PersistOp::Append(new_entries));
        }
        if membership_changed {
            self.refresh_membership();
        }
        let last_new = req.prev_index + req.entries.len() as u64;
        let commit = req.leader_commit.min(last_new);
        if commit > self.commit {
            self.commit = commit;
            self.apply_committed();
        }
        Some(AppendResult::Success {
            match_index: last_new,
        })
    }

    fn handle_append_response(&mut self, from: NodeId, resp: AppendResponse) {
        if self.role != Role::Leader || resp.term != self.term {
            return;
        }
        self.heard_since_check.insert(from);
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.read_round_acked = p.read_round_acked.max(resp.read_round);
        self.handle_append_result(from, resp.result, last_index);
        self.complete_reads();
        self.maybe_send_timeout_now();
    }

    fn handle_append_result(&mut self, from: NodeId, result: AppendResult, last_index: Index) {
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        match result {
            // A follower cannot have matched entries this leader never had
            // (a leader's log only grows): a broken or hostile peer. Counting
            // it could commit past the log; found by `fuzz/raft_inputs`.
            AppendResult::Success { match_index } if match_index > last_index => {
                tracing::warn!(
                    node = self.id,
                    from,
                    match_index,
                    last_index,
                    "ignoring an acknowledgement beyond this leader's log"
                );
                return;
            }
            AppendResult::Success { match_index } => {
                if match_index > p.matched {
                    p.matched = match_index;
                }
                p.next = p.next.max(p.matched + 1);
                p.replicating = true;
                while p.inflight.front().is_some_and(|&(i, _)| i <= p.matched) {
                    p.inflight.pop_front();
                }
                self.maybe_commit();
                // It may now hold an entry it waits to see committed.
                self.notify_commit(from);
            }
            AppendResult::Conflict {
                prev_index,
                conflict_term,
                first_index,
            } => {
                if prev_index < p.matched {
                    return; // stale rejection of an older request
                }
                let next = match conflict_term {
                    Some(t) => match self.log.last_index_of_term(t) {
                        Some(i) => i + 1,
                        None => first_index,
                    },
                    None => first_index,
                };
                p.next = next
                    .clamp(p.matched + 1, last_index + 1)
                    .min(prev_index.max(p.matched + 1));
                p.replicating = false;
                p.inflight.clear();
            }
            AppendResult::StaleTerm => return,
        }
        self.send_append(from, false);
    }

    // ---- transitions ----

    fn start_pre_vote(&mut self, now: Instant) {
        if !self.membership.is_voter(self.id) {
            // Learners, removed and joining servers never campaign.
            self.reset_election_timer(now);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.fail_reads();
        self.fail_unplaced_forwards();
        self.votes = BTreeSet::from([self.id]);
        self.reset_election_timer(now);
        if self.votes.len() >= self.quorum() {
            return self.start_election(now, false);
        }
        let req = self.vote_request(self.term + 1, false);
        for peer in self.voter_peers() {
            self.send(peer, Message::PreVote(req.clone()));
        }
    }

    /// `transfer`: started by `TimeoutNow`, so voters skip the lease check.
    fn start_election(&mut self, now: Instant, transfer: bool) {
        self.role = Role::Candidate;
        self.term += 1;
        self.voted_for = Some(self.id);
        self.leader = None;
        self.leader_contact = None;
        self.votes = BTreeSet::from([self.id]);
        self.persist_hard_state();
        self.reset_election_timer(now);
        if self.votes.len() >= self.quorum() {
            return self.become_leader(now);
        }
        let req = self.vote_request(self.term, transfer);
        for peer in self.voter_peers() {
            self.send(peer, Message::Vote(req.clone()));
        }
    }

    fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.term);
        let new_term = term > self.term;
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.heard_since_check.clear();
        self.fail_pending();
        self.fail_reads();
        if leader.is_none() || new_term {
            self.fail_unplaced_forwards();
        }
        self.end_transfer(None);
        self.heartbeat_at = None;
        self.reset_election_timer(now);
    }

    fn become_leader(&mut self, now: Instant) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.heard_since_check.clear();
        let next = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .map(|peer| (peer, Progress::new(next)))
            .collect();
        // Thesis 6.4: a no-op of the new term lets the leader learn the
        // commit index, since only current-term entries commit by counting.
        self.term_start = self.append_as_leader(Payload::Noop);
        self.maybe_commit();
        self.broadcast_append();
        self.election_at = Some(now + self.config.election_timeout_min);
        self.heartbeat_at = Some(now + self.config.heartbeat_interval);
    }

    // ---- leader helpers ----

    fn append_as_leader(&mut self, payload: Payload) -> Index {
        let is_config = matches!(payload, Payload::Config(_));
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            payload,
        };
        let index = entry.index;
        self.log.append(entry.clone());
        self.persist(PersistOp::Append(vec![entry]));
        if is_config {
            self.refresh_membership();
        }
        index
    }

    fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer, false);
        }
    }

    /// Sends entries from `next` if the window allows, or a bare heartbeat
    /// when `heartbeat` is set and nothing else went out.
    fn send_append(&mut self, peer: NodeId, heartbeat: bool) {
        let last_index = self.log.last_index();
        let commit = self.commit;
        let term = self.term;
        let read_round = self.read_round;
        let window = self.config.inflight_appends_max;
        let window_bytes = self.config.inflight_bytes_max;
        let max = self.config.append_entries_max;
        let bytes_max = self.config.append_bytes_max;
        let snapshot_index = self.log.snapshot_index();
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        if p.next <= snapshot_index || p.snapshot.is_some() {
            // What this follower needs next is compacted away (paper 7).
            // The current chunk is resent after a few silent heartbeats, in
            // case it was lost: not at every one, since chunks are large.
            if heartbeat && p.snapshot.is_some() {
                p.snapshot_silent_ticks += 1;
                if p.snapshot_silent_ticks < SNAPSHOT_RESEND_TICKS {
                    return;
                }
            }
            if heartbeat || p.snapshot.is_none() {
                p.snapshot_silent_ticks = 0;
                self.send_snapshot_chunk(peer);
            }
            return;
        }
        let has_entries = p.next <= last_index;
        let window_open = if p.replicating {
            let bytes: usize = p.inflight.iter().map(|&(_, b)| b).sum();
            p.inflight.len() < window && bytes < window_bytes
        } else {
            p.inflight.is_empty()
        };
        let send_entries = has_entries && window_open;
        if !send_entries && !heartbeat {
            return;
        }
        // A bare heartbeat names the last index known to match, so it never
        // trips the consistency check while optimistic appends are in flight.
        let prev_index = if send_entries {
            p.next - 1
        } else {
            p.matched.max(snapshot_index)
        };
        let Some(prev_term) = self.log.term_at(prev_index) else {
            return;
        };
        let entries = if send_entries {
            self.log.slice(p.next, max, bytes_max).to_vec()
        } else {
            Vec::new()
        };
        if let Some(last) = entries.last() {
            let bytes = entries.iter().map(super::log::payload_len).sum();
            p.inflight.push_back((last.index, bytes));
            if p.replicating {
                p.next = last.index + 1;
            }
        }
        let covered = entries.last().map_or(prev_index, |e| e.index);
        p.commit_sent = p.commit_sent.max(commit.min(covered));
        let req = AppendRequest {
            term,
            prev_index,
            prev_term,
            entries,
            leader_commit: commit,
            read_round,
        };
        self.send(peer, Message::Append(req));
    }

    /// Paper 5.3/5.4.2: advance the commit index to the highest index stored
    /// on a majority, but only by counting replicas of a current-term entry.
    fn maybe_commit(&mut self) {
        // Thesis 4.2.2: only voters of the configuration in effect count,
        // the leader itself included only if it is one.
        let membership = &self.membership;
        let learners_count = self.config.count_learners();
        let mut matched: Vec<Index> = self
            .progress
            .iter()
            .filter(|(&id, _)| membership.is_voter(id) || learners_count)
            .map(|(_, p)| p.matched)
            .collect();
        if membership.is_voter(self.id) {
            // Only what is durable here counts (thesis 10.2.1).
            matched.push(self.persisted.min(self.log.last_index()));
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matched.get(self.quorum() - 1) else {
            return;
        };
        if candidate > self.commit && self.log.term_at(candidate) == Some(self.term) {
            self.commit = candidate;
            self.apply_committed();
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for peer in peers {
                self.notify_commit(peer);
            }
        }
    }

    /// Tells a follower that waits for a commit (it forwarded a proposal,
    /// or serves a read) the commit index as soon as it can use it: a write
    /// or read through a follower then takes a round trip more than through
    /// the leader, not a heartbeat interval more.
    pub(super) fn notify_commit(&mut self, peer: NodeId) {
        let commit = self.commit;
        let Some(p) = self.progress.get(&peer) else {
            return;
        };
        let usable = commit.min(p.matched);
        if p.commit_wanted > p.commit_sent && usable > p.commit_sent {
            self.send_append(peer, true);
        }
    }

    fn fail_pending(&mut self) {
        for (_, id) in std::mem::take(&mut self.pending) {
            self.out.push(Effect::Reply {
                id,
                result: Err(RequestError::LeadershipLost),
            });
        }
    }

    // ---- common helpers ----

    fn apply_committed(&mut self) {
        while self.applied < self.commit {
            let index = self.applied + 1;
            let Some(entry) = self.log.get(index) else {
                break;
            };
            let term = entry.term;
            let output = match &entry.payload {
                Payload::Command(cmd) => self.sm.apply(index, self.now, cmd),
                Payload::Noop | Payload::Config(_) => Vec::new(),
            };
            self.applied = index;
            self.complete_forwarded(index, term, &output);
            if let Some(id) = self.pending.remove(&index) {
                self.out.push(Effect::Reply {
                    id,
                    result: Ok(Applied { index, output }),
                });
            }
        }
        self.complete_reads();
        self.maybe_snapshot();
    }

    fn vote_request(&self, term: Term, transfer: bool) -> VoteRequest {
        VoteRequest {
            term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        }
    }

    fn leader_lease_active(&self, now: Instant) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        self.leader.is_some()
            && self
                .leader_contact
                .is_some_and(|t| now.saturating_since(t) < self.config.election_timeout_min)
    }

    fn reset_election_timer(&mut self, now: Instant) {
        let min = self.config.election_timeout_min.as_micros() as u64;
        let max = self.config.election_timeout_max.as_micros() as u64;
        let timeout = self.rng.gen_range(min..max);
        self.election_at = Some(Instant::from_micros(
            now.as_micros().saturating_add(timeout),
        ));
    }

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
