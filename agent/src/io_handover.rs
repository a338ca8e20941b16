//! The handover step of an IO experiment (the `handover` crate does the work): once the fault
//! mount is in place, what the container's processes already held under the volume (open
//! files, working directories, file mappings) moves onto it; at recovery, once the injector has
//! detached its mount (so the volume path resolves to the original directory again while it
//! still serves the files open on it), everything on the fault mount moves back, so the
//! injector drains and exits with nothing left busy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use handover::{Direction, FaultMount, Options, Report, Scope, Skipped};

/// How long the injector gets to detach its mount after `recover` before the way back is
/// attempted anyway.
const DETACH_WITHIN: Duration = Duration::from_secs(2);

/// What the handover at the start did.
#[derive(Debug, Clone)]
pub struct HandedOver {
    pub report: Report,
    /// The fault mount, if it was found: recovery moves back what is on it.
    pub fault: Option<FaultMount>,
}

fn failed(pid: u32, what: &str, reason: String) -> Report {
    Report {
        skipped: vec![Skipped {
            pid,
            what: what.into(),
            reason,
        }],
        ..Report::default()
    }
}

/// Moves what the processes in `target_pid`'s mount namespace hold under `volume` onto the
/// fault mount over it.
pub async fn onto_fault_mount(target_pid: u32, volume: &str) -> HandedOver {
    let volume = PathBuf::from(volume);
    let work = move || {
        let fault = match handover::fault_mount(target_pid, &volume) {
            Ok(fault) => fault,
            Err(err) => {
                return HandedOver {
                    report: failed(target_pid, "mount", err.to_string()),
                    fault: None,
                };
            }
        };
        let scope = Scope {
            volume,
            fault,
            direction: Direction::ToFault,
        };
        let report = handover::hand_over(target_pid, &scope, &Options::default())
            .unwrap_or_else(|err| failed(target_pid, "processes", err.to_string()));
        HandedOver {
            report,
            fault: Some(fault),
        }
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(err) => HandedOver {
            report: failed(target_pid, "handover", err.to_string()),
            fault: None,
        },
    }
}

/// Moves everything on the (detached) fault mount back onto the original directory.
pub async fn back_to_original(target_pid: u32, volume: &str, fault: FaultMount) -> Report {
    let volume = PathBuf::from(volume);
    let work = move || {
        let deadline = Instant::now() + DETACH_WITHIN;
        while still_attached(target_pid, fault.mount_id) {
            if Instant::now() >= deadline {
                return failed(
                    target_pid,
                    "mount",
                    "the fault mount was not detached: nothing can be moved back yet".into(),
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let scope = Scope {
            volume,
            fault,
            direction: Direction::ToOriginal,
        };
        handover::hand_over(target_pid, &scope, &Options::default())
            .unwrap_or_else(|err| failed(target_pid, "processes", err.to_string()))
    };
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| failed(target_pid, "handover", err.to_string()))
}

fn still_attached(pid: u32, mount_id: u64) -> bool {
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
        return false; // the namespace is gone, and the mount with it
    };
    let id = mount_id.to_string();
    table
        .lines()
        .any(|l| l.split(' ').next() == Some(id.as_str()))
}
