//! An append-only file of checksummed records.
//!
//! Record layout: `len: u32 LE | crc: u32 LE | payload[len]`, where `crc` is
//! CRC-32 (crc32fast) over the length bytes and the payload, so a corrupt
//! length is caught as surely as a corrupt payload.
//!
//! Recovery reads records until the first one that is incomplete or fails
//! its checksum. If no valid record exists anywhere after that point, the
//! bytes there are a torn tail (a write cut short by a crash): they are
//! truncated away and logged. If a valid record does follow, the damage is in
//! the middle of acknowledged data: start-up fails with an error naming the
//! file and the offset, and nothing is truncated.

use super::{Dir, File};
use std::io;
use std::ops::Range;
use thiserror::Error;

pub const RECORD_HEADER_BYTES: usize = 8;
/// Largest payload one record may carry.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("I/O error on {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("{file} is corrupt at byte offset {offset}: {reason}; valid records follow, so this is not a torn tail. Restore the node from a peer or a backup")]
    Corrupt {
        file: String,
        offset: u64,
        reason: &'static str,
    },
    #[error("record of {len} bytes exceeds the limit of {RECORD_PAYLOAD_BYTES_MAX}")]
    RecordTooLarge { len: usize },
}

/// One valid record found by `scan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpan {
    pub offset: u64,
    pub payload: Range<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<RecordSpan>,
    /// Bytes up to here are valid records; anything after is a torn tail.
    pub valid_len: u64,
}

pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), JournalError> {
    if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
        return Err(JournalError::RecordTooLarge { len: payload.len() });
    }
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The payload range of a valid record starting at `at`, if there is one.
fn record_at(bytes: &[u8], at: usize) -> Option<Range<usize>> {
    let header = bytes.get(at..at.checked_add(RECORD_HEADER_BYTES)?)?;
    let len_bytes: [u8; 4] = header[..4].try_into().ok()?;
    let crc_bytes: [u8; 4] = header[4..].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return None;
    }
    let start = at + RECORD_HEADER_BYTES;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(payload);
    (crc.finalize() == u32::from_le_bytes(crc_bytes)).then_some(start..start + len)
}

/// Splits `bytes` into records; see the module doc for the torn-tail rule.
pub fn scan(file: &str, bytes: &[u8]) -> Result<Scan, JournalError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Some(payload) => {
                let next = payload.end;
                records.push(RecordSpan {
                    offset: at as u64,
                    payload,
                });
                at = next;
            }
            None => {
                let later_valid = (at + 1..bytes.len()).any(|o| record_at(bytes, o).is_some());
                if later_valid {
                    let reason = if bytes.len() - at < RECORD_HEADER_BYTES {
                        "truncated record header"
                    } else {
                        "checksum mismatch or impossible length"
                    };
                    return Err(JournalError::Corrupt {
                        file: file.to_string(),
                        offset: at as u64,
                        reason,
                    });
                }
                break;
            }
        }
    }
    Ok(Scan {
        records,
        valid_len: at as u64,
    })
}

pub struct Journal<F> {
    file: F,
    name: String,
}

/// What `Journal::open` found.
pub struct Opened<F> {
    pub journal: Journal<F>,
    /// The whole file as read; `records` index into it.
    pub bytes: Vec<u8>,
    pub records: Vec<RecordSpan>,
    /// Length of the torn tail that was truncated (0 if none).
    pub torn_tail_bytes: u64,
}

impl<F: File> Journal<F> {
    /// Opens (or creates) the journal `name` in `dir`, truncating a torn tail.
    pub fn open<D: Dir<File = F>>(dir: &D, name: &str) -> Result<Opened<F>, JournalError> {
        let io_err = |source| JournalError::Io {
            file: name.to_string(),
            source,
        };
        let bytes = dir.read(name).map_err(io_err)?.unwrap_or_default();
        let scan = scan(name, &bytes)?;
        let mut file = dir.open_append(name).map_err(io_err)?;
        let torn_tail_bytes = bytes.len() as u64 - scan.valid_len;
        if torn_tail_bytes > 0 {
            tracing::warn!(
                file = name,
                offset = scan.valid_len,
                bytes = torn_tail_bytes,
                "truncating torn tail"
            );
            file.truncate(scan.valid_len).map_err(io_err)?;
        }
        Ok(Opened {
            journal: Journal {
                file,
                name: name.to_string(),
            },
            bytes,
            records: scan.records,
            torn_tail_bytes,
        })
    }

    /// Opens a journal this process has just written whole and synced (a
    /// compacted journal renamed into place), to append after it: no read
    /// and no scan, which for a snapshot of tens of MB would stall the
    /// writer, and every fsync queued behind it, for as long again.
    pub fn open_written<D: Dir<File = F>>(dir: &D, name: &str) -> Result<Self, JournalError> {
        let file = dir.open_append(name).map_err(|source| JournalError::Io {
            file: name.to_string(),
            source,
        })?;
        Ok(Journal {
            file,
            name: name.to_string(),
        })
    }

    /// Appends already-encoded records (see `encode_record`).
    pub fn append_encoded(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        self.file.append(bytes).map_err(|source| JournalError::Io {
            file: self.name.clone(),
            source,
        })
    }

    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync().map_err(|source| JournalError::Io {
            file: self.name.clone(),
            source,
        })
    }

    pub fn len(&self) -> u64 {
        self.file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_record(p, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn scan_reads_back_every_record() {
        let bytes = encode_all(&[b"a", b"", b"hello"]);
        let scan = scan("j", &bytes).unwrap();
        let payloads: Vec<&[u8]> = scan
            .records
            .iter()
            .map(|r| &bytes[r.payload.clone()])
            .collect();
        assert_eq!(payloads, vec![&b"a"[..], b"", b"hello"]);
        assert_eq!(scan.valid_len, bytes.len() as u64);
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let full = encode_all(&[b"first", b"second record"]);
        let first_len = (RECORD_HEADER_BYTES + 5) as u64;
        for cut in first_len as usize..full.len() {
            let scan = scan("j", &full[..cut]).unwrap();
            assert_eq!(scan.records.len(), 1, "cut at {cut}");
            assert_eq!(scan.valid_len, first_len);
        }
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_corruption_at_its_offset() {
        let mut bytes = encode_all(&[b"first", b"second", b"third"]);
        let second = RECORD_HEADER_BYTES + 5;
        bytes[second + RECORD_HEADER_BYTES + 1] ^= 0x01;
        match scan("raft.journal", &bytes) {
            Err(JournalError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, "raft.journal");
                assert_eq!(offset, second as u64);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_corrupt_length_is_caught_by_the_checksum() {
        let mut bytes = encode_all(&[b"first", b"second"]);
        bytes[0] = 4; // claims 4 bytes instead of 5
        assert!(matches!(
            scan("j", &bytes),
            Err(JournalError::Corrupt { offset: 0, .. })
        ));
    }

    #[test]
    fn oversized_records_are_refused() {
        let big = vec![0u8; RECORD_PAYLOAD_BYTES_MAX + 1];
        assert!(matches!(
            encode_record(&big, &mut Vec::new()),
            Err(JournalError::RecordTooLarge { .. })
        ));
    }
}
