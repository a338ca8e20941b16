//! The privileged calls nsexec makes, behind a trait so the logic around them is testable
//! without root (the shape of youki's `Syscall`).

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::namespace::Namespace;

pub trait Syscall {
    fn exists(&self, path: &Path) -> bool;
    fn open_namespace(&self, path: &Path) -> nix::Result<OwnedFd>;
    fn setns(&self, fd: &OwnedFd, namespace: Namespace) -> nix::Result<()>;
}

/// The real thing, on nix.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn open_namespace(&self, path: &Path) -> nix::Result<OwnedFd> {
        open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
    }

    fn setns(&self, fd: &OwnedFd, namespace: Namespace) -> nix::Result<()> {
        nix::sched::setns(fd, namespace.clone_flag())
    }
}

#[cfg(test)]
pub(crate) mod test_double {
    use super::*;
    use std::cell::RefCell;

    /// Records every call; opens /dev/null for namespace files of live PIDs and of any path
    /// under /run.
    pub struct RecordingSyscall {
        live: Vec<u32>,
        fail_setns: Option<Namespace>,
        calls: RefCell<Vec<String>>,
    }

    impl RecordingSyscall {
        pub fn with_live_pids(pids: &[u32]) -> Self {
            Self {
                live: pids.to_vec(),
                fail_setns: None,
                calls: RefCell::default(),
            }
        }

        pub fn failing_setns(mut self, namespace: Namespace) -> Self {
            self.fail_setns = Some(namespace);
            self
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Syscall for RecordingSyscall {
        fn exists(&self, path: &Path) -> bool {
            let s = path.to_string_lossy();
            s.strip_prefix("/proc/")
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| self.live.contains(&pid))
        }

        fn open_namespace(&self, path: &Path) -> nix::Result<OwnedFd> {
            self.calls
                .borrow_mut()
                .push(format!("open {}", path.display()));
            let s = path.to_string_lossy();
            let live = s
                .strip_prefix("/proc/")
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| self.live.contains(&pid));
            if live || s.starts_with("/run/") {
                open(
                    "/dev/null",
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
            } else {
                Err(nix::Error::ENOENT)
            }
        }

        fn setns(&self, _fd: &OwnedFd, namespace: Namespace) -> nix::Result<()> {
            self.calls.borrow_mut().push(format!("setns {namespace}"));
            if self.fail_setns == Some(namespace) {
                return Err(nix::Error::EPERM);
            }
            Ok(())
        }
    }
}
