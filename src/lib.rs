//! raftlock: a distributed lock service on Raft.
//!
//! The Raft replica (`raft`), and later the lock manager and client
//! sessions, are deterministic actors (`actor`): they take local time and an
//! input and return effects. Two drivers run them: `runtime` (actix, tokio,
//! TCP, fsync) in production, and the madsim simulator in `sim/`.

pub mod actor;
pub mod check;
pub mod driver;
pub mod fuzz;
pub mod gateway;
pub mod lock;
pub mod net;
pub mod raft;
pub mod session;
pub mod storage;

#[cfg(not(madsim))]
pub mod bench;
pub mod client;
#[cfg(not(madsim))]
pub mod entropy;
#[cfg(not(madsim))]
pub mod http;
#[cfg(not(madsim))]
pub mod runtime;
