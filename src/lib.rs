//! raftlock: a distributed lock service on Raft.
//!
//! Four deterministic actors (`actor`: local time and an input in, effects
//! out; no clocks, sockets, files or unseeded randomness inside): the Raft
//! replica (`raft`), the lock machine it replicates (`lock`), the client's
//! session (`session`), and each node's request layer (`gateway`). Two
//! drivers run the same actors through one driver core (`driver`): the
//! production node (`runtime`: actix, tokio, TCP, fsync; `http` drives the
//! gateway) and the madsim simulator in `sim/`. The client library
//! (`client`) runs the session actor over a transport and a clock, real or
//! simulated.

pub mod actor;
pub mod credential;
pub mod driver;
pub mod fuzz;
pub mod gateway;
pub mod linearizability;
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
#[cfg(not(madsim))]
pub mod tls;
