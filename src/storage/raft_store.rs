//! Raft's durable state (term, vote, log) as records in one journal.
//!
//! Every `PersistOp` the replica emits becomes one record, so a truncation is
//! a record too and nothing is ever rewritten in place: a crash at any point
//! leaves a prefix of the records, which replays to a state the replica had.

use super::journal::{encode_record, Journal, JournalError};
use super::Dir;
use crate::raft::{Entry, HardState, Index, PersistOp, Recovered};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const JOURNAL_FILE: &str = "raft.journal";

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    HardState(HardState),
    Entries(Vec<Entry>),
    TruncateFrom(Index),
}

#[derive(Debug, Serialize)]
enum RecordRef<'a> {
    HardState(&'a HardState),
    Entries(&'a [Entry]),
    TruncateFrom(Index),
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{file}: record at byte offset {offset} does not decode: {source}")]
    Decode {
        file: String,
        offset: u64,
        #[source]
        source: postcard::Error,
    },
    #[error("{file}: record at byte offset {offset} is inconsistent: {reason}")]
    Inconsistent {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("cannot encode a record: {0}")]
    Encode(#[source] postcard::Error),
}

/// What recovery found, for logs and traces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub records: usize,
    pub torn_tail_bytes: u64,
}

pub struct RaftStore<F> {
    journal: Journal<F>,
    /// Encoded records not yet handed to the file (one write per batch).
    buf: Vec<u8>,
}

impl<F: super::File> RaftStore<F> {
    /// Opens the store in `dir` and replays it.
    pub fn open<D: Dir<File = F>>(
        dir: &D,
    ) -> Result<(Self, Recovered, RecoveryReport), StoreError> {
        let opened = Journal::open(dir, JOURNAL_FILE)?;
        let mut recovered = Recovered::default();
        for span in &opened.records {
            let inconsistent = |reason: String| StoreError::Inconsistent {
                file: JOURNAL_FILE.to_string(),
                offset: span.offset,
                reason,
            };
            let record: Record = postcard::from_bytes(&opened.bytes[span.payload.clone()])
                .map_err(|source| StoreError::Decode {
                    file: JOURNAL_FILE.to_string(),
                    offset: span.offset,
                    source,
                })?;
            match record {
                Record::HardState(hs) => {
                    if hs.term < recovered.hard_state.term {
                        return Err(inconsistent(format!(
                            "term goes back from {} to {}",
                            recovered.hard_state.term, hs.term
                        )));
                    }
                    recovered.hard_state = hs;
                }
                Record::Entries(entries) => {
                    for entry in entries {
                        let expected = recovered.entries.len() as u64 + 1;
                        if entry.index != expected {
                            return Err(inconsistent(format!(
                                "entry {} where {expected} was due",
                                entry.index
                            )));
                        }
                        recovered.entries.push(entry);
                    }
                }
                Record::TruncateFrom(index) => {
                    if index == 0 {
                        return Err(inconsistent("truncation from index 0".to_string()));
                    }
                    recovered.entries.truncate(index as usize - 1);
                }
            }
        }
        let report = RecoveryReport {
            records: opened.records.len(),
            torn_tail_bytes: opened.torn_tail_bytes,
        };
        Ok((
            RaftStore {
                journal: opened.journal,
                buf: Vec::new(),
            },
            recovered,
            report,
        ))
    }

    /// Buffers one operation; it reaches the file on `flush` or `sync`.
    pub fn write(&mut self, op: &PersistOp) -> Result<(), StoreError> {
        let record = match op {
            PersistOp::HardState(hs) => RecordRef::HardState(hs),
            PersistOp::Append(entries) => RecordRef::Entries(entries),
            PersistOp::TruncateFrom(index) => RecordRef::TruncateFrom(*index),
        };
        let payload = postcard::to_allocvec(&record).map_err(StoreError::Encode)?;
        encode_record(&payload, &mut self.buf)?;
        Ok(())
    }

    /// Hands buffered records to the file without fsync.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if !self.buf.is_empty() {
            self.journal.append_encoded(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes and fsyncs: everything written so far is durable on return.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        self.journal.sync()?;
        Ok(())
    }

    pub fn journal_bytes(&self) -> u64 {
        self.journal.len()
    }
}
