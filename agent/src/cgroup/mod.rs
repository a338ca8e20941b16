//! Where a process the agent starts for a target must run: the target's own cgroups (scope
//! container) or its pod's (scope pod), in every hierarchy the target belongs to, on cgroup v1,
//! hybrid (v1 controllers plus an empty unified hierarchy) and pure v2 hosts alike. Stressors go
//! there so that their CPU time and memory are charged to their target; helpers (injectors, the
//! HTTP proxy, the DNS responder) so that they outlive the agent's container (see
//! [`helpers`]).
//!
//! The cgroups are found from the target's `/proc/PID/cgroup` and the agent's own mount table,
//! so the agent must run in the host's cgroup namespace (a target outside our namespace shows
//! as `/..` and is refused). The pod cgroup is the parent of the container's (`pod<UID>` under
//! kubelet, either cgroup driver). On a v2 hierarchy whose pod cgroup has controllers enabled
//! for its children, processes may only live in leaves, so a leaf of our own is made under it
//! (and removed again at recovery).
//!
//! Every filesystem access goes through [`HostFs`], so the planning is tested without root.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(test)]
pub(crate) mod fake_fs;
pub mod helpers;
mod proc_files;

use self::proc_files::{Membership, find_mount, parse_mountinfo, parse_proc_cgroup, strip_root};

/// The privileged filesystem calls of cgroup handling.
pub trait HostFs: Send + Sync + fmt::Debug {
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes into an existing file (cgroup control files are never created or truncated).
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn is_dir(&self, path: &Path) -> bool;
}

/// The host's filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl HostFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(contents.as_bytes())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "process {pid} is in cgroup {path} of the {hierarchy} hierarchy, outside the agent's cgroup namespace: run the agent in the host's cgroup namespace"
    )]
    OutsideNamespace {
        pid: u32,
        hierarchy: String,
        path: String,
    },
    #[error(
        "the agent sees no mount of the {hierarchy} cgroup hierarchy that process {pid} is in: mount the host's /sys/fs/cgroup"
    )]
    NotMounted { pid: u32, hierarchy: String },
    #[error(
        "process {pid} has no {what}: stress needs the cpu and memory controllers (v1 cpu, cpuacct and memory hierarchies, or v2 with cpu and memory enabled)"
    )]
    MissingController { pid: u32, what: String },
    #[error(
        "the container's cgroup {} is not inside a pod cgroup (its parent {} is not named pod<UID>): scope POD needs the runtime to place containers under kubelet's pod cgroups",
        container.display(), parent.display()
    )]
    NoPodCgroup { container: PathBuf, parent: PathBuf },
    #[error("cgroup {} does not exist (the target may have exited)", path.display())]
    Gone { path: PathBuf },
    #[error("creating cgroup {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("moving process {pid} into cgroup {}: {source}", dir.display())]
    Join {
        pid: u32,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing cgroup {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CgroupError {
    pub fn code(&self) -> tonic::Code {
        match self {
            CgroupError::Read { .. }
            | CgroupError::Create { .. }
            | CgroupError::Join { .. }
            | CgroupError::Remove { .. } => tonic::Code::Internal,
            CgroupError::Gone { .. } => tonic::Code::NotFound,
            CgroupError::OutsideNamespace { .. }
            | CgroupError::NotMounted { .. }
            | CgroupError::MissingController { .. }
            | CgroupError::NoPodCgroup { .. } => tonic::Code::FailedPrecondition,
        }
    }
}

/// The host's cgroup layout, as far as one process's membership shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Controllers on v1 hierarchies only.
    V1,
    /// Controllers on v1 hierarchies, plus a unified hierarchy without controllers.
    Hybrid,
    /// Everything on the unified hierarchy.
    V2,
}

/// One cgroup directory the stressor joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// e.g. `cpu,cpuacct`, `memory`, `unified (v2)`.
    pub hierarchy: String,
    pub dir: PathBuf,
    /// Made by us (a leaf under a v2 pod cgroup), removed again at recovery.
    pub create: bool,
}

/// Where a stressor goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub layout: Layout,
    pub destinations: Vec<Destination>,
    /// The cgroup whose memory limit and OOM kills concern the stressor.
    pub memory_dir: PathBuf,
    memory_v2: bool,
    /// The mount point of the memory hierarchy: limits are looked up to here.
    memory_root: PathBuf,
}

/// Container or pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Container,
    Pod,
}

/// Plans where a stressor for the process `pid` goes. `leaf` names the cgroup made under a v2
/// pod cgroup when one is needed.
pub fn plan(fs: &dyn HostFs, pid: u32, scope: Scope, leaf: &str) -> Result<Placement, CgroupError> {
    let read = |path: PathBuf| {
        fs.read(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                CgroupError::Gone { path }
            } else {
                CgroupError::Read { path, source }
            }
        })
    };
    let memberships = parse_proc_cgroup(&read(PathBuf::from(format!("/proc/{pid}/cgroup")))?);
    let mounts = parse_mountinfo(&read(PathBuf::from("/proc/self/mountinfo"))?);

    let has_v1_controllers = memberships
        .iter()
        .any(|m| m.controllers.iter().any(|c| !c.starts_with("name=")));
    let layout = match (
        has_v1_controllers,
        memberships.iter().any(Membership::is_unified),
    ) {
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::V1,
        (false, _) => Layout::V2,
    };
    let required: &[&str] = match layout {
        Layout::V1 | Layout::Hybrid => &["cpu", "cpuacct", "memory"],
        Layout::V2 => &[],
    };

    let mut destinations = Vec::new();
    let mut memory = None;
    for membership in &memberships {
        let is_required = membership.is_unified() && layout == Layout::V2
            || membership
                .controllers
                .iter()
                .any(|c| required.contains(&c.as_str()));
        let Some(mount) = find_mount(&mounts, membership) else {
            if is_required {
                return Err(CgroupError::NotMounted {
                    pid,
                    hierarchy: membership.label(),
                });
            }
            continue;
        };
        if membership.path.starts_with("/..") {
            return Err(CgroupError::OutsideNamespace {
                pid,
                hierarchy: membership.label(),
                path: membership.path.clone(),
            });
        }
        let Some(relative) = strip_root(&membership.path, &mount.root) else {
            if is_required {
                return Err(CgroupError::NotMounted {
                    pid,
                    hierarchy: membership.label(),
                });
            }
            continue;
        };
        let container_dir = mount.mount_point.join(relative);
        if !fs.is_dir(&container_dir) {
            if is_required {
                return Err(CgroupError::Gone {
                    path: container_dir,
                });
            }
            continue;
        }
        let (dir, create) = match scope {
            Scope::Container => (container_dir, false),
            Scope::Pod => {
                let parent = pod_cgroup(&container_dir, &mount.mount_point)?;
                if membership.is_unified() && has_child_controllers(fs, &parent) {
                    (parent.join(leaf), true)
                } else {
                    (parent, false)
                }
            }
        };
        let is_memory = if layout == Layout::V2 {
            membership.is_unified()
        } else {
            membership.controllers.iter().any(|c| c == "memory")
        };
        if is_memory {
            memory = Some((dir.clone(), mount.mount_point.clone()));
        }
        destinations.push(Destination {
            hierarchy: membership.label(),
            dir,
            create,
        });
    }

    for controller in required {
        if !memberships
            .iter()
            .any(|m| m.controllers.iter().any(|c| c == controller))
        {
            return Err(CgroupError::MissingController {
                pid,
                what: format!("{controller} cgroup (v1)"),
            });
        }
    }
    if layout == Layout::V2 {
        check_v2_controllers(fs, pid, &destinations)?;
    }
    let Some((memory_dir, memory_root)) = memory else {
        return Err(CgroupError::MissingController {
            pid,
            what: "memory cgroup".into(),
        });
    };
    Ok(Placement {
        layout,
        destinations,
        memory_dir,
        memory_v2: layout == Layout::V2,
        memory_root,
    })
}

/// The pod cgroup: the parent of the container's, named after the pod (`pod<UID>` with the
/// cgroupfs driver, `kubepods-…-pod<UID>.slice` with systemd's).
fn pod_cgroup(container_dir: &Path, mount_point: &Path) -> Result<PathBuf, CgroupError> {
    let parent = container_dir
        .parent()
        .filter(|p| *p != mount_point && p.starts_with(mount_point));
    match parent {
        Some(parent)
            if parent
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("pod")) =>
        {
            Ok(parent.to_owned())
        }
        _ => Err(CgroupError::NoPodCgroup {
            container: container_dir.to_owned(),
            parent: parent.unwrap_or(mount_point).to_owned(),
        }),
    }
}

/// A v2 cgroup with controllers enabled for its children cannot hold processes itself.
fn has_child_controllers(fs: &dyn HostFs, dir: &Path) -> bool {
    fs.read(&dir.join("cgroup.subtree_control"))
        .is_ok_and(|s| !s.trim().is_empty())
}

fn check_v2_controllers(
    fs: &dyn HostFs,
    pid: u32,
    destinations: &[Destination],
) -> Result<(), CgroupError> {
    let Some(destination) = destinations.first() else {
        return Err(CgroupError::MissingController {
            pid,
            what: "unified cgroup".into(),
        });
    };
    // A leaf we are about to make gets what its parent enables for children.
    let (path, file) = if destination.create {
        (
            destination.dir.parent().unwrap_or(&destination.dir),
            "cgroup.subtree_control",
        )
    } else {
        (destination.dir.as_path(), "cgroup.controllers")
    };
    let enabled = fs.read(&path.join(file)).unwrap_or_default();
    for controller in ["cpu", "memory"] {
        if !enabled.split_whitespace().any(|c| c == controller) {
            return Err(CgroupError::MissingController {
                pid,
                what: format!("{controller} controller in {}", path.display()),
            });
        }
    }
    Ok(())
}

impl Placement {
    /// Makes the cgroups that must be made, in order; on failure removes what it made.
    pub fn create(&self, fs: &dyn HostFs) -> Result<(), CgroupError> {
        let mut made: Vec<&Path> = Vec::new();
        for destination in self.destinations.iter().filter(|d| d.create) {
            match fs.create_dir(&destination.dir) {
                Ok(()) => made.push(&destination.dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    for dir in made {
                        let _ = fs.remove_dir(dir);
                    }
                    return Err(CgroupError::Create {
                        path: destination.dir.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Moves the whole process (every thread) into each destination.
    pub fn join(&self, fs: &dyn HostFs, pid: u32) -> Result<(), CgroupError> {
        for destination in &self.destinations {
            fs.write(&destination.dir.join("cgroup.procs"), &pid.to_string())
                .map_err(|source| CgroupError::Join {
                    pid,
                    dir: destination.dir.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The cgroups we made (to record before making them).
    pub fn created(&self) -> Vec<PathBuf> {
        self.destinations
            .iter()
            .filter(|d| d.create)
            .map(|d| d.dir.clone())
            .collect()
    }

    /// Every cgroup joined.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.destinations.iter().map(|d| d.dir.clone()).collect()
    }

    /// The tightest memory limit from the stressor's memory cgroup up to the hierarchy's root,
    /// if any.
    pub fn memory_limit(&self, fs: &dyn HostFs) -> Option<u64> {
        let (file, unlimited_from) = if self.memory_v2 {
            ("memory.max", u64::MAX)
        } else {
            // v1 reports "no limit" as PAGE_COUNTER_MAX pages, just under 2^63.
            ("memory.limit_in_bytes", 1 << 62)
        };
        let mut limit: Option<u64> = None;
        let mut dir = Some(self.memory_dir.as_path());
        while let Some(current) = dir {
            if let Ok(text) = fs.read(&current.join(file))
                && let Ok(value) = text.trim().parse::<u64>()
                && value < unlimited_from
            {
                limit = Some(limit.map_or(value, |l| l.min(value)));
            }
            if current == self.memory_root {
                break;
            }
            dir = current.parent();
        }
        limit
    }

    /// How many processes the kernel's OOM killer has killed in the memory cgroup so far.
    pub fn oom_kills(&self, fs: &dyn HostFs) -> Option<u64> {
        let file = if self.memory_v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs.read(&self.memory_dir.join(file)).ok()?;
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == "oom_kill").then(|| value.trim().parse().ok())?
        })
    }
}

/// Removes cgroups we made, deepest first; a missing one is fine. Retries briefly on EBUSY:
/// a killed stressor leaves its cgroup a moment after it is reaped.
pub fn remove_created(fs: &dyn HostFs, dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in dirs.iter().rev() {
        let mut attempts = 0;
        loop {
            match fs.remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The node's memory (`MemTotal`), the base of percentages when no cgroup limit applies.
pub fn node_memory(fs: &dyn HostFs) -> Option<u64> {
    let text = fs.read(Path::new("/proc/meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::fake_fs::FakeFs;
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 28 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
30 28 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
33 28 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
34 28 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
35 28 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
";

    const POD: &str = "/kubepods/burstable/pod1234-abcd";
    const CONTAINER: &str = "/kubepods/burstable/pod1234-abcd/c0ffee";

    fn hybrid() -> FakeFs {
        let fs = FakeFs::default();
        fs.file("/proc/self/mountinfo", HYBRID_MOUNTINFO).file(
            "/proc/42/cgroup",
            &format!(
                "12:pids:{CONTAINER}\n5:memory:{CONTAINER}\n4:cpu,cpuacct:{CONTAINER}\n2:net_cls:{CONTAINER}\n1:name=systemd:{CONTAINER}\n0::{CONTAINER}\n"
            ),
        );
        for hierarchy in ["unified", "systemd", "cpu,cpuacct", "memory", "pids"] {
            fs.dir(&format!("/sys/fs/cgroup/{hierarchy}{CONTAINER}"))
                .dir(&format!("/sys/fs/cgroup/{hierarchy}{POD}"));
        }
        fs
    }

    fn dirs(placement: &Placement) -> Vec<String> {
        placement
            .destinations
            .iter()
            .map(|d| {
                format!(
                    "{}{}",
                    d.dir.display(),
                    if d.create { " (new)" } else { "" }
                )
            })
            .collect()
    }

    #[test]
    fn hybrid_container_scope_joins_every_mounted_hierarchy() {
        let fs = hybrid();
        let placement = plan(&fs, 42, Scope::Container, "leaf").unwrap();
        assert_eq!(placement.layout, Layout::Hybrid);
        // net_cls is not mounted here: skipped, it is not needed.
        assert_eq!(
            dirs(&placement),
            [
                format!("/sys/fs/cgroup/pids{CONTAINER}"),
                format!("/sys/fs/cgroup/memory{CONTAINER}"),
                format!("/sys/fs/cgroup/cpu,cpuacct{CONTAINER}"),
                format!("/sys/fs/cgroup/systemd{CONTAINER}"),
                format!("/sys/fs/cgroup/unified{CONTAINER}"),
            ]
        );
        assert_eq!(
            placement.memory_dir,
            Path::new(&format!("/sys/fs/cgroup/memory{CONTAINER}"))
        );
    }

    #[test]
    fn v1_pod_scope_joins_the_pod_cgroup_itself() {
        let fs = hybrid();
        let placement = plan(&fs, 42, Scope::Pod, "leaf").unwrap();
        assert!(
            placement
                .destinations
                .iter()
                .all(|d| d.dir.ends_with("pod1234-abcd") && !d.create),
            "{:?}",
            dirs(&placement)
        );
        placement.create(&fs).unwrap();
        placement.join(&fs, 777).unwrap();
        let writes = fs.writes.lock().unwrap().clone();
        assert_eq!(writes.len(), 5);
        assert!(
            writes
                .iter()
                .all(|(path, pid)| pid == "777" && path.ends_with("pod1234-abcd/cgroup.procs"))
        );
        assert!(placement.created().is_empty());
    }

    const V2_MOUNTINFO: &str = "\
28 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const V2_POD: &str =
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_abcd.slice";

    fn v2() -> FakeFs {
        let fs = FakeFs::default();
        let container = format!("{V2_POD}/cri-containerd-c0ffee.scope");
        fs.file("/proc/self/mountinfo", V2_MOUNTINFO)
            .file("/proc/42/cgroup", &format!("0::{container}\n"))
            .file(
                &format!("/sys/fs/cgroup{container}/cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            )
            .file(
                &format!("/sys/fs/cgroup{V2_POD}/cgroup.subtree_control"),
                "cpuset cpu io memory pids\n",
            )
            .file(&format!("/sys/fs/cgroup{V2_POD}/memory.max"), "268435456\n")
            .file("/sys/fs/cgroup/kubepods.slice/memory.max", "max\n")
            .dir(&format!("/sys/fs/cgroup{container}"))
            .dir(&format!("/sys/fs/cgroup{V2_POD}"));
        fs
    }

    #[test]
    fn v2_pod_scope_makes_a_leaf_under_the_pod_cgroup() {
        let fs = v2();
        let placement = plan(&fs, 42, Scope::Pod, "faultline-stress-x").unwrap();
        assert_eq!(placement.layout, Layout::V2);
        let leaf = PathBuf::from(format!("/sys/fs/cgroup{V2_POD}/faultline-stress-x"));
        assert_eq!(dirs(&placement), [format!("{} (new)", leaf.display())]);
        assert_eq!(placement.created(), std::slice::from_ref(&leaf));
        // The limit is found on the pod cgroup above the (not yet made) leaf.
        assert_eq!(placement.memory_limit(&fs), Some(268435456));
        placement.create(&fs).unwrap();
        assert!(fs.is_dir(&leaf));
        remove_created(&fs, &placement.created()).unwrap();
        assert!(!fs.is_dir(&leaf));
        // Removing again is not an error.
        remove_created(&fs, &placement.created()).unwrap();
    }

    #[test]
    fn v2_container_scope_joins_the_container_leaf() {
        let fs = v2();
        let placement = plan(&fs, 42, Scope::Container, "leaf").unwrap();
        assert_eq!(placement.destinations.len(), 1);
        assert!(
            placement.destinations[0]
                .dir
                .ends_with("cri-containerd-c0ffee.scope")
        );
        assert!(!placement.destinations[0].create);
    }

    #[test]
    fn v2_without_the_memory_controller_is_refused() {
        let fs = v2();
        fs.file(
            &format!("/sys/fs/cgroup{V2_POD}/cri-containerd-c0ffee.scope/cgroup.controllers"),
            "cpu pids\n",
        );
        let err = plan(&fs, 42, Scope::Container, "leaf").unwrap_err();
        assert!(err.to_string().contains("memory controller"), "{err}");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn pod_scope_needs_a_pod_cgroup() {
        let fs = FakeFs::default();
        fs.file("/proc/self/mountinfo", HYBRID_MOUNTINFO).file(
            "/proc/42/cgroup",
            "5:memory:/k8s.io/c0ffee\n4:cpu,cpuacct:/k8s.io/c0ffee\n0::/k8s.io/c0ffee\n",
        );
        for hierarchy in ["unified", "cpu,cpuacct", "memory"] {
            fs.dir(&format!("/sys/fs/cgroup/{hierarchy}/k8s.io/c0ffee"));
        }
        assert!(plan(&fs, 42, Scope::Container, "leaf").is_ok());
        let err = plan(&fs, 42, Scope::Pod, "leaf").unwrap_err();
        assert!(matches!(err, CgroupError::NoPodCgroup { .. }), "{err}");
        assert!(err.to_string().contains("/k8s.io/c0ffee"), "{err}");
    }

    #[test]
    fn a_target_outside_our_cgroup_namespace_is_refused() {
        let fs = hybrid();
        fs.file(
            "/proc/42/cgroup",
            "5:memory:/../../kubepods/pod1/c\n4:cpu,cpuacct:/../../kubepods/pod1/c\n",
        );
        let err = plan(&fs, 42, Scope::Container, "leaf").unwrap_err();
        assert!(matches!(err, CgroupError::OutsideNamespace { .. }), "{err}");
    }

    #[test]
    fn missing_hierarchies_and_gone_targets() {
        let fs = hybrid();
        fs.file(
            "/proc/self/mountinfo",
            &HYBRID_MOUNTINFO
                .lines()
                .filter(|l| !l.contains("rw,memory"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let err = plan(&fs, 42, Scope::Container, "leaf").unwrap_err();
        assert!(
            matches!(&err, CgroupError::NotMounted { hierarchy, .. } if hierarchy == "memory"),
            "{err}"
        );
        let err = plan(&fs, 43, Scope::Container, "leaf").unwrap_err();
        assert!(matches!(err, CgroupError::Gone { .. }), "{err}");
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    #[test]
    fn v1_limits_and_oom_kills() {
        let fs = hybrid();
        fs.file(
            &format!("/sys/fs/cgroup/memory{POD}/memory.limit_in_bytes"),
            "50331648\n",
        )
        .file(
            &format!("/sys/fs/cgroup/memory{CONTAINER}/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .file(
            &format!("/sys/fs/cgroup/memory{CONTAINER}/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        let placement = plan(&fs, 42, Scope::Container, "leaf").unwrap();
        assert_eq!(placement.memory_limit(&fs), Some(50331648));
        assert_eq!(placement.oom_kills(&fs), Some(3));
        fs.file(
            &format!("/sys/fs/cgroup/memory{POD}/memory.limit_in_bytes"),
            "9223372036854771712\n",
        );
        assert_eq!(placement.memory_limit(&fs), None);
    }

    #[test]
    fn a_refused_join_names_the_cgroup() {
        let fs = hybrid();
        let placement = plan(&fs, 42, Scope::Container, "leaf").unwrap();
        *fs.refuse_writes_to.lock().unwrap() = Some(PathBuf::from(format!(
            "/sys/fs/cgroup/memory{CONTAINER}/cgroup.procs"
        )));
        let err = placement.join(&fs, 9).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("/sys/fs/cgroup/memory{CONTAINER}")),
            "{err}"
        );
    }

    #[test]
    fn node_memory_from_meminfo() {
        let fs = FakeFs::default();
        fs.file(
            "/proc/meminfo",
            "MemTotal:       24684312 kB\nMemFree: 1 kB\n",
        );
        assert_eq!(node_memory(&fs), Some(24684312 * 1024));
    }

    #[test]
    fn a_helper_joins_a_shared_leaf_under_a_v2_pod_cgroup_removed_once_empty() {
        let fs = v2();
        let leaf = PathBuf::from(format!("/sys/fs/cgroup{V2_POD}/{}", helpers::LEAF));
        helpers::place(&fs, 42, 777).unwrap();
        assert!(fs.is_dir(&leaf));
        assert_eq!(
            fs.writes.lock().unwrap().clone(),
            [(leaf.join("cgroup.procs"), "777".to_owned())]
        );
        // A second helper of the same pod shares it.
        helpers::place(&fs, 42, 778).unwrap();
        // While a helper is in it, it stays.
        fs.file(&leaf.join("cgroup.procs").to_string_lossy(), "778\n");
        let leaves = helpers::leaves_of_target(&fs, 42);
        assert_eq!(leaves, std::slice::from_ref(&leaf));
        assert_eq!(helpers::release(&fs, &leaves), helpers::Release::InUse);
        assert!(fs.is_dir(&leaf));
        // The helper's own view finds the same leaf.
        fs.file(
            "/proc/778/cgroup",
            &format!("0::{V2_POD}/{}\n", helpers::LEAF),
        );
        fs.file(
            &format!("{}/cgroup.controllers", leaf.display()),
            "cpu memory\n",
        );
        assert_eq!(helpers::leaves_of_helper(&fs, 778), leaves);
        // Once none is in it, it goes; and again is not an error.
        fs.file(&leaf.join("cgroup.procs").to_string_lossy(), "");
        assert_eq!(helpers::release(&fs, &leaves), helpers::Release::Done);
        assert!(!fs.is_dir(&leaf));
        assert_eq!(helpers::release(&fs, &leaves), helpers::Release::Done);
    }

    #[test]
    fn a_helper_joins_the_v1_pod_cgroups_and_nothing_is_made_or_removed() {
        let fs = hybrid();
        helpers::place(&fs, 42, 777).unwrap();
        let writes = fs.writes.lock().unwrap().clone();
        assert_eq!(writes.len(), 5, "{writes:?}");
        assert!(
            writes
                .iter()
                .all(|(path, pid)| pid == "777" && path.ends_with("pod1234-abcd/cgroup.procs"))
        );
        assert!(helpers::leaves_of_target(&fs, 42).is_empty());
        assert!(fs.removed.lock().unwrap().is_empty());
    }

    #[test]
    fn a_helper_of_a_target_without_a_pod_cgroup_is_not_moved() {
        let fs = FakeFs::default();
        fs.file("/proc/self/mountinfo", HYBRID_MOUNTINFO).file(
            "/proc/42/cgroup",
            "5:memory:/k8s.io/c0ffee\n0::/k8s.io/c0ffee\n",
        );
        fs.dir("/sys/fs/cgroup/memory/k8s.io/c0ffee");
        let err = helpers::place(&fs, 42, 777).unwrap_err();
        assert!(matches!(err, CgroupError::NoPodCgroup { .. }), "{err}");
        assert!(fs.writes.lock().unwrap().is_empty());
        // A gone target has nothing to release.
        assert!(helpers::leaves_of_target(&fs, 4242).is_empty());
    }
}
