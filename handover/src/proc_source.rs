//! Where the scanner reads `/proc` from: the host's, or fixture data in tests.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Read access to a `/proc` tree; paths are relative to its root (`"123/fdinfo/4"`).
pub trait ProcSource {
    fn read(&self, path: &str) -> io::Result<String>;
    fn read_link(&self, path: &str) -> io::Result<PathBuf>;
    fn list(&self, path: &str) -> io::Result<Vec<String>>;
    /// The mount id and inode number of what a magic link (`123/cwd`) points at, without
    /// asking the filesystem behind it anything (its FUSE server may be gone).
    fn mount_and_ino_of(&self, path: &str) -> io::Result<(u64, u64)>;
    /// The inode number of `path` as process `pid` resolves it (through its root).
    fn ino_in_root(&self, pid: u32, path: &Path) -> io::Result<u64>;
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

    fn mount_and_ino_of(&self, path: &str) -> io::Result<(u64, u64)> {
        // O_PATH follows the magic link without a lookup in, or a request to, the filesystem.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(self.root.join(path))?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd()))?;
        let field = |key| {
            crate::scan::field(&info, key)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short fdinfo"))
        };
        Ok((field("mnt_id")?, field("ino")?))
    }

    fn ino_in_root(&self, pid: u32, path: &Path) -> io::Result<u64> {
        let relative = path.strip_prefix("/").unwrap_or(path);
        // The kernel shows real paths (no symlinks): lstat, never following one to the host.
        Ok(std::fs::symlink_metadata(self.root.join(format!("{pid}/root")).join(relative))?.ino())
    }
}

/// Fixture data: files, links and mount ids by path.
#[derive(Debug, Default, Clone)]
pub struct FixtureProc {
    pub files: BTreeMap<String, String>,
    pub links: BTreeMap<String, PathBuf>,
    pub mount_ids: BTreeMap<String, u64>,
    /// Inode numbers by "PID:/path".
    pub inodes: BTreeMap<String, u64>,
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

    pub fn inode(mut self, pid: u32, path: &str, ino: u64) -> Self {
        self.inodes.insert(format!("{pid}:{path}"), ino);
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

    fn mount_and_ino_of(&self, path: &str) -> io::Result<(u64, u64)> {
        let id = self
            .mount_ids
            .get(path)
            .copied()
            .ok_or_else(|| missing(path))?;
        Ok((id, self.inodes.get(path).copied().unwrap_or(0)))
    }

    fn ino_in_root(&self, pid: u32, path: &Path) -> io::Result<u64> {
        let key = format!("{pid}:{}", path.display());
        self.inodes.get(&key).copied().ok_or_else(|| missing(&key))
    }
}
