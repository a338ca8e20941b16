//! Where the agent's helpers live: the injector of an IO fault, the HTTP proxy and the DNS
//! responder keep a fault in force (or serve a redirect) while no agent runs, and are adopted
//! or recovered from the journal by the next agent. Started by the agent, they would share its
//! container's cgroup, and when a container in the host's PID namespace (as the agent's is)
//! loses its main process, the runtime kills every process left in that cgroup (containerd's
//! runc shim does, `runc kill --all`): an OOM kill or a crash of the agent would take every
//! helper with it, and a pod would see ENOTCONN on a faulted volume until the next agent ran.
//!
//! So a helper is moved, once it runs, into its target's pod cgroup, in every hierarchy: on
//! v2, where a pod cgroup with controllers for its children may hold processes only in leaves,
//! into a leaf of ours under it, [`LEAF`], shared by every helper of the pod. There it lives
//! as long as the pod (kubelet kills what is left in a pod cgroup and removes it, leaves
//! included, when the pod goes), and its memory is charged to the pod it faults, as a
//! sidecar injector's would be. Where the target has no pod cgroup (a process outside
//! Kubernetes), or it cannot be joined, the helper stays where it was started and a warning
//! says that it will not outlive the agent's container.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::{CgroupError, HostFs, Placement, RealFs, Scope, plan};

/// The leaf made under a v2 pod cgroup for the helpers of that pod.
pub const LEAF: &str = "faultline-helpers";

/// Moves the helper `helper_pid` into the pod cgroup of `target_pid`.
pub fn place(fs: &dyn HostFs, target_pid: u32, helper_pid: u32) -> Result<Placement, CgroupError> {
    let placement = plan(fs, target_pid, Scope::Pod, LEAF)?;
    placement.create(fs)?;
    placement.join(fs, helper_pid)?;
    Ok(placement)
}

/// [`place`] on the host, saying what happened: a helper that could not be moved still serves,
/// but dies with the agent's container.
pub fn place_or_warn(target_pid: u32, helper_pid: u32, role: &str) {
    match place(&RealFs, target_pid, helper_pid) {
        Ok(placement) => {
            tracing::debug!(role, helper_pid, target_pid, cgroups = ?placement.dirs(), "helper moved into its target's pod cgroup");
        }
        Err(err) => {
            tracing::warn!(role, helper_pid, target_pid, %err, "the helper stays in the agent's cgroup: it will not outlive the agent's container");
        }
    }
}

/// What one attempt to remove the helpers' leaf found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// No leaf of ours is left.
    Done,
    /// A leaf still holds a process: another helper of the pod, or one whose exit has not
    /// reached the cgroup yet.
    InUse,
}

/// Our leaves under the pod cgroup of `target_pid` (none on v1, or for a target that is gone:
/// its pod cgroup goes with its pod).
pub fn leaves_of_target(fs: &dyn HostFs, target_pid: u32) -> Vec<PathBuf> {
    plan(fs, target_pid, Scope::Pod, LEAF)
        .map(|placement| placement.created())
        .unwrap_or_default()
}

/// The leaves of ours that the helper `helper_pid` is in (to release once it has exited).
pub fn leaves_of_helper(fs: &dyn HostFs, helper_pid: u32) -> Vec<PathBuf> {
    plan(fs, helper_pid, Scope::Container, LEAF)
        .map(|placement| placement.dirs())
        .unwrap_or_default()
        .into_iter()
        .filter(|dir| dir.file_name().is_some_and(|name| name == LEAF))
        .collect()
}

/// Removes those of `leaves` that no process is in.
pub fn release(fs: &dyn HostFs, leaves: &[PathBuf]) -> Release {
    let mut outcome = Release::Done;
    for leaf in leaves {
        let in_use = match fs.read(&leaf.join("cgroup.procs")) {
            Ok(procs) => !procs.trim().is_empty(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => true,
        };
        if in_use {
            outcome = Release::InUse;
            continue;
        }
        match fs.remove_dir(leaf) {
            Ok(()) => tracing::debug!(leaf = %leaf.display(), "helper cgroup removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => outcome = Release::InUse,
            Err(e) => {
                tracing::warn!(leaf = %leaf.display(), %e, "cannot remove the helpers' cgroup");
            }
        }
    }
    outcome
}

/// How long a helper that just exited may still be counted in its cgroup.
const EXIT_SETTLES_WITHIN: Duration = Duration::from_secs(1);

/// After a helper ended: [`release`], tried again for a moment while a leaf is in use (the
/// helper's exit reaching the cgroup). A leaf another helper of the pod keeps using stays. On
/// a blocking thread in the background; the leaf goes with the pod in any case.
pub fn release_in_background(leaves: Vec<PathBuf>) {
    if leaves.is_empty() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        while release(&RealFs, &leaves) == Release::InUse && started.elapsed() < EXIT_SETTLES_WITHIN
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}
