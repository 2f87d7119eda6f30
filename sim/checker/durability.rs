//! No committed entry is lost across crashes: every committed entry stays in
//! the logs of a majority of the voters of the latest committed
//! configuration, counting a crashed node by what its disk gave back on
//! restart. Losing it is what an ack-before-fsync bug looks like.

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
        voters: &[NodeId],
    ) -> Result<(), String> {
        let quorum = voters.len() / 2 + 1;
        for (&index, &id) in committed {
            let holders = voters
                .iter()
                .filter_map(|v| logs.get(v))
                .filter(|log| log.get(index as usize - 1) == Some(&id))
                .count();
            if holders < quorum {
                return Err(format!(
                    "committed entry {index} ({id:?}) survives on {holders} node(s), fewer than a majority of {quorum}"
                ));
            }
        }
        Ok(())
    }
}
