//! The simulator's disk: an in-memory directory that models durability.
//!
//! Each file keeps what a crash would leave (`durable`) and what a reader
//! sees now (`current`). `sync` copies current to durable; `crash` throws
//! away everything unsynced, except that it may keep a prefix of the unsynced
//! tail, possibly with garbage in its last bytes: a torn write. (madsim's own
//! `fs` cannot do this: its `sync_all` is a no-op and kill keeps all data.)
//!
//! A `SimDisk` is a cheap handle on shared state, so it outlives the
//! simulated process that used it: the harness keeps one per node across
//! kills and restarts.

use super::{Dir, File};
use rand::Rng;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    current: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, SimFile>,
    syncs: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

/// What a crash did to the unsynced data, for traces and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub bytes_lost: u64,
    pub bytes_kept_torn: u64,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every file: the end of a simulated run, whose disk handles
    /// the simulator's runtime may keep after it is gone.
    pub fn discard(&self) {
        if let Ok(mut state) = self.lock() {
            *state = State::default();
        }
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("sim disk lock poisoned"))
    }

    /// Simulates power loss. With `tear`, a random prefix of each file's
    /// unsynced tail survives, and its last bytes may be garbage.
    pub fn crash(&self, rng: &mut impl Rng, tear: bool) -> CrashReport {
        let mut report = CrashReport::default();
        let Ok(mut state) = self.lock() else {
            return report;
        };
        for file in state.files.values_mut() {
            let synced = file.durable.len().min(file.current.len());
            let unsynced = file.current.len().saturating_sub(file.durable.len());
            if file.current[..synced] != file.durable[..synced] || unsynced == 0 {
                file.current = file.durable.clone();
                continue;
            }
            let keep = if tear { rng.gen_range(0..=unsynced) } else { 0 };
            let mut survived = file.current[..synced + keep].to_vec();
            if keep > 0 && rng.gen_bool(0.5) {
                // A sector written halfway: garbage at the end of the tail.
                let garbage = keep.min(rng.gen_range(1..=8));
                let len = survived.len();
                for b in &mut survived[len - garbage..] {
                    *b = rng.gen();
                }
            }
            report.bytes_lost += (unsynced - keep) as u64;
            report.bytes_kept_torn += keep as u64;
            file.durable = survived.clone();
            file.current = survived;
        }
        report
    }

    /// Bytes written but not yet synced, over all files.
    pub fn unsynced_bytes(&self) -> u64 {
        self.lock().map_or(0, |s| {
            s.files
                .values()
                .map(|f| f.current.len().saturating_sub(f.durable.len()) as u64)
                .sum()
        })
    }

    /// Number of `sync` calls so far (for tests of fsync discipline).
    pub fn sync_count(&self) -> u64 {
        self.lock().map(|s| s.syncs).unwrap_or(0)
    }

    /// Overwrites one byte of a file, durably (for corruption tests).
    pub fn corrupt_byte(&self, name: &str, offset: usize) -> bool {
        let Ok(mut state) = self.lock() else {
            return false;
        };
        let Some(file) = state.files.get_mut(name) else {
            return false;
        };
        if offset >= file.current.len() {
            return false;
        }
        file.current[offset] ^= 0xff;
        if offset < file.durable.len() {
            file.durable[offset] ^= 0xff;
        }
        true
    }
}

pub struct SimDiskFile {
    disk: SimDisk,
    name: String,
}

impl SimDiskFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimFile, &mut u64) -> T) -> io::Result<T> {
        let mut state = self.disk.lock()?;
        let State { files, syncs } = &mut *state;
        let file = files
            .get_mut(&self.name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, self.name.clone()))?;
        Ok(f(file, syncs))
    }
}

impl Dir for SimDisk {
    type File = SimDiskFile;

    fn open_append(&self, name: &str) -> io::Result<SimDiskFile> {
        self.lock()?.files.entry(name.to_string()).or_default();
        Ok(SimDiskFile {
            disk: self.clone(),
            name: name.to_string(),
        })
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.lock()?.files.get(name).map(|f| f.current.clone()))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock()?;
        let file = state
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_string()))?;
        state.files.insert(to.to_string(), file);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.lock()?.files.remove(name);
        Ok(())
    }
}

impl File for SimDiskFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.with(|f, _| f.current.extend_from_slice(bytes))
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(|f, syncs| {
            f.durable.clone_from(&f.current);
            *syncs += 1;
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|f, _| {
            f.current.truncate(len as usize);
            f.durable.clone_from(&f.current);
        })
    }

    fn len(&self) -> u64 {
        self.with(|f, _| f.current.len() as u64).unwrap_or(0)
    }
}
