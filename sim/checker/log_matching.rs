//! Log matching (paper figure 3): if two logs hold an entry with the same
//! index and term, the logs are identical up to that index.
//!
//! Checked incrementally with a chain hash: the hash at index i covers every
//! entry up to i, so two nodes agreeing on (i, term) must agree on the hash.

use super::EntryId;
use raftlock::actor::NodeId;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct LogMatching {
    /// (index, term) -> chain hash of the prefix ending there.
    seen: BTreeMap<(u64, u64), u64>,
    /// Per node: chain hash at each index of its current log.
    chains: BTreeMap<NodeId, Vec<u64>>,
}

fn chain(prev: u64, id: EntryId) -> u64 {
    let mut h = crc32fast::Hasher::new_with_initial(prev as u32);
    h.update(&prev.to_le_bytes());
    h.update(&id.term.to_le_bytes());
    h.update(&id.digest.to_le_bytes());
    (prev.rotate_left(29)) ^ u64::from(h.finalize()) ^ (id.term << 40)
}

impl LogMatching {
    pub const NAME: &'static str = "log-matching";

    fn record(&mut self, node: NodeId, index: usize, hash: u64, term: u64) -> Result<(), String> {
        match self.seen.insert((index as u64 + 1, term), hash) {
            Some(prev) if prev != hash => Err(format!(
                "node {node} holds an entry at index {} term {term} whose preceding log differs from another node's",
                index + 1
            )),
            _ => Ok(()),
        }
    }

    /// The last entry of `log` was just appended.
    pub fn on_append(&mut self, node: NodeId, log: &[EntryId]) -> Result<(), String> {
        let chain_of = self.chains.entry(node).or_default();
        chain_of.truncate(log.len() - 1);
        if chain_of.len() + 1 != log.len() {
            return self.check_log(node, log);
        }
        let prev = chain_of.last().copied().unwrap_or(0);
        let id = log[log.len() - 1];
        let hash = chain(prev, id);
        chain_of.push(hash);
        self.record(node, log.len() - 1, hash, id.term)
    }

    /// A whole log (at recovery): rebuild the node's chain and check it.
    pub fn check_log(&mut self, node: NodeId, log: &[EntryId]) -> Result<(), String> {
        let mut hashes = Vec::with_capacity(log.len());
        let mut prev = 0;
        let mut result = Ok(());
        for (i, id) in log.iter().enumerate() {
            prev = chain(prev, *id);
            hashes.push(prev);
            if result.is_ok() {
                result = self.record(node, i, prev, id.term);
            }
        }
        self.chains.insert(node, hashes);
        result
    }
}
