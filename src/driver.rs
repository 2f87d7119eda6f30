//! The driver core: the rules that turn a replica's effects into IO, in one
//! place for both drivers (the actix node in `runtime/node.rs` and the
//! simulated node in `sim/cluster.rs`), so the simulator runs exactly the
//! ordering production runs.
//!
//! A driver steps inputs into the core (`step`, `propose`), and at a flush
//! takes a `Ready`: what may happen now. The ordering contract of
//! `crate::actor` is in the types, the way raft-rs's `Ready` separates
//! `messages` from `persisted_messages`:
//!
//! - `Ready::messages` may leave at once: AppendEntries (thesis 10.2.1: the
//!   leader's entries may be sent before its own fsync; it counts itself
//!   only once `Persisted` says so) and whatever an earlier, now durable,
//!   batch held back;
//! - `Ready::replies` may leave at once: a reply reports committed state
//!   (durable on a majority) or a refusal, which no local write still
//!   pending can change;
//! - `Ready::batch` is one numbered write for storage. Every other message
//!   of the flush (a vote, an acknowledgement, a forward) is held inside the
//!   core and comes out of `synced(batch)` only once the driver says that
//!   batch is durable: nothing can send it earlier;
//! - `synced` also gives the `Input::Persisted` to step: how far the log is
//!   durable. A truncation resets that (the entries after it are gone).
//!
//! - `Ready::snapshots` are states to serialize off the driver's thread;
//!   each comes back as an `Input::SnapshotBuilt` to step, whenever it is
//!   done (the replica compacts its log only then).
//!
//! Proposals are batched: those that arrive between two flushes go to the
//! replica as one `ProposeBatch` (one AppendEntries per follower for all).
//! Timers are kept here too; the driver asks for the next deadline.

use crate::actor::{Instant, NodeId};
use crate::raft::{
    Applied, Effect, Index, Input, Message, PersistOp, Raft, RequestError, RequestId, SnapshotJob,
    StateMachine, Term, Timer,
};
use std::collections::{BTreeMap, VecDeque};

/// Messages held back for a batch to become durable; beyond this they are
/// dropped like lost packets (Raft retransmits what matters).
pub const HELD_MESSAGES_MAX: usize = 65_536;
/// Bytes of messages held back, at most (a held forward may carry a
/// command of several MiB).
pub const HELD_MESSAGES_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Proposals buffered between two flushes; more are refused `Busy`.
pub const PROPOSALS_BUFFERED_MAX: usize = 4096;
/// Inputs a driver steps before it must flush (the production actor flushes
/// once its mailbox is empty, or after this many; the simulated node takes
/// what has arrived, up to this many).
pub const FLUSH_STEPS_MAX: u32 = 64;

/// One numbered write for storage: apply `ops` in order, then fsync if
/// `sync`, then report `synced(id)`.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: u64,
    pub ops: Vec<PersistOp>,
    pub sync: bool,
}

/// What a flush lets happen now.
#[derive(Debug, PartialEq, Eq)]
pub struct Ready<E> {
    /// Messages that may leave now.
    pub messages: Vec<(NodeId, Message)>,
    /// Replies that may leave now.
    pub replies: Vec<(RequestId, Result<Applied, RequestError>)>,
    /// The writes of this flush, if any.
    pub batch: Option<Batch>,
    /// What the applies of the steps since the last flush did, in order
    /// (`StateMachine::take_events`): they are committed, so they may go
    /// out now, after the replies.
    pub events: Vec<E>,
    /// Snapshots to serialize off this thread (`SnapshotJob::run`), then
    /// step back in.
    pub snapshots: Vec<SnapshotJob>,
}

/// What a batch does to the durable end of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogEnd {
    Unchanged,
    /// The log now ends at this entry.
    At(Index, Term),
    /// Truncated, and not appended to after: the end is unknown here.
    Truncated,
}

#[derive(Debug, Default)]
pub struct DriverCore {
    /// Effects of the steps since the last flush, in order.
    queued: Vec<Effect>,
    /// Proposals since the last flush.
    proposals: Vec<(RequestId, Vec<u8>)>,
    timers: BTreeMap<Timer, Instant>,
    batches_submitted: u64,
    batches_synced: u64,
    /// The log end each batch in flight leaves.
    batch_ends: VecDeque<(u64, LogEnd)>,
    /// Messages waiting for a batch to be durable: (batch, to, message).
    held: VecDeque<(u64, NodeId, Message)>,
    held_bytes: usize,
    /// Held messages dropped because the bounds were reached.
    pub held_dropped: u64,
}

impl DriverCore {
    pub fn new() -> Self {
        DriverCore::default()
    }

    /// Steps one input; its effects wait for the next flush. Returns them
    /// for observers (the simulator's checkers).
    pub fn step<S: StateMachine>(
        &mut self,
        raft: &mut Raft<S>,
        now: Instant,
        input: Input,
    ) -> &[Effect] {
        let effects = raft.handle(now, input);
        let from = self.queued.len();
        self.queued.extend(effects);
        &self.queued[from..]
    }

    /// Buffers a proposal for the next flush; `false` (answer `Busy`) if
    /// the buffer is full.
    pub fn propose(&mut self, id: RequestId, command: Vec<u8>) -> bool {
        if self.proposals.len() >= PROPOSALS_BUFFERED_MAX {
            return false;
        }
        self.proposals.push((id, command));
        true
    }

    /// Proposals waiting for the next flush.
    pub fn proposals_buffered(&self) -> usize {
        self.proposals.len()
    }

    /// Steps the buffered proposals as one batch, then sorts every queued
    /// effect into what may happen now and what must wait. `observe` sees
    /// the effects of the proposal step.
    pub fn flush<S: StateMachine>(
        &mut self,
        raft: &mut Raft<S>,
        now: Instant,
        mut observe: impl FnMut(&[Effect]),
    ) -> Ready<S::Event> {
        if !self.proposals.is_empty() {
            let batch = std::mem::take(&mut self.proposals);
            observe(self.step(raft, now, Input::ProposeBatch(batch)));
        }
        let mut ready = Ready {
            messages: Vec::new(),
            replies: Vec::new(),
            batch: None,
            events: raft.state_machine_mut().take_events(),
            snapshots: Vec::new(),
        };
        let mut ops = Vec::new();
        let mut sync = false;
        let mut end = LogEnd::Unchanged;
        let mut later = Vec::new();
        for effect in std::mem::take(&mut self.queued) {
            match effect {
                Effect::Send {
                    to,
                    msg: msg @ Message::Append(_),
                } => ready.messages.push((to, msg)),
                Effect::Send { to, msg } => later.push((to, msg)),
                Effect::Reply { id, result } => ready.replies.push((id, result)),
                Effect::Persist { op, sync: s } => {
                    end = end_after(end, &op);
                    sync |= s;
                    ops.push(op);
                }
                Effect::SetTimer { timer, at } => {
                    self.timers.insert(timer, at);
                }
                Effect::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                Effect::BuildSnapshot(job) => ready.snapshots.push(job),
            }
        }
        if !ops.is_empty() {
            self.batches_submitted += 1;
            let id = self.batches_submitted;
            self.batch_ends.push_back((id, end));
            ready.batch = Some(Batch { id, ops, sync });
        }
        // Anything but AppendEntries leaves only once every batch before
        // it is durable.
        for (to, msg) in later {
            if self.batches_synced >= self.batches_submitted {
                ready.messages.push((to, msg));
            } else {
                self.hold(to, msg);
            }
        }
        ready
    }

    fn hold(&mut self, to: NodeId, msg: Message) {
        let bytes = msg.approx_bytes();
        let fits = self.held.len() < HELD_MESSAGES_MAX
            && self.held_bytes.saturating_add(bytes) <= HELD_MESSAGES_BYTES_MAX;
        if !fits {
            self.held_dropped += 1;
            return;
        }
        self.held_bytes += bytes;
        self.held.push_back((self.batches_submitted, to, msg));
    }

    /// Storage made every batch up to `batch` durable: the messages that
    /// waited for them, and the `Persisted` input to step (if the durable
    /// end of the log moved).
    pub fn synced(&mut self, batch: u64) -> (Vec<(NodeId, Message)>, Option<Input>) {
        debug_assert!(batch > self.batches_synced && batch <= self.batches_submitted);
        self.batches_synced = self.batches_synced.max(batch);
        let mut released = Vec::new();
        while self.held.front().is_some_and(|(b, _, _)| *b <= batch) {
            if let Some((_, to, msg)) = self.held.pop_front() {
                self.held_bytes -= msg.approx_bytes();
                released.push((to, msg));
            }
        }
        let mut end = LogEnd::Unchanged;
        while self.batch_ends.front().is_some_and(|(b, _)| *b <= batch) {
            if let Some((_, e)) = self.batch_ends.pop_front() {
                if e != LogEnd::Unchanged {
                    end = e;
                }
            }
        }
        let persisted = match end {
            LogEnd::At(index, term) => Some(Input::Persisted { index, term }),
            LogEnd::Unchanged | LogEnd::Truncated => None,
        };
        (released, persisted)
    }

    /// Whether a batch handed out is not durable yet.
    pub fn writing(&self) -> bool {
        self.batches_synced < self.batches_submitted
    }

    /// Messages held back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The earliest armed timer's deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.values().min().copied()
    }

    /// Disarms and returns the timers due at `now`, in timer order.
    pub fn due_timers(&mut self, now: Instant) -> Vec<Timer> {
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&t, _)| t)
            .collect();
        for t in &due {
            self.timers.remove(t);
        }
        due
    }
}

/// The durable end of the log after `op`.
fn end_after(end: LogEnd, op: &PersistOp) -> LogEnd {
    match op {
        PersistOp::Append(es) => es.last().map_or(end, |e| LogEnd::At(e.index, e.term)),
        PersistOp::Snapshot { snapshot, tail, .. } => match tail.last() {
            Some(e) => LogEnd::At(e.index, e.term),
            None => LogEnd::At(snapshot.index, snapshot.term),
        },
        PersistOp::TruncateFrom(_) => LogEnd::Truncated,
        PersistOp::HardState(_) => end,
    }
}

#[cfg(test)]
mod tests;
