//! Attribute overrides (`attrOverride` actions) and the plain attribute struct they apply to.
//!
//! The filesystem converts its own attribute type (fuser's `FileAttr`) to [`FileAttrs`] and
//! back, so this module stays independent of the FUSE library.

use std::time::SystemTime;

use serde::Serialize;

/// The type of a file, with Chaos Mesh's names (`regularFile`, `directory`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    NamedPipe,
    CharDevice,
    BlockDevice,
    Directory,
    RegularFile,
    Symlink,
    Socket,
}

impl FileKind {
    pub const ALL: [FileKind; 7] = [
        FileKind::NamedPipe,
        FileKind::CharDevice,
        FileKind::BlockDevice,
        FileKind::Directory,
        FileKind::RegularFile,
        FileKind::Symlink,
        FileKind::Socket,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            FileKind::NamedPipe => "namedPipe",
            FileKind::CharDevice => "charDevice",
            FileKind::BlockDevice => "blockDevice",
            FileKind::Directory => "directory",
            FileKind::RegularFile => "regularFile",
            FileKind::Symlink => "symlink",
            FileKind::Socket => "socket",
        }
    }

    /// Parses a Chaos Mesh file type name, ignoring ASCII case.
    pub fn parse(name: &str) -> Option<FileKind> {
        FileKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

/// The attributes an override can change: the fields of Chaos Mesh's `AttrOverrideSpec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttrs {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
}

/// Replacement values for some attributes; `None` leaves the real value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttrOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub atime: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctime: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perm: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u32>,
}

impl AttrOverride {
    /// True when the override changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == AttrOverride::default()
    }

    /// Writes every overridden field into `attrs`.
    pub fn apply(&self, attrs: &mut FileAttrs) {
        fn set<T: Copy>(target: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *target = value;
            }
        }
        set(&mut attrs.ino, self.ino);
        set(&mut attrs.size, self.size);
        set(&mut attrs.blocks, self.blocks);
        set(&mut attrs.atime, self.atime);
        set(&mut attrs.mtime, self.mtime);
        set(&mut attrs.ctime, self.ctime);
        set(&mut attrs.kind, self.kind);
        set(&mut attrs.perm, self.perm);
        set(&mut attrs.nlink, self.nlink);
        set(&mut attrs.uid, self.uid);
        set(&mut attrs.gid, self.gid);
        set(&mut attrs.rdev, self.rdev);
    }

    /// Combines two overrides that both fire on one operation: `later` wins field by field,
    /// as if the two were applied in rule order.
    pub fn then(self, later: AttrOverride) -> AttrOverride {
        AttrOverride {
            ino: later.ino.or(self.ino),
            size: later.size.or(self.size),
            blocks: later.blocks.or(self.blocks),
            atime: later.atime.or(self.atime),
            mtime: later.mtime.or(self.mtime),
            ctime: later.ctime.or(self.ctime),
            kind: later.kind.or(self.kind),
            perm: later.perm.or(self.perm),
            nlink: later.nlink.or(self.nlink),
            uid: later.uid.or(self.uid),
            gid: later.gid.or(self.gid),
            rdev: later.rdev.or(self.rdev),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn regular_file() -> FileAttrs {
        FileAttrs {
            ino: 7,
            size: 100,
            blocks: 8,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            kind: FileKind::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: 1000,
            gid: 1000,
            rdev: 0,
        }
    }

    #[test]
    fn apply_changes_only_overridden_fields() {
        let later = UNIX_EPOCH + Duration::from_secs(60);
        let override_ = AttrOverride {
            perm: Some(0o110),
            mtime: Some(later),
            kind: Some(FileKind::Directory),
            ..AttrOverride::default()
        };
        let mut attrs = regular_file();
        override_.apply(&mut attrs);
        assert_eq!(
            attrs,
            FileAttrs {
                perm: 0o110,
                mtime: later,
                kind: FileKind::Directory,
                ..regular_file()
            }
        );
        assert!(AttrOverride::default().is_empty());
        assert!(!override_.is_empty());
    }

    #[test]
    fn later_override_wins_per_field() {
        let first = AttrOverride {
            perm: Some(0o600),
            uid: Some(1),
            ..AttrOverride::default()
        };
        let second = AttrOverride {
            perm: Some(0o400),
            ..AttrOverride::default()
        };
        let merged = first.then(second);
        assert_eq!(merged.perm, Some(0o400));
        assert_eq!(merged.uid, Some(1));
    }

    #[test]
    fn file_kind_names_round_trip() {
        for kind in FileKind::ALL {
            assert_eq!(FileKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(FileKind::parse("REGULARFILE"), Some(FileKind::RegularFile));
        assert_eq!(FileKind::parse("file"), None);
    }
}
