//! Where the scanner reads `/proc` from: the host's, or fixture data in tests.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

/// Read access to a `/proc` tree; paths are relative to its root (`"123/fdinfo/4"`).
pub trait ProcSource {
    fn read(&self, path: &str) -> io::Result<String>;
    fn read_link(&self, path: &str) -> io::Result<PathBuf>;
    fn list(&self, path: &str) -> io::Result<Vec<String>>;
    /// The mount id of what a magic link (`123/cwd`) points at, without asking the filesystem
    /// behind it anything (its FUSE server may be gone).
    fn mount_id_of(&self, path: &str) -> io::Result<u64>;
}

/// The host's `/proc`.
#[derive(Debug, Clone)]
pub struct HostProc {
    root: PathBuf,
}

impl Default for HostProc {
    fn default() -> Self {
        HostProc {
            root: PathBuf::from("/proc"),
        }
    }
}

impl ProcSource for HostProc {
    fn read(&self, path: &str) -> io::Result<String> {
        let mut text = String::new();
        std::fs::File::open(self.root.join(path))?.read_to_string(&mut text)?;
        Ok(text)
    }

    fn read_link(&self, path: &str) -> io::Result<PathBuf> {
        std::fs::read_link(self.root.join(path))
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        std::fs::read_dir(self.root.join(path))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn mount_id_of(&self, path: &str) -> io::Result<u64> {
        // O_PATH follows the magic link without a lookup in, or a request to, the filesystem.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(self.root.join(path))?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd()))?;
        crate::scan::field(&info, "mnt_id")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no mnt_id in fdinfo"))
    }
}

/// Fixture data: files, links and mount ids by path.
#[derive(Debug, Default, Clone)]
pub struct FixtureProc {
    pub files: BTreeMap<String, String>,
    pub links: BTreeMap<String, PathBuf>,
    pub mount_ids: BTreeMap<String, u64>,
}

impl FixtureProc {
    pub fn file(mut self, path: &str, text: &str) -> Self {
        self.files.insert(path.to_owned(), text.to_owned());
        self
    }

    pub fn link(mut self, path: &str, target: &str) -> Self {
        self.links.insert(path.to_owned(), PathBuf::from(target));
        self
    }

    pub fn mount_id(mut self, path: &str, id: u64) -> Self {
        self.mount_ids.insert(path.to_owned(), id);
        self
    }
}

fn missing(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path}: no such fixture"))
}

impl ProcSource for FixtureProc {
    fn read(&self, path: &str) -> io::Result<String> {
        self.files.get(path).cloned().ok_or_else(|| missing(path))
    }

    fn read_link(&self, path: &str) -> io::Result<PathBuf> {
        self.links.get(path).cloned().ok_or_else(|| missing(path))
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut names: Vec<String> = self
            .files
            .keys()
            .chain(self.links.keys())
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(missing(path));
        }
        Ok(names)
    }

    fn mount_id_of(&self, path: &str) -> io::Result<u64> {
        self.mount_ids
            .get(path)
            .copied()
            .ok_or_else(|| missing(path))
    }
}
