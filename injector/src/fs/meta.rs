//! Attributes and extended attributes of the original, with overrides applied.

use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

use fuser::{Errno, FileType, INodeNo, ReplyAttr, ReplyXattr, TimeOrNow};
use nix::errno::Errno as NixErrno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags, fchmod, fchmodat, futimens, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, ftruncate};

use super::attr::{apply_override, to_attr};
use super::handle::Handle;
use super::inode::Inode;
use super::{FdName, Injection, Shared, errno};
use crate::sys::{getxattr, listxattr};

/// The POSIX ACL xattrs. With `FUSE_POSIX_ACL` every read of them comes from the kernel's
/// ACL layer: for `getfacl`, and for its own permission checks (an open, exec or path walk by
/// anyone but the owner, whenever the ACL is not cached). A fault on those reads would fail
/// such unrelated calls, now and then, depending on what the kernel has cached.
pub(super) fn is_acl_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

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

impl Shared {
    /// After an access ACL was set for a caller who is neither in the file's group nor
    /// privileged (the kernel says so with `FUSE_SETXATTR_ACL_KILL_SGID`), clear
    /// set-group-ID as a native setfacl by that caller would: the daemon set the ACL as root,
    /// which keeps it.
    pub(super) fn kill_sgid_after_acl(
        &self,
        ifd: &(impl AsFd + std::os::fd::AsRawFd),
    ) -> Result<(), Errno> {
        let st = nix::sys::stat::fstat(ifd.as_fd()).map_err(errno)?;
        if st.st_mode & libc::S_ISGID == 0 {
            return Ok(());
        }
        fchmodat(
            self.proc_fd.as_fd(),
            FdName::of(ifd).as_bytes(),
            Mode::from_bits_truncate((st.st_mode & 0o7777) & !libc::S_ISGID),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(errno)
    }

    /// `/proc/self/fd/N` of an inode, for the path-only xattr calls. The kernel resolves
    /// this magic link to the very file the descriptor is open on and stops there, even if
    /// it is a symlink: `getxattr` on it acts on a symlink itself as `lgetxattr` does.
    /// (`getxattrat` and friends, Linux 6.13, would need a non-`O_PATH` descriptor: an
    /// `O_PATH` one with `AT_EMPTY_PATH` gets EBADF, at least up to 6.18.)
    pub(super) fn proc_path(&self, fd: &impl std::os::fd::AsRawFd) -> CString {
        let name = FdName::of(fd);
        let mut p = b"/proc/self/fd/".to_vec();
        p.extend_from_slice(name.as_bytes());
        // Digits only: no interior NUL.
        CString::new(p).unwrap_or_default()
    }

    pub(super) fn do_getattr(
        &self,
        inode: &Inode,
        path: Option<&Path>,
        inj: &Injection,
        reply: ReplyAttr,
    ) {
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
    pub(super) fn do_setattr(
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

    pub(super) fn do_getxattr(&self, inode: &Inode, name: &OsStr, size: u32, reply: ReplyXattr) {
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

    pub(super) fn do_listxattr(&self, inode: &Inode, size: u32, reply: ReplyXattr) {
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
