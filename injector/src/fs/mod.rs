//! The passthrough filesystem: serves an original directory (held as a descriptor, never
//! re-resolved by path) through FUSE, asking the [`RuleStore`] about each operation.
//!
//! Speed comes from the kernel: while no rule may touch a file's data, its opens use kernel
//! FUSE passthrough (reads, writes and mmap never reach us); while no rule may touch a path's
//! lookups or attributes, the kernel caches entries and attributes. When the rules change,
//! [`FsHandle::rules_changed`] drops the kernel caches that the new rules need to see through.
//! Files already open in passthrough cannot be taken back by the kernel:
//! [`FsHandle::bypassing_open_files`] names them.

#[macro_use]
mod macros;
mod attr;
mod data;
mod dir;
mod handle;
mod inode;
mod interrupts;
mod invalidator;
pub mod io_mode;
mod meta;
mod names;
mod open;
mod ops;
mod umask;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fuser::{
    Errno, FileAttr, Generation, Notifier, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr,
};
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstatat};
use parking_lot::RwLock;

pub use io_mode::{FileIo, IoMode};

use crate::control::FsStatus;
use crate::fault_rules::{Injection, Method, MethodSet, RuleStore};

use inode::{Inode, InodeKey, InodeTable};

/// How the filesystem serves.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// Entry and attribute timeout for paths no rule may touch. Changes made to the original
    /// behind the mount's back are seen late by up to this much.
    pub cache_ttl: Duration,
    /// What happens to the data of files no rule in force may read or write: through the
    /// daemon, so that later rules reach them (the default), or kernel passthrough.
    pub file_io: FileIo,
    /// How many inodes may hold an `O_PATH` descriptor; the rest are kept as file handles.
    /// `None`: derived from the open-files limit, keeping a reserve for open files.
    pub max_held_fds: Option<usize>,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            file_io: FileIo::default(),
            max_held_fds: None,
        }
    }
}

/// Inodes may hold descriptors up to the open-files limit minus a reserve for open files,
/// sockets and `/dev/fuse` clones (a quarter of the limit, 256 to 16384).
fn default_fd_budget() -> usize {
    let limit = crate::sys::nofile_limit().unwrap_or(1024);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    limit.saturating_sub((limit / 4).clamp(256, 16384)).max(16)
}

/// The most delay threads alive at once; beyond this, delays are slept on the worker thread.
const MAX_DELAYED: usize = 1024;
/// The most blocking calls (fsync) running on threads of their own at once; beyond this they
/// run on the thread that took the request.
const MAX_OFFLOADED: usize = 256;

/// State shared by the FUSE worker threads and the control plane.
pub(crate) struct Shared {
    inodes: InodeTable,
    handles: handle::HandleTable,
    rules: Arc<RuleStore>,
    opts: FsOptions,
    /// Negotiated with the kernel at init, cleared if the kernel refuses a backing file.
    passthrough: AtomicBool,
    /// Requests come through FUSE over io_uring (the session's flag, set once INIT agreed).
    io_uring: std::sync::OnceLock<Arc<std::sync::atomic::AtomicU8>>,
    /// `/proc/self/fd`, to reopen `O_PATH` handles with real flags.
    proc_fd: OwnedFd,
    /// Sends the kernel cache invalidations rule changes need (started with the session).
    invalidator: OnceLock<invalidator::Invalidator>,
    /// Replies carrying cache timeouts hold this shared; a rule change takes it exclusively
    /// before invalidating, so no reply computed under the old rules lands after that.
    epoch: RwLock<()>,
    delayed: AtomicUsize,
    /// Requests held in a delay, for FUSE interrupts to end it.
    interrupts: interrupts::Interrupts,
    /// Blocking calls running on threads of their own ([`Shared::offload`]).
    offloaded: AtomicUsize,
    ready: AtomicBool,
    /// Who creates files (root): created files are chowned when the caller differs.
    euid: u32,
    egid: u32,
}

/// The filesystem given to the FUSE session.
pub struct PassthroughFs {
    shared: Arc<Shared>,
}

/// The control plane's view of a running filesystem.
pub struct FsHandle {
    shared: Arc<Shared>,
}

/// A [`FsHandle`] that does not keep the filesystem alive (for the rule store's update hook,
/// which the filesystem itself holds).
#[derive(Clone)]
pub struct WeakFsHandle {
    shared: std::sync::Weak<Shared>,
}

impl WeakFsHandle {
    pub fn upgrade(&self) -> Option<FsHandle> {
        self.shared.upgrade().map(|shared| FsHandle { shared })
    }
}

impl std::fmt::Debug for FsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsHandle")
            .field("ready", &self.is_ready())
            .field("inodes", &self.inode_count())
            .finish_non_exhaustive()
    }
}

impl Clone for FsHandle {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl PassthroughFs {
    /// Serve the directory `original` (any descriptor on it, `O_PATH` is enough).
    ///
    /// Sets the process umask to 0: files are created by this process, each under the umask
    /// of the caller it creates for (see `umask`).
    pub fn new(original: OwnedFd, rules: Arc<RuleStore>, opts: FsOptions) -> io::Result<Self> {
        let st = fstatat(original.as_fd(), "", AtFlags::AT_EMPTY_PATH)?;
        if attr::kind_of_mode(st.st_mode) != fuser::FileType::Directory {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        nix::sys::stat::umask(Mode::empty());
        let proc_fd = openat(
            nix::fcntl::AT_FDCWD,
            "/proc/self/fd",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let budget = opts.max_held_fds.unwrap_or_else(default_fd_budget);
        let shared = Shared {
            inodes: InodeTable::new(original, attr::key_of(&st), budget),
            handles: handle::HandleTable::default(),
            rules,
            passthrough: AtomicBool::new(false),
            io_uring: std::sync::OnceLock::new(),
            opts,
            proc_fd,
            invalidator: OnceLock::new(),
            epoch: RwLock::new(()),
            delayed: AtomicUsize::new(0),
            interrupts: interrupts::Interrupts::default(),
            offloaded: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// A handle for the control plane, valid for the life of the filesystem.
    pub fn handle(&self) -> FsHandle {
        FsHandle {
            shared: self.shared.clone(),
        }
    }
}

impl FsHandle {
    pub fn downgrade(&self) -> WeakFsHandle {
        WeakFsHandle {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Give the filesystem the session's notifier (for cache invalidation).
    pub fn set_notifier(&self, notifier: Notifier) -> io::Result<()> {
        let invalidator = invalidator::Invalidator::start(notifier)?;
        let _ = self.shared.invalidator.set(invalidator);
        Ok(())
    }

    /// Cache invalidations of past rule changes still waiting (on operations the rules
    /// delay: see [`invalidator`]).
    pub fn invalidations_waiting(&self) -> usize {
        self.shared.invalidator.get().map_or(0, |i| i.waiting())
    }

    /// Mark the filesystem as mounted and serving.
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// Give the filesystem the session's "requests come through io_uring" flag.
    pub fn set_io_uring(&self, flag: Arc<std::sync::atomic::AtomicU8>) {
        let _ = self.shared.io_uring.set(flag);
    }

    /// Whether requests come through FUSE over io_uring.
    pub fn io_uring_active(&self) -> bool {
        self.shared
            .io_uring
            .get()
            .is_some_and(|f| f.load(Ordering::Acquire) == fuser::io_uring_state::IN_USE)
    }

    /// The io_uring queues are still being started.
    pub fn io_uring_starting(&self) -> bool {
        self.shared
            .io_uring
            .get()
            .is_some_and(|f| f.load(Ordering::Acquire) == fuser::io_uring_state::STARTING)
    }

    /// Whether opens currently use kernel passthrough.
    pub fn passthrough_active(&self) -> bool {
        self.shared.passthrough.load(Ordering::Relaxed)
    }

    /// Number of inodes the kernel holds (diagnostics).
    pub fn inode_count(&self) -> usize {
        self.shared.inodes.count()
    }

    /// Descriptors held by inodes (the rest are file handles).
    pub fn held_fds(&self) -> usize {
        self.shared.inodes.held_fds()
    }

    /// Call after the policy's rules were replaced and before reporting the change done:
    /// waits for replies computed under the old rules, then drops the kernel's cached
    /// entries and attributes of every known path the new rules may touch, and the page
    /// cache of files they may read or write. Returns the number of inodes invalidated.
    pub fn rules_changed(&self) -> usize {
        let sh = &self.shared;
        drop(sh.epoch.write());
        let Some(invalidator) = sh.invalidator.get() else {
            return 0;
        };
        if sh.rules.is_empty() {
            // Paths under rules were served with zero timeouts: nothing stale is cached.
            return 0;
        }
        let mut items = Vec::new();
        let mut count = 0;
        for inode in sh.inodes.all() {
            let path = inode.path();
            let attrs = sh.rules.may_match(&path, MethodSet::ATTRIBUTE_REPLIES);
            let data = inode.kind == fuser::FileType::RegularFile
                && sh.rules.may_match(&path, MethodSet::DATA_TRANSFER)
                && !inode.io.lock().is_passthrough();
            if !attrs && !data {
                continue;
            }
            count += 1;
            // Offset -1 drops attributes only; 0 also drops cached pages.
            let offset = if data { 0 } else { -1 };
            items.push(invalidator::Invalidation::Inode {
                ino: inode.nodeid,
                offset,
            });
            if attrs && let Some((parent, name)) = inode.parent_and_name() {
                items.push(invalidator::Invalidation::Entry {
                    parent,
                    name: name.to_os_string(),
                });
            }
        }
        if !invalidator.run(items, invalidator::WAIT) {
            tracing::warn!(
                waiting = invalidator.waiting(),
                "kernel cache invalidations wait on operations the rules delay; they finish in the background"
            );
        }
        count
    }

    /// Open files whose reads and writes bypass the daemon (kernel passthrough, or the page
    /// cache when passthrough is unavailable), as paths relative to the mount root. Rules
    /// added while they are open cannot reach their data until every descriptor on them is
    /// closed and the file is reopened.
    pub fn bypassing_open_files(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .shared
            .handles
            .all()
            .into_iter()
            .filter_map(|h| match &*h {
                handle::Handle::File(f) if !f.mode.faults_reach_data() => {
                    Some(f.inode.path().to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl FsStatus for FsHandle {
    fn mounted(&self) -> bool {
        self.is_ready()
    }

    fn open_passthrough_files(&self) -> Vec<String> {
        self.bypassing_open_files()
    }

    fn io_uring(&self) -> bool {
        self.io_uring_active()
    }

    fn file_io(&self) -> FileIo {
        self.shared.opts.file_io
    }

    fn invalidations_waiting(&self) -> usize {
        FsHandle::invalidations_waiting(self)
    }
}

/// Replies that can carry an error (every reply type the filesystem uses).
pub(crate) trait ErrorReply: Send + 'static {
    fn fail(self, errno: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => { $( impl ErrorReply for $t { fn fail(self, errno: Errno) { self.error(errno) } } )* };
}
error_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyEmpty,
    ReplyOpen,
    ReplyWrite,
    ReplyCreate,
    ReplyStatfs,
    ReplyXattr,
    ReplyLseek,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyLock
);

/// The rest of an operation, run after an injected delay on a delay thread.
pub(crate) type Resume<R> = Box<dyn FnOnce(&Arc<Shared>, Injection, R) + Send>;

pub(crate) fn errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

/// The name of a descriptor in `/proc/self/fd`, without allocating.
pub(crate) struct FdName {
    buf: [u8; 12],
    len: usize,
}

impl FdName {
    pub(crate) fn of(fd: &impl AsRawFd) -> Self {
        let mut n = fd.as_raw_fd().max(0) as u32;
        let mut digits = [0u8; 12];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let len = digits.len() - i;
        let mut buf = [0u8; 12];
        buf[..len].copy_from_slice(&digits[i..]);
        Self { buf, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Shared {
    fn inode(&self, nodeid: fuser::INodeNo) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(nodeid.0).ok_or(Errno::ENOENT)
    }

    /// The rule path of an operation: `None` when there are no rules (nothing to compute).
    fn rule_path(&self, f: impl FnOnce() -> PathBuf) -> Option<PathBuf> {
        (!self.rules.is_empty()).then(f)
    }

    /// Decide faults for `method` on `path`. Returns the injection and the reply when the
    /// caller should carry on now; `None` when the reply is taken care of (failed with an
    /// injected errno, or the rest runs on a delay thread through `resume`).
    fn faults<R: ErrorReply>(
        self: &Arc<Self>,
        requester: interrupts::Requester,
        method: Method,
        path: Option<&Path>,
        reply: R,
        resume: impl FnOnce() -> Resume<R>,
    ) -> Option<(Injection, R)> {
        let Some(path) = path else {
            return Some((Injection::default(), reply));
        };
        let inj = self.rules.evaluate(method, path);
        let Some(delay) = inj.delay.filter(|d| !d.is_zero()) else {
            if let Some(e) = inj.errno {
                reply.fail(Errno::from_i32(e));
                return None;
            }
            return Some((inj, reply));
        };
        if self.delayed.fetch_add(1, Ordering::Relaxed) >= MAX_DELAYED {
            self.delayed.fetch_sub(1, Ordering::Relaxed);
            self.sleep(requester, delay, inj.generation);
            if let Some(e) = inj.errno {
                reply.fail(Errno::from_i32(e));
                return None;
            }
            return Some((inj, reply));
        }
        // Sleep on a thread of its own: a delayed operation must not hold up the worker
        // threads that serve everything else.
        let job = resume();
        let sh = self.clone();
        let spawned = std::thread::Builder::new()
            .name("fault-delay".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                sh.sleep(requester, delay, inj.generation);
                sh.delayed.fetch_sub(1, Ordering::Relaxed);
                match inj.errno {
                    Some(e) => reply.fail(Errno::from_i32(e)),
                    None => job(&sh, inj, reply),
                }
            });
        if let Err(e) = spawned {
            // The closure, and with it the reply, was dropped: fuser answers EIO.
            self.delayed.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot start a delay thread");
        }
        None
    }

    /// Sleeps an injected delay for `requester`: until it runs out, the rules change, or the
    /// kernel interrupts the request of a process that is dying (see [`interrupts`]).
    fn sleep(&self, requester: interrupts::Requester, delay: Duration, generation: u64) {
        use crate::fault_rules::SleepOutcome;
        let deadline = std::time::Instant::now().checked_add(delay);
        let interrupted = self.interrupts.register(requester.unique);
        let mut watching = false;
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            let slice = if watching {
                left.min(interrupts::WATCH_EVERY)
            } else {
                left
            };
            let outcome = self.rules.sleep_unless(slice, generation, &interrupted);
            let over = match outcome {
                SleepOutcome::CutShort => true,
                SleepOutcome::Elapsed => slice == left || requester.dying(),
                SleepOutcome::Interrupted => {
                    interrupted.store(false, Ordering::Release);
                    watching = true;
                    requester.dying()
                }
            };
            if over {
                break;
            }
        }
        self.interrupts.unregister(requester.unique);
        if watching {
            tracing::debug!(?requester, "an interrupted delay ended");
        }
    }

    /// The kernel interrupts request `unique`: end its delay if it sleeps in one.
    pub(crate) fn interrupt(&self, unique: u64) {
        if self.interrupts.interrupt(unique) {
            self.rules.wake_sleepers();
        }
    }

    /// Runs `job`, a call that may block for milliseconds (fsync: a journal commit), on a
    /// thread of its own, so that the thread that took the request goes on serving others.
    /// With FUSE over io_uring that matters most: each CPU's requests come through one queue
    /// thread, and an fsync on it held up every request from that CPU (pgbench's commits ran
    /// at half the speed of `/dev/fuse`'s). Inline when too many are running, or when no
    /// thread can be started.
    fn offload(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        if self.offloaded.fetch_add(1, Ordering::Relaxed) >= MAX_OFFLOADED {
            self.offloaded.fetch_sub(1, Ordering::Relaxed);
            return job();
        }
        let slot = Arc::new(parking_lot::Mutex::new(Some(job)));
        let theirs = slot.clone();
        let sh = self.clone();
        let spawned = std::thread::Builder::new()
            .name("fs-sync".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                if let Some(job) = theirs.lock().take() {
                    job();
                }
                sh.offloaded.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            self.offloaded.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "no thread for a blocking call; running it inline");
            if let Some(job) = slot.lock().take() {
                job();
            }
        }
    }

    /// Entry/attribute timeout for `path` (`None`: no rules).
    fn ttl(&self, path: Option<&Path>) -> Duration {
        match path {
            Some(p) if self.rules.may_match(p, MethodSet::ATTRIBUTE_REPLIES) => Duration::ZERO,
            _ => self.opts.cache_ttl,
        }
    }

    fn stat(&self, inode: &Inode) -> Result<FileStat, Errno> {
        fstatat(
            inode.fd()?.as_fd(),
            "",
            AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    /// Open an inode's original with real flags.
    fn open_inode(&self, inode: &Inode, flags: OFlag) -> nix::Result<OwnedFd> {
        inode.open(self.proc_fd.as_fd(), flags)
    }

    /// Reopen a descriptor with other flags through `/proc/self/fd`.
    fn reopen(&self, fd: &impl AsRawFd, flags: OFlag) -> nix::Result<OwnedFd> {
        let name = FdName::of(fd);
        openat(
            self.proc_fd.as_fd(),
            name.as_bytes(),
            flags | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    /// Look `name` up in `parent` and count one kernel reference on the result.
    fn lookup_child(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
    ) -> Result<(Arc<Inode>, FileAttr), Errno> {
        let fd = openat(
            parent.fd()?.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = fstatat(
            fd.as_fd(),
            "",
            AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
        let inode = self.inodes.lookup(
            parent,
            name,
            attr::key_of(&st),
            attr::kind_of_mode(st.st_mode),
            fd,
        );
        let attr = attr::to_attr(&st, inode.nodeid);
        Ok((inode, attr))
    }

    /// Reply with an entry, applying an attribute override and the path's cache timeout.
    fn reply_entry(
        &self,
        reply: ReplyEntry,
        mut attr: FileAttr,
        path: Option<&Path>,
        inj: &Injection,
    ) {
        if let Some(o) = &inj.attr {
            attr::apply_override(o, &mut attr, true);
        }
        let _epoch = self.epoch.read_recursive();
        let ttl = self.ttl(path);
        reply.entry(&ttl, &attr, Generation(0));
    }

    /// The inode of a known key (after rename), if the kernel holds it.
    fn find(&self, key: InodeKey) -> Option<Arc<Inode>> {
        self.inodes.find(key)
    }

    fn passthrough_enabled(&self) -> bool {
        self.opts.file_io == FileIo::Passthrough && self.passthrough.load(Ordering::Relaxed)
    }

    fn disable_passthrough(&self, why: &io::Error) {
        if self.passthrough.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %why, "kernel refused a passthrough backing file; serving all IO through the daemon");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names() {
        struct Raw(i32);
        impl AsRawFd for Raw {
            fn as_raw_fd(&self) -> i32 {
                self.0
            }
        }
        assert_eq!(FdName::of(&Raw(0)).as_bytes(), b"0");
        assert_eq!(FdName::of(&Raw(7)).as_bytes(), b"7");
        assert_eq!(FdName::of(&Raw(1234567)).as_bytes(), b"1234567");
        assert_eq!(FdName::of(&Raw(i32::MAX)).as_bytes(), b"2147483647");
    }
}
