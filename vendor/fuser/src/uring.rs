//! FUSE over io_uring (Linux 6.14+): one queue per possible CPU, each served by a thread
//! pinned to that CPU, so a request is taken up on the CPU that issued it instead of waking
//! a `/dev/fuse` reader on another one.
//!
//! Added to the vendored fuser for faultline: upstream fuser has no io_uring transport.
//! The kernel side is `fs/fuse/dev_uring.c`; the protocol, briefly:
//! - after the INIT reply (which carried `FUSE_OVER_IO_URING`), every queue registers ring
//!   entries with `FUSE_IO_URING_CMD_REGISTER` (an `IORING_OP_URING_CMD` in a 128-byte SQE,
//!   `addr` pointing at two iovecs: a header area and a payload buffer);
//! - once every queue has an entry, the kernel routes requests to the queue of the CPU the
//!   caller runs on; the command completes when a request has been copied into the entry:
//!   `fuse_in_header` at offset 0 of the header area, the opcode's fixed argument at 128, and
//!   the rest (names, write data) in the payload, whose length is at 272;
//! - the reply goes back into the same entry (`fuse_out_header` at 0, the body in the
//!   payload) and `FUSE_IO_URING_CMD_COMMIT_AND_FETCH` hands it to the kernel and waits for
//!   the next request in one step.
//!
//! FORGET and INTERRUPT keep coming through `/dev/fuse`, so the classic readers stay.
//!
//! A request holds its entry until its reply is committed, and a newly registered entry
//! does not pick up requests already waiting in its queue (only a commit fetches them), so
//! every entry a queue may need is registered at start: enough for the replies a filesystem
//! holds back at once (latency faults) plus the requests it answers right away. Entry memory
//! is mapped without being touched, so idle entries cost address space, not memory.
//!
//! Requests are re-assembled into the `/dev/fuse` layout and dispatched by the same code as
//! the classic loop. Replies may come from any thread (a filesystem may answer later): they
//! are written into the entry by that thread and committed by the queue thread, which is the
//! only one that submits to its ring (the kernel copies the next request in the submitting
//! task's context, so a short-lived thread must never submit).

use std::cell::Cell;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::warn;
use nix::sys::eventfd::EfdFlags;
use nix::sys::eventfd::EventFd;
use nix::unistd::Uid;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::ReplyEmpty;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll::Operation;
use crate::ll::fuse_abi as abi;
use crate::ll::fuse_abi::fuse_opcode as op;
use crate::reply::Reply;
use crate::reply::ReplySender;
use crate::request::RequestWithSender;
use crate::session::FilesystemHolder;
use crate::session::SessionACL;
use crate::session::SessionEventLoop;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `struct fuse_uring_req_header`: in/out header (128), op header (128), ent_in_out (32).
const HEADER_SIZE: usize = 288;
const OP_IN_OFFSET: usize = 128;
const COMMIT_ID_OFFSET: usize = 264;
const PAYLOAD_SZ_OFFSET: usize = 272;
const IN_HEADER_SIZE: usize = 40;
const OUT_HEADER_SIZE: usize = 16;
/// Most entries a queue registers.
const MAX_DEPTH: usize = 1024;
/// `user_data` of the eventfd poll; entries use their index.
const WAKE_TOKEN: u64 = u64::MAX;

/// [`Params::state`] values.
/// Negotiated at INIT; the queues are being started.
pub const STARTING: u8 = 0;
/// Every CPU's queue is registered: requests come through io_uring.
pub const IN_USE: u8 = 1;
/// Not negotiated, or a queue could not start: requests come through `/dev/fuse`.
pub const NOT_IN_USE: u8 = 2;

/// What INIT settled.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) depth: usize,
    pub(crate) payload: usize,
    /// [`STARTING`], then [`IN_USE`], or [`NOT_IN_USE`] if a queue could not start and
    /// requests stay on /dev/fuse.
    pub(crate) state: Arc<AtomicU8>,
    /// The queue threads, as they start.
    pub(crate) threads: QueueThreads,
}

/// The kernel thread ids of a session's io_uring queue threads (empty until
/// [`crate::Session::run`] starts them, and over `/dev/fuse`), so that the filesystem can
/// change how they are scheduled.
#[derive(Debug, Clone, Default)]
pub struct QueueThreads(Arc<Mutex<Vec<i32>>>);

impl QueueThreads {
    /// Thread ids (`gettid`) of the queue threads started so far.
    pub fn ids(&self) -> Vec<i32> {
        self.0.lock().clone()
    }
}

/// The payload buffer the kernel requires of every entry (`fuse_uring_create`).
pub(crate) fn payload_size(max_write: u32, max_pages: u16) -> usize {
    let page = page_size::get();
    (abi::consts::FUSE_MIN_READ_BUFFER)
        .max(max_write as usize)
        .max(usize::from(max_pages) * page)
}

/// Can this process use io_uring with 128-byte SQEs? Asked before INIT asks the kernel for
/// FUSE over io_uring: once that is agreed, the kernel holds every request until each CPU's
/// queue has registered an entry, so a process that cannot create rings (a seccomp profile
/// that refuses io_uring, `kernel.io_uring_disabled`) must not ask.
pub(crate) fn available() -> bool {
    IoUring::<squeue::Entry128, cqueue::Entry>::builder()
        .build(2)
        .is_ok()
}

/// Size of the opcode's fixed argument, as the kernel puts it in `op_in` (`in_args[0]`;
/// operations with only names there send a zero-sized first argument since 6.14).
fn op_in_size(opcode: u32, setxattr_ext: bool) -> usize {
    use std::mem::size_of as s;
    let Ok(code) = op::try_from(opcode) else {
        return 0;
    };
    match code {
        op::FUSE_GETATTR => s::<abi::fuse_getattr_in>(),
        op::FUSE_SETATTR => s::<abi::fuse_setattr_in>(),
        op::FUSE_MKNOD => s::<abi::fuse_mknod_in>(),
        op::FUSE_MKDIR => s::<abi::fuse_mkdir_in>(),
        op::FUSE_RENAME => s::<abi::fuse_rename_in>(),
        op::FUSE_RENAME2 => s::<abi::fuse_rename2_in>(),
        op::FUSE_LINK => s::<abi::fuse_link_in>(),
        op::FUSE_OPEN | op::FUSE_OPENDIR => s::<abi::fuse_open_in>(),
        op::FUSE_CREATE => s::<abi::fuse_create_in>(),
        op::FUSE_READ | op::FUSE_READDIR | op::FUSE_READDIRPLUS => s::<abi::fuse_read_in>(),
        op::FUSE_WRITE => s::<abi::fuse_write_in>(),
        op::FUSE_RELEASE | op::FUSE_RELEASEDIR => s::<abi::fuse_release_in>(),
        op::FUSE_FLUSH => s::<abi::fuse_flush_in>(),
        op::FUSE_FSYNC | op::FUSE_FSYNCDIR => s::<abi::fuse_fsync_in>(),
        op::FUSE_SETXATTR if setxattr_ext => s::<abi::fuse_setxattr_in_ext>(),
        op::FUSE_SETXATTR => s::<abi::fuse_setxattr_in>(),
        op::FUSE_GETXATTR | op::FUSE_LISTXATTR => s::<abi::fuse_getxattr_in>(),
        op::FUSE_GETLK | op::FUSE_SETLK | op::FUSE_SETLKW => s::<abi::fuse_lk_in>(),
        op::FUSE_ACCESS => s::<abi::fuse_access_in>(),
        op::FUSE_BMAP => s::<abi::fuse_bmap_in>(),
        op::FUSE_IOCTL => s::<abi::fuse_ioctl_in>(),
        op::FUSE_POLL => s::<abi::fuse_poll_in>(),
        op::FUSE_FALLOCATE => s::<abi::fuse_fallocate_in>(),
        op::FUSE_LSEEK => s::<abi::fuse_lseek_in>(),
        op::FUSE_COPY_FILE_RANGE => s::<abi::fuse_copy_file_range_in>(),
        op::FUSE_FORGET => s::<abi::fuse_forget_in>(),
        op::FUSE_BATCH_FORGET => s::<abi::fuse_batch_forget_in>(),
        op::FUSE_INTERRUPT => s::<abi::fuse_interrupt_in>(),
        _ => 0,
    }
}

/// One registered entry's memory: the header area and the payload buffer. The kernel
/// writes them between our (re)submission of the entry and its completion; we read the
/// request and write the reply between its completion and the next submission.
struct EntryMemory {
    /// One private anonymous mapping: the header area (a page), then the payload buffer.
    base: NonNull<u8>,
    len: usize,
    payload_len: usize,
    /// The two iovecs `FUSE_IO_URING_CMD_REGISTER` points at; they must stay put.
    iov: Box<[libc::iovec; 2]>,
    /// The request id to commit the reply under.
    commit_id: AtomicU64,
}

// SAFETY: the mapping is plain memory owned by this struct. Access is serialized by the
// ring protocol: between a completion and the next submission exactly one party (the
// thread holding the request's reply) touches an entry, and the queue thread hands the
// entry to the kernel only after that reply was recorded under the queue's mutex.
unsafe impl Send for EntryMemory {}
// SAFETY: as above.
unsafe impl Sync for EntryMemory {}

impl EntryMemory {
    /// Map the entry's memory. `MAP_NORESERVE` and no touching: pages become resident only
    /// when a request or reply of that size passes through the entry (the kernel hands out
    /// the most recently returned entry first, so a queue's idle entries stay unbacked).
    fn new(payload_len: usize) -> io::Result<Self> {
        let page = page_size::get();
        let len = page + payload_len.div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        let iov = Box::new([
            libc::iovec {
                iov_base: base.as_ptr().cast(),
                iov_len: HEADER_SIZE,
            },
            libc::iovec {
                // SAFETY: `page` is within the mapping of `len` bytes.
                iov_base: unsafe { base.as_ptr().add(page) }.cast(),
                iov_len: payload_len,
            },
        ]);
        Ok(Self {
            base,
            len,
            payload_len,
            iov,
            commit_id: AtomicU64::new(0),
        })
    }

    /// The header area, while the entry is ours.
    ///
    /// # Safety
    /// The kernel must not own the entry (it completed, and was not resubmitted).
    unsafe fn header(&self) -> &mut [u8] {
        // SAFETY: the mapping starts with a page of header area; exclusivity is the
        // caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), HEADER_SIZE) }
    }

    /// The payload buffer, while the entry is ours.
    ///
    /// # Safety
    /// As for [`Self::header`].
    unsafe fn payload(&self) -> &mut [u8] {
        // SAFETY: the payload follows the header page within the mapping.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(page_size::get()),
                self.payload_len,
            )
        }
    }
}

impl Drop for EntryMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; nothing refers to it any more
        // (the entry's ring is closed before the queue's memory goes).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// What a queue shares with the threads that reply to its requests.
pub(crate) struct QueueShared {
    qid: u16,
    entries: Box<[OnceLock<EntryMemory>]>,
    /// Entries whose reply is written, waiting for the queue thread to commit them.
    replied: Mutex<Vec<usize>>,
    wake: EventFd,
    closed: AtomicBool,
    /// The session's `/dev/fuse` descriptor (registered with each ring as fixed file 0).
    ch: Channel,
    /// The `/dev/fuse` reader, which naps between polls: woken when the kernel tears this
    /// queue down (the connection is going), so the session ends without waiting for it.
    reader: OnceLock<std::thread::Thread>,
}

impl std::fmt::Debug for QueueShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueShared")
            .field("qid", &self.qid)
            .finish()
    }
}

thread_local! {
    /// The queue this thread serves, on queue threads.
    static QUEUE_THREAD: Cell<Option<u16>> = const { Cell::new(None) };
}

/// Where a ring request's reply goes.
#[derive(Debug, Clone)]
pub(crate) struct RingReply {
    queue: Arc<QueueShared>,
    index: usize,
}

impl RingReply {
    pub(crate) fn channel(&self) -> ChannelSender {
        self.queue.ch.sender()
    }

    /// Write the reply into the entry and have the queue thread commit it.
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        let Some(entry) = self.queue.entries.get(self.index).and_then(OnceLock::get) else {
            return Err(io::Error::other("reply to an unknown ring entry"));
        };
        if self.queue.closed.load(Ordering::Acquire) {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        // SAFETY: the entry completed with this request and is committed only after this
        // reply is recorded below, so nobody else touches its memory now.
        let (header, payload) = unsafe { (entry.header(), entry.payload()) };
        let mut written = 0usize;
        let mut body = 0usize;
        for slice in data {
            let mut bytes: &[u8] = slice;
            if written < OUT_HEADER_SIZE {
                let n = (OUT_HEADER_SIZE - written).min(bytes.len());
                header[written..written + n].copy_from_slice(&bytes[..n]);
                written += n;
                bytes = &bytes[n..];
            }
            if bytes.is_empty() {
                continue;
            }
            if body + bytes.len() > payload.len() {
                // Cannot happen with replies sized for the negotiated limits; fail the
                // request rather than truncate it.
                let errno = -libc::EIO;
                header[4..8].copy_from_slice(&errno.to_ne_bytes());
                body = 0;
                break;
            }
            payload[body..body + bytes.len()].copy_from_slice(bytes);
            body += bytes.len();
        }
        if written < OUT_HEADER_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reply shorter than its header",
            ));
        }
        let payload_sz = u32::try_from(body).unwrap_or(0);
        header[PAYLOAD_SZ_OFFSET..PAYLOAD_SZ_OFFSET + 4].copy_from_slice(&payload_sz.to_ne_bytes());
        self.queue.replied.lock().push(self.index);
        if QUEUE_THREAD.with(Cell::get) != Some(self.queue.qid) {
            // Another thread answered: wake the queue thread to commit.
            let _ = self.queue.wake.write(1);
        }
        Ok(())
    }
}

/// The running queues.
pub(crate) struct Rings {
    queues: Vec<(Arc<QueueShared>, JoinHandle<()>)>,
    in_use: bool,
}

impl Rings {
    /// Every queue registered: requests come through the rings, not `/dev/fuse`.
    pub(crate) fn in_use(&self) -> bool {
        self.in_use
    }

    /// Unpark `reader` (the `/dev/fuse` reader) when the kernel tears a queue down.
    pub(crate) fn wake_on_teardown(&self, reader: std::thread::Thread) {
        for (shared, _) in &self.queues {
            let _ = shared.reader.set(reader.clone());
        }
    }

    /// Stop every queue thread and wait for it (the connection is gone by now).
    pub(crate) fn stop(self) {
        for (shared, _) in &self.queues {
            shared.closed.store(true, Ordering::Release);
            let _ = shared.wake.write(1);
        }
        for (_, thread) in self.queues {
            if thread.join().is_err() {
                error!("a FUSE io_uring queue thread panicked");
            }
        }
    }
}

/// CPUs the kernel counts queues for (`num_possible_cpus()`).
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list_max(s.trim()))
        .map(|max| max + 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The highest CPU in a list like `0-3,8-11`.
fn parse_cpu_list_max(list: &str) -> Option<usize> {
    list.split(',')
        .filter_map(|part| part.rsplit('-').next()?.trim().parse().ok())
        .max()
}

/// Start one queue thread per possible CPU; each registers its entries.
pub(crate) fn start<FS: Filesystem>(
    params: Params,
    ch: Channel,
    filesystem: Arc<FilesystemHolder<FS>>,
    allowed: SessionACL,
    session_owner: Uid,
    setxattr_ext: bool,
) -> io::Result<Rings> {
    let cpus = possible_cpus();
    let mut queues = Vec::with_capacity(cpus);
    let (started_tx, started_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    for qid in 0..cpus {
        let qid = u16::try_from(qid).map_err(|_| io::Error::other("too many CPUs"))?;
        let shared = Arc::new(QueueShared {
            qid,
            entries: (0..params.depth.clamp(1, MAX_DEPTH))
                .map(|_| OnceLock::new())
                .collect(),
            replied: Mutex::new(Vec::new()),
            wake: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            closed: AtomicBool::new(false),
            ch: ch.clone(),
            reader: OnceLock::new(),
        });
        let event_loop = SessionEventLoop {
            thread_name: format!("fuser-ring-{qid}"),
            ch: ch.clone(),
            filesystem: filesystem.clone(),
            allowed,
            session_owner,
            setxattr_ext,
        };
        let queue = Queue {
            shared: shared.clone(),
            params: params.clone(),
            event_loop,
            started: started_tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("fuser-ring-{qid}"))
            .spawn(move || queue.run())?;
        queues.push((shared, thread));
    }
    drop(started_tx);
    // Every queue must register, or the kernel holds requests forever: if one could not,
    // make the kernel give the transport up (requests then come through /dev/fuse).
    let failed = started_rx.iter().take(cpus).find_map(Result::err);
    let in_use = if let Some(e) = failed {
        warn!("FUSE over io_uring not started ({e}); serving from /dev/fuse");
        if let Err(e) = give_up(&ch) {
            error!("cannot make the kernel give up FUSE over io_uring: {e}");
        }
        params.state.store(NOT_IN_USE, Ordering::Release);
        false
    } else {
        params.state.store(IN_USE, Ordering::Release);
        true
    };
    Ok(Rings { queues, in_use })
}

/// A REGISTER the kernel must refuse (one iovec instead of two): on a failed REGISTER it
/// turns FUSE over io_uring off for the connection and releases the requests it held.
fn give_up(ch: &Channel) -> io::Result<()> {
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder().build(2)?;
    let iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }];
    let mut cmd = [0u8; 80];
    cmd[16..18].copy_from_slice(&0u16.to_ne_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(ch.as_fd().as_raw_fd()), CMD_REGISTER)
        .cmd(cmd)
        .addr(Some(iov.as_ptr() as u64))
        .build()
        .user_data(0);
    push(&mut ring, with_len(sqe, 1))?;
    ring.submit_and_wait(1)?;
    Ok(())
}

struct Queue<FS: Filesystem> {
    shared: Arc<QueueShared>,
    params: Params,
    event_loop: SessionEventLoop<FS>,
    /// Told once this queue's entries are submitted for registration, or why not.
    started: std::sync::mpsc::Sender<io::Result<()>>,
}

/// An entry's state as the queue thread sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Submitted: the kernel owns it until it completes.
    Kernel,
    /// Holding a request whose reply is not committed yet.
    User,
    /// The kernel gave it up (teardown) or it failed.
    Dead,
}

impl<FS: Filesystem> Queue<FS> {
    fn run(self) {
        QUEUE_THREAD.with(|q| q.set(Some(self.shared.qid)));
        self.params.threads.0.lock().push(nix::unistd::gettid().as_raw());
        pin_to_cpu(self.shared.qid);
        if let Err(e) = self.serve() {
            if !self.shared.closed.load(Ordering::Acquire) {
                warn!("FUSE io_uring queue {} stopped: {e}", self.shared.qid);
            }
        }
    }

    fn serve(&self) -> io::Result<()> {
        let depth = self.params.depth.clamp(1, MAX_DEPTH);
        let sq = u32::try_from(depth + 1).unwrap_or(1024).next_power_of_two();
        let setup = || -> io::Result<(IoUring<squeue::Entry128, cqueue::Entry>, Vec<Slot>)> {
            // Test hook (faultline's injector tests): the fallback when a queue cannot start.
            if self.shared.qid == 1 && std::env::var_os("FUSER_TEST_FAIL_QUEUE_1").is_some() {
                return Err(io::Error::other("test failure"));
            }
            let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
                IoUring::builder().setup_cqsize(sq * 2).build(sq)?;
            ring.submitter().register_files(&[self.shared.ch_fd()])?;
            let mut slots: Vec<Slot> = Vec::with_capacity(depth);
            for _ in 0..depth {
                self.add_entry(&mut ring, &mut slots)?;
            }
            self.arm_wake(&mut ring)?;
            ring.submit()?;
            Ok((ring, slots))
        };
        let (mut ring, mut slots) = match setup() {
            Ok(set) => {
                let _ = self.started.send(Ok(()));
                set
            }
            Err(e) => {
                let _ = self.started.send(Err(io::Error::new(
                    e.kind(),
                    format!("queue {}: {e}", self.shared.qid),
                )));
                return Err(e);
            }
        };
        let mut idle_cpus = IdleProbe::new();
        let mut request = Vec::with_capacity(IN_HEADER_SIZE + 128 + 4096);
        let mut done = Vec::with_capacity(sq as usize * 2);
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            done.clear();
            done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            for &(token, res) in &done {
                if token == WAKE_TOKEN {
                    let _ = self.shared.wake.read();
                    self.arm_wake(&mut ring)?;
                    continue;
                }
                let Ok(index) = usize::try_from(token) else {
                    continue;
                };
                match res {
                    0 => {
                        slots[index] = Slot::User;
                        self.dispatch(index, &mut request);
                    }
                    e if e == -libc::EINTR || e == -libc::EAGAIN => {
                        // Not taken: submit the same command again.
                        self.resubmit(&mut ring, index)?;
                    }
                    e => {
                        if !self.shared.closed.load(Ordering::Acquire) && e != -libc::ENOTCONN {
                            debug!(
                                "FUSE io_uring queue {} entry {index}: {}",
                                self.shared.qid,
                                io::Error::from_raw_os_error(-e)
                            );
                        }
                        slots[index] = Slot::Dead;
                        if let Some(reader) = self.shared.reader.get() {
                            reader.unpark();
                        }
                    }
                }
            }
            let replied: Vec<usize> = std::mem::take(&mut *self.shared.replied.lock());
            let mut committed = false;
            for index in replied {
                if slots.get(index) == Some(&Slot::User) {
                    self.commit(&mut ring, index)?;
                    slots[index] = Slot::Kernel;
                    committed = true;
                }
            }
            // While some CPU has idle time, hand the replies to the kernel in a call of their
            // own: the woken caller then preempts this thread on its way back to user space
            // and it stays runnable, so the caller's next request needs no wakeup and the
            // caller stays on this CPU (see `IdleProbe`).
            if committed && idle_cpus.some_idle() {
                match ring.submit() {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => return Err(e),
                }
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return Ok(());
            }
        }
    }

    fn add_entry(
        &self,
        ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
        slots: &mut Vec<Slot>,
    ) -> io::Result<()> {
        let index = slots.len();
        let memory = EntryMemory::new(self.params.payload)?;
        let cell = &self.shared.entries[index];
        let _ = cell.set(memory);
        let Some(entry) = cell.get() else {
            return Err(io::Error::other("ring entry slot taken"));
        };
        let sqe = uring_cmd(self.shared.qid, CMD_REGISTER, 0, index)
            .addr(Some(entry.iov.as_ptr() as u64))
            .build()
            .user_data(index as u64);
        push(ring, with_len(sqe, 2))?;
        slots.push(Slot::Kernel);
        Ok(())
    }

    fn commit(
        &self,
        ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
        index: usize,
    ) -> io::Result<()> {
        let commit_id = self.shared.entries[index]
            .get()
            .map_or(0, |e| e.commit_id.load(Ordering::Relaxed));
        let sqe = uring_cmd(self.shared.qid, CMD_COMMIT_AND_FETCH, commit_id, index)
            .build()
            .user_data(index as u64);
        push(ring, sqe)
    }

    fn resubmit(
        &self,
        ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
        index: usize,
    ) -> io::Result<()> {
        let Some(entry) = self.shared.entries[index].get() else {
            return Ok(());
        };
        if entry.commit_id.load(Ordering::Relaxed) == 0 {
            let sqe = uring_cmd(self.shared.qid, CMD_REGISTER, 0, index)
                .addr(Some(entry.iov.as_ptr() as u64))
                .build()
                .user_data(index as u64);
            push(ring, with_len(sqe, 2))
        } else {
            self.commit(ring, index)
        }
    }

    fn arm_wake(&self, ring: &mut IoUring<squeue::Entry128, cqueue::Entry>) -> io::Result<()> {
        let poll = opcode::PollAdd::new(
            types::Fd(self.shared.wake.as_fd().as_raw_fd()),
            libc::POLLIN as u32,
        )
        .build()
        .user_data(WAKE_TOKEN);
        push(ring, squeue::Entry128::from(poll))
    }

    /// Re-assemble the request in the `/dev/fuse` layout and run it through the same
    /// dispatcher as the classic loop, with the reply going back into the entry.
    fn dispatch(&self, index: usize, request: &mut Vec<u8>) {
        let Some(entry) = self.shared.entries[index].get() else {
            return;
        };
        // SAFETY: the entry just completed with a request and is not resubmitted before
        // its reply is committed; the reply (possibly from another thread) starts only
        // once the dispatcher hands it out, after we are done reading here.
        let (header, payload) = unsafe { (entry.header(), entry.payload()) };
        let unique = crate::ll::RequestId(u64::from_ne_bytes(read8(header, 8)));
        let commit_id = u64::from_ne_bytes(read8(header, COMMIT_ID_OFFSET));
        entry.commit_id.store(commit_id, Ordering::Relaxed);
        let opcode = u32::from_ne_bytes(read4(header, 4));
        let op_len = op_in_size(opcode, self.event_loop.setxattr_ext).min(128);
        let payload_sz =
            (u32::from_ne_bytes(read4(header, PAYLOAD_SZ_OFFSET)) as usize).min(payload.len());
        request.clear();
        request.extend_from_slice(&header[..IN_HEADER_SIZE]);
        request.extend_from_slice(&header[OP_IN_OFFSET..OP_IN_OFFSET + op_len]);
        request.extend_from_slice(&payload[..payload_sz]);
        let len = u32::try_from(request.len()).unwrap_or(u32::MAX);
        request[..4].copy_from_slice(&len.to_ne_bytes());

        let sender = ReplySender::Ring(RingReply {
            queue: self.shared.clone(),
            index,
        });
        match RequestWithSender::with_sender(sender.clone(), &request[..])
            .map(|r| r.setxattr_ext(self.event_loop.setxattr_ext))
        {
            Some(req) => {
                if let Ok(Operation::Destroy(_)) = req.request.operation() {
                    req.reply::<ReplyEmpty>().ok();
                } else {
                    req.dispatch(&self.event_loop);
                }
            }
            None => {
                // Unparsable: answer EIO so the entry comes back.
                <crate::reply::ReplyRaw as Reply>::new(unique, sender)
                    .send_ll(&crate::ll::ResponseErrno(crate::ll::Errno::EIO));
            }
        }
    }
}

/// Does the machine have idle CPU time right now? Sampled from `/proc/stat` at most every
/// [`IdleProbe::PERIOD`], and only while requests come.
///
/// Why a queue asks (measured on a 2-vCPU VM, a single-threaded 4 KiB read loop through
/// the daemon): with an idle CPU around, committing a reply and waiting for the next request
/// in one `io_uring_enter` lets the queue thread fall asleep before the woken caller runs, and
/// the scheduler then often moves the caller to the idle CPU: every request after that
/// crosses CPUs (about 80 µs each instead of 9). Committing in a call of its own keeps the
/// queue thread runnable (the caller preempts it), and the loop ran at 41–65 k reads/s
/// instead of 28–35 k. With every CPU busy the same split costs: the preempted queue thread
/// waits behind the other work on its CPU instead of being woken with a waker's priority
/// (an unlink loop beside two CPU hogs: 25 k/s against 30–50 k/s), so then the two go
/// together. Without a readable `/proc/stat` it answers no.
struct IdleProbe {
    next: std::time::Instant,
    last: Option<(u64, u64)>,
    idle: bool,
}

impl IdleProbe {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(100);
    /// Idle share of all CPUs' time above which the machine counts as having idle CPUs.
    const IDLE_SHARE: f64 = 0.05;

    fn new() -> Self {
        Self {
            next: std::time::Instant::now(),
            last: None,
            idle: false,
        }
    }

    fn some_idle(&mut self) -> bool {
        let now = std::time::Instant::now();
        if now >= self.next {
            self.next = now + Self::PERIOD;
            let sample = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|stat| idle_and_total(&stat));
            self.idle = match (self.last, sample) {
                (Some((idle0, total0)), Some((idle1, total1))) if total1 > total0 => {
                    (idle1.saturating_sub(idle0)) as f64 / (total1 - total0) as f64
                        > Self::IDLE_SHARE
                }
                _ => false,
            };
            self.last = sample;
        }
        self.idle
    }
}

/// Idle (idle + iowait) and total jiffies of all CPUs, from `/proc/stat`'s `cpu` line.
fn idle_and_total(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest times are inside user/nice)
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((idle, total))
}

impl QueueShared {
    fn ch_fd(&self) -> i32 {
        self.ch.as_fd().as_raw_fd()
    }
}

fn read4(buf: &[u8], at: usize) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&buf[at..at + 4]);
    out
}

fn read8(buf: &[u8], at: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&buf[at..at + 8]);
    out
}

/// An `IORING_OP_URING_CMD` on the registered `/dev/fuse` descriptor, with
/// `struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 pad[6]; }`.
fn uring_cmd(qid: u16, cmd_op: u32, commit_id: u64, _index: usize) -> opcode::UringCmd80 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    opcode::UringCmd80::new(types::Fixed(0), cmd_op).cmd(cmd)
}

/// Set the SQE's `len` (the iovec count of a REGISTER), which `UringCmd80` has no setter
/// for.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const LEN_OFFSET: usize = 24; // struct io_uring_sqe: opcode, flags, ioprio, fd, off, addr, len
    // SAFETY: `Entry128` is `#[repr(C)]` over `Entry` (`#[repr(C)]` over the 64-byte
    // `io_uring_sqe`) and 64 more bytes, 128 bytes in all (the crate asserts it), every byte
    // initialized (built from a zeroed SQE); any bit pattern is a valid SQE.
    let mut bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    bytes[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above, back to the same type.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes) }
}

fn push(
    ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
    sqe: squeue::Entry128,
) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an SQE points at (the entry's iovecs and their memory, the
        // eventfd) lives in `QueueShared`, which outlives the ring.
        let pushed = unsafe { ring.submission().push(&sqe) };
        if pushed.is_ok() {
            return Ok(());
        }
        // Full: hand what is queued to the kernel and retry.
        ring.submit()?;
    }
}

/// Run the queue's thread on its CPU, so requests from that CPU are served without waking
/// another one. Best effort: the CPU may be offline or outside our cpuset.
fn pin_to_cpu(qid: u16) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(usize::from(qid)).is_ok()
        && let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
    {
        debug!("FUSE io_uring queue {qid}: not pinned to its CPU: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_share_from_proc_stat() {
        let stat = "cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 50 2 25 400 23 0 0 0 0 0\nintr 1\n";
        assert_eq!(idle_and_total(stat), Some((845, 1000)));
        assert_eq!(idle_and_total("cpu0 1 2 3 4\n"), None);
        assert_eq!(idle_and_total("cpu  1 x 3 4\n"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list_max("0"), Some(0));
        assert_eq!(parse_cpu_list_max("0-1"), Some(1));
        assert_eq!(parse_cpu_list_max("0-3,8-11"), Some(11));
        assert_eq!(parse_cpu_list_max(""), None);
    }

    #[test]
    fn register_len_lands_in_the_sqe() {
        let sqe = uring_cmd(3, CMD_REGISTER, 0, 0).addr(Some(0x1000)).build();
        let bytes: [u8; 128] = unsafe { std::mem::transmute(with_len(sqe, 2)) };
        assert_eq!(u32::from_ne_bytes(read4(&bytes, 24)), 2);
        assert_eq!(u64::from_ne_bytes(read8(&bytes, 16)), 0x1000);
        assert_eq!(u32::from_ne_bytes(read4(&bytes, 8)), CMD_REGISTER); // cmd_op shares `off`
        assert_eq!(u16::from_ne_bytes([bytes[48 + 16], bytes[48 + 17]]), 3); // cmd at 48
    }

    #[test]
    fn payload_covers_the_negotiated_sizes() {
        assert_eq!(payload_size(4096, 1), 8192);
        assert_eq!(
            payload_size(1 << 20, 256),
            (1 << 20).max(256 * page_size::get())
        );
    }
}
