//! Fenced mutual exclusion at the protected resource: it never accepts a
//! write whose token is lower than one it already accepted, so writes of
//! two exclusive holders never interleave (A, B, A is impossible once B's
//! larger token was accepted). The resource's own token check is what
//! keeps this true; the negative control turns it off.

use raftlock::lock::Token;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct FencedExclusion {
    highest_accepted: BTreeMap<String, (Token, u64)>,
}

impl FencedExclusion {
    pub const NAME: &'static str = "fenced-mutual-exclusion";

    /// The resource accepted a write by `client` with `token`.
    pub fn on_accepted(&mut self, resource: &str, token: Token, client: u64) -> Result<(), String> {
        match self.highest_accepted.get(resource) {
            Some(&(high, by)) if token < high => Err(format!(
                "resource {resource} accepted client {client}'s write with token {token} after client {by}'s with {high}"
            )),
            _ => {
                self.highest_accepted
                    .insert(resource.to_string(), (token, client));
                Ok(())
            }
        }
    }
}
