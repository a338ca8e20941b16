//! The FUSE operations. Each one asks the fault policy first (only when there are rules),
//! then does the real thing on the original through `*at` calls on held descriptors.

use std::cell::RefCell;
use std::ffi::{CString, OsStr};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{AtFlags, FallocateFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, futimens, mkdirat,
    mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::sys::uio::{pread, pwrite};
use nix::unistd::{
    Gid, Uid, UnlinkatFlags, Whence, fchownat, fdatasync, fsync, ftruncate, linkat, lseek,
    symlinkat, unlinkat,
};

use super::attr::{apply_override, dot_attr, key_of, kind_of_dtype, kind_of_mode, to_attr};
use super::handle::{DirHandle, DirStream, FileHandle as OpenFile, Handle};
use super::inode::Inode;
use super::io_mode::{IoMode, Plan};
use super::{FdName, Injection, Method, MethodSet, PassthroughFs, Resume, Shared, errno};
use crate::sys::{AlignedBuf, getxattr, listxattr, removexattr, setxattr};

thread_local! {
    static IO_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::new());
}

/// Ask the policy about `$op`; do `$body` now or, after an injected delay, on a delay thread
/// (with owned copies of the captured variables).
macro_rules! run {
    ($sh:ident, $op:expr, $path:ident, $reply:ident, ($($cap:ident),*), |$inj:ident, $r:ident| $body:expr) => {{
        let reply_type = reply_type(&$reply);
        let resume = || {
            $( let $cap = $cap.to_owned(); )*
            resume_with::<_, _>(reply_type, move |$sh: &Arc<Shared>, $inj: Injection, $r| {
                let _ = (&$sh, &$inj);
                // The body is written once for borrowed and owned captures.
                #[allow(clippy::needless_borrow, clippy::borrow_deref_ref)]
                let () = $body;
            })
        };
        if let Some(($inj, $r)) = $sh.faults($op, $path.as_deref(), $reply, resume) {
            let _ = &$inj;
            #[allow(clippy::needless_borrow, clippy::borrow_deref_ref)]
            let () = $body;
        }
    }};
}

fn reply_type<R>(_: &R) -> PhantomData<R> {
    PhantomData
}

fn resume_with<R, F>(_: PhantomData<R>, f: F) -> Resume<R>
where
    F: FnOnce(&Arc<Shared>, Injection, R) + Send + 'static,
{
    Box::new(f)
}

/// A descriptor on an inode's original, or reply with the error.
macro_rules! inode_fd {
    ($reply:ident, $inode:expr) => {
        match $inode.fd() {
            Ok(fd) => fd,
            Err(e) => return $reply.error(e.into()),
        }
    };
}

macro_rules! tri {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e.into()),
        }
    };
}

/// The flags `open(2)` applies at open time only, which we must not repeat on reopen.
const CREATE_ONLY: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY;
/// Flags that change how the backing file itself does IO: a backing file shared by every
/// open of an inode must not carry them (each open's own flags travel with its requests).
const PER_OPEN_IO_FLAGS: i32 =
    libc::O_APPEND | libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;

fn time_spec(t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => TimeSpec::from_duration(d),
            Err(e) => {
                let d = e.duration();
                let secs = -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0);
                let nanos = (1_000_000_000 - d.subsec_nanos()) % 1_000_000_000;
                TimeSpec::new(secs, i64::from(nanos))
            }
        },
    }
}

/// Set-user-ID, or set-group-ID with group execute: bits a write by an unprivileged
/// caller must clear.
fn setid_bits(mode: u32) -> u32 {
    let mut bits = mode & libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        bits |= libc::S_ISGID;
    }
    bits
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
struct Opened {
    fh: u64,
    flags: FopenFlags,
    backing: Option<Arc<BackingId>>,
}

impl Shared {
    fn file(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        match self.handles.get(fh) {
            Some(h) if matches!(&*h, Handle::File(_)) => Ok(h),
            _ => Err(Errno::EBADF),
        }
    }

    fn dir(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        match self.handles.get(fh) {
            Some(h) if matches!(&*h, Handle::Dir(_)) => Ok(h),
            _ => Err(Errno::EBADF),
        }
    }

    /// `/proc/self/fd/N` of an inode, for the path-only xattr calls.
    fn proc_path(&self, fd: &impl std::os::fd::AsRawFd) -> CString {
        let name = FdName::of(fd);
        let mut p = b"/proc/self/fd/".to_vec();
        p.extend_from_slice(name.as_bytes());
        // Digits only: no interior NUL.
        CString::new(p).unwrap_or_default()
    }

    /// Clear set-ID bits after a write or truncate by `caller` (root keeps them, as
    /// CAP_FSETID would). `fd` must be a real (not `O_PATH`) descriptor.
    fn kill_setid(&self, caller: u32, fd: &impl AsFd) -> nix::Result<()> {
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
    fn owner_for(&self, uid: u32, gid: u32, parent: &Inode) -> Option<(Option<Uid>, Option<Gid>)> {
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

    fn chown_child(&self, uid: u32, gid: u32, parent: &Inode, name: &OsStr) -> Result<(), Errno> {
        if let Some((uid, gid)) = self.owner_for(uid, gid, parent) {
            fchownat(
                parent.fd()?.as_fd(),
                name,
                uid,
                gid,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        Ok(())
    }

    fn do_lookup(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyEntry,
    ) {
        let (_, attr) = tri!(reply, self.lookup_child(parent, name));
        self.reply_entry(reply, attr, path, inj);
    }

    /// Reply to a creating operation with the new entry.
    fn reply_new_entry(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyEntry,
    ) {
        self.do_lookup(parent, name, path, inj, reply);
    }

    fn do_getattr(&self, inode: &Inode, path: Option<&Path>, inj: &Injection, reply: ReplyAttr) {
        let st = tri!(reply, self.stat(inode));
        let mut attr = to_attr(&st, inode.nodeid);
        // Node id 1 is the FUSE root's; show the original's number like everywhere else.
        attr.ino = INodeNo(if inode.nodeid == super::inode::ROOT_ID {
            st.st_ino
        } else {
            inode.nodeid
        });
        if let Some(o) = &inj.attr {
            apply_override(o, &mut attr, false);
        }
        let _epoch = self.epoch.read_recursive();
        reply.attr(&self.ttl(path), &attr);
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        caller: u32,
        inode: &Inode,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyAttr,
    ) {
        let handle = fh.and_then(|fh| self.file(fh).ok());
        let open_fd = handle.as_deref().and_then(|h| match h {
            Handle::File(f) => Some(&f.fd),
            Handle::Dir(_) => None,
        });
        let symlink = inode.kind == FileType::Symlink;
        let ifd = tri!(reply, inode.fd());
        let name = FdName::of(&ifd);
        if let Some(mode) = mode {
            let m = Mode::from_bits_truncate(mode & 0o7777);
            let r = match open_fd {
                Some(fd) => fchmod(fd.as_fd(), m),
                None if symlink => Err(NixErrno::EOPNOTSUPP),
                None => fchmodat(
                    self.proc_fd.as_fd(),
                    name.as_bytes(),
                    m,
                    FchmodatFlags::FollowSymlink,
                ),
            };
            tri!(reply, r.map_err(errno));
        }
        if uid.is_some() || gid.is_some() {
            tri!(
                reply,
                fchownat(
                    ifd.as_fd(),
                    "",
                    uid.map(Uid::from_raw),
                    gid.map(Gid::from_raw),
                    AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(errno)
            );
        }
        if let Some(size) = size {
            let len = tri!(reply, i64::try_from(size).map_err(|_| Errno::EFBIG));
            let r = match open_fd {
                Some(fd) => ftruncate(fd.as_fd(), len),
                None => self.open_inode(inode, OFlag::O_WRONLY).and_then(|fd| {
                    ftruncate(fd.as_fd(), len)?;
                    self.kill_setid(caller, &fd)
                }),
            };
            tri!(reply, r.map_err(errno));
            if let Some(fd) = open_fd {
                tri!(reply, self.kill_setid(caller, fd).map_err(errno));
            }
        }
        if atime.is_some() || mtime.is_some() {
            let (a, m) = (time_spec(atime), time_spec(mtime));
            let r = match open_fd {
                Some(fd) => futimens(fd.as_fd(), &a, &m),
                None if symlink => match inode.parent_link() {
                    Some((parent, link_name)) => parent
                        .fd()
                        .map_err(|e| NixErrno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
                        .and_then(|pfd| {
                            utimensat(
                                pfd.as_fd(),
                                link_name.as_os_str(),
                                &a,
                                &m,
                                UtimensatFlags::NoFollowSymlink,
                            )
                        }),
                    None => Err(NixErrno::EOPNOTSUPP),
                },
                None => utimensat(
                    self.proc_fd.as_fd(),
                    name.as_bytes(),
                    &a,
                    &m,
                    UtimensatFlags::FollowSymlink,
                ),
            };
            tri!(reply, r.map_err(errno));
        }
        self.do_getattr(inode, path, inj, reply);
    }

    /// Open the backing file for kernel passthrough: the open's own descriptor when it is
    /// plain read-write, else a fresh read-write (or, failing that, read-only) one.
    fn new_backing(
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
    fn open_handle(
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
        let daemon_mode = if faults_on_data {
            IoMode::Direct
        } else {
            IoMode::Cached
        };
        let (mode, backing) = match io.plan(want_passthrough, writes) {
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

    fn do_open(
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
    fn do_create(
        &self,
        (uid, gid): (u32, u32),
        parent: &Arc<Inode>,
        name: &OsStr,
        mode: u32,
        flags: i32,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyCreate,
    ) {
        let pfd = tri!(reply, parent.fd());
        let create = |flags: i32| {
            openat(
                pfd.as_fd(),
                name,
                OFlag::from_bits_retain((flags | libc::O_CREAT) & !libc::O_NOCTTY)
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode & 0o7777),
            )
        };
        let mut flags = flags;
        let fd = match upgraded(flags, true) {
            Some(rw) => match create(rw) {
                Ok(fd) => {
                    flags = rw;
                    Ok(fd)
                }
                Err(_) => create(flags),
            },
            None => create(flags),
        };
        let fd = tri!(reply, fd.map_err(errno));
        if let Some((uid, gid)) = self.owner_for(uid, gid, parent) {
            tri!(
                reply,
                nix::unistd::fchown(fd.as_fd(), uid, gid).map_err(errno)
            );
            if mode & 0o6000 != 0 {
                // chown cleared set-ID bits the caller asked for.
                tri!(
                    reply,
                    fchmod(fd.as_fd(), Mode::from_bits_truncate(mode & 0o7777)).map_err(errno)
                );
            }
        }
        let st = tri!(reply, fstat(fd.as_fd()).map_err(errno));
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

    fn do_read(&self, fh: u64, offset: u64, size: u32, inj: &Injection, reply: ReplyData) {
        let h = tri!(reply, self.file(fh));
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EBADF);
        };
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        IO_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let buf = buf.slice_mut(size as usize);
            let mut done = 0usize;
            while done < buf.len() {
                match pread(f.fd.as_fd(), &mut buf[done..], offset + done as i64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(NixErrno::EINTR) => continue,
                    Err(e) if done == 0 => return reply.error(errno(e)),
                    Err(_) => break,
                }
            }
            let data = &mut buf[..done];
            if let Some(m) = &inj.mistake {
                m.apply(data);
            }
            reply.data(data);
        });
    }

    fn write_all(&self, f: &OpenFile, data: &[u8], offset: i64, reply: ReplyWrite) {
        let mut done = 0usize;
        while done < data.len() {
            match pwrite(f.fd.as_fd(), &data[done..], offset + done as i64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(NixErrno::EINTR) => continue,
                Err(e) if done == 0 => return reply.error(errno(e)),
                Err(_) => break,
            }
        }
        reply.written(u32::try_from(done).unwrap_or(u32::MAX));
    }

    fn do_write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_setid: bool,
        inj: &Injection,
        reply: ReplyWrite,
    ) {
        let h = tri!(reply, self.file(fh));
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EBADF);
        };
        if kill_setid {
            // The kernel says the writer may not keep set-ID bits (killpriv_v2).
            tri!(reply, self.kill_setid(u32::MAX, &f.fd).map_err(errno));
        }
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        let misaligned = f.o_direct && !(data.as_ptr() as usize).is_multiple_of(AlignedBuf::ALIGN);
        if inj.mistake.is_none() && !misaligned {
            return self.write_all(f, data, offset, reply);
        }
        IO_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let buf = buf.slice_mut(data.len());
            buf.copy_from_slice(data);
            if let Some(m) = &inj.mistake {
                m.apply(buf);
            }
            self.write_all(f, buf, offset, reply);
        });
    }

    fn release_file(&self, fh: u64) {
        if let Some(h) = self.handles.remove(fh)
            && let Handle::File(f) = &*h
        {
            f.inode.io.lock().release(f.mode);
        }
    }

    fn do_readdir(&self, fh: u64, offset: u64, mut reply: ReplyDirectory) {
        let h = tri!(reply, self.dir(fh));
        let Handle::Dir(d) = &*h else {
            return reply.error(Errno::EBADF);
        };
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        let mut stream = d.stream.lock();
        let res = stream.read_from(offset, |e| {
            !reply.add(
                INodeNo(e.ino),
                e.next_offset as u64,
                kind_of_dtype(e.kind),
                e.name,
            )
        });
        drop(stream);
        tri!(reply, res);
        reply.ok();
    }

    fn do_readdirplus(&self, fh: u64, offset: u64, mut reply: ReplyDirectoryPlus) {
        let h = tri!(reply, self.dir(fh));
        let Handle::Dir(d) = &*h else {
            return reply.error(Errno::EBADF);
        };
        let offset = tri!(reply, i64::try_from(offset).map_err(|_| Errno::EINVAL));
        let dir = &d.inode;
        let _epoch = self.epoch.read_recursive();
        let mut stream = d.stream.lock();
        let res = stream.read_from(offset, |e| {
            let next = e.next_offset as u64;
            if e.name == "." || e.name == ".." {
                // The kernel takes no reference on these.
                let attr = dot_attr(dir.nodeid);
                return !reply.add(
                    INodeNo(dir.nodeid),
                    next,
                    e.name,
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                );
            }
            let Ok((child, mut attr)) = self.lookup_child(dir, e.name) else {
                // Gone since getdents: skip it.
                return true;
            };
            let path = self.rule_path(|| child.path());
            // Each entry is an implicit lookup: attribute overrides apply. Latency and
            // errors do not (the directory listing itself is READDIR's).
            if let Some(p) = path.as_deref()
                && self.rules.may_match(p, MethodSet::from(Method::Lookup))
                && let Some(o) = self.rules.evaluate(Method::Lookup, p).attr
            {
                apply_override(&o, &mut attr, true);
            }
            let ttl = self.ttl(path.as_deref());
            let full = reply.add(
                INodeNo(child.nodeid),
                next,
                e.name,
                &ttl,
                &attr,
                Generation(0),
            );
            if full {
                self.inodes.forget(child.nodeid, 1);
            }
            !full
        });
        drop(stream);
        tri!(reply, res);
        reply.ok();
    }

    fn do_getxattr(&self, inode: &Inode, name: &OsStr, size: u32, reply: ReplyXattr) {
        if inode.kind == FileType::Symlink {
            return reply.error(Errno::NO_XATTR);
        }
        let ifd = inode_fd!(reply, inode);
        let path = self.proc_path(&ifd);
        let cname = tri!(
            reply,
            CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
        );
        if size == 0 {
            let n = tri!(reply, getxattr(&path, &cname, &mut []));
            return reply.size(u32::try_from(n).unwrap_or(u32::MAX));
        }
        let mut buf = vec![0u8; size as usize];
        let n = tri!(reply, getxattr(&path, &cname, &mut buf));
        reply.data(&buf[..n]);
    }

    fn do_listxattr(&self, inode: &Inode, size: u32, reply: ReplyXattr) {
        if inode.kind == FileType::Symlink {
            return if size == 0 {
                reply.size(0)
            } else {
                reply.data(&[])
            };
        }
        let ifd = inode_fd!(reply, inode);
        let path = self.proc_path(&ifd);
        if size == 0 {
            let n = tri!(reply, listxattr(&path, &mut []));
            return reply.size(u32::try_from(n).unwrap_or(u32::MAX));
        }
        let mut buf = vec![0u8; size as usize];
        let n = tri!(reply, listxattr(&path, &mut buf));
        reply.data(&buf[..n]);
    }
}

impl Filesystem for PassthroughFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        use InitFlags as F;
        for flag in [
            F::FUSE_ASYNC_READ,
            F::FUSE_BIG_WRITES,
            F::FUSE_ATOMIC_O_TRUNC,
            F::FUSE_PARALLEL_DIROPS,
            F::FUSE_DO_READDIRPLUS,
            F::FUSE_READDIRPLUS_AUTO,
            F::FUSE_ASYNC_DIO,
            F::FUSE_AUTO_INVAL_DATA,
            F::FUSE_DIRECT_IO_ALLOW_MMAP,
            F::FUSE_MAX_PAGES,
            // We clear set-ID bits ourselves (see `kill_setid`); in exchange the kernel
            // stops asking GETXATTR(security.capability) before every write.
            F::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            if let Err(missing) = config.add_capabilities(flag) {
                tracing::debug!(?missing, "kernel lacks a FUSE capability");
            }
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let sh = &self.shared;
        if sh.opts.passthrough {
            match config.add_capabilities(F::FUSE_PASSTHROUGH) {
                Ok(()) => {
                    // 2: backing files may live on overlayfs (a container's rootfs).
                    let _ = config.set_max_stack_depth(2);
                    sh.passthrough
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("kernel FUSE passthrough enabled");
                }
                Err(_) => {
                    tracing::info!("kernel lacks FUSE passthrough; all IO goes through the daemon")
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        run!(
            sh,
            Method::Lookup,
            path,
            reply,
            (parent, name, path),
            |inj, reply| sh.do_lookup(&parent, &name, path.as_deref(), &inj, reply)
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            Method::Getattr,
            path,
            reply,
            (inode, path),
            |inj, reply| sh.do_getattr(&inode, path.as_deref(), &inj, reply)
        );
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        let fh = fh.map(|f| f.0);
        let caller = req.uid();
        run!(
            sh,
            Method::Setattr,
            path,
            reply,
            (inode, path, mode, uid, gid, size, atime, mtime, fh),
            |inj, reply| {
                sh.do_setattr(
                    caller,
                    &inode,
                    mode,
                    uid,
                    gid,
                    size,
                    atime,
                    mtime,
                    fh,
                    path.as_deref(),
                    &inj,
                    reply,
                )
            }
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(sh, Method::Readlink, path, reply, (inode), |_inj, reply| {
            let ifd = match inode.fd() {
                Ok(fd) => fd,
                Err(e) => return reply.error(e.into()),
            };
            match nix::fcntl::readlinkat(ifd.as_fd(), "") {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        let (uid, gid) = (req.uid(), req.gid());
        run!(
            sh,
            Method::Mknod,
            path,
            reply,
            (parent, name, path),
            |inj, reply| {
                let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
                let perm = Mode::from_bits_truncate(mode & 0o7777);
                let pfd = inode_fd!(reply, parent);
                if let Err(e) = mknodat(pfd.as_fd(), &*name, kind, perm, libc::dev_t::from(rdev)) {
                    return reply.error(errno(e));
                }
                if let Err(e) = sh.chown_child(uid, gid, &parent, &name) {
                    return reply.error(e);
                }
                sh.reply_new_entry(&parent, &name, path.as_deref(), &inj, reply)
            }
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        let (uid, gid) = (req.uid(), req.gid());
        run!(
            sh,
            Method::Mkdir,
            path,
            reply,
            (parent, name, path),
            |inj, reply| {
                let pfd = inode_fd!(reply, parent);
                if let Err(e) =
                    mkdirat(pfd.as_fd(), &*name, Mode::from_bits_truncate(mode & 0o7777))
                {
                    return reply.error(errno(e));
                }
                if let Err(e) = sh.chown_child(uid, gid, &parent, &name) {
                    return reply.error(e);
                }
                sh.reply_new_entry(&parent, &name, path.as_deref(), &inj, reply)
            }
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        run!(
            sh,
            Method::Unlink,
            path,
            reply,
            (parent, name),
            |_inj, reply| {
                let pfd = inode_fd!(reply, parent);
                match unlinkat(pfd.as_fd(), &*name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(e)),
                }
            }
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        run!(
            sh,
            Method::Rmdir,
            path,
            reply,
            (parent, name),
            |_inj, reply| {
                let pfd = inode_fd!(reply, parent);
                match unlinkat(pfd.as_fd(), &*name, UnlinkatFlags::RemoveDir) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(errno(e)),
                }
            }
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(link_name));
        let (uid, gid) = (req.uid(), req.gid());
        run!(
            sh,
            Method::Symlink,
            path,
            reply,
            (parent, link_name, target, path),
            |inj, reply| {
                let pfd = inode_fd!(reply, parent);
                if let Err(e) = symlinkat(&*target, pfd.as_fd(), &*link_name) {
                    return reply.error(errno(e));
                }
                if let Err(e) = sh.chown_child(uid, gid, &parent, &link_name) {
                    return reply.error(e);
                }
                sh.reply_new_entry(&parent, &link_name, path.as_deref(), &inj, reply)
            }
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let newparent = tri!(reply, sh.inode(newparent));
        let path = sh.rule_path(|| parent.child_path(name));
        let bits = flags.bits();
        run!(
            sh,
            Method::Rename,
            path,
            reply,
            (parent, name, newparent, newname),
            |_inj, reply| sh.do_rename(&parent, &name, &newparent, &newname, bits, reply)
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let newparent = tri!(reply, sh.inode(newparent));
        let path = sh.rule_path(|| newparent.child_path(newname));
        run!(
            sh,
            Method::Link,
            path,
            reply,
            (inode, newparent, newname, path),
            |inj, reply| {
                let ifd = inode_fd!(reply, inode);
                let pfd = inode_fd!(reply, newparent);
                if let Err(e) = linkat(
                    ifd.as_fd(),
                    "",
                    pfd.as_fd(),
                    &*newname,
                    AtFlags::AT_EMPTY_PATH,
                ) {
                    return reply.error(errno(e));
                }
                sh.reply_new_entry(&newparent, &newname, path.as_deref(), &inj, reply)
            }
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        let flags = flags.0;
        let caller = req.uid();
        run!(
            sh,
            Method::Open,
            path,
            reply,
            (inode, path),
            |inj, reply| sh.do_open(caller, &inode, flags, path.as_deref(), &inj, reply)
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Read, path, reply, (), |inj, reply| {
            sh.do_read(fh, offset, size, &inj, reply)
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        run!(sh, Method::Write, path, reply, (data), |inj, reply| {
            sh.do_write(fh, offset, &data, kill, &inj, reply)
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Flush, path, reply, (), |_inj, reply| {
            // Like close(2) on the original, for filesystems that report errors there.
            match sh.file(fh) {
                Ok(h) => {
                    if let Handle::File(f) = &*h {
                        drop(nix::unistd::dup(f.fd.as_fd()));
                    }
                    reply.ok()
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        // Release first: an injected error must not leak the descriptor.
        sh.release_file(fh);
        run!(sh, Method::Release, path, reply, (), |_inj, reply| reply
            .ok());
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Fsync, path, reply, (), |_inj, reply| {
            let h = match sh.file(fh) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
            };
            let Handle::File(f) = &*h else {
                return reply.error(Errno::EBADF);
            };
            let r = if datasync {
                fdatasync(f.fd.as_fd())
            } else {
                fsync(f.fd.as_fd())
            };
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(sh, Method::Opendir, path, reply, (inode), |_inj, reply| {
            match sh.open_inode(&inode, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Ok(fd) => {
                    let fh = sh.handles.insert(Handle::Dir(DirHandle {
                        inode: inode.clone(),
                        stream: parking_lot::Mutex::new(DirStream::new(fd)),
                    }));
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Readdir, path, reply, (), |_inj, reply| sh
            .do_readdir(fh, offset, reply));
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Readdir, path, reply, (), |_inj, reply| sh
            .do_readdirplus(fh, offset, reply));
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        sh.handles.remove(fh);
        run!(sh, Method::Releasedir, path, reply, (), |_inj, reply| reply
            .ok());
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Fsyncdir, path, reply, (), |_inj, reply| {
            let h = match sh.dir(fh) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
            };
            let Handle::Dir(d) = &*h else {
                return reply.error(Errno::EBADF);
            };
            let stream = d.stream.lock();
            let r = if datasync {
                fdatasync(stream.fd().as_fd())
            } else {
                fsync(stream.fd().as_fd())
            };
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(sh, Method::Statfs, path, reply, (inode), |_inj, reply| {
            let ifd = match inode.fd() {
                Ok(fd) => fd,
                Err(e) => return reply.error(e.into()),
            };
            match nix::sys::statvfs::fstatvfs(ifd.as_fd()) {
                Ok(st) => reply.statfs(
                    st.blocks(),
                    st.blocks_free(),
                    st.blocks_available(),
                    st.files(),
                    st.files_free(),
                    u32::try_from(st.block_size()).unwrap_or(4096),
                    u32::try_from(st.name_max()).unwrap_or(255),
                    u32::try_from(st.fragment_size()).unwrap_or(4096),
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            Method::Setxattr,
            path,
            reply,
            (inode, name, value),
            |_inj, reply| {
                if inode.kind == FileType::Symlink {
                    return reply.error(Errno::EPERM);
                }
                let Ok(cname) = CString::new(name.as_bytes()) else {
                    return reply.error(Errno::EINVAL);
                };
                let ifd = inode_fd!(reply, inode);
                match setxattr(&sh.proc_path(&ifd), &cname, &value, flags) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e.into()),
                }
            }
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            Method::Getxattr,
            path,
            reply,
            (inode, name),
            |_inj, reply| sh.do_getxattr(&inode, &name, size, reply)
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            Method::Listxattr,
            path,
            reply,
            (inode),
            |_inj, reply| sh.do_listxattr(&inode, size, reply)
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            Method::Removexattr,
            path,
            reply,
            (inode, name),
            |_inj, reply| {
                if inode.kind == FileType::Symlink {
                    return reply.error(Errno::EPERM);
                }
                let Ok(cname) = CString::new(name.as_bytes()) else {
                    return reply.error(Errno::EINVAL);
                };
                let ifd = inode_fd!(reply, inode);
                match removexattr(&sh.proc_path(&ifd), &cname) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e.into()),
                }
            }
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks access itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        let ids = (req.uid(), req.gid());
        run!(
            sh,
            Method::Create,
            path,
            reply,
            (parent, name, path),
            |inj, reply| {
                sh.do_create(
                    ids,
                    &parent,
                    &name,
                    mode,
                    flags,
                    path.as_deref(),
                    &inj,
                    reply,
                )
            }
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Fallocate, path, reply, (), |_inj, reply| {
            let h = match sh.file(fh) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
            };
            let Handle::File(f) = &*h else {
                return reply.error(Errno::EBADF);
            };
            let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
                return reply.error(Errno::EINVAL);
            };
            match nix::fcntl::fallocate(
                f.fd.as_fd(),
                FallocateFlags::from_bits_retain(mode),
                offset,
                length,
            ) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, Method::Lseek, path, reply, (), |_inj, reply| {
            let h = match sh.file(fh) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
            };
            let Handle::File(f) = &*h else {
                return reply.error(Errno::EBADF);
            };
            let whence = match whence {
                libc::SEEK_SET => Whence::SeekSet,
                libc::SEEK_CUR => Whence::SeekCur,
                libc::SEEK_END => Whence::SeekEnd,
                libc::SEEK_DATA => Whence::SeekData,
                libc::SEEK_HOLE => Whence::SeekHole,
                _ => return reply.error(Errno::EINVAL),
            };
            match lseek(f.fd.as_fd(), offset, whence) {
                Ok(o) => reply.offset(o),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let sh = &self.shared;
        let (fh_in, fh_out) = (fh_in.0, fh_out.0);
        let path = sh.handle_path(fh_out);
        run!(sh, Method::CopyFileRange, path, reply, (), |_inj, reply| {
            let (hi, ho) = match (sh.file(fh_in), sh.file(fh_out)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return reply.error(e),
            };
            let (Handle::File(fi), Handle::File(fo)) = (&*hi, &*ho) else {
                return reply.error(Errno::EBADF);
            };
            let (Ok(mut off_in), Ok(mut off_out)) =
                (i64::try_from(offset_in), i64::try_from(offset_out))
            else {
                return reply.error(Errno::EINVAL);
            };
            let len = usize::try_from(len.min(u64::from(u32::MAX) & !0xfff)).unwrap_or(usize::MAX);
            match nix::fcntl::copy_file_range(
                fi.fd.as_fd(),
                Some(&mut off_in),
                fo.fd.as_fd(),
                Some(&mut off_out),
                len,
            ) {
                Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}

impl Shared {
    /// The rule path of an open handle (`None` when there are no rules).
    fn handle_path(&self, fh: u64) -> Option<PathBuf> {
        if self.rules.is_empty() {
            return None;
        }
        self.handles.get(fh).map(|h| match &*h {
            Handle::File(f) => f.inode.path(),
            Handle::Dir(d) => d.inode.path(),
        })
    }

    fn do_rename(
        &self,
        parent: &Arc<Inode>,
        name: &OsStr,
        newparent: &Arc<Inode>,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let flags = nix::fcntl::RenameFlags::from_bits_retain(flags);
        let from = inode_fd!(reply, parent);
        let to = inode_fd!(reply, newparent);
        if let Err(e) = nix::fcntl::renameat2(from.as_fd(), name, to.as_fd(), newname, flags) {
            return reply.error(errno(e));
        }
        // Keep rule paths right: the moved inode (and, for an exchange, the other one).
        self.relink_at(newparent, newname);
        if flags.contains(nix::fcntl::RenameFlags::RENAME_EXCHANGE) {
            self.relink_at(parent, name);
        }
        reply.ok();
    }

    fn relink_at(&self, parent: &Arc<Inode>, name: &OsStr) {
        if let Ok(pfd) = parent.fd()
            && let Ok(st) = nix::sys::stat::fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            && let Some(inode) = self.find(key_of(&st))
        {
            inode.relink(parent, name);
        }
    }
}
