//! The host-side steps of tearing a testbed down that do not need its containerd, shared by a
//! live testbed's shutdown and the reaping of a crashed run; and the check that nothing is left.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::layout::Layout;
use crate::{mounts, network, process};

/// containerd 1.6 creates the /run/containerd ones whatever its config says, and libcni caches
/// results in /var/lib/cni (not configurable through containerd's CRI config). Another runtime
/// may be using them, so each goes only if empty, deepest first.
const SHARED_RUNTIME_DIRS: &[&str] = &[
    "/run/containerd/runc/k8s.io",
    "/run/containerd/runc",
    "/run/containerd/fifo",
    "/run/containerd/s",
    "/run/containerd",
    "/var/lib/cni/results",
    "/var/lib/cni",
];

const CNI_RESULTS: &str = "/var/lib/cni/results";

/// Ends processes still mentioning the base directory (shims carry `-address <our socket>`),
/// by PID. After a clean removal of every task there are none.
pub(crate) fn end_stray_processes(layout: &Layout) -> Vec<String> {
    process::mentioning(&layout.base)
        .into_iter()
        .map(|(pid, args)| {
            let gone = process::terminate(pid, Duration::from_secs(2));
            format!(
                "stray process {pid} ({}) {}",
                args.join(" "),
                if gone {
                    "was ended"
                } else {
                    "could not be ended"
                }
            )
        })
        .collect()
}

/// `runc delete --force` for every container runc still has state for (runc checks the init
/// process's identity itself, kills it and removes its cgroups), and libcni's cached results
/// for them (named `<network>-<sandbox id>-<interface>`). Nothing is left after a clean removal
/// through containerd; this is for a crashed run or a containerd that died under us.
/// Returns the IDs deleted.
pub(crate) fn force_delete_containers(layout: &Layout) -> Vec<String> {
    let runc_state = layout.runc_root().join(crate::containerd::NAMESPACE);
    let ids: Vec<String> = std::fs::read_dir(&runc_state)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    let deleted: Vec<String> = ids
        .into_iter()
        .filter(|id| {
            Command::new("runc")
                .arg("--root")
                .arg(&runc_state)
                .args(["delete", "--force", id])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    for entry in std::fs::read_dir(CNI_RESULTS)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if deleted.iter().any(|id| name.contains(&format!("-{id}-"))) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    deleted
}

/// Host directories made rshared bind mounts by this testbed, as recorded on disk.
pub(crate) fn recorded_shared_binds(layout: &Layout) -> Vec<PathBuf> {
    std::fs::read_to_string(layout.shared_binds_file())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

pub(crate) fn undo_shared_binds(binds: &[PathBuf]) -> Vec<String> {
    binds
        .iter()
        .filter_map(|dir| mounts::undo_rshared_bind(dir).err())
        .map(|e| e.to_string())
        .collect()
}

pub(crate) fn remove_shared_runtime_dirs() {
    for dir in SHARED_RUNTIME_DIRS {
        // Not empty (someone else's containerd) or absent: leave it.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Deletes the base directory, but never while anything is mounted below it: removing files
/// through a leftover bind mount would delete them on the host.
pub(crate) fn remove_base_dir(layout: &Layout) -> Option<String> {
    let mounted = mounts::mounts_under(&layout.base);
    if !mounted.is_empty() {
        return Some(format!(
            "kept {} because {} is still mounted below it",
            layout.base.display(),
            mounted[0].display()
        ));
    }
    match std::fs::remove_dir_all(&layout.base) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("removing {}: {e}", layout.base.display())),
    }
}

/// Everything of this testbed still present on the host, described for a person.
pub(crate) fn leftovers(
    layout: &Layout,
    container_ids: &[String],
    binds: &[PathBuf],
) -> Vec<String> {
    let mut found: Vec<String> = mounts::mounts_under(&layout.base)
        .into_iter()
        .map(|p| format!("mount {}", p.display()))
        .collect();
    let mount_points = mounts::mount_points();
    found.extend(
        binds
            .iter()
            .filter(|b| mount_points.contains(b))
            .map(|b| format!("rshared bind mount {}", b.display())),
    );
    found.extend(
        process::mentioning(&layout.base)
            .into_iter()
            .map(|(pid, args)| format!("process {pid}: {}", args.join(" "))),
    );
    let bridge = layout.bridge();
    if network::bridge_exists(&bridge) {
        found.push(format!("network link {bridge}"));
    }
    found.extend(
        crate::cgroups::leftover_container_cgroups(container_ids)
            .into_iter()
            .chain(crate::pod_cgroup::leftover_tree(&layout.cgroup_name()))
            .map(|p| format!("cgroup {}", p.display())),
    );
    if Path::new(&layout.base).exists() {
        found.push(format!("directory {}", layout.base.display()));
    }
    found
}
