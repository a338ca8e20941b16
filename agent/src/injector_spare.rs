//! One injector started ahead of need. Starting a process is most of what an injection waits
//! for (fork, exec, loading, the runtime: about 2 ms of a 4 ms start here), so the agent keeps
//! one `faultline-injector standby` waiting, hands it the next mount, and starts the next
//! spare after that injection. Concurrent injections beyond the one spare start their own.
//!
//! A spare holds no fault: it mounts nothing until assigned, and it ends when the agent's end
//! of its control channel closes (the agent exited), leaving only its socket's path, which the
//! next agent removes ([`SpareInjector::clear_left_over`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::injector_process::{InjectorProcess, Standby};

/// The file-name prefix of spare control sockets in the control socket directory.
const SPARE_PREFIX: &str = "spare-";

#[derive(Debug)]
pub struct SpareInjector {
    binary: PathBuf,
    /// The control socket directory (a spare's socket is renamed within it when assigned).
    dir: PathBuf,
    slot: Mutex<Option<Standby>>,
    started: AtomicU64,
}

impl SpareInjector {
    pub fn new(binary: PathBuf, dir: PathBuf) -> Self {
        Self {
            binary,
            dir,
            slot: Mutex::default(),
            started: AtomicU64::new(0),
        }
    }

    /// The waiting spare, if one is still running.
    pub fn take(&self) -> Option<Standby> {
        let spare = self.slot.lock().ok()?.take()?;
        if spare.identity().is_alive() {
            return Some(spare);
        }
        tracing::warn!(
            pid = spare.identity().pid,
            "the spare injector had exited; starting an injector instead"
        );
        None
    }

    /// Starts a spare unless one is waiting. Without one, the next injection starts its own
    /// injector: a failure here is only logged.
    pub fn refill(&self) {
        let Ok(mut slot) = self.slot.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let socket = self
            .dir
            .join(format!("{SPARE_PREFIX}{}-{n}.sock", std::process::id()));
        match InjectorProcess::spawn_standby(&self.binary, &socket) {
            Ok(spare) => *slot = Some(spare),
            Err(err) => tracing::warn!(%err, "cannot start a spare injector"),
        }
    }

    /// Removes the sockets of spares a previous agent left: each ended with that agent.
    pub fn clear_left_over(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if is_spare_socket(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn is_spare_socket(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(SPARE_PREFIX) && name.ends_with(".sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spare_sockets_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "spare-12-0.sock",
            "spare-12-1.sock",
            "0123abcd.sock",
            "spare-notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        SpareInjector::new("/nonexistent".into(), dir.path().to_owned()).clear_left_over();
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["0123abcd.sock", "spare-notes.txt"]);
    }
}
