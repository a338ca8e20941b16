//! Opening files: the IO mode of each open (kernel passthrough or through the daemon),
//! creating files as the caller, and the set-ID rules unprivileged writers are held to.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use fuser::{
    BackingId, Errno, FileHandle, FileType, FopenFlags, Generation, ReplyCreate, ReplyOpen,
};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstat, fstatat};
use nix::unistd::{Gid, Uid, fchownat};

use super::attr::{apply_override, key_of, kind_of_mode, to_attr};
use super::handle::{FileHandle as OpenFile, Handle};
use super::inode::Inode;
use super::io_mode::{FileIo, IoMode, Plan};
use super::umask::with_caller_umask;
use super::{Injection, Method, MethodSet, Shared, errno};

/// The flags `open(2)` applies at open time only, which we must not repeat on reopen.
const CREATE_ONLY: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY;
/// Flags that change how the backing file itself does IO: a backing file shared by every
/// open of an inode must not carry them (each open's own flags travel with its requests).
const PER_OPEN_IO_FLAGS: i32 =
    libc::O_APPEND | libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;

/// Set-user-ID, or set-group-ID with group execute: bits a write by an unprivileged
/// caller must clear.
fn setid_bits(mode: u32) -> u32 {
    let mut bits = mode & libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        bits |= libc::S_ISGID;
    }
    bits
}

/// After a chown of the new file `fd` (made as `made`): give back the set-ID bits chown
/// cleared. The whole mode is restored as it was made, so an ACL mask the create computed
/// from a default ACL stays as it was (chmod sets the mask from the group bits). Returns the
/// file's attributes now.
fn restore_setid(fd: &OwnedFd, made: &FileStat) -> nix::Result<FileStat> {
    let now = fstat(fd.as_fd())?;
    if now.st_mode & 0o7777 == made.st_mode & 0o7777 {
        return Ok(now);
    }
    fchmod(fd.as_fd(), Mode::from_bits_truncate(made.st_mode & 0o7777))?;
    fstat(fd.as_fd())
}

fn has_setid(fd: &OwnedFd) -> bool {
    fstat(fd.as_fd()).is_ok_and(|st| setid_bits(st.st_mode) != 0)
}

/// Write-only opens of regular files are opened read-write underneath (the kernel still
/// enforces the caller's mode on its own file): the descriptor can then serve as the
/// passthrough backing file shared by later opens, saving an open per create.
fn upgraded(flags: i32, regular: bool) -> Option<i32> {
    (regular && flags & libc::O_ACCMODE == libc::O_WRONLY && flags & PER_OPEN_IO_FLAGS == 0)
        .then_some((flags & !libc::O_ACCMODE) | libc::O_RDWR)
}

/// A file opened for the kernel.
pub(super) struct Opened {
    fh: u64,
    flags: FopenFlags,
    backing: Option<Arc<BackingId>>,
}

impl Shared {
    pub(super) fn file(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        match self.handles.get(fh) {
            Some(h) if matches!(&*h, Handle::File(_)) => Ok(h),
            _ => Err(Errno::EBADF),
        }
    }

    pub(super) fn dir(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        match self.handles.get(fh) {
            Some(h) if matches!(&*h, Handle::Dir(_)) => Ok(h),
            _ => Err(Errno::EBADF),
        }
    }

    /// Clear set-ID bits after a write or truncate by `caller` (root keeps them, as
    /// CAP_FSETID would). `fd` must be a real (not `O_PATH`) descriptor.
    pub(super) fn kill_setid(&self, caller: u32, fd: &impl AsFd) -> nix::Result<()> {
        if caller == 0 {
            return Ok(());
        }
        let st = fstat(fd.as_fd())?;
        let bits = setid_bits(st.st_mode);
        if bits == 0 {
            return Ok(());
        }
        fchmod(
            fd.as_fd(),
            Mode::from_bits_truncate((st.st_mode & 0o7777) & !bits),
        )
    }

    /// Who should own a file the kernel asked us (root) to create for `req`: `None` when
    /// root's defaults already match. In a set-group-ID directory the group is inherited.
    pub(super) fn owner_for(
        &self,
        uid: u32,
        gid: u32,
        parent: &Inode,
    ) -> Option<(Option<Uid>, Option<Gid>)> {
        if uid == self.euid && gid == self.egid {
            return None;
        }
        let inherit_gid = self
            .stat(parent)
            .map(|st| st.st_mode & libc::S_ISGID != 0)
            .unwrap_or(false);
        let uid = (uid != self.euid).then(|| Uid::from_raw(uid));
        let gid = (!inherit_gid).then(|| Gid::from_raw(gid));
        (uid.is_some() || gid.is_some()).then_some((uid, gid))
    }

    /// Give a file just made in `parent` to the caller (see [`Self::owner_for`]), keeping
    /// the set-ID bits it was made with.
    pub(super) fn chown_child(
        &self,
        uid: u32,
        gid: u32,
        parent: &Inode,
        name: &OsStr,
    ) -> Result<(), Errno> {
        let Some((uid, gid)) = self.owner_for(uid, gid, parent) else {
            return Ok(());
        };
        let pfd = parent.fd()?;
        let made = fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        fchownat(pfd.as_fd(), name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        if made.st_mode & 0o6000 != 0 && kind_of_mode(made.st_mode) != FileType::Symlink {
            let fd = openat(
                pfd.as_fd(),
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?;
            let now = fstat(fd.as_fd()).map_err(errno)?;
            if (now.st_dev, now.st_ino) == (made.st_dev, made.st_ino)
                && now.st_mode & 0o7777 != made.st_mode & 0o7777
            {
                self.reopen_chmod(&fd, made.st_mode).map_err(errno)?;
            }
        }
        Ok(())
    }

    /// chmod through an `O_PATH` descriptor (`/proc/self/fd/N`).
    fn reopen_chmod(&self, fd: &OwnedFd, mode: u32) -> nix::Result<()> {
        nix::sys::stat::fchmodat(
            self.proc_fd.as_fd(),
            super::FdName::of(fd).as_bytes(),
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
    }

    /// Open the backing file for kernel passthrough: the open's own descriptor when it is
    /// plain read-write, else a fresh read-write (or, failing that, read-only) one.
    pub(super) fn new_backing(
        &self,
        inode: &Inode,
        fd: &OwnedFd,
        flags: i32,
        writes: bool,
        open_backing: &dyn Fn(&OwnedFd) -> io::Result<BackingId>,
    ) -> io::Result<(BackingId, bool)> {
        if flags & libc::O_ACCMODE == libc::O_RDWR && flags & PER_OPEN_IO_FLAGS == 0 {
            return Ok((open_backing(fd)?, true));
        }
        let (bfd, writable) = match self.open_inode(inode, OFlag::O_RDWR) {
            Ok(fd) => (fd, true),
            Err(NixErrno::EROFS | NixErrno::EACCES | NixErrno::EPERM | NixErrno::ETXTBSY)
                if !writes =>
            {
                (self.open_inode(inode, OFlag::O_RDONLY)?, false)
            }
            Err(e) => return Err(e.into()),
        };
        Ok((open_backing(&bfd)?, writable))
    }

    /// Register an open file (already opened as `fd` with the caller's `flags`) and choose
    /// its IO mode: passthrough when no rule may touch its data, else through the daemon.
    pub(super) fn open_handle(
        &self,
        inode: &Arc<Inode>,
        fd: OwnedFd,
        flags: i32,
        path: Option<&Path>,
        no_passthrough: bool,
        open_backing: &dyn Fn(&OwnedFd) -> io::Result<BackingId>,
    ) -> Result<Opened, Errno> {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let faults_on_data =
            path.is_some_and(|p| self.rules.may_match(p, MethodSet::DATA_TRANSFER));
        let want_passthrough = !faults_on_data
            && !no_passthrough
            && inode.kind == FileType::RegularFile
            && self.passthrough_enabled();
        let mut io = inode.io.lock();
        // In the reachable mode every file is opened so that a rule put in force later still
        // sees each of its reads and writes.
        let daemon_mode = if faults_on_data || self.opts.file_io == FileIo::Reachable {
            IoMode::Direct
        } else {
            IoMode::Cached
        };
        let (mode, backing) = match io.plan(want_passthrough, daemon_mode == IoMode::Direct, writes)
        {
            Plan::Reuse(b) => {
                io.add_passthrough(b.clone(), true);
                (IoMode::Passthrough, Some(b))
            }
            Plan::NewBacking => match self.new_backing(inode, &fd, flags, writes, open_backing) {
                Ok((b, writable)) => {
                    let b = Arc::new(b);
                    io.add_passthrough(b.clone(), writable);
                    (IoMode::Passthrough, Some(b))
                }
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOTTY) => {
                            self.disable_passthrough(&e)
                        }
                        _ => {
                            tracing::debug!(error = %e, "no backing file; serving through the daemon")
                        }
                    }
                    io.add_daemon();
                    (daemon_mode, None)
                }
            },
            Plan::Daemon => {
                io.add_daemon();
                (daemon_mode, None)
            }
            Plan::Conflict => {
                tracing::warn!(
                    path = ?path,
                    "write open of a file open in passthrough with a read-only backing file"
                );
                return Err(Errno::EBUSY);
            }
        };
        drop(io);
        let mut fopen = FopenFlags::empty();
        if mode == IoMode::Direct {
            fopen |= FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
        }
        // Locks are the kernel's own and writes are never cached, so FLUSH carries nothing
        // unless a rule wants to see it.
        if !path.is_some_and(|p| self.rules.may_match(p, MethodSet::from(Method::Flush))) {
            fopen |= FopenFlags::FOPEN_NOFLUSH;
        }
        let fh = self.handles.insert(Handle::File(OpenFile {
            inode: inode.clone(),
            fd,
            mode,
            o_direct: flags & libc::O_DIRECT != 0,
        }));
        Ok(Opened {
            fh,
            flags: fopen,
            backing,
        })
    }

    pub(super) fn do_open(
        &self,
        caller: u32,
        inode: &Arc<Inode>,
        flags: i32,
        path: Option<&Path>,
        _inj: &Injection,
        reply: ReplyOpen,
    ) {
        let mut flags = flags & !CREATE_ONLY;
        let regular = inode.kind == FileType::RegularFile;
        let fd = match upgraded(flags, regular) {
            Some(rw) => match self.open_inode(inode, OFlag::from_bits_retain(rw)) {
                Ok(fd) => {
                    flags = rw;
                    Ok(fd)
                }
                Err(_) => self.open_inode(inode, OFlag::from_bits_retain(flags)),
            },
            None => self.open_inode(inode, OFlag::from_bits_retain(flags)),
        };
        let fd = tri!(reply, fd.map_err(errno));
        // Writes by an unprivileged caller must clear set-ID bits; kernel passthrough would
        // write as us (privileged), so such files go through the daemon, which clears them.
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let setid = writes && caller != 0 && has_setid(&fd);
        if setid && flags & libc::O_TRUNC != 0 {
            tri!(reply, self.kill_setid(caller, &fd).map_err(errno));
        }
        let opened = self.open_handle(inode, fd, flags, path, setid, &|fd| reply.open_backing(fd));
        let o = tri!(reply, opened);
        match &o.backing {
            Some(b) => reply.opened_passthrough(FileHandle(o.fh), o.flags, b),
            None => reply.opened(FileHandle(o.fh), o.flags),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_create(
        &self,
        (uid, gid): (u32, u32),
        parent: &Arc<Inode>,
        name: &OsStr,
        (mode, umask): (u32, u32),
        flags: i32,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyCreate,
    ) {
        let pfd = tri!(reply, parent.fd());
        let mut flags = flags;
        let fd = with_caller_umask(mode, umask, |perm| {
            let create = |flags: i32| {
                openat(
                    pfd.as_fd(),
                    name,
                    OFlag::from_bits_retain((flags | libc::O_CREAT) & !libc::O_NOCTTY)
                        | OFlag::O_CLOEXEC,
                    perm,
                )
            };
            match upgraded(flags, true) {
                Some(rw) => match create(rw) {
                    Ok(fd) => {
                        flags = rw;
                        Ok(fd)
                    }
                    Err(_) => create(flags),
                },
                None => create(flags),
            }
        });
        let fd = tri!(reply, fd.map_err(errno));
        let mut st = tri!(reply, fstat(fd.as_fd()).map_err(errno));
        if let Some((uid, gid)) = self.owner_for(uid, gid, parent) {
            tri!(
                reply,
                nix::unistd::fchown(fd.as_fd(), uid, gid).map_err(errno)
            );
            st = tri!(reply, restore_setid(&fd, &st).map_err(errno));
        }
        let path_fd = tri!(reply, self.reopen(&fd, OFlag::O_PATH).map_err(errno));
        let inode =
            self.inodes
                .lookup(parent, name, key_of(&st), kind_of_mode(st.st_mode), path_fd);
        let mut attr = to_attr(&st, inode.nodeid);
        if let Some(o) = &inj.attr {
            apply_override(o, &mut attr, true);
        }
        let opened = self.open_handle(&inode, fd, flags & !CREATE_ONLY, path, false, &|fd| {
            reply.open_backing(fd)
        });
        let o = match opened {
            Ok(o) => o,
            Err(e) => {
                self.inodes.forget(inode.nodeid, 1);
                return reply.error(e);
            }
        };
        let _epoch = self.epoch.read_recursive();
        let ttl = self.ttl(path);
        match &o.backing {
            Some(b) => {
                reply.created_passthrough(&ttl, &attr, Generation(0), FileHandle(o.fh), o.flags, b)
            }
            None => reply.created(&ttl, &attr, Generation(0), FileHandle(o.fh), o.flags),
        }
    }

    pub(super) fn release_file(&self, fh: u64) {
        if let Some(h) = self.handles.remove(fh)
            && let Handle::File(f) = &*h
        {
            f.inode.io.lock().release(f.mode);
        }
    }
}
