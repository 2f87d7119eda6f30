//! The lock service's replicated state machine: sessions with leases,
//! exclusive / shared / semaphore locks with FIFO queues, fencing tokens,
//! exactly-once requests and fenced append-only files. See docs/SAFETY.md.

pub mod auth;
mod command;
mod config;
pub mod fence;
mod machine;
mod table;
#[cfg(test)]
pub(crate) mod tests;

pub use command::{
    outcome_label, Command, Event, FileInfo, Grant, HolderInfo, LockError, LockInfo, Mode, Op,
    Query, QueryAnswer, Reply, Request, Response, SessionId, SessionInfo, Token,
    KEEPALIVES_PER_ENTRY_MAX, KEEPALIVE_ITEM_BYTES_MAX,
};
#[cfg(feature = "sim")]
pub use config::LockBugs;
pub use config::{Limits, LockConfig, DRIFT_PPM_DEFAULT, LOCK_DELAY_MS_DEFAULT};
pub use machine::{encode, LockMachine, SESSIONS_LISTED_MAX};
