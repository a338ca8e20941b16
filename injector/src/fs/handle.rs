//! Open files and directories, by the handle number the kernel passes back to us.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::unistd::{Whence, lseek};
use parking_lot::{Mutex, RwLock};

use super::inode::Inode;
use super::io_mode::IoMode;
use crate::sys::{Dirent, DirentIter, getdents64};

/// An open regular file (or other non-directory).
#[derive(Debug)]
pub struct FileHandle {
    pub inode: Arc<Inode>,
    /// Opened with the caller's flags (minus `O_CREAT`/`O_EXCL`/`O_NOCTTY`).
    pub fd: OwnedFd,
    pub mode: IoMode,
    /// The descriptor has `O_DIRECT`: buffers must be aligned.
    pub o_direct: bool,
}

/// An open directory: a descriptor and a `getdents64` cursor.
#[derive(Debug)]
pub struct DirHandle {
    pub inode: Arc<Inode>,
    pub stream: Mutex<DirStream>,
}

#[derive(Debug)]
pub enum Handle {
    File(FileHandle),
    Dir(DirHandle),
}

const SHARDS: usize = 16;

/// Handle number → open file. Sharded so concurrent opens and reads rarely contend.
#[derive(Debug)]
pub struct HandleTable {
    shards: [RwLock<HashMap<u64, Arc<Handle>>>; SHARDS],
    next: AtomicU64,
}

impl Default for HandleTable {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            next: AtomicU64::new(1),
        }
    }
}

impl HandleTable {
    fn shard(&self, fh: u64) -> &RwLock<HashMap<u64, Arc<Handle>>> {
        &self.shards[(fh as usize) % SHARDS]
    }

    pub fn insert(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(fh).write().insert(fh, Arc::new(handle));
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        self.shard(fh).read().get(&fh).cloned()
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        self.shard(fh).write().remove(&fh)
    }

    /// A snapshot of every open handle (for status reports).
    pub fn all(&self) -> Vec<Arc<Handle>> {
        self.shards
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

/// Reads a directory in the chunks the kernel asks for, keeping unread records between
/// calls and seeking only when the kernel asks for a different position.
#[derive(Debug)]
pub struct DirStream {
    fd: OwnedFd,
    buf: Vec<u8>,
    filled: usize,
    cursor: usize,
    /// The position of the record at `cursor` (what the kernel passes to continue there).
    cursor_offset: i64,
}

impl DirStream {
    const BUF_SIZE: usize = 16 * 1024;

    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            buf: vec![0; Self::BUF_SIZE],
            filled: 0,
            cursor: 0,
            cursor_offset: 0,
        }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Feed entries from `offset` to `add` until it returns `false` (reply buffer full: the
    /// entry is kept for the next call) or the directory ends.
    pub fn read_from(
        &mut self,
        offset: i64,
        mut add: impl FnMut(&Dirent<'_>) -> bool,
    ) -> io::Result<()> {
        if offset != self.cursor_offset {
            lseek(self.fd.as_fd(), offset, Whence::SeekSet)?;
            self.filled = 0;
            self.cursor = 0;
            self.cursor_offset = offset;
        }
        loop {
            if self.cursor >= self.filled {
                self.filled = getdents64(self.fd.as_fd(), &mut self.buf)?;
                self.cursor = 0;
                if self.filled == 0 {
                    return Ok(());
                }
            }
            let Some(entry) = DirentIter::new(&self.buf[self.cursor..self.filled]).next() else {
                // A truncated record cannot happen with a kernel-filled buffer; refill.
                self.cursor = self.filled;
                continue;
            };
            if !add(&entry) {
                return Ok(());
            }
            self.cursor += entry.reclen;
            self.cursor_offset = entry.next_offset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs::File;

    fn names_in_chunks(dir: &std::path::Path, chunk: usize) -> Vec<String> {
        let fd: OwnedFd = File::open(dir).expect("open dir").into();
        let mut s = DirStream::new(fd);
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let mut n = 0;
            let mut last = offset;
            s.read_from(offset, |e| {
                if n == chunk {
                    return false;
                }
                n += 1;
                names.push(e.name.to_string_lossy().into_owned());
                last = e.next_offset;
                true
            })
            .expect("read dir");
            if n == 0 {
                return names;
            }
            offset = last;
        }
    }

    #[test]
    fn chunked_reads_see_every_entry_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..300 {
            File::create(dir.path().join(format!("file-{i:03}"))).expect("create");
        }
        for chunk in [1, 7, 1000] {
            let names = names_in_chunks(dir.path(), chunk);
            assert_eq!(names.len(), 302, "chunk {chunk}");
            let unique: BTreeSet<_> = names.iter().collect();
            assert_eq!(unique.len(), 302);
        }
    }

    #[test]
    fn handles_come_and_go() {
        let t = HandleTable::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let fd: OwnedFd = File::open(dir.path()).expect("open").into();
        let root = Arc::new(super::super::inode::InodeTable::new(
            File::open(dir.path()).expect("open").into(),
            super::super::inode::InodeKey { dev: 1, ino: 2 },
            100,
        ));
        let h = Handle::Dir(DirHandle {
            inode: root.root().clone(),
            stream: Mutex::new(DirStream::new(fd)),
        });
        let fh = t.insert(h);
        assert!(t.get(fh).is_some());
        assert_eq!(t.all().len(), 1);
        assert!(t.remove(fh).is_some());
        assert!(t.get(fh).is_none());
    }
}
