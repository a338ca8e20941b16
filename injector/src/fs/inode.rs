//! The inodes the kernel knows about: a handle on the original file per inode, the kernel's
//! lookup count, and the last name it was reached by (for rule paths).
//!
//! The handle is an `O_PATH` descriptor while the descriptor budget lasts (the kernel may
//! remember more inodes than we may open files); beyond it, a kernel file handle that is
//! opened for each use (`open_by_handle_at`). Either way nothing is re-resolved by path.
//!
//! Node ids are the original's inode numbers, so `stat` through the mount shows the same
//! numbers as the original. When two originals share an inode number (a submount inside the
//! volume) or a number is reserved (1 is the FUSE root), a synthetic id is used instead.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use fuser::FileType;
use parking_lot::{Mutex, RwLock};

use super::FdName;
use super::io_mode::IoState;
use crate::sys::{self, FileHandle};

/// The FUSE root node id.
pub const ROOT_ID: u64 = 1;
/// Synthetic node ids start here (far above real inode numbers on common filesystems).
const SYNTHETIC_BASE: u64 = 1 << 62;

/// Identity of an original file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
}

/// Where an inode was last seen: its parent and name.
#[derive(Debug)]
struct Link {
    parent: Option<Arc<Inode>>,
    name: OsString,
}

#[derive(Debug)]
pub struct Inode {
    pub nodeid: u64,
    pub key: InodeKey,
    pub kind: FileType,
    /// The original; every access goes through it (never through a path).
    slot: Slot,
    nlookup: AtomicU64,
    link: Mutex<Link>,
    /// Open-file bookkeeping for kernel passthrough.
    pub io: Mutex<IoState>,
}

/// How an inode holds on to its original.
#[derive(Debug)]
enum Slot {
    Held(HeldFd),
    Handle {
        handle: FileHandle,
        /// Any descriptor on the same filesystem.
        mount: Arc<OwnedFd>,
    },
}

/// An `O_PATH` descriptor counted against the budget while it lives.
#[derive(Debug)]
struct HeldFd {
    fd: OwnedFd,
    held: Arc<AtomicUsize>,
}

impl Drop for HeldFd {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

fn open_dir_at(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// A descriptor on an inode's original: borrowed from the inode, or opened for this use.
#[derive(Debug)]
pub enum InodeFd<'a> {
    Borrowed(BorrowedFd<'a>),
    Opened(OwnedFd),
}

impl AsFd for InodeFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Borrowed(fd) => *fd,
            InodeFd::Opened(fd) => fd.as_fd(),
        }
    }
}

impl AsRawFd for InodeFd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Inode {
    fn new(
        nodeid: u64,
        key: InodeKey,
        kind: FileType,
        slot: Slot,
        parent: Option<Arc<Inode>>,
        name: OsString,
    ) -> Self {
        Self {
            nodeid,
            key,
            kind,
            slot,
            nlookup: AtomicU64::new(0),
            link: Mutex::new(Link { parent, name }),
            io: Mutex::new(IoState::default()),
        }
    }

    /// An `O_PATH` descriptor on the original (for `*at` calls).
    pub fn fd(&self) -> io::Result<InodeFd<'_>> {
        match &self.slot {
            Slot::Held(h) => Ok(InodeFd::Borrowed(h.fd.as_fd())),
            Slot::Handle { handle, mount } => {
                sys::open_by_handle(mount.as_fd(), handle, libc::O_PATH).map(InodeFd::Opened)
            }
        }
    }

    /// Open the original with real flags (`O_CLOEXEC` added): through `/proc/self/fd`
    /// (`proc_fd`) for a held descriptor, by file handle otherwise.
    pub fn open(&self, proc_fd: BorrowedFd<'_>, flags: OFlag) -> nix::Result<OwnedFd> {
        match &self.slot {
            Slot::Held(h) => openat(
                proc_fd,
                FdName::of(&h.fd).as_bytes(),
                flags | OFlag::O_CLOEXEC,
                Mode::empty(),
            ),
            Slot::Handle { handle, mount } => {
                sys::open_by_handle(mount.as_fd(), handle, flags.bits())
                    .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            }
        }
    }

    /// Held as a descriptor (not a file handle)?
    #[cfg(test)]
    pub fn is_held(&self) -> bool {
        matches!(self.slot, Slot::Held(_))
    }

    /// The path relative to the mount root ("" for the root, "a/b" below it), built from the
    /// names the kernel last used.
    pub fn path(&self) -> PathBuf {
        let mut names: Vec<OsString> = Vec::new();
        let (mut parent, name) = {
            let link = self.link.lock();
            (link.parent.clone(), link.name.clone())
        };
        if parent.is_none() {
            return PathBuf::new();
        }
        names.push(name);
        while let Some(p) = parent {
            let link = p.link.lock();
            if link.parent.is_none() {
                break;
            }
            names.push(link.name.clone());
            parent = link.parent.clone();
        }
        names.iter().rev().collect()
    }

    /// The path of a child `name` of this directory.
    pub fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path().join(name)
    }

    /// Parent node id and name, for entry invalidation (`None` for the root).
    pub fn parent_and_name(&self) -> Option<(u64, OsString)> {
        let link = self.link.lock();
        link.parent.as_ref().map(|p| (p.nodeid, link.name.clone()))
    }

    /// Parent inode and name (`None` for the root).
    pub fn parent_link(&self) -> Option<(Arc<Inode>, OsString)> {
        let link = self.link.lock();
        link.parent.clone().map(|p| (p, link.name.clone()))
    }

    /// Record a new place (after a rename or a lookup under another hard link).
    pub fn relink(&self, parent: &Arc<Inode>, name: &OsStr) {
        let mut link = self.link.lock();
        if link.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, parent)) && link.name == name {
            return;
        }
        link.parent = Some(parent.clone());
        link.name = name.to_owned();
    }

    #[cfg(test)]
    pub fn lookups(&self) -> u64 {
        self.nlookup.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<InodeKey, u64>,
    next_synthetic: u64,
}

/// All inodes with a non-zero kernel lookup count, plus the root.
#[derive(Debug)]
pub struct InodeTable {
    maps: RwLock<Maps>,
    /// Descriptors held by inodes now, and how many they may hold.
    held: Arc<AtomicUsize>,
    budget: usize,
    /// A descriptor per filesystem (by device) for `open_by_handle_at`.
    mounts: parking_lot::Mutex<HashMap<u64, Arc<OwnedFd>>>,
}

impl InodeTable {
    /// `budget`: how many inodes may hold a descriptor; the rest use file handles.
    pub fn new(root_fd: OwnedFd, root_key: InodeKey, budget: usize) -> Self {
        let held = Arc::new(AtomicUsize::new(1));
        let root = Arc::new(Inode::new(
            ROOT_ID,
            root_key,
            FileType::Directory,
            Slot::Held(HeldFd {
                fd: root_fd,
                held: held.clone(),
            }),
            None,
            OsString::new(),
        ));
        // The root is never forgotten.
        root.nlookup.store(1, Ordering::Relaxed);
        let mut maps = Maps {
            next_synthetic: SYNTHETIC_BASE,
            ..Default::default()
        };
        maps.by_id.insert(ROOT_ID, root);
        maps.by_key.insert(root_key, ROOT_ID);
        Self {
            maps: RwLock::new(maps),
            held,
            budget,
            mounts: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Keep `fd` while the budget lasts, else a file handle (if the filesystem has them).
    fn slot_for(&self, fd: OwnedFd, dev: u64, kind: FileType, parent: &Inode) -> Slot {
        let held = |fd| {
            self.held.fetch_add(1, Ordering::Relaxed);
            Slot::Held(HeldFd {
                fd,
                held: self.held.clone(),
            })
        };
        if self.held.load(Ordering::Relaxed) < self.budget {
            return held(fd);
        }
        let Ok(handle) = sys::name_to_handle(fd.as_fd()) else {
            return held(fd);
        };
        let mut mounts = self.mounts.lock();
        let mount = match mounts.get(&dev) {
            Some(m) => m.clone(),
            None => {
                // open_by_handle_at wants a real (not O_PATH) descriptor on the filesystem:
                // a directory of it, opened for reading (opening a file could have effects).
                let dir = if kind == FileType::Directory {
                    open_dir_at(fd.as_fd())
                } else if parent.key.dev == dev {
                    parent.fd().and_then(|p| open_dir_at(p.as_fd()))
                } else {
                    return held(fd);
                };
                match dir {
                    Ok(d) => mounts.entry(dev).or_insert_with(|| Arc::new(d)).clone(),
                    Err(_) => return held(fd),
                }
            }
        };
        Slot::Handle { handle, mount }
    }

    /// Descriptors held by inodes (diagnostics).
    pub fn held_fds(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn root(&self) -> Arc<Inode> {
        self.get(ROOT_ID).expect("the root is never forgotten")
    }

    pub fn get(&self, nodeid: u64) -> Option<Arc<Inode>> {
        self.maps.read().by_id.get(&nodeid).cloned()
    }

    /// Count one kernel lookup of the file `key` reached as `parent/name`. If the inode is
    /// new, `fd` (an `O_PATH` descriptor on it) becomes its handle (or gives a file handle,
    /// beyond the descriptor budget); otherwise `fd` is dropped.
    pub fn lookup(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        key: InodeKey,
        kind: FileType,
        fd: OwnedFd,
    ) -> Arc<Inode> {
        {
            let maps = self.maps.read();
            if let Some(inode) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
                // Forget takes the write lock, so the count cannot reach zero under us.
                inode.nlookup.fetch_add(1, Ordering::Relaxed);
                let inode = inode.clone();
                drop(maps);
                if inode.nodeid != ROOT_ID {
                    inode.relink(parent, name);
                }
                return inode;
            }
        }
        let mut maps = self.maps.write();
        if let Some(inode) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
            inode.nlookup.fetch_add(1, Ordering::Relaxed);
            let inode = inode.clone();
            drop(maps);
            inode.relink(parent, name);
            return inode;
        }
        let nodeid = if key.ino > ROOT_ID
            && key.ino < SYNTHETIC_BASE
            && !maps.by_id.contains_key(&key.ino)
        {
            key.ino
        } else {
            maps.next_synthetic += 1;
            maps.next_synthetic
        };
        let slot = self.slot_for(fd, key.dev, kind, parent);
        let inode = Arc::new(Inode::new(
            nodeid,
            key,
            kind,
            slot,
            Some(parent.clone()),
            name.to_owned(),
        ));
        inode.nlookup.store(1, Ordering::Relaxed);
        maps.by_id.insert(nodeid, inode.clone());
        maps.by_key.insert(key, nodeid);
        inode
    }

    /// The inode of `key` if the kernel knows it (no lookup counted).
    pub fn find(&self, key: InodeKey) -> Option<Arc<Inode>> {
        let maps = self.maps.read();
        maps.by_key
            .get(&key)
            .and_then(|id| maps.by_id.get(id))
            .cloned()
    }

    /// Drop `n` kernel lookups of `nodeid`; the inode leaves the table at zero.
    pub fn forget(&self, nodeid: u64, n: u64) {
        if nodeid == ROOT_ID {
            return;
        }
        let mut maps = self.maps.write();
        let Some(inode) = maps.by_id.get(&nodeid) else {
            return;
        };
        let left = inode.nlookup.load(Ordering::Relaxed).saturating_sub(n);
        inode.nlookup.store(left, Ordering::Relaxed);
        if left == 0 {
            let key = inode.key;
            let removed = maps.by_id.remove(&nodeid);
            if maps.by_key.get(&key) == Some(&nodeid) {
                maps.by_key.remove(&key);
            }
            drop(maps);
            // Closing the last descriptor on an unlinked original deletes it (the
            // filesystem's work of an unlink happens here): not under the table lock.
            drop(removed);
        }
    }

    /// A snapshot of every inode (for cache invalidation and status).
    pub fn all(&self) -> Vec<Arc<Inode>> {
        self.maps.read().by_id.values().cloned().collect()
    }

    /// Inodes known, the root included.
    pub fn count(&self) -> usize {
        self.maps.read().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn fd() -> OwnedFd {
        File::open("/dev/null").expect("open /dev/null").into()
    }

    fn key(ino: u64) -> InodeKey {
        InodeKey { dev: 1, ino }
    }

    #[test]
    fn node_ids_follow_inode_numbers_and_counts_balance() {
        let t = InodeTable::new(fd(), key(2), 1000);
        let root = t.root().clone();
        let a = t.lookup(
            &root,
            OsStr::new("a"),
            key(100),
            FileType::RegularFile,
            fd(),
        );
        assert_eq!(a.nodeid, 100);
        let again = t.lookup(
            &root,
            OsStr::new("a"),
            key(100),
            FileType::RegularFile,
            fd(),
        );
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(a.lookups(), 2);
        t.forget(100, 1);
        assert!(t.get(100).is_some());
        t.forget(100, 1);
        assert!(t.get(100).is_none());
        assert!(t.find(key(100)).is_none());
    }

    #[test]
    fn colliding_and_reserved_numbers_get_synthetic_ids() {
        let t = InodeTable::new(fd(), key(2), 1000);
        let root = t.root().clone();
        let a = t.lookup(
            &root,
            OsStr::new("a"),
            key(100),
            FileType::RegularFile,
            fd(),
        );
        let other_dev = InodeKey { dev: 9, ino: 100 };
        let b = t.lookup(
            &root,
            OsStr::new("b"),
            other_dev,
            FileType::RegularFile,
            fd(),
        );
        assert_eq!(a.nodeid, 100);
        assert!(b.nodeid > SYNTHETIC_BASE);
        let one = t.lookup(
            &root,
            OsStr::new("c"),
            InodeKey { dev: 9, ino: 1 },
            FileType::Directory,
            fd(),
        );
        assert_ne!(one.nodeid, ROOT_ID);
        // The root's own key maps to the root.
        let r = t.lookup(&root, OsStr::new("."), key(2), FileType::Directory, fd());
        assert_eq!(r.nodeid, ROOT_ID);
        t.forget(ROOT_ID, 100);
        assert!(t.get(ROOT_ID).is_some());
    }

    #[test]
    fn beyond_the_budget_inodes_keep_file_handles() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in ["a", "b", "c"] {
            std::fs::write(dir.path().join(n), n).expect("write");
        }
        let open = |n: &str| -> OwnedFd {
            std::fs::File::open(dir.path().join(n))
                .expect("open")
                .into()
        };
        let proc_fd: OwnedFd = std::fs::File::open("/proc/self/fd").expect("proc").into();
        // The root and one more inode may hold descriptors.
        let t = InodeTable::new(open("."), key(2), 2);
        let root = t.root();
        let a = t.lookup(
            &root,
            OsStr::new("a"),
            key(10),
            FileType::RegularFile,
            open("a"),
        );
        let b = t.lookup(
            &root,
            OsStr::new("b"),
            key(11),
            FileType::RegularFile,
            open("b"),
        );
        assert!(a.is_held());
        assert_eq!(t.held_fds(), 2);
        if b.is_held() {
            // This filesystem has no file handles: over budget, but still served.
            return;
        }
        let Ok(f) = b.open(proc_fd.as_fd(), OFlag::O_RDONLY) else {
            // No CAP_DAC_READ_SEARCH (not root): nothing more to check here.
            return;
        };
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(f), &mut s).expect("read");
        assert_eq!(s, "b");
        assert!(b.fd().is_ok());
        t.forget(10, 1);
        drop(a);
        assert_eq!(t.held_fds(), 1);
    }

    #[test]
    fn paths_follow_renames() {
        let t = InodeTable::new(fd(), key(2), 1000);
        let root = t.root().clone();
        assert_eq!(root.path(), PathBuf::new());
        let d = t.lookup(&root, OsStr::new("dir"), key(10), FileType::Directory, fd());
        let f = t.lookup(
            &d,
            OsStr::new("f.txt"),
            key(11),
            FileType::RegularFile,
            fd(),
        );
        assert_eq!(f.path(), PathBuf::from("dir/f.txt"));
        assert_eq!(d.child_path(OsStr::new("x")), PathBuf::from("dir/x"));
        assert_eq!(root.child_path(OsStr::new("x")), PathBuf::from("x"));
        let e = t.lookup(
            &root,
            OsStr::new("elsewhere"),
            key(12),
            FileType::Directory,
            fd(),
        );
        f.relink(&e, OsStr::new("g"));
        assert_eq!(f.path(), PathBuf::from("elsewhere/g"));
        assert_eq!(f.parent_and_name(), Some((12, OsString::from("g"))));
        assert_eq!(root.parent_and_name(), None);
    }
}
