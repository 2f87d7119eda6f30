//! The Raft replica actor and its types. Nothing in here touches a clock, a
//! socket, a file or an unseeded RNG: see `crate::actor`.

pub mod config;
pub mod log;
pub mod membership;
pub mod message;
pub mod replica;
pub mod state_machine;

#[cfg(test)]
mod tests;

pub use config::Config;
pub use log::{payload_len, Log};
pub use membership::{ConfChange, Member, Membership, MembershipError};
pub use message::{Entry, Envelope, Index, Message, Payload, Snapshot, Term};
pub use replica::{
    Applied, Effect, HardState, Input, PersistOp, Raft, RaftError, Recovered, RequestError,
    RequestId, Role, SnapshotJob, Timer, COMPACTION_DEFER_THRESHOLDS,
};
pub use state_machine::{FrozenState, Recorder, RestoreError, SnapshotError, StateMachine};
