//! The FUSE operations: each asks the rules (only when there are any), then does the real
//! thing on the original (see the sibling modules for the work itself).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use nix::fcntl::{AtFlags, FallocateFlags, OFlag};
use nix::sys::stat::{SFlag, mkdirat, mknodat};
use nix::unistd::{UnlinkatFlags, Whence, fdatasync, fsync, linkat, lseek, symlinkat, unlinkat};

use super::handle::{DirHandle, DirStream, Handle};
use super::macros::{reply_type, resume_with};
use super::meta::is_acl_name;
use super::umask::with_caller_umask;
use super::{Injection, Method, PassthroughFs, Shared, errno};
use crate::sys::{removexattr, setxattr};

/// Largest write request we accept (see `init`).
const MAX_WRITE: u32 = 1 << 20;

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
            // Creates come unmasked with the caller's umask beside them: the original's
            // filesystem applies it, or a default ACL instead (see `umask`).
            F::FUSE_DONT_MASK,
            // The kernel then says when setting an access ACL must clear set-group-ID (the
            // daemon sets ACLs as root, which never clears it; see `kill_sgid_after_acl`).
            F::FUSE_SETXATTR_EXT,
        ] {
            if let Err(missing) = config.add_capabilities(flag) {
                tracing::debug!(?missing, "kernel lacks a FUSE capability");
            }
        }
        // The kernel sends at most max_pages (256 by default: 1 MiB) per write anyway; a
        // larger max_write would only make every io_uring entry's buffer that large.
        let _ = config.set_max_write(MAX_WRITE);
        // With default_permissions the kernel then checks access against the
        // system.posix_acl_access we serve, not the mode bits alone.
        if let Err(missing) = config.add_capabilities(F::FUSE_POSIX_ACL) {
            tracing::warn!(
                ?missing,
                "kernel lacks FUSE_POSIX_ACL; access checks use mode bits only"
            );
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let sh = &self.shared;
        if sh.opts.file_io == super::FileIo::Passthrough {
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

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        run!(
            sh,
            req,
            Method::Lookup,
            path,
            reply,
            (parent, name, path),
            |inj, reply| sh.do_lookup(&parent, &name, path.as_deref(), &inj, reply)
        );
    }

    fn interrupt(&self, _req: &Request, unique: fuser::RequestId) {
        self.shared.interrupt(unique.0);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            req,
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
            req,
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

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            req,
            Method::Readlink,
            path,
            reply,
            (inode),
            |_inj, reply| {
                let ifd = match inode.fd() {
                    Ok(fd) => fd,
                    Err(e) => return reply.error(e.into()),
                };
                match nix::fcntl::readlinkat(ifd.as_fd(), "") {
                    Ok(target) => reply.data(target.as_bytes()),
                    Err(e) => reply.error(errno(e)),
                }
            }
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        let (uid, gid) = (req.uid(), req.gid());
        run!(
            sh,
            req,
            Method::Mknod,
            path,
            reply,
            (parent, name, path),
            |inj, reply| {
                let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
                let pfd = inode_fd!(reply, parent);
                let made = with_caller_umask(mode, umask, |perm| {
                    mknodat(pfd.as_fd(), &*name, kind, perm, libc::dev_t::from(rdev))
                });
                if let Err(e) = made {
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
        umask: u32,
        reply: ReplyEntry,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        let (uid, gid) = (req.uid(), req.gid());
        run!(
            sh,
            req,
            Method::Mkdir,
            path,
            reply,
            (parent, name, path),
            |inj, reply| {
                let pfd = inode_fd!(reply, parent);
                let made =
                    with_caller_umask(mode, umask, |perm| mkdirat(pfd.as_fd(), &*name, perm));
                if let Err(e) = made {
                    return reply.error(errno(e));
                }
                if let Err(e) = sh.chown_child(uid, gid, &parent, &name) {
                    return reply.error(e);
                }
                sh.reply_new_entry(&parent, &name, path.as_deref(), &inj, reply)
            }
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        run!(
            sh,
            req,
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

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        run!(
            sh,
            req,
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
            req,
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
        req: &Request,
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
            req,
            Method::Rename,
            path,
            reply,
            (parent, name, newparent, newname),
            |_inj, reply| sh.do_rename(&parent, &name, &newparent, &newname, bits, reply)
        );
    }

    fn link(
        &self,
        req: &Request,
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
            req,
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
            req,
            Method::Open,
            path,
            reply,
            (inode, path),
            |inj, reply| sh.do_open(caller, &inode, flags, path.as_deref(), &inj, reply)
        );
    }

    fn read(
        &self,
        req: &Request,
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
        run!(sh, req, Method::Read, path, reply, (), |inj, reply| {
            sh.do_read(fh, offset, size, &inj, reply)
        });
    }

    fn write(
        &self,
        req: &Request,
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
        run!(sh, req, Method::Write, path, reply, (data), |inj, reply| {
            sh.do_write(fh, offset, &data, kill, &inj, reply)
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, req, Method::Flush, path, reply, (), |_inj, reply| {
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
        req: &Request,
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
        run!(sh, req, Method::Release, path, reply, (), |_inj, reply| {
            reply.ok()
        });
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, req, Method::Fsync, path, reply, (), |_inj, reply| {
            let h = match sh.file(fh) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
            };
            if !matches!(&*h, Handle::File(_)) {
                return reply.error(Errno::EBADF);
            }
            sh.offload(move || {
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
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            req,
            Method::Opendir,
            path,
            reply,
            (inode),
            |_inj, reply| {
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
            }
        );
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, req, Method::Readdir, path, reply, (), |_inj, reply| sh
            .do_readdir(fh, offset, reply));
    }

    fn readdirplus(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, req, Method::Readdir, path, reply, (), |_inj, reply| sh
            .do_readdirplus(fh, offset, reply));
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        sh.handles.remove(fh);
        run!(
            sh,
            req,
            Method::Releasedir,
            path,
            reply,
            (),
            |_inj, reply| reply.ok()
        );
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, req, Method::Fsyncdir, path, reply, (), |_inj, reply| {
            let h = match sh.dir(fh) {
                Ok(h) => h,
                Err(e) => return reply.error(e),
            };
            if !matches!(&*h, Handle::Dir(_)) {
                return reply.error(Errno::EBADF);
            }
            sh.offload(move || {
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
        });
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            req,
            Method::Statfs,
            path,
            reply,
            (inode),
            |_inj, reply| {
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
            }
        );
    }

    fn setxattr_ext(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        setxattr_flags: u32,
        reply: ReplyEmpty,
    ) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            req,
            Method::Setxattr,
            path,
            reply,
            (inode, name, value),
            |_inj, reply| {
                let Ok(cname) = CString::new(name.as_bytes()) else {
                    return reply.error(Errno::EINVAL);
                };
                let ifd = inode_fd!(reply, inode);
                if let Err(e) = setxattr(&sh.proc_path(&ifd), &cname, &value, flags) {
                    return reply.error(e.into());
                }
                if setxattr_flags & fuser::consts::FUSE_SETXATTR_ACL_KILL_SGID != 0
                    && name.as_bytes() == b"system.posix_acl_access"
                    && let Err(e) = sh.kill_sgid_after_acl(&ifd)
                {
                    return reply.error(e);
                }
                reply.ok()
            }
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        // Rules leave ACL reads alone: the kernel makes them for its own permission checks
        // (see `is_acl_name`).
        let path = if is_acl_name(name) {
            None
        } else {
            sh.rule_path(|| inode.path())
        };
        run!(
            sh,
            req,
            Method::Getxattr,
            path,
            reply,
            (inode, name),
            |_inj, reply| sh.do_getxattr(&inode, &name, size, reply)
        );
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            req,
            Method::Listxattr,
            path,
            reply,
            (inode),
            |_inj, reply| sh.do_listxattr(&inode, size, reply)
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let sh = &self.shared;
        let inode = tri!(reply, sh.inode(ino));
        let path = sh.rule_path(|| inode.path());
        run!(
            sh,
            req,
            Method::Removexattr,
            path,
            reply,
            (inode, name),
            |_inj, reply| {
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
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let sh = &self.shared;
        let parent = tri!(reply, sh.inode(parent));
        let path = sh.rule_path(|| parent.child_path(name));
        let ids = (req.uid(), req.gid());
        run!(
            sh,
            req,
            Method::Create,
            path,
            reply,
            (parent, name, path),
            |inj, reply| {
                sh.do_create(
                    ids,
                    &parent,
                    &name,
                    (mode, umask),
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
        req: &Request,
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
        run!(
            sh,
            req,
            Method::Fallocate,
            path,
            reply,
            (),
            |_inj, reply| {
                let h = match sh.file(fh) {
                    Ok(h) => h,
                    Err(e) => return reply.error(e),
                };
                let Handle::File(f) = &*h else {
                    return reply.error(Errno::EBADF);
                };
                let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length))
                else {
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
            }
        );
    }

    fn lseek(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let sh = &self.shared;
        let fh = fh.0;
        let path = sh.handle_path(fh);
        run!(sh, req, Method::Lseek, path, reply, (), |_inj, reply| {
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
        req: &Request,
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
        run!(
            sh,
            req,
            Method::CopyFileRange,
            path,
            reply,
            (),
            |_inj, reply| {
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
                let len =
                    usize::try_from(len.min(u64::from(u32::MAX) & !0xfff)).unwrap_or(usize::MAX);
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
            }
        );
    }
}
