//! Exactly-once: a client request (session, sequence number) is executed
//! by at most one log entry. The same entry applied on several replicas,
//! or again after a restart, is one execution; a retry carried by a second
//! entry must be answered from the kept response, not run again.

use raftlock::raft::Index;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct ExactlyOnce {
    executed: BTreeMap<(u64, u64), Index>,
}

/// Executions remembered; older ones are forgotten (a run makes far fewer).
pub const EXECUTIONS_TRACKED_MAX: usize = 1_000_000;

impl ExactlyOnce {
    pub const NAME: &'static str = "exactly-once";

    pub fn on_executed(
        &mut self,
        node: u64,
        session: u64,
        seq: u64,
        index: Index,
    ) -> Result<(), String> {
        match self.executed.get(&(session, seq)) {
            Some(&first) if first != index => Err(format!(
                "node {node} executed request {seq} of session {session} at index {index}, already executed at index {first}"
            )),
            Some(_) => Ok(()),
            None => {
                if self.executed.len() < EXECUTIONS_TRACKED_MAX {
                    self.executed.insert((session, seq), index);
                }
                Ok(())
            }
        }
    }

    pub fn requests(&self) -> usize {
        self.executed.len()
    }
}
