//! The in-memory view of the replicated log. Durability is the storage
//! layer's job: every change made here is mirrored by a `PersistOp` effect.

use super::message::{Entry, Index, Payload, Term};

#[derive(Clone, Debug, Default)]
pub struct Log {
    /// entries[i] has index `first_index() + i`.
    entries: Vec<Entry>,
    /// Index and term of the entry just before `entries` (0, 0 while nothing
    /// has been compacted away; snapshots move it forward).
    prev_index: Index,
    prev_term: Term,
    /// Command payload bytes held in `entries` (kept up to date, so the
    /// byte snapshot threshold costs nothing to check).
    payload_bytes: usize,
}

/// Command bytes of an entry (what byte bounds count).
pub fn payload_len(entry: &Entry) -> usize {
    match &entry.payload {
        Payload::Command(c) => c.len(),
        Payload::Noop | Payload::Config(_) => 0,
    }
}

impl Log {
    /// Builds a log from a snapshot point and the entries after it, which
    /// must follow `prev_index` contiguously.
    pub fn from_parts(prev_index: Index, prev_term: Term, entries: Vec<Entry>) -> Self {
        debug_assert!(entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == prev_index + i as u64 + 1));
        let payload_bytes = entries.iter().map(payload_len).sum();
        Log {
            entries,
            prev_index,
            prev_term,
            payload_bytes,
        }
    }

    /// Builds a log from recovered entries, which must be contiguous from 1.
    pub fn from_entries(entries: Vec<Entry>) -> Self {
        debug_assert!(entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == i as u64 + 1));
        Self::from_parts(0, 0, entries)
    }

    /// The last index a snapshot covers (0 if none): entries up to here
    /// are gone from memory.
    pub fn snapshot_index(&self) -> Index {
        self.prev_index
    }

    /// Drops every entry up to and including `index`, which must exist.
    pub fn compact(&mut self, index: Index) {
        let Some(term) = self.term_at(index) else {
            return;
        };
        let drop = index.saturating_sub(self.prev_index) as usize;
        let dropped: usize = self
            .entries
            .drain(..drop.min(self.entries.len()))
            .map(|e| payload_len(&e))
            .sum();
        self.payload_bytes -= dropped;
        self.prev_index = index;
        self.prev_term = term;
    }

    /// Replaces the whole log by a snapshot point (paper 7: the follower's
    /// log does not contain the snapshot's last entry).
    pub fn reset(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.payload_bytes = 0;
        self.prev_index = index;
        self.prev_term = term;
    }

    pub fn first_index(&self) -> Index {
        self.prev_index + 1
    }

    pub fn last_index(&self) -> Index {
        self.prev_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.prev_term, |e| e.term)
    }

    /// Term of the entry at `index`; `Some(0)` for index 0; None if absent.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.prev_index {
            return Some(self.prev_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.prev_index {
            return None;
        }
        self.entries.get((index - self.prev_index - 1) as usize)
    }

    /// Up to `max` entries starting at `from` (clamped to what exists).
    /// Entries from `from`: at most `max` of them, and no more once their
    /// command bytes reach `bytes_max` (the first is always included, so a
    /// single large entry still goes).
    pub fn slice(&self, from: Index, max: usize, bytes_max: usize) -> &[Entry] {
        if from <= self.prev_index || from > self.last_index() {
            return &[];
        }
        let start = (from - self.prev_index - 1) as usize;
        let end = start.saturating_add(max).min(self.entries.len());
        let mut bytes = 0usize;
        let mut taken = 0;
        for e in &self.entries[start..end] {
            if taken > 0 && bytes >= bytes_max {
                break;
            }
            bytes = bytes.saturating_add(payload_len(e));
            taken += 1;
        }
        &self.entries[start..start + taken]
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// First index holding `term`, scanning back from `from` (fast back-off).
    pub fn first_index_of_term(&self, term: Term, from: Index) -> Index {
        let mut i = from.min(self.last_index());
        while i > self.prev_index + 1 && self.term_at(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Last index holding `term`, if the log has any entry of it.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        debug_assert!(entry.term >= self.last_term());
        self.payload_bytes += payload_len(&entry);
        self.entries.push(entry);
    }

    /// Bytes of command payload held in memory.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Drops every entry at `index` and after.
    pub fn truncate_from(&mut self, index: Index) {
        debug_assert!(index > self.prev_index);
        let keep = index.saturating_sub(self.prev_index + 1) as usize;
        let dropped: usize = self
            .entries
            .get(keep..)
            .unwrap_or(&[])
            .iter()
            .map(payload_len)
            .sum();
        self.payload_bytes -= dropped;
        self.entries.truncate(keep);
    }

    /// Raft's "at least as up-to-date" order on logs (paper 5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of_terms(terms: &[Term]) -> Log {
        Log::from_entries(
            terms
                .iter()
                .enumerate()
                .map(|(i, &term)| Entry {
                    term,
                    index: i as u64 + 1,
                    payload: Payload::Noop,
                })
                .collect(),
        )
    }

    #[test]
    fn term_lookup_and_bounds() {
        let log = log_of_terms(&[1, 1, 2]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(4), None);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.slice(2, 10, usize::MAX).len(), 2);
        assert_eq!(log.slice(4, 10, usize::MAX).len(), 0);
    }

    /// Issue 11, item 9: a burst of large entries is sent in several
    /// messages, each of at most about `bytes_max`, never over a frame.
    #[test]
    fn a_slice_stops_at_its_byte_bound_but_always_takes_one_entry() {
        let entries: Vec<Entry> = (1..=10)
            .map(|i| Entry {
                term: 1,
                index: i,
                payload: Payload::Command(vec![0; 400]),
            })
            .collect();
        let log = Log::from_entries(entries);
        assert_eq!(log.slice(1, 256, 1000).len(), 3, "400 + 400 + 400 >= 1000");
        assert_eq!(log.slice(1, 2, 1000).len(), 2, "the count bound too");
        assert_eq!(log.slice(1, 256, 10).len(), 1, "one entry over the bound");
        assert_eq!(log.slice(9, 256, 1000).len(), 2);
    }

    #[test]
    fn term_boundaries_for_fast_backoff() {
        let log = log_of_terms(&[1, 1, 2, 2, 2, 3]);
        assert_eq!(log.first_index_of_term(2, 5), 3);
        assert_eq!(log.first_index_of_term(1, 2), 1);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(4), None);
    }

    #[test]
    fn compaction_keeps_the_tail_and_the_snapshot_point() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.compact(2);
        assert_eq!(
            (log.snapshot_index(), log.first_index(), log.last_index()),
            (2, 3, 4)
        );
        assert_eq!(log.term_at(2), Some(1), "the snapshot point keeps its term");
        assert_eq!(log.term_at(1), None);
        assert_eq!(
            log.slice(2, 10, usize::MAX).len(),
            0,
            "compacted entries cannot be sent"
        );
        log.reset(9, 3);
        assert_eq!(
            (log.last_index(), log.last_term(), log.entries().len()),
            (9, 3, 0)
        );
        assert_eq!(log.payload_bytes(), 0);
    }

    #[test]
    fn payload_bytes_follow_appends_truncations_and_compaction() {
        let mut log = Log::default();
        for i in 1..=4u64 {
            log.append(Entry {
                term: 1,
                index: i,
                payload: Payload::Command(vec![0; i as usize]),
            });
        }
        assert_eq!(log.payload_bytes(), 1 + 2 + 3 + 4);
        log.truncate_from(4);
        assert_eq!(log.payload_bytes(), 1 + 2 + 3);
        log.compact(2);
        assert_eq!(log.payload_bytes(), 3);
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = log_of_terms(&[1, 2]);
        assert!(log.is_up_to_date(2, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(5, 1));
        assert!(!log.is_up_to_date(1, 2));
    }
}
