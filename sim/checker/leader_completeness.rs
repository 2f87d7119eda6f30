//! Leader completeness (paper figure 3): a leader's log holds every entry
//! committed in an earlier term. "Committed in" is the term of the node
//! that first reported the commit, not the entry's own term: an entry of
//! term 3 that only a term-5 leader got onto a majority was not committed
//! when a (paused, stale) node won term 4, and need not be in its log.

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
        commit_terms: &BTreeMap<Index, Term>,
        log: &Log,
    ) -> Result<(), String> {
        for (&index, &id) in committed {
            // Entries inside the leader's snapshot are committed by
            // construction (a snapshot only covers applied entries).
            let committed_in = commit_terms.get(&index).copied().unwrap_or(id.term);
            if committed_in >= term || index < log.first_index() {
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
