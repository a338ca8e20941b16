//! The pipeline against a recording double of the host: inject, "crash" (only the journaled
//! record, through JSON, survives), recover from the record.

use std::collections::BTreeMap;
use std::sync::Mutex;

use timeshift::arch::Function;
use timeshift::{ClockMask, Offset, Outcome, Patched, ProcessReport, Shift, Site, Skip};

use super::*;
use crate::time_chaos::record::Scope;

#[derive(Debug, Clone)]
struct FakeProcess {
    start_time: u64,
    vdso: u64,
    /// The offset its vDSO gives, if shifted.
    shifted: Option<Shift>,
    refuses: bool,
}

#[derive(Debug, Default)]
pub(crate) struct FakeHost {
    processes: Mutex<BTreeMap<u32, FakeProcess>>,
    calls: Mutex<Vec<String>>,
    sites: Vec<Site>,
}

fn sites() -> Vec<Site> {
    vec![Site {
        function: Function::ClockGettime,
        vdso_offset: 0x700,
        original: vec![0xf3, 0x0f, 0x1e, 0xfa, 0x55],
    }]
}

impl FakeHost {
    pub(crate) fn with(pids: &[u32]) -> FakeHost {
        let host = FakeHost {
            sites: sites(),
            ..Default::default()
        };
        for &pid in pids {
            host.spawn(pid);
        }
        host
    }
    fn spawn(&self, pid: u32) {
        self.processes.lock().unwrap().insert(
            pid,
            FakeProcess {
                start_time: 100 + u64::from(pid),
                vdso: 0x7000 + u64::from(pid),
                shifted: None,
                refuses: false,
            },
        );
    }
    pub(crate) fn fork(&self, parent: u32, child: u32) {
        let mut all = self.processes.lock().unwrap();
        let mut p = all[&parent].clone();
        p.start_time += 1000;
        all.insert(child, p);
    }
    fn exec(&self, pid: u32) {
        let mut all = self.processes.lock().unwrap();
        let p = all.get_mut(&pid).unwrap();
        p.vdso += 0x10_0000;
        p.shifted = None;
    }
    pub(crate) fn state(&self, pid: u32) -> Option<Shift> {
        self.processes.lock().unwrap()[&pid].shifted
    }
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
}

fn report(pid: u32, outcome: Outcome) -> ProcessReport {
    ProcessReport {
        pid,
        outcome,
        stopped_us: 50,
    }
}

impl TimeHost for FakeHost {
    fn scope_of(&self, _: u32) -> Result<Scope, TimeError> {
        Ok(Scope::Cgroup("/sys/fs/cgroup/pod/c".into()))
    }
    fn processes(&self, _: &Scope) -> Result<Vec<u32>, TimeError> {
        Ok(self.processes.lock().unwrap().keys().copied().collect())
    }
    fn originals(&self) -> Result<Vec<Site>, TimeError> {
        Ok(self.sites.clone())
    }
    fn identity(&self, pid: u32) -> Option<(u64, u64)> {
        let all = self.processes.lock().unwrap();
        all.get(&pid).map(|p| (p.start_time, p.vdso))
    }
    fn shift(&self, pid: u32, shift: Shift) -> ProcessReport {
        self.calls.lock().unwrap().push(format!("shift {pid}"));
        let mut all = self.processes.lock().unwrap();
        let Some(p) = all.get_mut(&pid) else {
            return report(pid, Outcome::Skipped(Skip::Exited));
        };
        if p.refuses {
            return report(
                pid,
                Outcome::Skipped(Skip::Refused {
                    call: "clock_gettime".into(),
                    errno: "EPERM".into(),
                }),
            );
        }
        let was = p.shifted.replace(shift);
        report(
            pid,
            match was {
                Some(_) => Outcome::Updated { page: 0x1000 },
                None => Outcome::Shifted(Patched {
                    pid,
                    start_time: p.start_time,
                    vdso: p.vdso,
                    page: 0x1000,
                    sites: self.sites.clone(),
                }),
            },
        )
    }
    fn unshift(&self, pid: u32, originals: &[Site]) -> ProcessReport {
        self.calls.lock().unwrap().push(format!("unshift {pid}"));
        assert_eq!(originals, self.sites.as_slice());
        let mut all = self.processes.lock().unwrap();
        let Some(p) = all.get_mut(&pid) else {
            return report(pid, Outcome::Skipped(Skip::Exited));
        };
        match p.shifted.take() {
            Some(_) => report(
                pid,
                Outcome::Restored {
                    page_unmapped: true,
                },
            ),
            None => report(pid, Outcome::NotShifted),
        }
    }
}

pub(crate) fn day() -> Shift {
    Shift {
        offset: Offset::parse_go("24h").unwrap(),
        mask: ClockMask::REALTIME,
    }
}

fn record(host: &FakeHost) -> TimeRecord {
    TimeRecord {
        pod_container_name: "pod:app".into(),
        shift: day(),
        scope: host.scope_of(1).unwrap(),
        originals: host.originals().unwrap(),
        processes: vec![],
        skipped: vec![],
        longest_stop_us: 0,
    }
}

/// What survives a crash: the journaled JSON.
fn after_crash(record: &TimeRecord) -> TimeRecord {
    serde_json::from_str(&serde_json::to_string(record).unwrap()).unwrap()
}

#[test]
fn inject_crash_recover_puts_every_process_back_also_forks() {
    let host = FakeHost::with(&[10, 11]);
    let mut rec = record(&host);
    let pass = shift_new(&host, &mut rec).unwrap();
    assert_eq!(pass.shifted, [10, 11]);
    assert_eq!(host.calls(), ["shift 10", "shift 11"]);
    assert_eq!(host.state(10), Some(day()));
    // A shifted process forks (the child inherits the patch) and the agent dies before it
    // notices.
    host.fork(10, 12);
    let journaled = after_crash(&rec);
    let recovered = recover(&host, &journaled);
    assert_eq!(recovered.restored, [10, 11, 12]);
    assert!(recovered.problems.is_empty());
    for pid in [10, 11, 12] {
        assert_eq!(host.state(pid), None, "pid {pid}");
    }
    // Recovering twice finds nothing to do and is no error.
    host.calls();
    let again = recover(&host, &journaled);
    assert!(again.restored.is_empty() && again.problems.is_empty());
}

#[test]
fn new_and_execd_processes_are_shifted_by_the_next_pass_others_are_not_touched() {
    let host = FakeHost::with(&[10]);
    let mut rec = record(&host);
    shift_new(&host, &mut rec).unwrap();
    host.calls();
    // Nothing new: nobody is stopped.
    let pass = shift_new(&host, &mut rec).unwrap();
    assert!(!pass.changed());
    assert!(host.calls().is_empty());
    host.spawn(20);
    host.exec(10);
    let pass = shift_new(&host, &mut rec).unwrap();
    assert_eq!(pass.shifted, [10, 20]);
    assert_eq!(host.state(10), Some(day()));
    assert_eq!(host.state(20), Some(day()));
    assert_eq!(rec.processes.len(), 2);
    // A fork of a shifted process: already patched, its offset rewritten and recorded.
    host.fork(20, 21);
    let pass = shift_new(&host, &mut rec).unwrap();
    assert_eq!(pass.updated, [21]);
}

#[test]
fn update_rewrites_the_offset_everywhere() {
    let host = FakeHost::with(&[10, 11]);
    let mut rec = record(&host);
    shift_new(&host, &mut rec).unwrap();
    let minus = Shift {
        offset: Offset::parse_go("-5m").unwrap(),
        mask: ClockMask(3),
    };
    let pass = update(&host, &mut rec, minus).unwrap();
    assert_eq!(pass.updated, [10, 11]);
    assert_eq!(host.state(11), Some(minus));
    assert_eq!(after_crash(&rec).shift, minus);
}

#[test]
fn refusing_processes_are_reported_once_and_not_retried() {
    let host = FakeHost::with(&[10, 11]);
    host.processes.lock().unwrap().get_mut(&11).unwrap().refuses = true;
    let mut rec = record(&host);
    let pass = shift_new(&host, &mut rec).unwrap();
    assert_eq!(pass.shifted, [10]);
    assert_eq!(pass.skipped.len(), 1);
    assert!(pass.skipped[0].reason.contains("clock_gettime"), "{pass:?}");
    assert!(pass.summary().contains("skipped pid 11"));
    host.calls();
    shift_new(&host, &mut rec).unwrap();
    assert!(host.calls().is_empty());
}

#[test]
fn a_vdso_unlike_this_kernels_is_put_back_at_once() {
    let mut host = FakeHost::with(&[10]);
    let mut rec = record(&host);
    rec.originals[0].original[0] = 0x90;
    host.sites = sites();
    let pass = shift_new(&host, &mut rec).unwrap();
    assert!(pass.shifted.is_empty());
    assert_eq!(host.calls(), ["shift 10", "unshift 10"]);
    assert_eq!(host.state(10), None);
    host.sites = sites();
}
