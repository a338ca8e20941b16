//! Reaping what a crashed run left: base directories whose owner process is dead.

use std::time::Duration;

use crate::layout::{Layout, TMP};
use crate::{cgroups, containerd, mounts, network, process, teardown};

/// Finds stale testbeds and tears each down. Returns one line per testbed reaped, saying what
/// was done, for the log.
pub(crate) fn reap() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(TMP) else {
        return Vec::new();
    };
    let own = std::process::id();
    let stale: Vec<Layout> = entries
        .flatten()
        .filter_map(|e| Layout::parse(e.file_name().to_str()?))
        // A live owner may be another test process running right now: never touch its testbed.
        .filter(|l| l.pid != own && !process::alive(l.pid))
        .collect();
    let reaped: Vec<String> = stale.iter().map(reap_one).collect();
    if !reaped.is_empty() {
        cgroups::remove_empty();
        teardown::remove_shared_runtime_dirs();
    }
    reaped
}

fn reap_one(layout: &Layout) -> String {
    let mut done = Vec::new();
    // 1. Its containerd, by the PID file, only if that PID still runs that exact containerd.
    if let Some(pid) = std::fs::read_to_string(layout.containerd_pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        && containerd::is_our_containerd(pid, layout)
    {
        process::terminate(pid, Duration::from_secs(5));
        done.push(format!("stopped containerd {pid}"));
    }
    // 2. Its containers, and the CNI results cached for sandboxes that never got a CNI DEL.
    done.extend(
        teardown::force_delete_containers(layout)
            .into_iter()
            .map(|id| format!("deleted container {id}")),
    );
    // 3. Its shims (their command line names its socket), then anything else naming its files.
    let strays = teardown::end_stray_processes(layout);
    if !strays.is_empty() {
        done.push(format!("{} stray processes", strays.len()));
    }
    // 4. Mounts, rshared binds, bridge, directory.
    let mount_problems = mounts::detach_all_under(&layout.base);
    done.extend(mount_problems);
    done.extend(teardown::undo_shared_binds(
        &teardown::recorded_shared_binds(layout),
    ));
    done.extend(crate::pod_cgroup::remove_tree(&layout.cgroup_name()));
    if let Err(e) = network::delete_bridge(&layout.bridge()) {
        done.push(e.to_string());
    }
    done.extend(crate::forwarding::restore(layout));
    if let Some(problem) = teardown::remove_base_dir(layout) {
        done.push(problem);
    }
    format!(
        "reaped stale testbed {} (owner pid {} is gone){}{}",
        layout.base.display(),
        layout.pid,
        if done.is_empty() { "" } else { ": " },
        done.join("; ")
    )
}
