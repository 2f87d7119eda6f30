//! The one shape every actor in raftlock follows.
//!
//! An actor is a plain state machine: a driver hands it the node's *local* time
//! together with one input (a peer message, a client request, a timer firing,
//! or start-up with the durable state recovered from disk), and the actor
//! appends *effects* to an outbox: send a message, set or cancel a timer,
//! persist a write (with or without fsync), reply to a client.
//!
//! Actors never read a clock, a socket, a file, an environment variable or an
//! unseeded RNG, never spawn tasks, and never let the iteration order of a
//! `HashMap` reach an output. That is what lets the production driver
//! (`runtime/`, actix + tokio + real TCP + real fsync) and the simulation
//! driver (`sim/`, madsim) run the very same code, and what makes a simulation
//! seed replay bit for bit. See `docs/ARCHITECTURE.md`.
//!
//! **Effect order is a contract.** A driver executes an actor's effects in the
//! order they were emitted, with two allowed relaxations. It may hold back
//! sends and replies until after later persists and their fsync (delaying a
//! message is indistinguishable from network latency). And it may send an
//! AppendEntries request before the persists emitted ahead of it are durable
//! (thesis 10.2.1): a leader counts its own log toward commit only up to the
//! point the driver reports durable with `Input::Persisted`. Nothing else may
//! overtake a `Persist { sync: true }` emitted before it: a vote or an
//! acknowledgement is only given for state that is on disk.

use serde::{Deserialize, Serialize};
use std::ops::Add;
use std::time::Duration;

/// Identifies a node of the cluster. Zero is never a valid node id.
pub type NodeId = u64;

/// A point on one node's local clock, in microseconds since an arbitrary
/// per-node origin. Instants from different nodes are not comparable: clocks
/// are skewed and drift, and the simulator makes them so on purpose.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let micros = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_arithmetic_saturates() {
        let t = Instant::from_micros(10);
        assert_eq!((t + Duration::from_micros(5)).as_micros(), 15);
        assert_eq!(t.saturating_since(Instant::from_micros(20)), Duration::ZERO);
        assert_eq!(
            Instant::from_micros(25).saturating_since(t),
            Duration::from_micros(15)
        );
        assert_eq!(
            (Instant::from_micros(u64::MAX) + Duration::from_secs(1)).as_micros(),
            u64::MAX
        );
    }
}
