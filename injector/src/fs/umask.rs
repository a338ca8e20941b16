//! The caller's umask on creates (create, mkdir, mknod).
//!
//! With `FUSE_DONT_MASK` the kernel sends the mode of a new file unmasked, with the caller's
//! umask beside it. Whether the umask applies is the original filesystem's decision: a
//! default ACL on the parent directory replaces it (POSIX.1e), and only that filesystem
//! sees the default ACL. So each create runs under the caller's umask and the original's
//! filesystem does exactly what it does for a native create.
//!
//! The umask belongs to a process's `fs_struct`, shared by all its threads: a thread that
//! creates takes its own (`unshare(CLONE_FS)`) the first time. The mount code does the same
//! on its own threads; nothing in the filesystem depends on the working directory or root.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::{Mode, umask};

thread_local! {
    /// `None` until this thread first creates; then whether its umask is its own.
    static OWN_UMASK: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Logged once per process: creates fall back to masking the mode here.
static WARNED: AtomicBool = AtomicBool::new(false);

fn thread_has_own_umask() -> bool {
    OWN_UMASK.with(|own| match own.get() {
        Some(known) => known,
        None => {
            let ok = match unshare(CloneFlags::CLONE_FS) {
                Ok(()) => true,
                Err(e) => {
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "cannot give a worker thread its own umask; \
                            creates apply the caller's umask even under a default ACL");
                    }
                    false
                }
            };
            own.set(Some(ok));
            ok
        }
    })
}

/// Restores the thread's umask (0) when the create is done, even if it panics.
struct Restore(Mode);

impl Drop for Restore {
    fn drop(&mut self) {
        umask(self.0);
    }
}

/// Run `create` with the caller's umask in force; it is given the mode to create with
/// (`mode`'s permission and set-ID bits).
pub(super) fn with_caller_umask<T>(
    mode: u32,
    caller_umask: u32,
    create: impl FnOnce(Mode) -> T,
) -> T {
    let perm = mode & 0o7777;
    let mask = caller_umask & 0o777;
    if !thread_has_own_umask() {
        // What the kernel does without FUSE_DONT_MASK: right unless a default ACL applies.
        return create(Mode::from_bits_truncate(perm & !mask));
    }
    let _restore = Restore(umask(Mode::from_bits_truncate(mask)));
    create(Mode::from_bits_truncate(perm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{OFlag, open};
    use std::os::unix::fs::MetadataExt;

    /// This thread's umask, read without changing it (only after it has its own).
    fn current_umask() -> Mode {
        let now = umask(Mode::empty());
        umask(now);
        now
    }

    #[test]
    fn creates_see_the_callers_umask_and_the_thread_gets_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = dir.path().to_owned();
        // A thread of its own: it must not change the umask of the test harness's threads.
        std::thread::spawn(move || {
            let create = |name: &str, mode: u32, caller_umask: u32| {
                let path = dir.join(name);
                with_caller_umask(mode, caller_umask, |m| {
                    open(
                        &path,
                        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                        m,
                    )
                })
                .expect("create");
                std::fs::metadata(&path).expect("stat").mode() & 0o7777
            };
            assert_eq!(create("a", 0o100666, 0o022), 0o644);
            assert_eq!(OWN_UMASK.with(Cell::get), Some(true));
            let before = current_umask();
            assert_eq!(create("b", 0o100666, 0o027), 0o640);
            assert_eq!(create("c", 0o104777, 0o077), 0o4700);
            assert_eq!(current_umask(), before, "the umask is restored");
        })
        .join()
        .expect("thread");
    }
}
