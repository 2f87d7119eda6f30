//! No committed entry is lost across crashes: every committed entry stays in
//! the logs of a majority of the voters of the latest committed
//! configuration, or of a configuration appended after it (a configuration
//! is in effect once appended, thesis 4.1, and single-server changes keep
//! the majorities of consecutive configurations overlapping), counting a
//! crashed node by what its disk gave back on restart. Losing it is what an
//! ack-before-fsync bug looks like.

use super::EntryId;
use raftlock::actor::NodeId;
use raftlock::raft::Index;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Durability;

impl Durability {
    pub const NAME: &'static str = "committed-entry-durability";

    pub fn check(
        &self,
        committed: &BTreeMap<Index, EntryId>,
        logs: &BTreeMap<NodeId, Vec<EntryId>>,
        voter_sets: &[Vec<NodeId>],
    ) -> Result<(), String> {
        for (&index, &id) in committed {
            let holds = |v: &NodeId| {
                logs.get(v)
                    .is_some_and(|log| log.get(index as usize - 1) == Some(&id))
            };
            let majority_somewhere = voter_sets
                .iter()
                .any(|voters| voters.iter().filter(|v| holds(v)).count() > voters.len() / 2);
            if !majority_somewhere {
                let voters = &voter_sets[0];
                let holders: Vec<NodeId> = voters.iter().copied().filter(|v| holds(v)).collect();
                return Err(format!(
                    "committed entry {index} ({id:?}) survives on voters {holders:?} of {voters:?}, a majority of no configuration in effect"
                ));
            }
        }
        Ok(())
    }
}
