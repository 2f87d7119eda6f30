//! What Raft applies committed commands to.

use super::message::Index;

/// A deterministic state machine. `apply` is called exactly once per
/// committed command, in log order, on every replica; it must depend on
/// nothing but its own state, the index and the command.
pub trait StateMachine {
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8>;

    /// Answers a read-only query against the applied state. Called only once
    /// the read is linearizable (ReadIndex confirmed and applied).
    fn query(&self, query: &[u8]) -> Vec<u8>;
}

/// Records every applied command and a running digest. Used by the
/// simulator, the TCP tests and the demo; the lock manager replaces it.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    applied: Vec<(Index, Vec<u8>)>,
    applied_max: usize,
    digest: u64,
    last_index: Index,
}

/// Commands a `Recorder` keeps for inspection (the digest covers all).
pub const RECORDER_APPLIED_MAX_DEFAULT: usize = 100_000;

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            applied: Vec::new(),
            applied_max: RECORDER_APPLIED_MAX_DEFAULT,
            digest: 0,
            last_index: 0,
        }
    }

    pub fn applied(&self) -> &[(Index, Vec<u8>)] {
        &self.applied
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: Index, command: &[u8]) -> Vec<u8> {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.digest.to_le_bytes());
        h.update(&index.to_le_bytes());
        h.update(command);
        self.digest = (self.digest << 32) ^ u64::from(h.finalize());
        if self.applied.len() < self.applied_max {
            self.applied.push((index, command.to_vec()));
        }
        self.last_index = index;
        index.to_le_bytes().to_vec()
    }

    /// Any query returns the index of the last applied command, so a reader
    /// can tell whether it saw a given write.
    fn query(&self, _query: &[u8]) -> Vec<u8> {
        self.last_index.to_le_bytes().to_vec()
    }
}
