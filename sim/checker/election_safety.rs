//! Election safety (paper figure 3): at most one leader per term.

use raftlock::actor::NodeId;
use raftlock::raft::Term;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    pub const NAME: &'static str = "election-safety";

    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => Err(format!(
                "two leaders in term {term}: node {other} and node {node}"
            )),
            _ => Ok(()),
        }
    }
}
