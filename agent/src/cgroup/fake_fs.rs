//! A test double of [`HostFs`]: an in-memory filesystem that records what is written, made
//! and removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::HostFs;

/// An in-memory filesystem that records what is written, made and removed.
#[derive(Debug, Default)]
pub struct FakeFs {
    files: Mutex<BTreeMap<PathBuf, String>>,
    dirs: Mutex<BTreeSet<PathBuf>>,
    pub writes: Mutex<Vec<(PathBuf, String)>>,
    pub removed: Mutex<Vec<PathBuf>>,
    pub refuse_writes_to: Mutex<Option<PathBuf>>,
}

impl FakeFs {
    pub fn file(&self, path: &str, text: &str) -> &Self {
        self.files.lock().unwrap().insert(path.into(), text.into());
        self
    }
    pub fn dir(&self, path: &str) -> &Self {
        self.dirs.lock().unwrap().insert(path.into());
        self
    }
}

impl HostFs for FakeFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        if self.refuse_writes_to.lock().unwrap().as_deref() == Some(path) {
            return Err(io::Error::from_raw_os_error(nix::libc::EBUSY));
        }
        self.writes
            .lock()
            .unwrap()
            .push((path.to_owned(), contents.to_owned()));
        Ok(())
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.dirs.lock().unwrap().insert(path.to_owned());
        Ok(())
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.removed.lock().unwrap().push(path.to_owned());
        if self.dirs.lock().unwrap().remove(path) {
            Ok(())
        } else {
            Err(io::ErrorKind::NotFound.into())
        }
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.lock().unwrap().contains(path)
    }
}
