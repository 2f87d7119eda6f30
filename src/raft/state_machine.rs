//! What Raft applies committed commands to.

use super::message::{Index, Term};
use crate::actor::Instant;
use std::sync::Arc;
use thiserror::Error;

/// A snapshot that does not decode: from disk, a corrupt data dir; from a
/// leader, a bug.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("cannot restore the state machine from a snapshot: {0}")]
pub struct RestoreError(pub String);

/// The state machine could not serialize itself.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("cannot snapshot the state machine: {0}")]
pub struct SnapshotError(pub String);

/// A deterministic state machine. `apply` is called exactly once per
/// committed command, in log order, on every replica. Its replicated state
/// and its output must depend on nothing but its own state, the index and
/// the command. `now` is this replica's local time of the apply: it may feed
/// local, unreplicated bookkeeping only (the lock service records when it
/// applied each lease renewal, docs/SAFETY.md rule 3).
pub trait StateMachine {
    /// What an apply did that someone outside may wait for (the lock
    /// service's grants to queued waiters, session ends).
    type Event;

    fn apply(&mut self, index: Index, now: Instant, command: &[u8]) -> Vec<u8>;

    /// The events of the applies since the last call, in order. Only the
    /// driver core calls it, at every flush, and hands them to the driver
    /// in `Ready::events` with the step's other effects; so no driver can
    /// forget to read them, or read them at another point than the other.
    fn take_events(&mut self) -> Vec<Self::Event>;

    /// Answers a read-only query against the applied state. Called only once
    /// the read is linearizable (ReadIndex confirmed and applied). `now` is
    /// local time, for answers such as "expires in at most".
    fn query(&self, now: Instant, query: &[u8]) -> Vec<u8>;

    /// Called on the leader at every heartbeat: commands the leader should
    /// propose on its own (the lock service's expiries). Nothing by default.
    /// `term` lets the machine forget what it proposed under an older term.
    fn leader_tick(&mut self, _now: Instant, _term: Term) -> Vec<Vec<u8>> {
        Vec::new()
    }

    /// Whether a client may propose `command`: commands only the leader's
    /// own clock may decide (the lock service's expiries) are refused from
    /// outside, whichever door they came through (a client's proposal, a
    /// follower's forward). Everything by default.
    fn admits_from_client(&self, _command: &[u8]) -> Result<(), String> {
        Ok(())
    }

    /// The whole state as it is now, frozen: it serializes itself on
    /// another thread while this machine goes on applying, so a snapshot
    /// does not stall the replica's. Must be cheap (a few pointer copies,
    /// not a copy of the state): it runs on the replica's thread.
    fn freeze(&self) -> Arc<dyn FrozenState>;

    /// The whole state, as bytes `restore` accepts (paper 7), serialized
    /// here and now (tests and tools; the replica uses `freeze`).
    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        self.freeze().serialize()
    }

    /// Replaces the whole state by a snapshot's.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
}

/// A state machine's state at one applied index, frozen by
/// `StateMachine::freeze`: the replica asks a driver to serialize it off
/// its thread (`Effect::BuildSnapshot`). On error the replica keeps its log
/// and tries again at the next threshold.
pub trait FrozenState: Send + Sync {
    fn serialize(&self) -> Result<Vec<u8>, SnapshotError>;
}

/// Records every applied command and a running digest. Used by the
/// simulator, the TCP tests and the demo; the lock manager replaces it.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// Persistent (shared structure), so `freeze` copies a pointer.
    applied: imbl::Vector<(Index, Vec<u8>)>,
    applied_max: usize,
    digest: u64,
    last_index: Index,
}

/// Commands a `Recorder` keeps for inspection (the digest covers all).
pub const RECORDER_APPLIED_MAX_DEFAULT: usize = 100_000;

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            applied: imbl::Vector::new(),
            applied_max: RECORDER_APPLIED_MAX_DEFAULT,
            digest: 0,
            last_index: 0,
        }
    }

    pub fn applied(&self) -> impl Iterator<Item = &(Index, Vec<u8>)> {
        self.applied.iter()
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }
}

impl StateMachine for Recorder {
    type Event = ();

    fn take_events(&mut self) -> Vec<()> {
        Vec::new()
    }

    fn apply(&mut self, index: Index, _now: Instant, command: &[u8]) -> Vec<u8> {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.digest.to_le_bytes());
        h.update(&index.to_le_bytes());
        h.update(command);
        self.digest = (self.digest << 32) ^ u64::from(h.finalize());
        if self.applied.len() < self.applied_max {
            self.applied.push_back((index, command.to_vec()));
        }
        self.last_index = index;
        index.to_le_bytes().to_vec()
    }

    /// Any query returns the index of the last applied command, so a reader
    /// can tell whether it saw a given write.
    fn query(&self, _now: Instant, _query: &[u8]) -> Vec<u8> {
        self.last_index.to_le_bytes().to_vec()
    }

    fn freeze(&self) -> Arc<dyn FrozenState> {
        Arc::new(FrozenRecorder {
            digest: self.digest,
            last_index: self.last_index,
            applied: self.applied.clone(),
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        let (digest, last_index, applied) =
            postcard::from_bytes::<(u64, Index, Vec<(Index, Vec<u8>)>)>(snapshot)
                .map_err(|e| RestoreError(e.to_string()))?;
        self.digest = digest;
        self.last_index = last_index;
        self.applied = applied.into_iter().collect();
        Ok(())
    }
}

/// A `Recorder` frozen: its persistent vector shares every chunk the
/// recorder has not written since.
struct FrozenRecorder {
    digest: u64,
    last_index: Index,
    applied: imbl::Vector<(Index, Vec<u8>)>,
}

impl FrozenState for FrozenRecorder {
    /// The layout `Recorder::restore` reads: a sequence, like a `Vec`'s.
    fn serialize(&self) -> Result<Vec<u8>, SnapshotError> {
        postcard::to_allocvec(&(self.digest, self.last_index, &self.applied))
            .map_err(|e| SnapshotError(e.to_string()))
    }
}
