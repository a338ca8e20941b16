//! The crate's only `unsafe` code: thin wrappers over syscalls that neither `std` nor `nix`
//! expose (openat2, the new mount API, getdents64, xattrs, rlimits, statx). Each wrapper checks its
//! arguments' lifetimes and returns owned results; callers never touch raw pointers.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = cvt(ret)?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The device (`major`, `minor`) of the filesystem `fd` is on, from `statx(2)` with
/// `AT_STATX_DONT_SYNC`: a FUSE filesystem answers from the kernel's cache, without a request
/// to its server (which may be ours, with a latency rule in force).
pub fn device_of(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the path is a valid empty NUL-terminated string, and `stx` points to a statx
    // buffer of the right size that outlives the call.
    let ret = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            0,
            stx.as_mut_ptr(),
        )
    };
    cvt_int(ret)?;
    // SAFETY: the kernel filled the buffer (zeroed before, so every field is initialised).
    let stx = unsafe { stx.assume_init() };
    Ok((stx.stx_dev_major, stx.stx_dev_minor))
}

/// `openat2(2)` with the given `RESOLVE_*` flags; `O_CLOEXEC` is always added.
pub fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    /// `struct open_how` (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `how` a valid open_how that both
    // outlive the call; the size argument is the size of that struct.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned_fd(ret)
}

/// `fsopen(2)`: a filesystem context for `fstype`, close-on-exec.
pub fn fsopen(fstype: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `fstype` is a valid NUL-terminated string for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) };
    owned_fd(ret)
}

/// `fsconfig(FSCONFIG_SET_STRING)`.
pub fn fsconfig_string(ctx: BorrowedFd<'_>, key: &CStr, value: &CStr) -> io::Result<()> {
    // SAFETY: key and value are valid NUL-terminated strings for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    cvt(ret).map(drop)
}

/// `fsconfig(FSCONFIG_SET_FLAG)`.
pub fn fsconfig_flag(ctx: BorrowedFd<'_>, key: &CStr) -> io::Result<()> {
    // SAFETY: key is a valid NUL-terminated string; value must be NULL for flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_SET_FLAG,
            key.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    cvt(ret).map(drop)
}

/// `fsconfig(FSCONFIG_CMD_CREATE)`: create the superblock.
pub fn fsconfig_create(ctx: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no pointers are passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    cvt(ret).map(drop)
}

/// `fsmount(2)`: a detached mount of the created superblock with `MOUNT_ATTR_*` flags.
pub fn fsmount(ctx: BorrowedFd<'_>, attr_flags: u64) -> io::Result<OwnedFd> {
    // SAFETY: no pointers are passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attr_flags as libc::c_uint,
        )
    };
    owned_fd(ret)
}

/// `move_mount(2)` of the detached mount `from` onto the directory `onto` (both by fd, no
/// path is resolved).
pub fn move_mount_onto(from: BorrowedFd<'_>, onto: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: both paths are the static empty string; the fds are valid for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            onto.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    cvt(ret).map(drop)
}

/// `chroot(".")`, used after `fchdir` to take a thread's root from a directory fd.
pub fn chroot_cwd() -> io::Result<()> {
    // SAFETY: the path is a static NUL-terminated string.
    cvt_int(unsafe { libc::chroot(c".".as_ptr()) }).map(drop)
}

/// `getdents64(2)` into `buf`; returns the number of bytes filled (0 at end of directory).
/// Parse the result with [`DirentIter`].
pub fn getdents64(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow mutably.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    cvt(ret).map(|n| n as usize)
}

/// One entry of a `getdents64` buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirent<'a> {
    pub ino: u64,
    /// Length of this record in the buffer.
    pub reclen: usize,
    /// Opaque position of the *next* entry (what `lseek` accepts).
    pub next_offset: i64,
    /// `DT_*` type.
    pub kind: u8,
    pub name: &'a OsStr,
}

/// Iterates the records of a buffer filled by [`getdents64`]; safe code, bounds-checked.
pub struct DirentIter<'a> {
    buf: &'a [u8],
}

impl<'a> DirentIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for DirentIter<'a> {
    type Item = Dirent<'a>;

    fn next(&mut self) -> Option<Dirent<'a>> {
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        const HEADER: usize = 19;
        if self.buf.len() < HEADER {
            return None;
        }
        let ino = u64::from_ne_bytes(self.buf[0..8].try_into().ok()?);
        let next_offset = i64::from_ne_bytes(self.buf[8..16].try_into().ok()?);
        let reclen = usize::from(u16::from_ne_bytes(self.buf[16..18].try_into().ok()?));
        let kind = self.buf[18];
        if reclen < HEADER || reclen > self.buf.len() {
            return None;
        }
        let raw_name = &self.buf[HEADER..reclen];
        let len = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw_name.len());
        let name = OsStr::from_bytes(&raw_name[..len]);
        self.buf = &self.buf[reclen..];
        Some(Dirent {
            ino,
            reclen,
            next_offset,
            kind,
            name,
        })
    }
}

/// `getxattr(2)` on a path (follows symlinks: used with `/proc/self/fd/N`, which reaches the
/// descriptor's own file, a symlink included). An empty `buf` asks for the size.
pub fn getxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: path and name are NUL-terminated; the kernel writes at most buf.len() bytes
    // (a zero length with a dangling-but-unused pointer is the size query).
    let ret = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    cvt(ret as libc::c_long).map(|n| n as usize)
}

/// `listxattr(2)` on a path; an empty `buf` asks for the size.
pub fn listxattr(path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: as for getxattr.
    let ret = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    cvt(ret as libc::c_long).map(|n| n as usize)
}

/// `setxattr(2)` on a path.
pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: path and name are NUL-terminated; the kernel reads value.len() bytes of value.
    let ret = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    cvt_int(ret).map(drop)
}

/// `removexattr(2)` on a path.
pub fn removexattr(path: &CStr, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated for the duration of the call.
    cvt_int(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit: the filesystem holds one `O_PATH`
/// descriptor per inode the kernel remembers. Returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    cvt_int(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit.
        cvt_int(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

/// Schedule thread `tid` (a kernel thread id) as `SCHED_FIFO` at the lowest real-time
/// priority: when woken it preempts every normal task on its CPU at once.
pub fn set_fifo_scheduling(tid: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param; an unknown tid is refused with ESRCH.
    cvt_int(unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) }).map(drop)
}

/// A kernel file handle (`name_to_handle_at`): names a file without holding it open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHandle {
    handle_type: i32,
    bytes: Box<[u8]>,
}

/// `struct file_handle` with room for the largest handle (`MAX_HANDLE_SZ`).
#[repr(C)]
struct RawFileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

/// The file handle of the file `fd` is open on (an `O_PATH` descriptor is enough).
pub fn name_to_handle(fd: BorrowedFd<'_>) -> io::Result<FileHandle> {
    let mut raw = RawFileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a valid file_handle with handle_bytes set to the size of its buffer;
    // the path is a static empty string (AT_EMPTY_PATH: the file of `fd` itself).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut raw as *mut RawFileHandle,
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    cvt(ret)?;
    let len = (raw.handle_bytes as usize).min(raw.f_handle.len());
    Ok(FileHandle {
        handle_type: raw.handle_type,
        bytes: raw.f_handle[..len].into(),
    })
}

/// Open the file named by `handle` on the filesystem of `mount` (needs
/// CAP_DAC_READ_SEARCH); `O_CLOEXEC` is always added.
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle: &FileHandle,
    flags: i32,
) -> io::Result<OwnedFd> {
    let mut raw = RawFileHandle {
        handle_bytes: handle.bytes.len() as u32,
        handle_type: handle.handle_type,
        f_handle: [0; 128],
    };
    raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `raw` is a valid file_handle whose handle_bytes match the bytes copied in.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &mut raw as *mut RawFileHandle,
            flags | libc::O_CLOEXEC,
        )
    };
    owned_fd(ret)
}

/// The soft `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    cvt_int(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok(lim.rlim_cur)
}

/// Take ownership of descriptor `fd`, inherited from the process that started us (the
/// control socket). Fails if it is not open.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if not open.
    cvt_int(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the descriptor is open, was handed to us for this purpose, and nothing else in
    // this process refers to it, so this is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A heap buffer whose start is aligned for `O_DIRECT` IO.
pub struct AlignedBuf {
    storage: Vec<u8>,
}

impl AlignedBuf {
    pub const ALIGN: usize = 4096;

    pub fn new() -> Self {
        Self {
            storage: Vec::new(),
        }
    }

    /// A zero-initialised, aligned slice of `len` bytes (reusing the allocation when it fits).
    pub fn slice_mut(&mut self, len: usize) -> &mut [u8] {
        if self.storage.len() < len + Self::ALIGN {
            self.storage = vec![0; len + Self::ALIGN];
        }
        let addr = self.storage.as_ptr() as usize;
        let offset = (Self::ALIGN - addr % Self::ALIGN) % Self::ALIGN;
        &mut self.storage[offset..offset + len]
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn dirent_iter_parses_records_and_stops_on_garbage() {
        let mut buf = Vec::new();
        for (ino, off, name) in [(11u64, 1i64, "a"), (12, 2, "long-name.txt")] {
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            let start = buf.len();
            buf.extend_from_slice(&ino.to_ne_bytes());
            buf.extend_from_slice(&off.to_ne_bytes());
            buf.extend_from_slice(&(reclen as u16).to_ne_bytes());
            buf.push(libc::DT_REG);
            buf.extend_from_slice(name.as_bytes());
            buf.resize(start + reclen, 0);
        }
        buf.extend_from_slice(&[1, 2, 3]);
        let entries: Vec<_> = DirentIter::new(&buf).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "a");
        assert_eq!(entries[1].ino, 12);
        assert_eq!(entries[1].next_offset, 2);
        assert_eq!(entries[1].name, "long-name.txt");
    }

    #[test]
    fn file_handles_reopen_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let mount = std::fs::File::open(dir.path()).expect("open dir");
        let handle = match name_to_handle(file.as_fd()) {
            Ok(h) => h,
            Err(e) => return eprintln!("no file handles here: {e}"),
        };
        match open_by_handle(mount.as_fd(), &handle, libc::O_RDONLY) {
            Ok(fd) => {
                let a = nix::sys::stat::fstat(fd.as_fd()).expect("fstat");
                let b = nix::sys::stat::fstat(file.as_fd()).expect("fstat");
                assert_eq!(a.st_ino, b.st_ino);
            }
            // Without CAP_DAC_READ_SEARCH.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
        }
    }

    #[test]
    fn aligned_buf_is_aligned() {
        let mut b = AlignedBuf::new();
        for len in [1, 4096, 100_000] {
            let s = b.slice_mut(len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr() as usize % AlignedBuf::ALIGN, 0);
        }
    }
}
