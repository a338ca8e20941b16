//! The privileged calls mounting needs, behind a trait so the logic around them (namespace
//! order, fallbacks, error reporting) is tested without root.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{OFlag, openat};
use nix::mount::MntFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::sys::statvfs::FsFlags;

use super::Target;
use super::volume_policy::DirIdentity;
use crate::sys;

/// Privileged operations, in the order mounting uses them.
pub trait MountSys: Send + Sync {
    /// The root directory of `target` as an `O_PATH` descriptor (`/`, or `/proc/PID/root`).
    fn open_root(&self, target: Target) -> io::Result<OwnedFd>;
    /// Resolve the absolute `path` inside `root`, symlinks included, never leaving it
    /// (`RESOLVE_IN_ROOT`): an `O_PATH` descriptor on the directory.
    fn resolve_dir(&self, root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd>;
    /// Which directory `dir` is (device, inode) and on which kind of filesystem (statfs magic).
    fn identify(&self, dir: BorrowedFd<'_>) -> io::Result<DirIdentity>;
    /// `MOUNT_ATTR_*` flags mirroring the mount that holds `dir` (read-only, nosuid, ...).
    fn mount_attrs_of(&self, dir: BorrowedFd<'_>) -> io::Result<u64>;
    fn open_fuse_device(&self) -> io::Result<OwnedFd>;
    /// A FUSE superblock served through `fuse` (the kernel queues FUSE_INIT on it).
    fn create_fuse_fs(&self, fuse: BorrowedFd<'_>) -> io::Result<OwnedFd>;
    /// A detached mount of the superblock.
    fn fsmount(&self, fs: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd>;
    /// The mount id of the mount a descriptor is on (from fdinfo: no filesystem call, so
    /// it works on a mount whose server died).
    fn mount_id_of(&self, fd: BorrowedFd<'_>) -> io::Result<u64>;
    /// The device (`major`, `minor`) the files under `fd` show, without a request to a FUSE
    /// server. Only reported (to the agent's handover), so none by default.
    fn device_of(&self, _fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The mount table of `target`, paths relative to its root.
    fn mountinfo(&self, target: Target) -> io::Result<String>;

    // Called on a dedicated thread, in this order: unshare, open namespaces, setns, ...
    /// Give this thread its own root and working directory (needed before setns(mnt)).
    fn unshare_fs(&self) -> io::Result<()>;
    /// The mount namespace of `target` (`Own`: this thread's).
    fn open_mnt_ns(&self, target: Target) -> io::Result<OwnedFd>;
    fn setns_mnt(&self, ns: BorrowedFd<'_>) -> io::Result<()>;
    /// Make `dir` this thread's root and working directory.
    fn chroot_to(&self, dir: BorrowedFd<'_>) -> io::Result<()>;
    /// Attach the detached mount `mnt` on top of the directory `onto`.
    fn move_mount(&self, mnt: BorrowedFd<'_>, onto: BorrowedFd<'_>) -> io::Result<()>;
    /// `O_PATH` descriptor on `path` (from this thread's root), not following a final symlink.
    fn open_path(&self, path: &Path) -> io::Result<OwnedFd>;
    /// `umount2(path, UMOUNT_NOFOLLOW [| MNT_DETACH])`.
    fn umount(&self, path: &Path, detach: bool) -> io::Result<()>;
    /// Is the FUSE server behind the mount of `fd` alive? (A dead one answers ENOTCONN, or
    /// ECONNABORTED or ECANCELED while its io_uring queues are torn down.)
    fn server_alive(&self, fd: BorrowedFd<'_>) -> bool;
}

/// The real thing.
#[derive(Debug)]
pub struct LinuxMountSys {
    /// `/proc/self/fdinfo` of this process, opened up front: after entering another mount
    /// namespace (or chroot) `/proc` may be someone else's.
    fdinfo: OwnedFd,
}

impl LinuxMountSys {
    pub fn new() -> io::Result<Self> {
        let fdinfo = open_dir(Path::new("/proc/self/fdinfo"))?;
        Ok(Self { fdinfo })
    }
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `MOUNT_ATTR_*` for the `statvfs` flags of the original's mount.
pub fn mount_attrs_from(flags: FsFlags) -> u64 {
    let mut attrs = 0;
    for (st, attr) in [
        (FsFlags::ST_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (FsFlags::ST_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (FsFlags::ST_NODEV, libc::MOUNT_ATTR_NODEV),
        (FsFlags::ST_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (FsFlags::ST_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(st) {
            attrs |= attr;
        }
    }
    if flags.contains(FsFlags::ST_NOATIME) {
        attrs |= libc::MOUNT_ATTR_NOATIME;
    } else if !flags.contains(FsFlags::ST_RELATIME) {
        attrs |= libc::MOUNT_ATTR_STRICTATIME;
    }
    attrs
}

impl MountSys for LinuxMountSys {
    fn open_root(&self, target: Target) -> io::Result<OwnedFd> {
        match target {
            Target::Own => open_dir(Path::new("/")),
            Target::Process(pid) => open_dir(Path::new(&format!("/proc/{pid}/root"))),
        }
    }

    fn resolve_dir(&self, root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
        sys::openat2(
            root,
            &cstring(path)?,
            libc::O_PATH | libc::O_DIRECTORY,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        )
    }

    fn identify(&self, dir: BorrowedFd<'_>) -> io::Result<DirIdentity> {
        let st = nix::sys::stat::fstat(dir)?;
        let fs = nix::sys::statfs::fstatfs(dir)?;
        Ok(DirIdentity {
            dev: st.st_dev,
            ino: st.st_ino,
            fs_magic: fs.filesystem_type().0 as u64,
        })
    }

    fn mount_attrs_of(&self, dir: BorrowedFd<'_>) -> io::Result<u64> {
        let st = nix::sys::statvfs::fstatvfs(dir)?;
        Ok(mount_attrs_from(st.flags()))
    }

    fn open_fuse_device(&self) -> io::Result<OwnedFd> {
        Ok(std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?
            .into())
    }

    fn create_fuse_fs(&self, fuse: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        let fs = sys::fsopen(c"fuse")?;
        let fd = CString::new(fuse.as_raw_fd().to_string()).unwrap_or_default();
        let f = fs.as_fd();
        sys::fsconfig_string(f, c"source", c"faultline")?;
        sys::fsconfig_string(f, c"subtype", c"faultline")?;
        sys::fsconfig_string(f, c"fd", &fd)?;
        sys::fsconfig_string(f, c"rootmode", c"40000")?;
        sys::fsconfig_string(f, c"user_id", c"0")?;
        sys::fsconfig_string(f, c"group_id", c"0")?;
        sys::fsconfig_flag(f, c"allow_other")?;
        sys::fsconfig_flag(f, c"default_permissions")?;
        sys::fsconfig_create(f)?;
        Ok(fs)
    }

    fn fsmount(&self, fs: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd> {
        sys::fsmount(fs, attrs)
    }

    fn device_of(&self, fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
        sys::device_of(fd)
    }

    fn mount_id_of(&self, fd: BorrowedFd<'_>) -> io::Result<u64> {
        let name = fd.as_raw_fd().to_string();
        let info = openat(
            self.fdinfo.as_fd(),
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut text = String::new();
        File::from(info).read_to_string(&mut text)?;
        text.lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no mnt_id in fdinfo"))
    }

    fn mountinfo(&self, target: Target) -> io::Result<String> {
        match target {
            Target::Own => std::fs::read_to_string("/proc/self/mountinfo"),
            Target::Process(pid) => std::fs::read_to_string(format!("/proc/{pid}/mountinfo")),
        }
    }

    fn unshare_fs(&self) -> io::Result<()> {
        Ok(nix::sched::unshare(CloneFlags::CLONE_FS)?)
    }

    fn open_mnt_ns(&self, target: Target) -> io::Result<OwnedFd> {
        let path = match target {
            Target::Own => "/proc/thread-self/ns/mnt".to_owned(),
            Target::Process(pid) => format!("/proc/{pid}/ns/mnt"),
        };
        Ok(File::open(path)?.into())
    }

    fn setns_mnt(&self, ns: BorrowedFd<'_>) -> io::Result<()> {
        Ok(nix::sched::setns(ns, CloneFlags::CLONE_NEWNS)?)
    }

    fn chroot_to(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        nix::unistd::fchdir(dir)?;
        sys::chroot_cwd()
    }

    fn move_mount(&self, mnt: BorrowedFd<'_>, onto: BorrowedFd<'_>) -> io::Result<()> {
        sys::move_mount_onto(mnt, onto)
    }

    fn open_path(&self, path: &Path) -> io::Result<OwnedFd> {
        Ok(openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?)
    }

    fn umount(&self, path: &Path, detach: bool) -> io::Result<()> {
        let mut flags = MntFlags::UMOUNT_NOFOLLOW;
        if detach {
            flags |= MntFlags::MNT_DETACH;
        }
        Ok(nix::mount::umount2(path, flags)?)
    }

    fn server_alive(&self, fd: BorrowedFd<'_>) -> bool {
        // ENOTCONN once the kernel has aborted the connection; ECONNABORTED or ECANCELED
        // for a request that raced with the teardown of a dead server's io_uring queues.
        use nix::errno::Errno::{ECANCELED, ECONNABORTED, ENOTCONN};
        !matches!(
            nix::sys::statfs::fstatfs(fd),
            Err(ENOTCONN | ECONNABORTED | ECANCELED)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_attrs_mirror_the_original() {
        assert_eq!(
            mount_attrs_from(FsFlags::ST_RELATIME),
            libc::MOUNT_ATTR_RELATIME
        );
        assert_eq!(
            mount_attrs_from(FsFlags::ST_RDONLY | FsFlags::ST_NOSUID | FsFlags::ST_NOATIME),
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOATIME
        );
        assert_eq!(
            mount_attrs_from(FsFlags::ST_NODEV | FsFlags::ST_NOEXEC),
            libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC | libc::MOUNT_ATTR_STRICTATIME
        );
    }

    #[test]
    fn mount_id_of_reads_fdinfo() {
        let sys = LinuxMountSys::new().expect("fdinfo");
        let root = sys.open_root(Target::Own).expect("root");
        let id = sys.mount_id_of(root.as_fd()).expect("mnt_id");
        let table = sys.mountinfo(Target::Own).expect("mountinfo");
        let entries = super::super::mountinfo::parse(&table);
        let root_mount = entries
            .iter()
            .find(|e| e.id == id)
            .expect("root mount listed");
        assert_eq!(root_mount.mount_point, Path::new("/"));
    }
}
