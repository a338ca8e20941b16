//! Container PIDs the runtime gave, kept while that very process runs. A lookup through the
//! runtime costs a call to it and, behind it, to the container's shim (about 1.2 ms with
//! containerd here), and Chaos Mesh's controller resolves the same containers again and again
//! (every update and every recovery). A task's process alive with the start time it had when
//! the runtime named it means the task still runs; once it is gone (the container stopped, was
//! restarted, or its PID was reused by another process), the runtime is asked again.

use std::collections::HashMap;
use std::sync::Mutex;

use super::HostPid;
use crate::process_identity::ProcessIdentity;

/// Entries kept at most; beyond it, those whose process has ended are dropped first.
const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
pub struct PidCache {
    entries: Mutex<HashMap<String, ProcessIdentity>>,
}

impl PidCache {
    /// The PID the runtime gave for `container`, if that process still runs.
    pub fn get(&self, container: &str) -> Option<HostPid> {
        let mut entries = self.entries.lock().ok()?;
        let identity = *entries.get(container)?;
        if identity.is_alive() {
            return Some(identity.pid);
        }
        entries.remove(container);
        None
    }

    /// Keeps the runtime's answer `pid` for `container` (if the process can be read at all).
    pub fn remember(&self, container: &str, pid: HostPid) {
        let Ok(identity) = ProcessIdentity::of(pid) else {
            return;
        };
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY {
            entries.retain(|_, identity| identity.is_alive());
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(container.to_owned(), identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_kept_while_its_process_runs_and_dropped_after() {
        let cache = PidCache::default();
        assert_eq!(cache.get("abc"), None);
        cache.remember("mine", std::process::id());
        assert_eq!(cache.get("mine"), Some(std::process::id()));

        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        cache.remember("child", child.id());
        assert_eq!(cache.get("child"), Some(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            cache.get("child"),
            None,
            "a process that ended is not a task's"
        );
        assert_eq!(cache.get("child"), None);
    }

    #[test]
    fn a_pid_reused_by_another_process_is_not_taken() {
        let cache = PidCache::default();
        // The identity the runtime's PID had, then a different start time under the same PID.
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        cache.entries.lock().unwrap().insert(
            "old".into(),
            ProcessIdentity {
                pid: me.pid,
                start_time: me.start_time + 1,
            },
        );
        assert_eq!(cache.get("old"), None);
    }

    #[test]
    fn a_full_cache_drops_ended_processes_first() {
        let cache = PidCache::default();
        {
            let mut entries = cache.entries.lock().unwrap();
            for n in 0..CAPACITY {
                entries.insert(
                    format!("gone-{n}"),
                    ProcessIdentity {
                        pid: u32::MAX - 1,
                        start_time: 0,
                    },
                );
            }
        }
        cache.remember("mine", std::process::id());
        assert_eq!(cache.entries.lock().unwrap().len(), 1);
        assert_eq!(cache.get("mine"), Some(std::process::id()));
    }
}
