//! Raft's durable state (term, vote, snapshot, log) as records in one
//! journal.
//!
//! Every `PersistOp` the replica emits becomes one record, so a truncation is
//! a record too and nothing is rewritten in place: a crash at any point
//! leaves a prefix of the records, which replays to a state the replica had.
//!
//! A `PersistOp::Snapshot` (compaction, or a snapshot installed from the
//! leader) writes a new journal, `raft.journal.tmp`, holding the hard state,
//! the snapshot and the entries after it; `sync` fsyncs it and renames it
//! over `raft.journal` (the rename is atomic and durable). Records written
//! after the snapshot go to the new journal. A crash before the rename
//! leaves the old journal intact and a stray tmp file, which recovery
//! deletes.

use super::journal::{encode_record, Journal, JournalError};
use super::{Dir, File};
use crate::raft::{Entry, HardState, Index, PersistOp, Recovered, Snapshot};
use serde::{Deserialize, Serialize};
use std::io;
use thiserror::Error;

pub const JOURNAL_FILE: &str = "raft.journal";
pub const JOURNAL_TMP_FILE: &str = "raft.journal.tmp";

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    HardState(HardState),
    Entries(Vec<Entry>),
    TruncateFrom(Index),
    Snapshot(Snapshot),
}

#[derive(Debug, Serialize)]
enum RecordRef<'a> {
    HardState(&'a HardState),
    Entries(&'a [Entry]),
    TruncateFrom(Index),
    Snapshot(&'a Snapshot),
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
    #[error("I/O error on {file}: {source}")]
    Io {
        file: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What recovery found, for logs and traces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub records: usize,
    pub torn_tail_bytes: u64,
    /// A compaction was cut short by a crash; its tmp file was removed.
    pub removed_tmp: bool,
}

pub struct RaftStore<D: Dir> {
    dir: D,
    journal: Journal<D::File>,
    /// Encoded records not yet handed to the file (one write per batch).
    buf: Vec<u8>,
    /// A compacted journal written to the tmp file, not yet renamed.
    rewrite: Option<D::File>,
}

fn encode(record: &RecordRef<'_>, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let payload = postcard::to_allocvec(record).map_err(StoreError::Encode)?;
    encode_record(&payload, out)?;
    Ok(())
}

impl<D: Dir> RaftStore<D> {
    /// Opens the store in `dir` and replays it.
    pub fn open(dir: D) -> Result<(Self, Recovered, RecoveryReport), StoreError> {
        let io_err = |file, source| StoreError::Io { file, source };
        let removed_tmp = dir
            .read(JOURNAL_TMP_FILE)
            .map_err(|e| io_err(JOURNAL_TMP_FILE, e))?
            .is_some();
        if removed_tmp {
            tracing::warn!(
                file = JOURNAL_TMP_FILE,
                "removing a compaction cut short by a crash"
            );
            dir.remove(JOURNAL_TMP_FILE)
                .map_err(|e| io_err(JOURNAL_TMP_FILE, e))?;
        }
        let opened = Journal::open(&dir, JOURNAL_FILE)?;
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
            let base = recovered.snapshot.as_ref().map_or(0, |s| s.index);
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
                        let expected = base + recovered.entries.len() as u64 + 1;
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
                    if index <= base {
                        return Err(inconsistent(format!(
                            "truncation from {index}, inside the snapshot up to {base}"
                        )));
                    }
                    recovered.entries.truncate((index - base - 1) as usize);
                }
                Record::Snapshot(snapshot) => {
                    recovered.entries.clear();
                    recovered.snapshot = Some(snapshot);
                }
            }
        }
        let report = RecoveryReport {
            records: opened.records.len(),
            torn_tail_bytes: opened.torn_tail_bytes,
            removed_tmp,
        };
        let store = RaftStore {
            dir,
            journal: opened.journal,
            buf: Vec::new(),
            rewrite: None,
        };
        Ok((store, recovered, report))
    }

    /// Buffers one operation; it reaches the file on `flush` or `sync`.
    pub fn write(&mut self, op: &PersistOp) -> Result<(), StoreError> {
        match op {
            PersistOp::HardState(hs) => encode(&RecordRef::HardState(hs), &mut self.buf),
            PersistOp::Append(entries) => encode(&RecordRef::Entries(entries), &mut self.buf),
            PersistOp::TruncateFrom(index) => {
                encode(&RecordRef::TruncateFrom(*index), &mut self.buf)
            }
            PersistOp::Snapshot {
                snapshot,
                hard_state,
                tail,
            } => {
                // Everything buffered so far is superseded by the new journal.
                self.buf.clear();
                let mut bytes = Vec::new();
                encode(&RecordRef::HardState(hard_state), &mut bytes)?;
                encode(&RecordRef::Snapshot(snapshot), &mut bytes)?;
                if !tail.is_empty() {
                    encode(&RecordRef::Entries(tail), &mut bytes)?;
                }
                let tmp_err = |source| StoreError::Io {
                    file: JOURNAL_TMP_FILE,
                    source,
                };
                self.dir.remove(JOURNAL_TMP_FILE).map_err(tmp_err)?;
                let mut tmp = self.dir.open_append(JOURNAL_TMP_FILE).map_err(tmp_err)?;
                tmp.append(&bytes).map_err(tmp_err)?;
                self.rewrite = Some(tmp);
                Ok(())
            }
        }
    }

    /// Hands buffered records to the file without fsync. While a compacted
    /// journal is pending, they go to it: they come after its snapshot.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match &mut self.rewrite {
            Some(tmp) => tmp.append(&self.buf).map_err(|source| StoreError::Io {
                file: JOURNAL_TMP_FILE,
                source,
            })?,
            None => self.journal.append_encoded(&self.buf)?,
        }
        self.buf.clear();
        Ok(())
    }

    /// Flushes and fsyncs: everything written so far is durable on return.
    /// A pending compacted journal is fsynced, then renamed over the old
    /// one: never rename a file that is not durable, or a crash could leave
    /// a journal missing records that were synced before.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        match self.rewrite.take() {
            Some(mut tmp) => {
                let tmp_err = |source| StoreError::Io {
                    file: JOURNAL_TMP_FILE,
                    source,
                };
                tmp.sync().map_err(tmp_err)?;
                self.dir
                    .rename(JOURNAL_TMP_FILE, JOURNAL_FILE)
                    .map_err(tmp_err)?;
                self.journal = Journal::open(&self.dir, JOURNAL_FILE)?.journal;
            }
            None => self.journal.sync()?,
        }
        Ok(())
    }

    pub fn journal_bytes(&self) -> u64 {
        self.journal.len()
    }
}
