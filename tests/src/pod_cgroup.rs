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

/// What kubelet sets on a pod cgroup before RunPodSandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PodResources {
    /// Bytes.
    pub memory_limit: Option<u64>,
    /// Millicores.
    pub cpu_request: Option<u64>,
}

/// Makes the pod cgroup (`parent` like `/faultline-testbed-1-0/pod<uid>`) in the hierarchies
/// where a limit or request is set, and sets them as kubelet does: the memory limit on the
/// pod, CPU shares (v2: weight) from the request on the pod, and on the testbed's top cgroup
/// the node's CPUs (kubelet gives `/kubepods` the node's allocatable CPU, so that pods keep
/// their requests against whatever else runs on the node).
pub(crate) fn prepare(parent: &str, resources: PodResources) -> Result<()> {
    let relative = parent.trim_start_matches('/');
    if let Some(limit) = resources.memory_limit {
        let root = root_with("memory.limit_in_bytes").ok_or_else(|| Error::InvalidSpec {
            field: "memory limit",
            reason: "this host has no memory cgroup controller".into(),
        })?;
        make_path(&root, relative)?;
        let pod = root.join(relative);
        if is_v2(&root) {
            write(pod.join("memory.max"), limit.to_string())?;
            let _ = write(pod.join("memory.swap.max"), "0".into());
        } else {
            write(pod.join("memory.limit_in_bytes"), limit.to_string())?;
        }
    }
    if let Some(millicores) = resources.cpu_request {
        let root = root_with("cpu.shares").ok_or_else(|| Error::InvalidSpec {
            field: "cpu request",
            reason: "this host has no cpu cgroup controller".into(),
        })?;
        make_path(&root, relative)?;
        let node_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let top = Path::new(relative)
            .components()
            .next()
            .map(|c| root.join(c))
            .unwrap_or_else(|| root.clone());
        let pod = root.join(relative);
        // kubelet's MilliCPUToShares, and its shares-to-weight conversion on v2.
        let shares = |millicores: u64| (millicores * 1024 / 1000).max(2);
        let weight = |shares: u64| 1 + (shares - 2) * 9999 / 262142;
        if is_v2(&root) {
            write(
                top.join("cpu.weight"),
                weight(shares(node_cpus * 1000)).to_string(),
            )?;
            write(
                pod.join("cpu.weight"),
                weight(shares(millicores)).to_string(),
            )?;
        } else {
            write(top.join("cpu.shares"), shares(node_cpus * 1000).to_string())?;
            write(pod.join("cpu.shares"), shares(millicores).to_string())?;
        }
    }
    Ok(())
}

fn write(path: PathBuf, value: String) -> Result<()> {
    std::fs::write(&path, value).map_err(Error::io("writing", &path))
}

/// Makes `relative` under a hierarchy root; on v2 each level first hands the memory and cpu
/// controllers down to the next.
fn make_path(root: &Path, relative: &str) -> Result<()> {
    let mut dir = root.to_owned();
    for part in Path::new(relative).components() {
        if is_v2(root) {
            write(dir.join("cgroup.subtree_control"), "+memory +cpu".into())?;
        }
        dir = dir.join(part);
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
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
