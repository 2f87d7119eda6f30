//! Durable state behind a small file abstraction, so the same log code runs
//! on a real directory (`FsDir`) and on the simulator's disk (`SimDisk`).
//!
//! - `Dir`/`File`: append, fsync, read, truncate, rename: the whole surface.
//! - `journal`: checksummed records with torn-tail recovery.
//! - `raft_store`: Raft's term, vote and log as journal records.

pub mod fs;
pub mod journal;
pub mod raft_store;
pub mod sim;

pub use fs::FsDir;
pub use journal::{Journal, JournalError};
pub use raft_store::{RaftStore, StoreError};
pub use sim::SimDisk;

use std::io;

/// A directory of named files. Names are plain file names, no separators.
pub trait Dir {
    type File: File;

    /// Opens `name` for appending, creating it (durably) if missing.
    fn open_append(&self, name: &str) -> io::Result<Self::File>;

    /// The whole content of `name`, or None if there is no such file.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;

    /// Atomically and durably replaces `to` with `from`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Durably removes `name`; no error if it does not exist.
    fn remove(&self, name: &str) -> io::Result<()>;
}

/// A file open for appending.
pub trait File {
    /// Appends bytes. They are durable only after `sync`.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Makes every appended byte durable (fsync / fdatasync).
    fn sync(&mut self) -> io::Result<()>;

    /// Cuts the file to `len` bytes, durably.
    fn truncate(&mut self, len: u64) -> io::Result<()>;

    /// Current length, including bytes not yet synced.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
