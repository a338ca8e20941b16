//! The two files a placement is read from: the target's `/proc/PID/cgroup` (which cgroup it
//! is in, per hierarchy) and our `/proc/self/mountinfo` (where each hierarchy is mounted).
//!
//! Parsed by hand on purpose: the text comes through the `HostFs` trait, so the placement logic
//! is tested on the in-memory double (hybrid and v2 hosts) without root; the procfs crate reads
//! the real /proc itself and would bypass it.

use std::path::PathBuf;

/// One line of `/proc/PID/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Membership {
    /// Empty for the unified (v2) hierarchy; may hold `name=systemd`.
    pub controllers: Vec<String>,
    pub path: String,
}

impl Membership {
    pub fn is_unified(&self) -> bool {
        self.controllers.is_empty()
    }

    pub fn label(&self) -> String {
        if self.is_unified() {
            "unified (v2)".into()
        } else {
            self.controllers.join(",")
        }
    }
}

pub(super) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CgroupMount {
    /// The cgroup the mount shows at its mount point (`/` unless a subtree is bind-mounted).
    pub root: String,
    pub mount_point: PathBuf,
    /// `None` for cgroup2; the super options (controllers, `name=…`) for cgroup v1.
    pub v1_options: Option<Vec<String>>,
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| {
                let value = d.iter().fold(0u16, |v, b| v * 8 + u16::from(b - b'0'));
                u8::try_from(value).ok()
            });
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("");
            let v1_options = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(super_options.split(',').map(str::to_owned).collect()),
                _ => return None,
            };
            Some(CgroupMount {
                root: unescape(root),
                mount_point: PathBuf::from(unescape(mount_point)),
                v1_options,
            })
        })
        .collect()
}

pub(super) fn find_mount<'a>(
    mounts: &'a [CgroupMount],
    membership: &Membership,
) -> Option<&'a CgroupMount> {
    let candidates = mounts.iter().filter(|m| match &m.v1_options {
        None => membership.is_unified(),
        Some(options) => {
            !membership.is_unified() && membership.controllers.iter().all(|c| options.contains(c))
        }
    });
    // Prefer a mount of the whole hierarchy over a bind mount of a subtree.
    let mut best = None;
    for mount in candidates {
        if mount.root == "/" {
            return Some(mount);
        }
        best.get_or_insert(mount);
    }
    best
}

/// The path below the mount's root, without a leading slash.
pub(super) fn strip_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if root == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn mountinfo_escapes_and_subtree_mounts() {
        let mounts = parse_mountinfo(
            "1 2 0:1 /kubepods /host\\040cg/memory rw - cgroup cgroup rw,memory\n3 4 0:5 / /x rw - ext4 /dev/sda rw\n",
        );
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, Path::new("/host cg/memory"));
        assert_eq!(mounts[0].root, "/kubepods");
        assert_eq!(strip_root("/kubepods/pod1/c", "/kubepods"), Some("pod1/c"));
        assert_eq!(strip_root("/kubepodsX/c", "/kubepods"), None);
        assert_eq!(strip_root("/a/b", "/"), Some("a/b"));
    }
}
