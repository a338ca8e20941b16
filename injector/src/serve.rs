//! A fault filesystem from start to stop: mount it, serve it on OS threads, unmount it.
//!
//! Used by the binary and by the integration tests; the control plane stays outside (it only
//! needs the [`RuleStore`] and the [`FsHandle`]).

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, Session, SessionACL};

use crate::fault_rules::RuleStore;
use crate::fs::{FsHandle, FsOptions, PassthroughFs};
use crate::mount::{self, ActiveMount, LinuxMountSys, MountError, MountRequest, Unmounted};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// FUSE worker threads, each with its own `/dev/fuse` clone.
    pub threads: usize,
    /// Take requests through FUSE over io_uring when the kernel offers it (Linux 6.14+ with
    /// the `fuse` module's `enable_uring` on): per-CPU queues, each served on its own CPU.
    pub io_uring: bool,
    pub fs: FsOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            io_uring: true,
            fs: FsOptions::default(),
        }
    }
}

/// Wait (briefly) until the session has started its io_uring queues or fallen back to
/// `/dev/fuse`, so what we report is what serves.
fn wait_for_io_uring(handle: &FsHandle) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.io_uring_starting() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Ring entries per CPU queue (see [`ServeOptions::io_uring`]). A request holds its entry
/// until answered, latency faults included, so this many delayed requests on one CPU at once
/// are what it takes before others queue behind them (the `/dev/fuse` path has the same
/// bound in its delay threads). Idle entries cost address space (1 MiB each), not memory.
const IO_URING_QUEUE_DEPTH: usize = 128;

/// One worker per CPU, at least 2, at most 16. Measured on 2 CPUs: a single-threaded
/// metadata loop runs fastest with 1-2 workers (the kernel hands requests to idle workers in
/// turn, so more workers means more cross-CPU wakeups), and latency faults never occupy a
/// worker (they sleep on threads of their own).
pub fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    cpus.clamp(2, 16)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot serve the original directory: {0}")]
    Original(#[source] io::Error),
    #[error("FUSE handshake with the kernel failed: {0}")]
    Handshake(#[source] io::Error),
    #[error("cannot start the FUSE worker threads: {0}")]
    Threads(#[source] io::Error),
}

/// A mounted, serving fault filesystem. Dropping it unmounts (lazily if busy).
#[derive(Debug)]
pub struct RunningFs {
    fs: FsHandle,
    mount: Option<ActiveMount>,
    session: Option<JoinHandle<io::Result<()>>>,
    /// The session's FUSE-over-io_uring queue threads (none over `/dev/fuse`).
    queue_threads: fuser::QueueThreads,
}

/// How stopping went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    pub unmounted: Unmounted,
    /// The FUSE session ended (every user of a lazily detached mount closed it) within the
    /// drain time.
    pub drained: bool,
}

/// Raise the open-files limit: the filesystem holds a descriptor per inode the kernel knows.
pub fn raise_fd_limit() -> io::Result<u64> {
    crate::sys::raise_nofile_limit()
}

/// Take ownership of an inherited descriptor (the control socket the agent passes).
pub fn inherited_fd(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    crate::sys::take_inherited_fd(fd)
}

/// Keep the kernel's caches in step with the rules: on every rule update, before `update`
/// returns, the filesystem drops cached entries and attributes the new rules must see.
fn install_update_hook(rules: &RuleStore, fs: &FsHandle) {
    let weak = fs.downgrade();
    rules.set_update_hook(Box::new(move |_, _| {
        if let Some(fs) = weak.upgrade() {
            let n = fs.rules_changed();
            tracing::debug!(
                invalidated = n,
                "kernel caches invalidated for the new rules"
            );
        }
    }));
}

/// Mount over `request.path` and serve until stopped. Returns once the mount is visible.
pub fn start(
    request: &MountRequest,
    rules: Arc<RuleStore>,
    opts: ServeOptions,
) -> Result<RunningFs, ServeError> {
    start_serving(request, None, rules, opts)
}

/// Like [`start`], but serving the directory `original` (in the same target) over
/// `request.path` (see [`mount::prepare_serving`]).
pub fn start_serving(
    request: &MountRequest,
    original: Option<&std::path::Path>,
    rules: Arc<RuleStore>,
    opts: ServeOptions,
) -> Result<RunningFs, ServeError> {
    // Where starting takes its time, in the line that ends it.
    let began = Instant::now();
    let sys = Arc::new(LinuxMountSys::new().map_err(ServeError::Original)?);
    let prepared = mount::prepare_serving(sys, request, original)?;
    let prepared_us = began.elapsed().as_micros() as u64;
    let fs = PassthroughFs::new(prepared.original, rules.clone(), opts.fs)
        .map_err(ServeError::Original)?;
    let handle = fs.handle();
    install_update_hook(&rules, &handle);
    let mut config = Config::default();
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config.acl = SessionACL::All;
    config.io_uring_queue_depth = if opts.io_uring {
        IO_URING_QUEUE_DEPTH
    } else {
        0
    };
    // Reads FUSE_INIT (queued when the superblock was created) and answers it.
    let session = Session::from_fd(fs, prepared.fuse, SessionACL::All, config)
        .map_err(ServeError::Handshake)?;
    handle
        .set_notifier(session.notifier())
        .map_err(ServeError::Threads)?;
    handle.set_io_uring(session.io_uring());
    let queue_threads = session.io_uring_threads();
    let session = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || session.run())
        .map_err(ServeError::Threads)?;
    let handshake_us = began.elapsed().as_micros() as u64;
    wait_for_io_uring(&handle);
    let queues_us = began.elapsed().as_micros() as u64;
    let mount = prepared.pending.attach()?;
    handle.set_ready(true);
    tracing::info!(
        path = %request.path.display(),
        target = %request.target,
        passthrough = handle.passthrough_active(),
        io_uring = handle.io_uring_active(),
        prepared_us,
        handshake_us,
        queues_us,
        attached_us = began.elapsed().as_micros() as u64,
        "serving"
    );
    Ok(RunningFs {
        fs: handle,
        mount: Some(mount),
        session: Some(session),
        queue_threads,
    })
}

impl RunningFs {
    pub fn fs(&self) -> &FsHandle {
        &self.fs
    }

    pub fn mount(&self) -> Option<&ActiveMount> {
        self.mount.as_ref()
    }

    /// The FUSE session ended by itself: the mount was taken away from outside.
    pub fn session_finished(&self) -> bool {
        self.session.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Unmount (lazily if busy) and wait up to `drain` for the FUSE session to end.
    ///
    /// If another mount covers ours (a second injector over the same path), ours cannot be
    /// reached: it keeps serving (as a plain passthrough once the rules are cleared) and
    /// this waits until it is uncovered. Exiting instead would leave a dead mount under the
    /// other one.
    pub fn stop(mut self, drain: Duration) -> Result<Stopped, MountError> {
        self.fs.set_ready(false);
        let unmounted = match self.mount.take() {
            Some(m) => unmount_when_uncovered(&m)?,
            None => Unmounted::NotMounted,
        };
        if unmounted == Unmounted::Detached {
            self.serve_last_close_first();
        }
        let deadline = Instant::now() + drain;
        while !self.session_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let drained = self.session_finished();
        if drained && let Some(session) = self.session.take() {
            match session.join() {
                Ok(Err(e)) => tracing::warn!(error = %e, "FUSE session ended with an error"),
                Err(_) => tracing::warn!("a FUSE worker thread panicked"),
                Ok(Ok(())) => {}
            }
        }
        Ok(Stopped { unmounted, drained })
    }
}

impl RunningFs {
    /// After a lazy detach the connection ends inside the close(2) of its last open file:
    /// that close sends RELEASE, then tears the superblock down, aborting the connection.
    /// Over io_uring the RELEASE sits on an entry of the caller's CPU's queue until that
    /// queue's thread runs, and that thread is pinned to the very CPU the closer occupies. If
    /// the abort comes first, the kernel finds the entry busy and retries its ring teardown
    /// only every 50 ms (`FUSE_URING_TEARDOWN_INTERVAL`), and the closing application waits
    /// in close(2) all that time (measured: 49–56 ms in 8 of 8 closes, against under 1 ms
    /// over `/dev/fuse`). As `SCHED_FIFO` threads the queues preempt the closer the moment
    /// the RELEASE wakes them, so the entry is back before the abort (0.6–11 ms). Only for the
    /// drain: while mounted the queue threads stay normal tasks. Without the privilege
    /// (`CAP_SYS_NICE`) nothing changes but that wait.
    fn serve_last_close_first(&self) {
        for tid in self.queue_threads.ids() {
            if let Err(e) = crate::sys::set_fifo_scheduling(tid) {
                tracing::debug!(tid, error = %e, "io_uring queue thread stays a normal task for the drain");
            }
        }
    }
}

fn unmount_when_uncovered(m: &ActiveMount) -> Result<Unmounted, MountError> {
    let mut said = false;
    loop {
        match m.unmount() {
            Err(e @ MountError::Replaced { .. }) => {
                if !said {
                    tracing::warn!(error = %e, "waiting for the covering mount to go");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

impl Drop for RunningFs {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take()
            && let Err(e) = m.unmount()
        {
            tracing::warn!(error = %e, "unmount on drop failed");
        }
    }
}
