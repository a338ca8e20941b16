//! Mounting the filesystem over a directory: in our own mount namespace, or over a volume
//! path inside a target process's mount namespace, and taking it away again.
//!
//! Everything is resolved and opened from the host side first (the original directory
//! through the target's root with `RESOLVE_IN_ROOT`, `/dev/fuse`, the FUSE superblock);
//! only attaching the ready mount (`move_mount` by descriptor: no path is resolved in the
//! target) and unmounting run inside the target's mount namespace, on a short-lived thread
//! of their own. The namespace descriptors are closed before that thread returns.
//!
//! ```text
//! let prepared = prepare(&sys, &request)?;       // original dir fd, /dev/fuse fd, superblock
//! let session = Session::from_fd(fs_over(prepared.original), prepared.fuse, ..)?; // FUSE_INIT
//! let mounted = prepared.pending.attach()?;       // visible in the target from here on
//! ... serve ...
//! mounted.unmount()?;                             // lazily if busy: Unmounted::Detached
//! ```

mod mountinfo;
mod syscalls;
pub mod volume_policy;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use mountinfo::{MountEntry, parse as parse_mountinfo};
pub use syscalls::{LinuxMountSys, MountSys, mount_attrs_from};

/// The filesystem type our mounts show in mount tables.
pub const FSTYPE: &str = "fuse.faultline";

/// Whose mount namespace (and root) a path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The injector's own (tests, sidecar mode, benchmarks).
    Own,
    /// The process with this host PID (a container's).
    Process(u32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Own => f.write_str("the injector's mount namespace"),
            Target::Process(pid) => write!(f, "the mount namespace of process {pid}"),
        }
    }
}

/// Why mounting or unmounting failed. Each names the path and the namespace involved.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("invalid volume path {path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("process {pid} does not exist (it may have exited)")]
    NoProcess { pid: u32 },
    #[error("{path:?} does not exist in {target}")]
    PathNotFound { path: PathBuf, target: Target },
    #[error("refused to mount over {path:?} in {target}: {reason}")]
    Refused {
        path: PathBuf,
        target: Target,
        reason: String,
    },
    #[error("{path:?} in {target} is not a directory")]
    NotADirectory { path: PathBuf, target: Target },
    #[error("cannot resolve {path:?} in {target}: {source}")]
    Resolve {
        path: PathBuf,
        target: Target,
        #[source]
        source: io::Error,
    },
    #[error("cannot open /dev/fuse: {0}")]
    FuseDevice(#[source] io::Error),
    #[error("cannot create the FUSE filesystem: {0}")]
    CreateFs(#[source] io::Error),
    #[error("cannot enter {target}: {source}")]
    EnterNamespace {
        target: Target,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount over {path:?} in {target}: {source}")]
    Attach {
        path: PathBuf,
        target: Target,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the mount table of {target}: {source}")]
    MountTable {
        target: Target,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path:?} in {target} now shows another mount than ours (id {mount_id}); not unmounting it"
    )]
    Replaced {
        path: PathBuf,
        target: Target,
        mount_id: u64,
    },
    #[error(
        "the fault mount on {path:?} in {target} is still served by a running injector; recover it instead"
    )]
    Live { path: PathBuf, target: Target },
    #[error("cannot unmount {path:?} in {target}: {source}")]
    Unmount {
        path: PathBuf,
        target: Target,
        #[source]
        source: io::Error,
    },
}

/// What a mount request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub target: Target,
    /// Absolute path as seen in the target (a container path for `Target::Process`).
    pub path: PathBuf,
}

/// How an unmount went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Gone; nothing was using it.
    Clean,
    /// In use: detached lazily (`MNT_DETACH`). New lookups see the original directory; open
    /// files keep working until closed.
    Detached,
    /// Our mount was not there any more (or, for cleanup, there was none).
    NotMounted,
}

impl Unmounted {
    pub fn describe(self) -> &'static str {
        match self {
            Unmounted::Clean => "unmounted",
            Unmounted::Detached => "busy: detached lazily",
            Unmounted::NotMounted => "no fault mount was there",
        }
    }
}

/// Check a volume path before anything is opened: absolute, not `/`, no `..`.
pub fn validate_path(path: &Path) -> Result<(), MountError> {
    let invalid = |reason| MountError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if !path.is_absolute() {
        return Err(invalid("must be absolute"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid("must not contain '..'"));
    }
    if !path.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(invalid("cannot mount over the root directory"));
    }
    Ok(())
}

fn open_root<S: MountSys>(sys: &S, target: Target) -> Result<OwnedFd, MountError> {
    sys.open_root(target)
        .map_err(|e| match (target, e.raw_os_error()) {
            (Target::Process(pid), Some(libc::ENOENT | libc::ESRCH)) => {
                MountError::NoProcess { pid }
            }
            _ => MountError::EnterNamespace { target, source: e },
        })
}

fn resolve<S: MountSys>(
    sys: &S,
    root: &OwnedFd,
    request: &MountRequest,
) -> Result<OwnedFd, MountError> {
    let path = request.path.clone();
    let target = request.target;
    sys.resolve_dir(root.as_fd(), &request.path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => MountError::PathNotFound { path, target },
            Some(libc::ENOTDIR) => MountError::NotADirectory { path, target },
            _ => MountError::Resolve {
                path,
                target,
                source: e,
            },
        })
}

/// Refuses a mount point the volume policy does not allow, judged on the directory the path
/// resolved to (the one the mount will cover), not on the path.
fn refuse_covering<S: MountSys>(
    sys: &S,
    root: &OwnedFd,
    mountpoint: &OwnedFd,
    request: &MountRequest,
) -> Result<(), MountError> {
    let identify = |fd: &OwnedFd| {
        sys.identify(fd.as_fd())
            .map_err(|source| MountError::Resolve {
                path: request.path.clone(),
                target: request.target,
                source,
            })
    };
    let (root_id, dir_id) = (identify(root)?, identify(mountpoint)?);
    match volume_policy::refusal(&root_id, &dir_id) {
        Some(reason) => Err(MountError::Refused {
            path: request.path.clone(),
            target: request.target,
            reason,
        }),
        None => Ok(()),
    }
}

/// Run `f` on a fresh thread with its own root/cwd (`unshare(CLONE_FS)`), inside the mount
/// namespace of `target` (entered only for `Target::Process`). The thread returns to our
/// namespace and closes both namespace descriptors before it ends, whatever `f` did.
fn in_mount_ns<S, T>(
    sys: &S,
    target: Target,
    f: impl FnOnce(&S) -> Result<T, MountError> + Send,
) -> Result<T, MountError>
where
    S: MountSys,
    T: Send,
{
    let enter = |source| MountError::EnterNamespace { target, source };
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            sys.unshare_fs().map_err(enter)?;
            let Target::Process(_) = target else {
                return f(sys);
            };
            let own = sys.open_mnt_ns(Target::Own).map_err(enter)?;
            let theirs = sys.open_mnt_ns(target).map_err(enter)?;
            sys.setns_mnt(theirs.as_fd()).map_err(enter)?;
            let result = f(sys);
            let back = sys.setns_mnt(own.as_fd());
            // Both at once, now: an open mnt-ns descriptor keeps a dead container's
            // namespace, and its mounts, alive.
            drop((theirs, own));
            if let Err(e) = back {
                // The thread ends here, so nothing else runs in the wrong namespace.
                tracing::warn!(error = %e, "could not return to our mount namespace");
            }
            result
        });
        worker.join().unwrap_or_else(|_| {
            Err(MountError::EnterNamespace {
                target,
                source: io::Error::other("namespace thread panicked"),
            })
        })
    })
}

/// Everything opened for a mount, before it becomes visible.
#[derive(Debug)]
pub struct Prepared<S: MountSys = LinuxMountSys> {
    /// The original directory (an `O_PATH` descriptor): give it to the filesystem.
    pub original: OwnedFd,
    /// `/dev/fuse`, with FUSE_INIT queued: give it to the FUSE session.
    pub fuse: OwnedFd,
    pub pending: PendingMount<S>,
}

/// A FUSE superblock ready to be attached over the volume path.
#[derive(Debug)]
pub struct PendingMount<S: MountSys = LinuxMountSys> {
    sys: Arc<S>,
    request: MountRequest,
    mountpoint: OwnedFd,
    superblock: OwnedFd,
    attrs: u64,
}

/// Resolve the volume, open the original and `/dev/fuse`, create the FUSE superblock.
/// Nothing is visible in the target yet, and dropping the result leaves nothing behind.
pub fn prepare<S: MountSys>(
    sys: Arc<S>,
    request: &MountRequest,
) -> Result<Prepared<S>, MountError> {
    prepare_serving(sys, request, None)
}

/// Like [`prepare`], but the filesystem serves `original` (another directory in the same
/// target, resolved the same way) instead of what lies under the mount point: the chaosfs
/// sidecar's `-original` and `-mountpoint`.
pub fn prepare_serving<S: MountSys>(
    sys: Arc<S>,
    request: &MountRequest,
    original: Option<&Path>,
) -> Result<Prepared<S>, MountError> {
    validate_path(&request.path)?;
    if let Some(path) = original {
        validate_path(path)?;
    }
    let root = open_root(&*sys, request.target)?;
    let mountpoint = resolve(&*sys, &root, request)?;
    refuse_covering(&*sys, &root, &mountpoint, request)?;
    let original = match original {
        Some(path) => {
            let source = MountRequest {
                target: request.target,
                path: path.to_owned(),
            };
            resolve(&*sys, &root, &source)?
        }
        None => mountpoint
            .try_clone()
            .map_err(|source| MountError::Resolve {
                path: request.path.clone(),
                target: request.target,
                source,
            })?,
    };
    drop(root);
    let attrs = sys
        .mount_attrs_of(original.as_fd())
        .map_err(|source| MountError::Resolve {
            path: request.path.clone(),
            target: request.target,
            source,
        })?;
    let fuse = sys.open_fuse_device().map_err(MountError::FuseDevice)?;
    let superblock = sys
        .create_fuse_fs(fuse.as_fd())
        .map_err(MountError::CreateFs)?;
    Ok(Prepared {
        original,
        fuse,
        pending: PendingMount {
            sys,
            request: request.clone(),
            mountpoint,
            superblock,
            attrs,
        },
    })
}

impl<S: MountSys> PendingMount<S> {
    /// Attach the filesystem over the volume path (call after the FUSE session answered
    /// FUSE_INIT, so the first access does not wait). On error nothing stays mounted.
    pub fn attach(self) -> Result<ActiveMount<S>, MountError> {
        let PendingMount {
            sys,
            request,
            mountpoint,
            superblock,
            attrs,
        } = self;
        let attach_error = |source| MountError::Attach {
            path: request.path.clone(),
            target: request.target,
            source,
        };
        let mnt = sys
            .fsmount(superblock.as_fd(), attrs)
            .map_err(attach_error)?;
        drop(superblock);
        in_mount_ns(&*sys, request.target, |sys| {
            sys.move_mount(mnt.as_fd(), mountpoint.as_fd())
                .map_err(attach_error)
        })?;
        let mount_id = sys.mount_id_of(mnt.as_fd()).map_err(attach_error)?;
        // The device its files show (`st_dev`, and `/proc/PID/maps`): the agent's handover
        // tells them from the original's by it. Only reported, so a failure is not one.
        let dev = sys.device_of(mnt.as_fd()).ok();
        // The descriptor pins the mount: holding it would make every unmount "busy".
        drop((mnt, mountpoint));
        tracing::info!(path = %request.path.display(), target = %request.target, mount_id, "mounted");
        Ok(ActiveMount {
            sys,
            request,
            mount_id,
            dev,
        })
    }
}

/// Our mount, visible in the target.
#[derive(Debug)]
pub struct ActiveMount<S: MountSys = LinuxMountSys> {
    sys: Arc<S>,
    request: MountRequest,
    mount_id: u64,
    dev: Option<(u32, u32)>,
}

impl<S: MountSys> ActiveMount<S> {
    pub fn mount_id(&self) -> u64 {
        self.mount_id
    }

    /// The device of the mount's files (`major:minor` in mount tables), if it could be read.
    pub fn dev(&self) -> Option<(u32, u32)> {
        self.dev
    }

    pub fn request(&self) -> &MountRequest {
        &self.request
    }

    /// Unmount; if busy, detach lazily (reported as [`Unmounted::Detached`]). If another
    /// mount now covers ours, nothing is touched and [`MountError::Replaced`] says so: no
    /// path reaches a covered mount, so it can only be removed once uncovered.
    pub fn unmount(&self) -> Result<Unmounted, MountError> {
        unmount_by_id(&*self.sys, self.request.target, self.mount_id)
    }
}

/// Unmount the mount with `mount_id` in `target`, by its path in the target's mount table,
/// after checking that the path still shows that very mount.
fn unmount_by_id<S: MountSys>(
    sys: &S,
    target: Target,
    mount_id: u64,
) -> Result<Unmounted, MountError> {
    let table = match sys.mountinfo(target) {
        Ok(table) => table,
        // The process, and with it (unless shared) its namespace and our mount, is gone.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            return Ok(Unmounted::NotMounted);
        }
        Err(source) => return Err(MountError::MountTable { target, source }),
    };
    let Some(entry) = mountinfo::parse(&table)
        .into_iter()
        .find(|e| e.id == mount_id)
    else {
        return Ok(Unmounted::NotMounted);
    };
    let path = entry.mount_point;
    let root = open_root(sys, target)?;
    in_mount_ns(sys, target, |sys| {
        let err = |source| MountError::Unmount {
            path: path.clone(),
            target,
            source,
        };
        sys.chroot_to(root.as_fd()).map_err(err)?;
        let top = sys.open_path(&path).map_err(err)?;
        let top_id = sys.mount_id_of(top.as_fd()).map_err(err)?;
        drop(top);
        if top_id != mount_id {
            // umount2 acts on the topmost mount at a path, which is not ours: leave it.
            return Err(MountError::Replaced {
                path: path.clone(),
                target,
                mount_id,
            });
        }
        match sys.umount(&path, false) {
            Ok(()) => Ok(Unmounted::Clean),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                sys.umount(&path, true).map_err(err)?;
                Ok(Unmounted::Detached)
            }
            Err(e) => Err(err(e)),
        }
    })
}

/// Unmount fault mounts left at `path` in `target` by injectors that died (SIGKILL): the
/// application sees the original directory again instead of "Transport endpoint is not
/// connected". Only dead `fuse.faultline` mounts on top of `path` are touched (several, if
/// dead injectors were stacked); a live one (its injector still serving) stops the cleanup.
pub fn cleanup<S: MountSys>(sys: &S, request: &MountRequest) -> Result<Unmounted, MountError> {
    validate_path(&request.path)?;
    let target = request.target;
    let mut outcome = Unmounted::NotMounted;
    // Bounded: each round removes one mount.
    for _ in 0..64 {
        let root = open_root(sys, target)?;
        // Resolving lands on the topmost mount at the path; opening a mount root asks
        // nothing of its (possibly dead) server.
        let top = resolve(sys, &root, request)?;
        drop(root);
        let table_error = |source| MountError::MountTable { target, source };
        let top_id = sys.mount_id_of(top.as_fd()).map_err(table_error)?;
        let table = sys.mountinfo(target).map_err(table_error)?;
        let ours = mountinfo::parse(&table)
            .into_iter()
            .any(|e| e.id == top_id && e.fstype == FSTYPE);
        if !ours {
            return Ok(outcome);
        }
        if sys.server_alive(top.as_fd()) {
            return Err(MountError::Live {
                path: request.path.clone(),
                target,
            });
        }
        drop(top);
        match unmount_by_id(sys, target, top_id)? {
            Unmounted::NotMounted => return Ok(outcome),
            done => outcome = done,
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests;
