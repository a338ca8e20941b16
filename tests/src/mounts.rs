//! Mount points of this mount namespace: finding the testbed's, making a host directory an
//! rshared bind mount of itself (for HostToContainer/Bidirectional volumes), and lazy unmounts.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::{Error, Result};

/// Mount points listed in /proc/self/mountinfo, in order.
pub(crate) fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// Mount points at `dir` or below it, deepest first (so children go before their parents).
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by(|a, b| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then_with(|| b.cmp(a))
    });
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount at or below `dir`, deepest first, until none is left (a detached parent
/// takes its children along, so later entries may already be gone). Returns what could not be
/// unmounted.
pub(crate) fn detach_all_under(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for _round in 0..5 {
        let left = mounts_under(dir);
        if left.is_empty() {
            return Vec::new();
        }
        problems.clear();
        for path in left {
            match umount2(&path, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
                Err(e) => problems.push(format!("umount -l {}: {e}", path.display())),
            }
        }
    }
    problems.extend(
        mounts_under(dir)
            .into_iter()
            .map(|p| format!("still mounted: {}", p.display())),
    );
    problems
}

/// `mount --rbind D D && mount --make-rshared D`: the host side of a volume whose mounts must
/// propagate (the host's `/` is private here, and containerd refuses Bidirectional otherwise).
pub(crate) fn make_rshared_bind(dir: &Path) -> Result<()> {
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| Error::Mount {
        op: "bind-mounting onto itself",
        path: dir.to_owned(),
        source,
    })?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| {
        // Leave nothing half-done behind.
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        Error::Mount {
            op: "making rshared",
            path: dir.to_owned(),
            source,
        }
    })
}

/// Undoes [`make_rshared_bind`], taking along whatever was mounted below it (e.g. mounts that a
/// Bidirectional volume propagated out of a container). Absent is fine.
pub(crate) fn undo_rshared_bind(dir: &Path) -> Result<()> {
    if !mount_points().iter().any(|p| p == dir) {
        return Ok(());
    }
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(Error::Mount {
            op: "unmounting",
            path: dir.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), r"/tmp/a b\c");
        assert_eq!(unescape(r"/tmp/x\0"), r"/tmp/x\0");
    }

    #[test]
    fn root_is_mounted() {
        assert!(mount_points().iter().any(|p| p == Path::new("/")));
    }

    #[test]
    fn deepest_first() {
        let under = mounts_under(Path::new("/"));
        let depths: Vec<usize> = under.iter().map(|p| p.components().count()).collect();
        assert!(depths.windows(2).all(|w| w[0] >= w[1]), "{under:?}");
    }
}
