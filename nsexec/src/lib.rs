//! Enter the namespaces of another process and run a command there.
//!
//! Two ways in, both safe to use from a multi-threaded (tokio) program because neither calls
//! `setns` on one of its threads:
//! - [`spawn::enter_before_exec`] configures a [`std::process::Command`] so that the forked child
//!   joins the namespaces between fork and exec (not possible for a pid namespace, which only
//!   takes effect for children of the caller);
//! - [`spawn::helper_command`] wraps a command in the `nsexec` binary, which also handles the pid
//!   namespace (it forks after `setns`) and forwards signals and the exit status.
//!
//! Namespace files are opened before anything is entered (entering the mount namespace changes
//! what `/proc` paths mean) and closed as soon as they are used: an open mnt-ns fd keeps a dead
//! container's namespace, and its mounts, alive.

pub mod namespace;
pub mod runner;
pub mod spawn;
// The workspace denies unsafe code; this module is the one place of the crate allowed it.
#[allow(unsafe_code)]
mod sys;
pub mod syscall;

pub use namespace::{Namespace, NamespaceRequest, NamespaceTarget, OpenedNamespaces};
pub use syscall::{LinuxSyscall, Syscall};

use std::path::PathBuf;

/// Why entering namespaces or starting the command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid} does not exist (it may have exited)")]
    DeadProcess { pid: u32 },
    #[error("namespace file {path} does not exist")]
    MissingNamespace { path: PathBuf },
    #[error("cannot open namespace file {path}: {source}")]
    OpenNamespace {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot enter the {namespace} namespace: {source}")]
    Setns {
        namespace: Namespace,
        #[source]
        source: nix::Error,
    },
    #[error(
        "a pid namespace only takes effect for children of the caller: enter it through the nsexec helper binary"
    )]
    PidNamespaceNeedsHelper,
    #[error("invalid namespace target {value:?} for -{flag}: {reason}")]
    InvalidTarget {
        flag: char,
        value: String,
        reason: &'static str,
    },
    #[error("--keep-fd {fd}: not an open file descriptor")]
    NotOpen { fd: i32 },
    #[error("{call} failed: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: nix::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Marks every descriptor above 2 close-on-exec except `keep`, so the command inherits only
/// stdio and what was asked for.
pub fn close_on_exec_except(keep: &[i32]) -> Result<()> {
    sys::cloexec_from(3).map_err(|source| Error::Sys {
        call: "close_range",
        source,
    })?;
    for &fd in keep {
        if fd < 0 {
            return Err(Error::NotOpen { fd });
        }
        sys::clear_cloexec(fd).map_err(|_| Error::NotOpen { fd })?;
    }
    Ok(())
}
