//! One handover: scan every process that sees the mount (cheap, nothing is stopped), then
//! stop, one at a time and each only briefly, exactly the processes that hold something to
//! move; rescan each once it is stopped (it cannot change its descriptors any more), move, put
//! its registers back, let it go.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::arch::Native;
use crate::inject::{InjectError, Remote, find_instruction};
use crate::moves::{Moved, carry_out};
use crate::proc_source::{HostProc, ProcSource};
use crate::ptrace::StoppedProcess;
use crate::report::Report;
use crate::scan::{
    FaultMount, ScanError, Scope, Skipped, field, find_fault_mount, parse_map_line,
    processes_sharing_mounts, scan_process,
};

/// The type of our FUSE mounts in mount tables.
pub const FAULT_FSTYPE: &str = "fuse.faultline";

#[derive(Debug, Clone)]
pub struct Options {
    /// How long every thread of a process gets to stop; a thread in an uninterruptible system
    /// call past it makes us leave that process alone (reported).
    pub stop_within: Duration,
    /// Stop every process that sees the mount, all at once, for the whole handover (what
    /// Chaos Mesh's toda does); only for comparison in benchmarks.
    pub freeze_everything: bool,
    /// Called with the PID right after a process has been stopped (tests use it to make the
    /// process exit mid-handover).
    pub on_stopped: Option<fn(u32)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stop_within: Duration::from_secs(1),
            freeze_everything: false,
            on_stopped: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("no {FAULT_FSTYPE} mount over {volume} in the mount namespace of process {pid}")]
    NoFaultMount { pid: u32, volume: String },
}

/// The fault mount over `volume` as process `pid` sees it.
pub fn fault_mount(pid: u32, volume: &Path) -> Result<FaultMount, HandoverError> {
    find_fault_mount(&HostProc::default(), pid, volume, FAULT_FSTYPE)?.ok_or_else(|| {
        HandoverError::NoFaultMount {
            pid,
            volume: volume.display().to_string(),
        }
    })
}

/// Moves what every process in `target_pid`'s mount namespace holds under the volume, in
/// `scope.direction`.
pub fn hand_over(
    target_pid: u32,
    scope: &Scope,
    options: &Options,
) -> Result<Report, HandoverError> {
    let src = HostProc::default();
    let me = std::process::id();
    let pids: Vec<u32> = processes_sharing_mounts(&src, target_pid)?
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    Ok(hand_over_pids(&src, &pids, scope, options))
}

/// [`hand_over`] for a given list of processes.
pub fn hand_over_pids(
    src: &(dyn ProcSource + Sync),
    pids: &[u32],
    scope: &Scope,
    options: &Options,
) -> Report {
    let mut report = Report::default();
    let mut holders = Vec::new();
    for (pid, scanned) in scan_all(src, pids, scope) {
        match scanned {
            Ok(plan) => {
                report.scanned += 1;
                if plan.is_empty() {
                    report.skipped.extend(plan.skipped);
                } else {
                    holders.push(pid);
                }
            }
            Err(ScanError::Gone { .. }) => {}
            Err(err) => report.skipped.push(Skipped {
                pid,
                what: "process".into(),
                reason: err.to_string(),
            }),
        }
    }
    if options.freeze_everything {
        std::thread::scope(|s| {
            s.spawn(|| freeze_everything(pids, &holders, scope, options, &mut report));
        });
        return report;
    }
    for pid in holders {
        let started = Instant::now();
        // A tracer thread of its own, which ends here: a thread that never stopped is
        // detached by the kernel when its tracer ends (see `crate::ptrace`).
        let (moved, failure) = std::thread::scope(|s| {
            s.spawn(|| match StoppedProcess::stop(pid, options.stop_within) {
                Ok(mut stopped) => {
                    if let Some(hook) = options.on_stopped {
                        hook(pid);
                    }
                    move_in(&mut stopped, scope)
                }
                Err(err) => (Moved::default(), Some(err.to_string())),
            })
            .join()
            .unwrap_or_else(|_| (Moved::default(), Some("the tracer thread panicked".into())))
        });
        report.longest_stop_us = report
            .longest_stop_us
            .max(started.elapsed().as_micros() as u64);
        account(&mut report, pid, moved, failure);
    }
    report
}

/// Scans every process, on as many threads as there are CPUs (up to 8): reading `/proc` is
/// the part of a handover that grows with the container.
fn scan_all(
    src: &(dyn ProcSource + Sync),
    pids: &[u32],
    scope: &Scope,
) -> Vec<(u32, Result<crate::scan::ProcessPlan, ScanError>)> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    if workers == 1 || pids.len() < 64 {
        return pids
            .iter()
            .map(|&pid| (pid, scan_process(src, pid, scope)))
            .collect();
    }
    let chunk = pids.len().div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = pids
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&pid| (pid, scan_process(src, pid, scope)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn account(report: &mut Report, pid: u32, moved: Moved, failure: Option<String>) {
    report.stopped += 1;
    report.fds += moved.fds;
    report.cwds += moved.cwds;
    report.mappings += moved.mappings;
    report.skipped.extend(moved.skipped);
    if let Some(reason) = failure {
        report.skipped.push(Skipped {
            pid,
            what: "process".into(),
            reason: format!("handover stopped: {reason}"),
        });
    }
}

/// Rescans the stopped process and moves what it holds. Registers and memory are restored
/// before this returns, whatever happened.
fn move_in(stopped: &mut StoppedProcess, scope: &Scope) -> (Moved, Option<String>) {
    let pid = stopped.pid();
    let src = HostProc::default();
    let plan = match scan_process(&src, pid, scope) {
        Ok(plan) => plan,
        Err(err) => return (Moved::default(), Some(err.to_string())),
    };
    if plan.is_empty() {
        // A process being killed drops its descriptors before it is gone.
        let failure = exiting(pid).then(|| "the process exited during the handover".to_owned());
        return (
            Moved {
                skipped: plan.skipped,
                ..Default::default()
            },
            failure,
        );
    }
    let maps: Vec<_> = src
        .read(&format!("{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(parse_map_line)
        .collect();
    let seccomp = src
        .read(&format!("{pid}/status"))
        .ok()
        .and_then(|s| field(&s, "Seccomp"))
        == Some(2);
    let source = find_instruction::<Native>(stopped, &maps);
    let mut moved = Moved::default();
    let result = Remote::<_, Native>::begin(stopped, source).and_then(|mut remote| {
        let done = carry_out(&mut remote, &plan, seccomp, &mut moved);
        let restored = remote.end();
        done.and(restored)
    });
    let failure = match result {
        Ok(()) => None,
        Err(InjectError::Trace(crate::ptrace::TraceError::Exited { .. })) => {
            Some("the process exited during the handover".into())
        }
        Err(err) => Some(err.to_string()),
    };
    (moved, failure)
}

/// Gone, a zombie, or dying (SIGKILL pending).
fn exiting(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap_or("")
        .trim();
    let pending_kill = status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("ShdPnd:")
                .or_else(|| l.strip_prefix("SigPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .any(|mask| mask & (1 << (libc::SIGKILL - 1)) != 0);
    state.starts_with('Z') || state.starts_with('X') || pending_kill
}

/// Stops every process first and lets them go only at the end.
fn freeze_everything(
    pids: &[u32],
    holders: &[u32],
    scope: &Scope,
    options: &Options,
    report: &mut Report,
) {
    let started = Instant::now();
    let mut frozen = Vec::new();
    for &pid in pids {
        match StoppedProcess::stop(pid, options.stop_within) {
            Ok(stopped) => frozen.push(stopped),
            Err(err) => report.skipped.push(Skipped {
                pid,
                what: "process".into(),
                reason: err.to_string(),
            }),
        }
    }
    for stopped in frozen.iter_mut() {
        if holders.contains(&stopped.pid()) {
            let pid = stopped.pid();
            let (moved, failure) = move_in(stopped, scope);
            account(report, pid, moved, failure);
        }
    }
    report.stopped = frozen.len() as u32;
    drop(frozen);
    report.longest_stop_us = started.elapsed().as_micros() as u64;
}
