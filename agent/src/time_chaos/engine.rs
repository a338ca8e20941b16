//! The pipeline's steps against a [`TimeHost`]: shift what is new in the scope, update the
//! offset, recover from the record alone. One process at a time, each stopped only while it is
//! patched (the timeshift crate).

use timeshift::{Outcome, ProcessReport, Shift, Skip};

use super::TimeError;
use super::host::TimeHost;
use super::record::{ShiftedProcess, SkippedProcess, TimeRecord};

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub shifted: Vec<u32>,
    pub updated: Vec<u32>,
    pub skipped: Vec<SkippedProcess>,
    pub exited: Vec<u32>,
    pub longest_stop_us: u64,
}

impl Pass {
    pub fn changed(&self) -> bool {
        !(self.shifted.is_empty() && self.updated.is_empty() && self.skipped.is_empty())
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} processes shifted, {} updated, {} skipped, {} exited meanwhile; longest stop {} µs",
            self.shifted.len(),
            self.updated.len(),
            self.skipped.len(),
            self.exited.len(),
            self.longest_stop_us
        );
        for skip in &self.skipped {
            s += &format!("\n  skipped pid {}: {}", skip.pid, skip.reason);
        }
        s
    }

    fn note(&mut self, report: &ProcessReport) {
        self.longest_stop_us = self.longest_stop_us.max(report.stopped_us);
    }
}

fn is_recorded(record: &TimeRecord, pid: u32, identity: (u64, u64)) -> bool {
    record
        .processes
        .iter()
        .any(|p| p.pid == pid && (p.start_time, p.vdso) == identity)
}

/// Shifts every process of the scope that is not shifted yet: new ones, and ones that exec'd
/// since (a fresh vDSO). A fork of a shifted process already jumps to our page (inherited):
/// its offset is rewritten to the current one and it is recorded.
pub fn shift_new(host: &dyn TimeHost, record: &mut TimeRecord) -> Result<Pass, TimeError> {
    let mut pass = Pass::default();
    for pid in host.processes(&record.scope)? {
        let Some(identity) = host.identity(pid) else {
            continue; // gone, or a kernel thread
        };
        if is_recorded(record, pid, identity) || record.skipped.iter().any(|s| s.pid == pid) {
            continue;
        }
        // An exec'd process: its old entry is stale.
        record.processes.retain(|p| p.pid != pid);
        let report = host.shift(pid, record.shift);
        pass.note(&report);
        match report.outcome {
            Outcome::Shifted(patched) if patched.sites != record.originals => {
                // Not this kernel's image as we see it: we could not put it back from the
                // record, so it is put back now.
                let undo = host.unshift(pid, &patched.sites);
                pass.note(&undo);
                pass.skipped.push(SkippedProcess {
                    pid,
                    reason: "its vDSO entries differ from this kernel's (as the agent sees \
                             them); put back at once"
                        .into(),
                });
            }
            Outcome::Shifted(patched) => {
                record.processes.push(ShiftedProcess {
                    pid,
                    start_time: patched.start_time,
                    vdso: patched.vdso,
                });
                pass.shifted.push(pid);
            }
            Outcome::Updated { .. } => {
                record.processes.push(ShiftedProcess {
                    pid,
                    start_time: identity.0,
                    vdso: identity.1,
                });
                pass.updated.push(pid);
            }
            Outcome::Skipped(Skip::Exited) => pass.exited.push(pid),
            Outcome::Skipped(skip) => pass.skipped.push(SkippedProcess {
                pid,
                reason: skip.to_string(),
            }),
            Outcome::Restored { .. } | Outcome::NotShifted => {}
        }
    }
    record.skipped.extend(pass.skipped.iter().cloned());
    record.longest_stop_us = record.longest_stop_us.max(pass.longest_stop_us);
    Ok(pass)
}

/// A second SetTimeOffset: the new offset and mask written into every shifted process, then
/// any process not shifted yet is.
pub fn update(
    host: &dyn TimeHost,
    record: &mut TimeRecord,
    shift: Shift,
) -> Result<Pass, TimeError> {
    record.shift = shift;
    let mut pass = Pass::default();
    let mut kept = Vec::new();
    for process in std::mem::take(&mut record.processes) {
        if host.identity(process.pid) != Some((process.start_time, process.vdso)) {
            continue; // exited or exec'd: shift_new below sees it again if it is still there
        }
        let report = host.shift(process.pid, shift);
        pass.note(&report);
        match report.outcome {
            Outcome::Updated { .. } => {
                pass.updated.push(process.pid);
                kept.push(process);
            }
            Outcome::Skipped(Skip::Exited) => pass.exited.push(process.pid),
            // Shifted afresh (someone put it back meanwhile) or skipped: shift_new records it.
            Outcome::Shifted(_) => {
                pass.shifted.push(process.pid);
                kept.push(process);
            }
            other => pass.skipped.push(SkippedProcess {
                pid: process.pid,
                reason: format!("{other:?}"),
            }),
        }
    }
    record.processes = kept;
    let new = shift_new(host, record)?;
    pass.shifted.extend(new.shifted);
    pass.updated.extend(new.updated);
    pass.skipped.extend(new.skipped);
    pass.exited.extend(new.exited);
    pass.longest_stop_us = pass.longest_stop_us.max(new.longest_stop_us);
    Ok(pass)
}

/// What a recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub restored: Vec<u32>,
    /// Processes whose page stayed mapped (a thread was in it); harmless, unused.
    pub page_left: Vec<u32>,
    /// Processes that could not be put back, and why: the record is kept.
    pub problems: Vec<String>,
}

/// Puts back every process of the record: the recorded ones still alive, and every process in
/// the scope now (forks of shifted ones are shifted too, and a crash may have come between a
/// patch and its journal entry). A process without our jumps is left alone.
pub fn recover(host: &dyn TimeHost, record: &TimeRecord) -> Recovered {
    let mut pids: Vec<u32> = record
        .processes
        .iter()
        .filter(|p| {
            host.identity(p.pid)
                .is_some_and(|(start, _)| start == p.start_time)
        })
        .map(|p| p.pid)
        .collect();
    let mut out = Recovered::default();
    match host.processes(&record.scope) {
        Ok(now) => pids.extend(now),
        Err(e) => out
            .problems
            .push(format!("listing the container's processes: {e}")),
    }
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let report = host.unshift(pid, &record.originals);
        match report.outcome {
            Outcome::Restored { page_unmapped } => {
                out.restored.push(pid);
                if !page_unmapped {
                    out.page_left.push(pid);
                }
            }
            Outcome::NotShifted | Outcome::Skipped(Skip::Exited | Skip::NoVdso) => {}
            Outcome::Skipped(skip) => out.problems.push(format!("pid {pid}: {skip}")),
            other => out.problems.push(format!("pid {pid}: {other:?}")),
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests;
