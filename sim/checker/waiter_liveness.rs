//! Liveness after faults heal: every client's waiting acquire ends, granted
//! or timed out, and every client gets a lock again. Checked by the
//! supervisor's liveness phase from what clients report.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub struct WaiterLiveness {
    /// client -> invocation time of its oldest call still outstanding.
    outstanding: BTreeMap<u64, Duration>,
    /// client -> invocation time of its latest successful acquire.
    last_grant_invoked: BTreeMap<u64, Duration>,
}

impl WaiterLiveness {
    pub const NAME: &'static str = "waiter-liveness";

    pub fn on_call(&mut self, client: u64, invoked: Duration) {
        self.outstanding.entry(client).or_insert(invoked);
    }

    pub fn on_done(&mut self, client: u64, invoked: Duration, granted: bool) {
        self.outstanding.remove(&client);
        if granted {
            self.last_grant_invoked.insert(client, invoked);
        }
    }

    /// Whether every client got a grant on a call made after `healed`.
    pub fn all_granted_since(&self, clients: &[u64], healed: Duration) -> bool {
        clients
            .iter()
            .all(|c| self.last_grant_invoked.get(c).is_some_and(|&t| t >= healed))
    }

    /// Calls still outstanding that began before `deadline`.
    pub fn stuck(&self, older_than: Duration) -> Vec<(u64, Duration)> {
        self.outstanding
            .iter()
            .filter(|(_, &t)| t < older_than)
            .map(|(&c, &t)| (c, t))
            .collect()
    }
}
