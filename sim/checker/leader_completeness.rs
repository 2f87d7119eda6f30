//! Leader completeness (paper figure 3): a leader's log holds every entry
//! committed before its term.

use super::EntryId;
use raftlock::actor::NodeId;
use raftlock::raft::{Index, Log, Term};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct LeaderCompleteness;

impl LeaderCompleteness {
    pub const NAME: &'static str = "leader-completeness";

    pub fn on_leader(
        &mut self,
        node: NodeId,
        term: Term,
        committed: &BTreeMap<Index, EntryId>,
        log: &Log,
    ) -> Result<(), String> {
        for (&index, &id) in committed {
            // Entries inside the leader's snapshot are committed by
            // construction (a snapshot only covers applied entries).
            if id.term >= term || index < log.first_index() {
                continue;
            }
            let has = log.get(index).map(EntryId::of);
            if has != Some(id) {
                return Err(format!(
                    "node {node} became leader of term {term} without committed entry {index} ({id:?}); it has {has:?}"
                ));
            }
        }
        Ok(())
    }
}
