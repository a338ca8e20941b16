//! Pod cgroups the way kubelet makes them (cgroupfs driver): a pod cgroup per pod, the pod's
//! sandbox and containers below it, the pod-level limits written on it before the sandbox
//! starts. containerd alone puts everything under `/k8s.io/<id>`, with no pod level, so a pod
//! asks for this explicitly ([`crate::PodSpec::pod_cgroup`]). Every pod cgroup of a testbed lives
//! under `/<testbed name>` in each hierarchy, which teardown removes.
//!
//! [`PodCgroup`] reads what the kernel charged to a pod: CPU time, memory, OOM kills and the
//! processes in it, on cgroup v1, hybrid and v2 hosts.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The root of every cgroup hierarchy: `/sys/fs/cgroup` on a pure v2 host, each mounted
/// hierarchy below it (`cpu`, `memory`, …, `unified`) otherwise. Symlinked aliases
/// (`cpu` → `cpu,cpuacct`) count once.
pub(crate) fn hierarchy_roots() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_owned()];
    }
    let mut roots: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    roots.sort();
    roots
}

fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// The hierarchy root holding `file` at its top (e.g. `cpuacct.usage` → the cpuacct hierarchy),
/// preferring v1 controllers over the unified hierarchy of a hybrid host.
fn root_with(v1_file: &str) -> Option<PathBuf> {
    let roots = hierarchy_roots();
    roots
        .iter()
        .find(|r| !is_v2(r) && r.join(v1_file).exists())
        .or_else(|| roots.iter().find(|r| is_v2(r)))
        .cloned()
}

/// Makes the pod cgroup (`parent` like `/faultline-testbed-1-0/pod<uid>`) where the memory
/// limit is set, and sets it, as kubelet does before RunPodSandbox.
pub(crate) fn prepare(parent: &str, memory_limit: Option<u64>) -> Result<()> {
    let Some(limit) = memory_limit else {
        return Ok(());
    };
    let root = root_with("memory.limit_in_bytes").ok_or_else(|| Error::InvalidSpec {
        field: "memory limit",
        reason: "this host has no memory cgroup controller".into(),
    })?;
    let relative = parent.trim_start_matches('/');
    let pod = root.join(relative);
    let write = |path: PathBuf, value: String| {
        std::fs::write(&path, value).map_err(Error::io("writing", &path))
    };
    if is_v2(&root) {
        // Each level must hand the memory controller down to the next.
        let mut dir = root.clone();
        for part in Path::new(relative).components() {
            write(dir.join("cgroup.subtree_control"), "+memory +cpu".into())?;
            dir = dir.join(part);
            std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        }
        write(pod.join("memory.max"), limit.to_string())?;
        write(pod.join("memory.swap.max"), "0".into()).ok();
    } else {
        std::fs::create_dir_all(&pod).map_err(Error::io("creating", &pod))?;
        write(pod.join("memory.limit_in_bytes"), limit.to_string())?;
    }
    Ok(())
}

/// Removes `/<name>` and the pod cgroups below it in every hierarchy, deepest first. A cgroup
/// still in use refuses (EBUSY): that is reported.
pub(crate) fn remove_tree(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for root in hierarchy_roots() {
        let top = root.join(name);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        // Deepest first.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("rmdir {}: {e}", dir.display())),
            }
        }
    }
    problems
}

/// `/<name>` cgroups still present.
pub(crate) fn leftover_tree(name: &str) -> Vec<PathBuf> {
    hierarchy_roots()
        .into_iter()
        .map(|root| root.join(name))
        .filter(|p| p.is_dir())
        .collect()
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}

/// A pod's cgroup, as the kernel accounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod cgroup path relative to each hierarchy root (`/faultline-testbed-1-0/pod<uid>`).
    pub path: String,
}

impl PodCgroup {
    /// The pod cgroup's directory in the hierarchy that has `v1_file` (or the unified one).
    pub fn dir_with(&self, v1_file: &str) -> Option<PathBuf> {
        root_with(v1_file).map(|root| root.join(self.path.trim_start_matches('/')))
    }

    fn read(&self, v1_file: &str, v2_file: &str) -> Result<(String, bool)> {
        let dir = self.dir_with(v1_file).ok_or_else(|| Error::InvalidSpec {
            field: "pod cgroup",
            reason: format!("no hierarchy has {v1_file} or {v2_file}"),
        })?;
        let v2 = !dir.join(v1_file).exists();
        let path = dir.join(if v2 { v2_file } else { v1_file });
        let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
        Ok((text, v2))
    }

    /// CPU time used by every process ever in the pod cgroup, in nanoseconds (v1
    /// `cpuacct.usage`, v2 `cpu.stat` usage_usec).
    pub fn cpu_usage_ns(&self) -> Result<u64> {
        let (text, v2) = self.read("cpuacct.usage", "cpu.stat")?;
        let value = if v2 {
            key_value(&text, "usage_usec").map(|us| us * 1000)
        } else {
            text.trim().parse().ok()
        };
        value.ok_or_else(|| unreadable("CPU usage", &text))
    }

    /// Memory charged to the pod cgroup now, in bytes (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`).
    pub fn memory_usage_bytes(&self) -> Result<u64> {
        let (text, _) = self.read("memory.usage_in_bytes", "memory.current")?;
        text.trim()
            .parse()
            .map_err(|_| unreadable("memory usage", &text))
    }

    /// Processes the OOM killer killed in the pod cgroup (v1 `memory.oom_control`, v2
    /// `memory.events`, field `oom_kill`).
    pub fn oom_kills(&self) -> Result<u64> {
        let (text, _) = self.read("memory.oom_control", "memory.events")?;
        key_value(&text, "oom_kill").ok_or_else(|| unreadable("OOM kills", &text))
    }

    /// Every process in the pod cgroup or below it, in the memory hierarchy.
    pub fn pids(&self) -> Vec<u32> {
        let Some(dir) = self.dir_with("memory.usage_in_bytes") else {
            return Vec::new();
        };
        let mut dirs = Vec::new();
        collect_dirs(&dir, &mut dirs);
        dirs.iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }
}

fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn unreadable(what: &'static str, text: &str) -> Error {
    Error::InvalidSpec {
        field: what,
        reason: format!("unreadable cgroup file: {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flat_keyed_files() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(key_value(text, "oom_kill"), Some(2));
        assert_eq!(key_value(text, "oom"), None);
        assert_eq!(key_value("usage_usec 1500\n", "usage_usec"), Some(1500));
    }
}
