//! The only unsafe code of nsexec: fork, and code that runs between fork and exec.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::unistd::ForkResult;

/// Runs `hook` in the forked child just before it execs.
pub(crate) fn before_exec<F>(cmd: &mut Command, hook: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    // SAFETY: the hooks nsexec installs only make raw system calls (setns, chdir) on file
    // descriptors opened before the fork; they neither allocate nor take locks, so they are
    // async-signal-safe in the child of a multi-threaded parent.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Forks. Only called from the single-threaded `nsexec` binary.
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the nsexec binary is single-threaded when it forks (it starts no threads), so the
    // child may run arbitrary code until it execs.
    unsafe { nix::unistd::fork() }
}

/// Marks every descriptor from `first` upwards close-on-exec.
pub(crate) fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes
    // nothing, so no Rust object's descriptor is invalidated.
    let rc =
        unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Clears close-on-exec on a descriptor number given on the command line.
pub(crate) fn clear_cloexec(fd: std::os::fd::RawFd) -> nix::Result<()> {
    // SAFETY: F_SETFD only changes the descriptor's flags; on a descriptor that is not open the
    // kernel answers EBADF and nothing happens.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    nix::errno::Errno::result(rc).map(drop)
}

/// In a forked child: puts each descriptor at its target number, inheritable. Sources are first
/// moved above every target so that placing one cannot clobber another.
pub(crate) fn place_fds(fds: &[(std::os::fd::OwnedFd, std::os::fd::RawFd)]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let floor = fds.iter().map(|(_, target)| *target).max().unwrap_or(0) + 1;
    for (fd, target) in fds {
        // SAFETY: plain descriptor syscalls in the child between fork and exec (async-signal-safe);
        // the duplicate is not owned by any Rust object and is either placed or left to exec.
        unsafe {
            let moved = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor);
            if moved < 0 || libc::dup2(moved, *target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
