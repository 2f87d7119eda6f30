//! Lease safety: the cluster never ends a session by expiry while that
//! session's client could still believe its lease valid. The checker knows
//! real (simulated) time: each client reports, for every lease it trusts,
//! the real instant its own drifting clock will reach the end of it; the
//! first replica to apply the expiry must do so at or after that instant.
//! Checking at the expiry (not at the next grant) is the stricter form:
//! lock-delay or FIFO waiting can only push grants later.

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub struct LeaseSafety {
    /// session -> the latest real time its client may still trust it.
    believed_until: BTreeMap<u64, Duration>,
    /// session -> when it expired; a client that learns of a renewal late
    /// (its reply was delayed) reports its trust after the expiry.
    expired_at: BTreeMap<u64, Duration>,
    pub expiries_checked: u64,
}

impl LeaseSafety {
    pub const NAME: &'static str = "lease-safety";

    pub fn on_trusted_until(&mut self, session: u64, until: Duration) -> Result<(), String> {
        let e = self.believed_until.entry(session).or_default();
        *e = (*e).max(until);
        match self.expired_at.get(&session) {
            Some(&at) if at < until => Err(format!(
                "session {session} expired at {at:?}, but its client now trusts its lease until {until:?}"
            )),
            _ => Ok(()),
        }
    }

    /// A replica applied the expiry of `session` at real time `now`.
    pub fn on_expired(&mut self, session: u64, now: Duration) -> Result<(), String> {
        self.expiries_checked += 1;
        self.expired_at.entry(session).or_insert(now);
        match self.believed_until.get(&session) {
            Some(&until) if now < until => Err(format!(
                "session {session} expired at {now:?} while its client trusts its lease until {until:?}"
            )),
            _ => Ok(()),
        }
    }
}
