//! Reads are linearizable against writes: a read never returns a state older
//! than a write that completed before the read began.
//!
//! The simulated state machine answers every query with the index of the
//! last command it applied, so "older" is a comparison of indices: a read
//! invoked after a write at index w completed must return at least w.

#[derive(Default)]
pub struct ReadLinearizability;

impl ReadLinearizability {
    pub const NAME: &'static str = "read-linearizability";

    /// `floor`: the highest index of any write completed before the read was
    /// invoked; `seen`: what the read returned.
    pub fn on_read(&mut self, node_asked: u64, floor: u64, seen: u64) -> Result<(), String> {
        if seen < floor {
            return Err(format!(
                "a read served via node {node_asked} saw state up to index {seen}, but a write at index {floor} had completed before the read began"
            ));
        }
        Ok(())
    }
}
