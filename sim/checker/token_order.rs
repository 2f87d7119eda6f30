//! Fencing tokens are distinct per grant and strictly increasing per lock
//! in grant (log) order, on every replica, across crashes, restarts,
//! snapshots and leader changes: one global table of every grant any
//! replica made, which every later report must agree with.

use raftlock::lock::Grant;
use raftlock::raft::Index;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct TokenOrder {
    /// lock -> token -> (index of the granting entry, session).
    grants: BTreeMap<String, BTreeMap<u64, (Index, u64)>>,
    /// token -> lock: a token names one grant of one lock.
    owners: BTreeMap<u64, String>,
}

impl TokenOrder {
    pub const NAME: &'static str = "token-order";

    pub fn on_grant(&mut self, node: u64, g: &Grant) -> Result<(), String> {
        if let Some(lock) = self.owners.get(&g.token) {
            if lock != &g.lock {
                return Err(format!(
                    "node {node} granted token {} for {} but it was granted for {lock}",
                    g.token, g.lock
                ));
            }
        }
        self.owners.insert(g.token, g.lock.clone());
        let per_lock = self.grants.entry(g.lock.clone()).or_default();
        if let Some(&(index, session)) = per_lock.get(&g.token) {
            if (index, session) != (g.index, g.session) {
                return Err(format!(
                    "node {node} granted {} token {} to session {} at index {}, elsewhere it went to session {session} at index {index}",
                    g.lock, g.token, g.session, g.index
                ));
            }
            return Ok(());
        }
        let before = per_lock.range(..g.token).next_back();
        let after = per_lock.range(g.token + 1..).next();
        if let Some((&t, &(i, _))) = before {
            if i > g.index {
                return Err(format!(
                    "{}: token {} granted at index {} but the smaller token {t} at later index {i}",
                    g.lock, g.token, g.index
                ));
            }
        }
        if let Some((&t, &(i, _))) = after {
            if i < g.index {
                return Err(format!(
                    "{}: token {} granted at index {} but the larger token {t} at earlier index {i}",
                    g.lock, g.token, g.index
                ));
            }
        }
        per_lock.insert(g.token, (g.index, g.session));
        Ok(())
    }

    pub fn grants(&self) -> usize {
        self.owners.len()
    }
}
