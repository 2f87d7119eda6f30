//! The client side of a session, as a deterministic actor: request
//! sequencing and retries (exactly-once with the lock machine's kept
//! responses), leader discovery, keepalives, the local lease clock with its
//! drift margin, waiting for queued grants (pushed, or a long-polled wait), wait
//! timeouts, and lock-lost detection. The simulator runs it in simulated
//! clients; the Rust client library drives the same actor over HTTP.
//!
//! Inputs come with the client's local time; outputs are `Effect`s. One
//! timer: the actor asks to be woken at one instant (`Effect::WakeAt`).

mod actor;
#[cfg(test)]
mod tests;

pub use actor::{
    Call, CallError, CallId, Done, Effect, Input, NodeReply, RpcId, Session, SessionConfig, ToNode,
    WaitFor, CALLS_QUEUED_MAX, READS_PENDING_MAX,
};
