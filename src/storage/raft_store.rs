//! Raft's durable state (term, vote, snapshot, log) as records in one
//! journal.
//!
//! Every `PersistOp` the replica emits becomes one record, so a truncation is
//! a record too and nothing is rewritten in place: a crash at any point
//! leaves a prefix of the records, which replays to a state the replica had.
//!
//! Records stay well under the journal's record bound whatever the state's
//! size: a snapshot is a `SnapshotHead` followed by `SnapshotChunk` records
//! of at most `RECORD_CHUNK_BYTES_MAX`, and a batch of entries is split
//! into several `Entries` records by the same bound.
//!
//! A `PersistOp::Snapshot` (compaction, or a snapshot installed from the
//! leader) writes a new journal, `raft.journal.tmp`, holding the hard state,
//! the snapshot and the entries after it; `sync` fsyncs it and renames it
//! over `raft.journal` (the rename is atomic and durable). Records written
//! after the snapshot go to the new journal. A crash before the rename
//! leaves the old journal intact and a stray tmp file, which recovery
//! deletes.

use super::journal::{encode_record, Journal, JournalError, RECORD_PAYLOAD_BYTES_MAX};
use super::{Dir, File};
use crate::raft::{Entry, HardState, Index, PersistOp, Recovered, Snapshot};
use serde::{Deserialize, Serialize};
use std::io;
use thiserror::Error;

pub const JOURNAL_FILE: &str = "raft.journal";
pub const JOURNAL_TMP_FILE: &str = "raft.journal.tmp";
/// Snapshot bytes, or entry bytes, per record: a quarter of the journal's
/// record bound, so a record with its framing always fits.
pub const RECORD_CHUNK_BYTES_MAX: usize = RECORD_PAYLOAD_BYTES_MAX / 4;

#[derive(Debug, Serialize, Deserialize)]
enum Record {
    HardState(HardState),
    Entries(Vec<Entry>),
    TruncateFrom(Index),
    /// A snapshot's metadata; its `len` bytes follow in `SnapshotChunk`s.
    SnapshotHead {
        index: Index,
        term: crate::raft::Term,
        membership: crate::raft::Membership,
        len: u64,
    },
    SnapshotChunk(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Debug, Serialize)]
enum RecordRef<'a> {
    HardState(&'a HardState),
    Entries(&'a [Entry]),
    TruncateFrom(Index),
    SnapshotHead {
        index: Index,
        term: crate::raft::Term,
        membership: &'a crate::raft::Membership,
        len: u64,
    },
    SnapshotChunk(&'a [u8]),
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

/// Entries as records of at most `RECORD_CHUNK_BYTES_MAX` of commands each
/// (one entry alone may be up to the entry bound, far below it).
fn encode_entries(entries: &[Entry], out: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut start = 0;
    while start < entries.len() {
        let mut bytes = 0usize;
        let mut end = start;
        while end < entries.len() && (end == start || bytes < RECORD_CHUNK_BYTES_MAX) {
            bytes += crate::raft::payload_len(&entries[end]);
            end += 1;
        }
        encode(&RecordRef::Entries(&entries[start..end]), out)?;
        start = end;
    }
    Ok(())
}

/// A snapshot as its head and chunks.
fn encode_snapshot(snapshot: &Snapshot, out: &mut Vec<u8>) -> Result<(), StoreError> {
    encode(
        &RecordRef::SnapshotHead {
            index: snapshot.index,
            term: snapshot.term,
            membership: &snapshot.membership,
            len: snapshot.data.len() as u64,
        },
        out,
    )?;
    for chunk in snapshot.data.chunks(RECORD_CHUNK_BYTES_MAX) {
        encode(&RecordRef::SnapshotChunk(chunk), out)?;
    }
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
        // A snapshot whose chunks are still being read.
        let mut partial: Option<Snapshot> = None;
        let mut expected_len = 0u64;
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
            if partial.is_some() && !matches!(record, Record::SnapshotChunk(_)) {
                return Err(inconsistent("a snapshot's chunks stop short".into()));
            }
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
                Record::SnapshotHead {
                    index,
                    term,
                    membership,
                    len,
                } => {
                    let snapshot = Snapshot {
                        index,
                        term,
                        membership,
                        data: Vec::new(),
                    };
                    if len == 0 {
                        recovered.entries.clear();
                        recovered.snapshot = Some(snapshot);
                    } else {
                        partial = Some(snapshot);
                        if let Some(p) = partial.as_mut() {
                            p.data
                                .reserve(len.min(RECORD_PAYLOAD_BYTES_MAX as u64) as usize);
                        }
                        expected_len = len;
                    }
                }
                Record::SnapshotChunk(chunk) => {
                    let Some(mut p) = partial.take() else {
                        return Err(inconsistent("a snapshot chunk without its head".into()));
                    };
                    p.data.extend_from_slice(&chunk);
                    let have = p.data.len() as u64;
                    if have > expected_len {
                        return Err(inconsistent(format!(
                            "snapshot chunks hold {have} bytes; its head says {expected_len}"
                        )));
                    }
                    if have == expected_len {
                        recovered.entries.clear();
                        recovered.snapshot = Some(p);
                    } else {
                        partial = Some(p);
                    }
                }
            }
        }
        if partial.is_some() {
            return Err(StoreError::Inconsistent {
                file: JOURNAL_FILE.to_string(),
                offset: opened.bytes.len() as u64,
                reason: "the journal ends inside a snapshot".into(),
            });
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
            PersistOp::Append(entries) => encode_entries(entries, &mut self.buf),
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
                encode_snapshot(snapshot, &mut bytes)?;
                encode_entries(tail, &mut bytes)?;
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
                self.journal = Journal::open_written(&self.dir, JOURNAL_FILE)?;
            }
            None => self.journal.sync()?,
        }
        Ok(())
    }

    pub fn journal_bytes(&self) -> u64 {
        self.journal.len()
    }
}
