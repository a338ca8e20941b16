//! The `k8s.io` cgroups containerd creates (one per v1 hierarchy, and in the unified one):
//! which exist, and removing the ones a testbed created once they are empty.

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// containerd puts containers without a cgroup parent under `/<namespace>/<id>`.
const NAMESPACE_CGROUP: &str = "k8s.io";

/// Every `k8s.io` cgroup directory that exists now (pure v2, hybrid and v1 layouts alike).
pub(crate) fn namespace_cgroups() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(NAMESPACE_CGROUP))
        .filter(|p| p.is_dir())
        .collect();
    let unified = root.join(NAMESPACE_CGROUP);
    if unified.is_dir() {
        found.push(unified);
    }
    found.sort();
    found
}

/// Cgroups named after one of `ids` still present under a `k8s.io` cgroup.
pub(crate) fn leftover_container_cgroups(ids: &[String]) -> Vec<PathBuf> {
    namespace_cgroups()
        .into_iter()
        .flat_map(|dir| ids.iter().map(move |id| dir.join(id)))
        .filter(|p| p.is_dir())
        .collect()
}

/// rmdir the `k8s.io` cgroups that did not exist in `before`. Only the directory itself: a
/// child cgroup belongs to a container (ours are gone by now; another testbed's must stay), and
/// a cgroup still in use refuses rmdir with EBUSY, which is fine here. Returns real failures.
pub(crate) fn remove_created(before: &[PathBuf]) -> Vec<String> {
    namespace_cgroups()
        .into_iter()
        .filter(|dir| !before.contains(dir))
        .filter_map(|dir| match std::fs::remove_dir(&dir) {
            Ok(()) => None,
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("rmdir {}: {e}", dir.display())),
        })
        .collect()
}

/// Best effort, for leftovers of a crashed run: remove every empty `k8s.io` cgroup.
pub(crate) fn remove_empty() {
    for dir in namespace_cgroups() {
        let _ = std::fs::remove_dir(dir);
    }
}
