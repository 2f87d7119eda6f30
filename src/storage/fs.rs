//! The production backend: a real directory, real fsync.

use super::{Dir, File};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct FsDir {
    root: PathBuf,
}

impl FsDir {
    /// Uses `root`, creating it if needed.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root)?;
        Ok(FsDir { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn sync_dir(&self) -> io::Result<()> {
        // Directory fsync makes creates, renames and removes durable.
        fs::File::open(&self.root)?.sync_all()
    }
}

pub struct FsFile {
    file: fs::File,
    len: u64,
}

impl Dir for FsDir {
    type File = FsFile;

    fn open_append(&self, name: &str) -> io::Result<FsFile> {
        let path = self.root.join(name);
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        if !existed {
            self.sync_dir()?;
        }
        let len = file.metadata()?.len();
        Ok(FsFile { file, len })
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.root.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.root.join(from), self.root.join(to))?;
        self.sync_dir()
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.root.join(name)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl File for FsFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.file.sync_all()
    }

    fn len(&self) -> u64 {
        self.len
    }
}
