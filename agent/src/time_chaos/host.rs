//! What the time pipeline does to the host, behind a trait: finding a container's processes
//! (`/proc`, cgroupfs), and stopping, patching and restoring one process (the timeshift crate,
//! ptrace).

use std::path::{Path, PathBuf};

use timeshift::{Options, ProcessReport, Shift, Site};

use super::TimeError;
use super::record::Scope;

pub trait TimeHost: Send + Sync + std::fmt::Debug {
    /// Where the processes of the container whose init is `pid` are.
    fn scope_of(&self, pid: u32) -> Result<Scope, TimeError>;
    /// Its processes now.
    fn processes(&self, scope: &Scope) -> Result<Vec<u32>, TimeError>;
    /// This kernel's vDSO entry bytes.
    fn originals(&self) -> Result<Vec<Site>, TimeError>;
    /// `(start time, vDSO address)` of a live process: a new process or an exec changes it.
    fn identity(&self, pid: u32) -> Option<(u64, u64)>;
    fn shift(&self, pid: u32, shift: Shift) -> ProcessReport;
    fn unshift(&self, pid: u32, originals: &[Site]) -> ProcessReport;
}

/// The real host.
#[derive(Debug, Default)]
pub struct RealHost {
    pub options: Options,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn pid_ns(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

fn cgroup_procs(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_procs(&entry.path(), out);
            }
        }
    }
}

impl TimeHost for RealHost {
    fn scope_of(&self, pid: u32) -> Result<Scope, TimeError> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| TimeError::Host(format!("/proc/{pid}/cgroup: {e}")))?;
        // cgroup v2: the single "0::/path" line.
        let unified = text
            .lines()
            .filter_map(|l| l.strip_prefix("0::"))
            .next()
            .filter(|_| text.lines().count() == 1);
        if let Some(path) = unified {
            let dir = PathBuf::from(CGROUP_ROOT).join(path.trim_start_matches('/'));
            if dir.join("cgroup.procs").exists() && path != "/" {
                return Ok(Scope::Cgroup(dir));
            }
        }
        let ns = pid_ns(pid).ok_or(TimeError::Host(format!("/proc/{pid}/ns/pid: gone")))?;
        if Some(ns) == pid_ns(1) {
            return Err(TimeError::HostNamespace { pid });
        }
        Ok(Scope::PidNamespace(ns))
    }

    fn processes(&self, scope: &Scope) -> Result<Vec<u32>, TimeError> {
        let mut pids = Vec::new();
        match scope {
            Scope::Cgroup(dir) => {
                if !dir.exists() {
                    return Ok(pids); // the container is gone
                }
                cgroup_procs(dir, &mut pids);
            }
            Scope::PidNamespace(ns) => {
                let entries = std::fs::read_dir("/proc")
                    .map_err(|e| TimeError::Host(format!("/proc: {e}")))?;
                pids.extend(
                    entries
                        .flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                        .filter(|pid| pid_ns(*pid) == Some(*ns)),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        // Never ourselves (an agent run inside the container it shifts, in tests).
        pids.retain(|p| *p != std::process::id());
        Ok(pids)
    }

    fn originals(&self) -> Result<Vec<Site>, TimeError> {
        timeshift::this_kernels_originals().map_err(|e| TimeError::Host(format!("our vDSO: {e}")))
    }

    fn identity(&self, pid: u32) -> Option<(u64, u64)> {
        Some((timeshift::start_time(pid)?, timeshift::vdso_base(pid)?))
    }

    fn shift(&self, pid: u32, shift: Shift) -> ProcessReport {
        timeshift::shift(pid, shift, &self.options)
    }

    fn unshift(&self, pid: u32, originals: &[Site]) -> ProcessReport {
        timeshift::unshift(pid, originals, &self.options)
    }
}
