//! State machine safety (paper figure 3): no two nodes apply different
//! entries at the same index (also checked for commits, which precede it).

use super::EntryId;
use raftlock::actor::NodeId;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<u64, (NodeId, EntryId)>,
}

impl StateMachineSafety {
    pub const NAME: &'static str = "state-machine-safety";

    pub fn on_applied(&mut self, node: NodeId, index: u64, id: EntryId) -> Result<(), String> {
        match self.applied.get(&index) {
            Some(&(other, prev)) if prev != id => Err(format!(
                "node {node} applied {id:?} at index {index}, node {other} applied {prev:?}"
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(index, (node, id));
                Ok(())
            }
        }
    }
}
