//! The filesystem operations a rule can select, by the names Chaos Mesh uses.

use std::fmt;

use serde::{Serialize, Serializer};

/// One FUSE operation. The first 32 are Chaos Mesh's `IoMethod` names (same order as its
/// API); the rest are operations our filesystem serves that Chaos Mesh cannot name, so a
/// rule with no `methods` (meaning "all") reaches them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Method {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Getlk,
    Setlk,
    Bmap,
    // Beyond Chaos Mesh's list.
    Fallocate,
    Lseek,
    CopyFileRange,
    Ioctl,
    Poll,
}

impl Method {
    /// Every method, in declaration order.
    pub const ALL: [Method; 37] = [
        Method::Lookup,
        Method::Forget,
        Method::Getattr,
        Method::Setattr,
        Method::Readlink,
        Method::Mknod,
        Method::Mkdir,
        Method::Unlink,
        Method::Rmdir,
        Method::Symlink,
        Method::Rename,
        Method::Link,
        Method::Open,
        Method::Read,
        Method::Write,
        Method::Flush,
        Method::Release,
        Method::Fsync,
        Method::Opendir,
        Method::Readdir,
        Method::Releasedir,
        Method::Fsyncdir,
        Method::Statfs,
        Method::Setxattr,
        Method::Getxattr,
        Method::Listxattr,
        Method::Removexattr,
        Method::Access,
        Method::Create,
        Method::Getlk,
        Method::Setlk,
        Method::Bmap,
        Method::Fallocate,
        Method::Lseek,
        Method::CopyFileRange,
        Method::Ioctl,
        Method::Poll,
    ];

    /// The lower-case wire name (Chaos Mesh's spelling where it has one).
    pub const fn name(self) -> &'static str {
        match self {
            Method::Lookup => "lookup",
            Method::Forget => "forget",
            Method::Getattr => "getattr",
            Method::Setattr => "setattr",
            Method::Readlink => "readlink",
            Method::Mknod => "mknod",
            Method::Mkdir => "mkdir",
            Method::Unlink => "unlink",
            Method::Rmdir => "rmdir",
            Method::Symlink => "symlink",
            Method::Rename => "rename",
            Method::Link => "link",
            Method::Open => "open",
            Method::Read => "read",
            Method::Write => "write",
            Method::Flush => "flush",
            Method::Release => "release",
            Method::Fsync => "fsync",
            Method::Opendir => "opendir",
            Method::Readdir => "readdir",
            Method::Releasedir => "releasedir",
            Method::Fsyncdir => "fsyncdir",
            Method::Statfs => "statfs",
            Method::Setxattr => "setxattr",
            Method::Getxattr => "getxattr",
            Method::Listxattr => "listxattr",
            Method::Removexattr => "removexattr",
            Method::Access => "access",
            Method::Create => "create",
            Method::Getlk => "getlk",
            Method::Setlk => "setlk",
            Method::Bmap => "bmap",
            Method::Fallocate => "fallocate",
            Method::Lseek => "lseek",
            Method::CopyFileRange => "copy_file_range",
            Method::Ioctl => "ioctl",
            Method::Poll => "poll",
        }
    }

    /// Parses a method name, ignoring ASCII case (`READ`, `read` and `Read` are one method).
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL
            .iter()
            .copied()
            .find(|method| method.name().eq_ignore_ascii_case(name))
    }

    const fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A set of [`Method`]s as a bitset: membership tests are one AND.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MethodSet(u64);

impl MethodSet {
    pub const EMPTY: MethodSet = MethodSet(0);
    pub const ALL: MethodSet = MethodSet::of(&Method::ALL);
    /// Operations whose reply carries file attributes. Entries of a readdirplus reply are
    /// implicit lookups: the filesystem evaluates them as [`Method::Lookup`].
    pub const ATTRIBUTE_REPLIES: MethodSet = MethodSet::of(&[
        Method::Lookup,
        Method::Getattr,
        Method::Setattr,
        Method::Mknod,
        Method::Mkdir,
        Method::Symlink,
        Method::Link,
        Method::Create,
    ]);
    /// Operations that move file data between the application and the file.
    pub const DATA_TRANSFER: MethodSet = MethodSet::of(&[Method::Read, Method::Write]);

    pub const fn of(methods: &[Method]) -> MethodSet {
        let mut bits = 0;
        let mut i = 0;
        while i < methods.len() {
            bits |= methods[i].bit();
            i += 1;
        }
        MethodSet(bits)
    }

    pub const fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    pub const fn intersects(self, other: MethodSet) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn intersection(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 & other.0)
    }

    pub const fn union(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 | other.0)
    }

    pub const fn with(self, method: Method) -> MethodSet {
        MethodSet(self.0 | method.bit())
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL
            .into_iter()
            .filter(move |method| self.contains(*method))
    }
}

impl From<Method> for MethodSet {
    fn from(method: Method) -> MethodSet {
        MethodSet(method.bit())
    }
}

impl FromIterator<Method> for MethodSet {
    fn from_iter<I: IntoIterator<Item = Method>>(iter: I) -> MethodSet {
        iter.into_iter().fold(MethodSet::EMPTY, MethodSet::with)
    }
}

impl fmt::Debug for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, method) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(method.name())?;
        }
        Ok(())
    }
}

impl Serialize for MethodSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ignores_case_and_knows_every_name() {
        assert_eq!(Method::parse("READ"), Some(Method::Read));
        assert_eq!(Method::parse("GetAttr"), Some(Method::Getattr));
        assert_eq!(
            Method::parse("copy_file_range"),
            Some(Method::CopyFileRange)
        );
        assert_eq!(Method::parse("frobnicate"), None);
        assert_eq!(Method::parse(""), None);
        for method in Method::ALL {
            assert_eq!(Method::parse(method.name()), Some(method));
        }
    }

    #[test]
    fn method_set_operations() {
        let rw = MethodSet::of(&[Method::Read, Method::Write]);
        assert!(rw.contains(Method::Read));
        assert!(!rw.contains(Method::Open));
        assert_eq!(rw.len(), 2);
        assert!(rw.intersects(MethodSet::from(Method::Write)));
        assert!(!rw.intersects(MethodSet::ATTRIBUTE_REPLIES));
        assert_eq!(MethodSet::ALL.len(), Method::ALL.len());
        assert_eq!(rw.to_string(), "read, write");
        assert_eq!(serde_json::to_string(&rw).unwrap(), r#"["read","write"]"#);
        let collected: MethodSet = [Method::Write, Method::Read].into_iter().collect();
        assert_eq!(collected, rw);
    }
}
