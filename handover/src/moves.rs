//! The moves themselves, run inside a stopped process through [`Remote`]: reopen each file by
//! path over the same descriptor number at the same offset, change the working directory,
//! replace each file mapping at the same address. A move that fails is left as it was and
//! reported; the others go on.

use std::os::unix::ffi::OsStrExt;

use crate::arch::{Arch, Native};
use crate::inject::{InjectError, Remote};
use crate::ptrace::Tracee;
use crate::scan::{CwdMove, FdMove, MapMove, ProcessPlan, Skipped};

/// What happened in one process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    pub fds: u32,
    pub cwds: u32,
    pub mappings: u32,
    pub skipped: Vec<Skipped>,
}

const AT_FDCWD: u64 = libc::AT_FDCWD as i64 as u64;

fn errno_text(result: i64) -> String {
    nix::errno::Errno::from_raw((-result) as i32)
        .desc()
        .to_owned()
}

/// Why a call inside the process failed, in words a person can act on.
fn refused(call: &str, result: i64, seccomp: bool) -> String {
    let errno = -result as i32;
    let hint =
        if seccomp && (errno == libc::EPERM || errno == libc::EACCES || errno == libc::ENOSYS) {
            " (the process has a seccomp filter, which may forbid it)"
        } else {
            ""
        };
    format!(
        "{call} inside the process failed: {}{hint}",
        errno_text(result)
    )
}

struct Mover<'r, 't, T: Tracee> {
    remote: &'r mut Remote<'t, T, Native>,
    pid: u32,
    seccomp: bool,
    moved: Moved,
}

impl<T: Tracee> Mover<'_, '_, T> {
    fn call(&mut self, number: u64, args: [u64; 6]) -> Result<i64, InjectError> {
        self.remote.syscall(number, args)
    }

    fn skip(&mut self, what: String, reason: String) {
        self.moved.skipped.push(Skipped {
            pid: self.pid,
            what,
            reason,
        });
    }

    fn open(&mut self, path: &std::path::Path, flags: i32) -> Result<i64, InjectError> {
        let addr = self.remote.put_path(path.as_os_str().as_bytes())?;
        self.call(
            Native::NUMBERS.openat,
            [AT_FDCWD, addr, (flags | libc::O_CLOEXEC) as u64, 0, 0, 0],
        )
    }

    fn close(&mut self, fd: i64) -> Result<(), InjectError> {
        self.call(Native::NUMBERS.close, [fd as u64, 0, 0, 0, 0, 0])
            .map(drop)
    }

    fn fd(&mut self, m: &FdMove) -> Result<(), InjectError> {
        let what = format!("fd {} {}", m.fd, m.path.display());
        let tmp = self.open(&m.path, m.flags)?;
        if tmp < 0 {
            let reason = refused("openat", tmp, self.seccomp);
            self.skip(what, reason);
            return Ok(());
        }
        if let Some(pos) = m.pos.filter(|p| *p != 0) {
            let r = self.call(
                Native::NUMBERS.lseek,
                [tmp as u64, pos, libc::SEEK_SET as u64, 0, 0, 0],
            )?;
            if r < 0 {
                self.close(tmp)?;
                let reason = refused("lseek", r, self.seccomp);
                self.skip(what, reason);
                return Ok(());
            }
        }
        let flags = if m.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        let r = self.call(
            Native::NUMBERS.dup3,
            [tmp as u64, m.fd as u64, flags, 0, 0, 0],
        )?;
        self.close(tmp)?;
        if r < 0 {
            let reason = refused("dup3", r, self.seccomp);
            self.skip(what, reason);
        } else {
            self.moved.fds += 1;
        }
        Ok(())
    }

    fn cwd(&mut self, m: &CwdMove) -> Result<(), InjectError> {
        let what = format!("cwd {}", m.path.display());
        let dir = self.open(&m.path, libc::O_PATH | Native::O_DIRECTORY)?;
        if dir < 0 {
            let reason = refused("openat", dir, self.seccomp);
            self.skip(what, reason);
            return Ok(());
        }
        let r = self.call(Native::NUMBERS.fchdir, [dir as u64, 0, 0, 0, 0, 0])?;
        self.close(dir)?;
        if r < 0 {
            let reason = refused("fchdir", r, self.seccomp);
            self.skip(what, reason);
        } else {
            self.moved.cwds += 1;
        }
        Ok(())
    }

    fn map(&mut self, m: &MapMove) -> Result<(), InjectError> {
        let what = format!("mapping {:x}-{:x} {}", m.start, m.end, m.path.display());
        let writable_shared = m.shared && m.prot & libc::PROT_WRITE != 0;
        let access = if writable_shared {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        let file = self.open(&m.path, access)?;
        if file < 0 {
            let reason = refused("openat", file, self.seccomp);
            self.skip(what, reason);
            return Ok(());
        }
        let kind = if m.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        let r = self.call(
            Native::NUMBERS.mmap,
            [
                m.start,
                m.end - m.start,
                m.prot as u64,
                (kind | libc::MAP_FIXED) as u64,
                file as u64,
                m.offset,
            ],
        )?;
        self.close(file)?;
        if r < 0 {
            let reason = format!(
                "{}; the range may now be unmapped",
                refused("mmap", r, self.seccomp)
            );
            self.skip(what, reason);
        } else if r as u64 != m.start {
            self.skip(what, format!("mmap placed it at {r:#x}"));
        } else {
            self.moved.mappings += 1;
        }
        Ok(())
    }
}

/// Carries out `plan` through `remote`. An error means the process can no longer be worked on
/// (it exited, or ptrace failed); what was moved until then is in the `Moved` kept by the
/// caller through `progress`.
pub fn carry_out<T: Tracee>(
    remote: &mut Remote<'_, T, Native>,
    plan: &ProcessPlan,
    seccomp: bool,
    progress: &mut Moved,
) -> Result<(), InjectError> {
    let mut mover = Mover {
        remote,
        pid: plan.pid,
        seccomp,
        moved: Moved {
            skipped: plan.skipped.clone(),
            ..Default::default()
        },
    };
    let result = (|| {
        for m in &plan.fds {
            mover.fd(m)?;
        }
        if let Some(cwd) = &plan.cwd {
            mover.cwd(cwd)?;
        }
        for m in &plan.maps {
            mover.map(m)?;
        }
        Ok(())
    })();
    *progress = mover.moved;
    result
}
