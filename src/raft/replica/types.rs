//! The replica's inputs, outputs and errors: what a driver gives it and
//! gets back, and the durable state it persists and recovers.

use super::*;

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
    /// The driver ran the `SnapshotJob` for `index` (`Effect::BuildSnapshot`)
    /// off the replica's thread: its bytes, or why not.
    SnapshotBuilt {
        index: Index,
        result: Result<Vec<u8>, SnapshotError>,
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
        /// Shared with the replica, which keeps it to send to followers:
        /// a state of tens of MB is not copied to be written.
        snapshot: Arc<Snapshot>,
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
    /// Serialize this frozen state off the replica's thread, then step
    /// `SnapshotBuilt` (`SnapshotJob::run`). A replica asks for one at a
    /// time; a result it no longer wants (a restart, a snapshot installed
    /// meanwhile) it ignores.
    BuildSnapshot(SnapshotJob),
}

/// The state machine's state at `index`, frozen, to serialize anywhere.
#[derive(Clone)]
pub struct SnapshotJob {
    pub index: Index,
    pub state: Arc<dyn FrozenState>,
}

impl SnapshotJob {
    /// Serializes the state: the input to step back into the replica.
    pub fn run(&self) -> Input {
        Input::SnapshotBuilt {
            index: self.index,
            result: self.state.serialize(),
        }
    }

    /// `run`, with a panic reported as an error: the replica waits for an
    /// answer to every build, and never compacts again without one.
    /// (Production's thread; the simulator lets a panic fail the seed.)
    pub fn run_catching_panics(&self) -> Input {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run())).unwrap_or_else(|_| {
            Input::SnapshotBuilt {
                index: self.index,
                result: Err(SnapshotError("serializing panicked".into())),
            }
        })
    }
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotJob")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The same job: the same index and the same frozen state.
impl PartialEq for SnapshotJob {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for SnapshotJob {}

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
