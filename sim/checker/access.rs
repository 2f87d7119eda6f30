//! Access control (`access-control`): a credential gets what its policy
//! and ownership allow, and nothing else, under every fault.
//!
//! - The intruder (`intruder.rs`) never gets another's session or lock,
//!   a lock outside its prefix, or anything with a forged, malformed,
//!   absent or revoked credential (after the revocation's answer).
//! - A well-behaved client is never refused: its own credential, its own
//!   sessions and locks its policy allows must pass every node's door and
//!   the lock machine, even on a node whose table lags the cluster's.

use super::Checker;
use std::net::SocketAddr;

#[derive(Debug, Default)]
pub struct Access {
    /// Intruder calls answered with a refusal or nothing of value.
    pub intrusions_refused: u64,
    /// Credentials revoked while in use, then tried again.
    pub revocations: u64,
}

impl Access {
    pub const NAME: &'static str = "access-control";
}

impl Checker {
    /// The intruder tried `what`; `got` is what it should not have got.
    pub fn on_intrusion(&mut self, what: &str, got: Option<String>) {
        match got {
            None => self.access.intrusions_refused += 1,
            Some(got) => self.fail(Access::NAME, format!("intruder: {what}: {got}")),
        }
    }

    /// A node refused (401 or 403) a call from `client` for `why`.
    pub fn on_refused(&mut self, client: SocketAddr, why: &str) {
        let admin_line = client.port() == crate::credentials::ADMIN_PORT;
        if admin_line || crate::intruder::is_intruder(client) {
            // The admin line's calls before the bootstrap lands, and the
            // intruder's, may be refused.
            return;
        }
        self.fail(
            Access::NAME,
            format!("a well-behaved client at {client} was refused: {why}"),
        );
    }
}
