//! A process as it was when we saw it: PID plus start time, which together identify it across
//! PID reuse. The journal records helpers and targets this way, so a recovery after a crash never
//! signals or enters a stranger that got the same PID.

use serde::{Deserialize, Serialize};

/// A PID and its start time in clock ticks since boot (`/proc/PID/stat` field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessIdentity {
    /// Reads the identity of a live process (a zombie not yet reaped still has one).
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let start_time = stat(pid)?.starttime;
        Ok(Self { pid, start_time })
    }

    /// True if this very process is still running (not merely some process with its PID).
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid).is_ok_and(|now| now.start_time == self.start_time)
    }
}

/// `/proc/PID/stat`, through the procfs crate (the command name, field 2, may hold spaces and
/// parentheses: the crate parses it as the kernel writes it).
pub fn stat(pid: u32) -> std::io::Result<procfs::process::Stat> {
    let pid = i32::try_from(pid).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no PID {pid}"))
    })?;
    procfs::process::Process::new(pid)
        .and_then(|process| process.stat())
        .map_err(io_error)
}

/// procfs's error as the standard one, keeping "not found" (the process is gone) apart.
pub fn io_error(err: procfs::ProcError) -> std::io::Error {
    use std::io::{Error, ErrorKind};
    match err {
        procfs::ProcError::NotFound(path) => Error::new(
            ErrorKind::NotFound,
            format!("{} not found", path.unwrap_or_default().display()),
        ),
        procfs::ProcError::PermissionDenied(path) => Error::new(
            ErrorKind::PermissionDenied,
            format!("{}: permission denied", path.unwrap_or_default().display()),
        ),
        procfs::ProcError::Io(err, _) => err,
        other => Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_told_apart_from_a_later_one_with_its_pid() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        assert!(
            !ProcessIdentity {
                start_time: me.start_time + 1,
                ..me
            }
            .is_alive()
        );
        let gone = ProcessIdentity::of(u32::MAX).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::InvalidInput, "{gone}");
        // PID_MAX_LIMIT is 2^22: no process has this PID.
        let gone = ProcessIdentity::of(1 << 23).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
    }
}
