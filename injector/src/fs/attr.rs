//! Conversions between the original's `stat` and FUSE attributes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use nix::sys::stat::FileStat;

use super::inode::InodeKey;
use crate::fault_rules::{AttrOverride, FileAttrs, FileKind};

/// The file type encoded in `st_mode`.
pub fn kind_of_mode(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The file type of a `getdents64` `d_type` (`DT_UNKNOWN` reads as a regular file; the
/// kernel only uses it as a hint).
pub fn kind_of_dtype(d_type: u8) -> FileType {
    match d_type {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

pub fn key_of(st: &FileStat) -> InodeKey {
    InodeKey {
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0);
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec.unsigned_abs(), nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::new(0, nsec)
    }
}

/// FUSE attributes of the original `st`, under node id `nodeid` (in entry replies the
/// attribute's inode number is the node id).
pub fn to_attr(st: &FileStat, nodeid: u64) -> FileAttr {
    let mtime = time(st.st_mtime, st.st_mtime_nsec);
    FileAttr {
        ino: INodeNo(nodeid),
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime,
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: mtime,
        kind: kind_of_mode(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        // FUSE carries the kernel's 32-bit encoding; it agrees with glibc's for majors < 4096.
        rdev: st.st_rdev as u32,
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
        flags: 0,
    }
}

fn to_kind(kind: FileType) -> FileKind {
    match kind {
        FileType::NamedPipe => FileKind::NamedPipe,
        FileType::CharDevice => FileKind::CharDevice,
        FileType::BlockDevice => FileKind::BlockDevice,
        FileType::Directory => FileKind::Directory,
        FileType::RegularFile => FileKind::RegularFile,
        FileType::Symlink => FileKind::Symlink,
        FileType::Socket => FileKind::Socket,
    }
}

fn from_kind(kind: FileKind) -> FileType {
    match kind {
        FileKind::NamedPipe => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Directory => FileType::Directory,
        FileKind::RegularFile => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Socket => FileType::Socket,
    }
}

/// Apply an `attrOverride` to a reply's attributes. `keep_ino` leaves the inode number
/// alone: in entry replies it is also the kernel's node id, which must stay ours.
pub fn apply_override(o: &AttrOverride, attr: &mut FileAttr, keep_ino: bool) {
    let mut a = FileAttrs {
        ino: attr.ino.0,
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        kind: to_kind(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
    };
    o.apply(&mut a);
    if !keep_ino {
        attr.ino = INodeNo(a.ino);
    }
    attr.size = a.size;
    attr.blocks = a.blocks;
    attr.atime = a.atime;
    attr.mtime = a.mtime;
    attr.ctime = a.ctime;
    attr.kind = from_kind(a.kind);
    attr.perm = a.perm;
    attr.nlink = a.nlink;
    attr.uid = a.uid;
    attr.gid = a.gid;
    attr.rdev = a.rdev;
}

/// Attributes for the `.` and `..` entries of readdirplus, which the kernel ignores.
pub fn dot_attr(nodeid: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(nodeid),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_the_epoch_survive() {
        assert_eq!(time(0, 5), UNIX_EPOCH + Duration::from_nanos(5));
        assert_eq!(
            time(-2, 500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
    }

    #[test]
    fn stat_of_a_real_file_converts() {
        let st = nix::sys::stat::stat("/").expect("stat /");
        let a = to_attr(&st, 1);
        assert_eq!(a.kind, FileType::Directory);
        assert_eq!(a.ino, INodeNo(1));
        assert_eq!(u32::from(a.perm), st.st_mode & 0o7777);
        assert_eq!(kind_of_mode(libc::S_IFLNK | 0o777), FileType::Symlink);
        assert_eq!(kind_of_dtype(libc::DT_DIR), FileType::Directory);
    }

    #[test]
    fn overrides_keep_the_node_id_in_entries() {
        let st = nix::sys::stat::stat("/").expect("stat /");
        let mut a = to_attr(&st, 42);
        let o = AttrOverride {
            ino: Some(7),
            perm: Some(0o600),
            kind: Some(FileKind::RegularFile),
            ..AttrOverride::default()
        };
        apply_override(&o, &mut a, true);
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!(a.perm, 0o600);
        assert_eq!(a.kind, FileType::RegularFile);
        apply_override(&o, &mut a, false);
        assert_eq!(a.ino, INodeNo(7));
    }
}
