//! Liveness of requests after faults heal (`request-liveness`): once the
//! cluster has had `REQUEST_SETTLE_MS` to elect a leader, every call an
//! HTTP-style client makes is answered (granted, refused, timed out by the
//! node: any answer) before the client's own timeout; and every such
//! client gets some call answered. Checked by the supervisor's liveness
//! phase from what the clients report.

use std::collections::BTreeMap;
use std::time::Duration;

/// After faults heal, how long the cluster may take to answer again (an
/// election, a few heartbeats) before an unanswered call is a violation.
pub const REQUEST_SETTLE_MS: u64 = 2_000;

#[derive(Default)]
pub struct RequestLiveness {
    /// client -> invocation time of its latest answered call.
    last_answered: BTreeMap<u64, Duration>,
    /// Calls whose client gave up waiting: (client, invoked).
    unanswered: Vec<(u64, Duration)>,
    pub calls: u64,
    pub given_up: u64,
}

impl RequestLiveness {
    pub const NAME: &'static str = "request-liveness";

    pub fn on_call(&mut self, client: u64, invoked: Duration, given_up: bool) {
        self.calls += 1;
        if given_up {
            self.given_up += 1;
            self.unanswered.push((client, invoked));
        } else {
            self.last_answered.insert(client, invoked);
        }
    }

    /// A call made after the cluster settled that was never answered.
    pub fn first_unanswered_since(&self, healed: Duration) -> Option<(u64, Duration)> {
        let settled = healed + Duration::from_millis(REQUEST_SETTLE_MS);
        self.unanswered.iter().copied().find(|&(_, t)| t >= settled)
    }

    /// Whether every client had a call answered that it made after the
    /// cluster settled.
    pub fn all_answered_since(&self, clients: &[u64], healed: Duration) -> bool {
        let settled = healed + Duration::from_millis(REQUEST_SETTLE_MS);
        clients
            .iter()
            .all(|c| self.last_answered.get(c).is_some_and(|&t| t >= settled))
    }
}
