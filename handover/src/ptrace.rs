//! Stopping every thread of one process (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`), and the
//! registers and memory of one stopped thread, through `nix::sys::ptrace`.
//!
//! The tracer is the calling OS thread: every call for a process must come from the thread that
//! stopped it, and that thread should end after [`StoppedProcess`] is dropped, because a
//! thread that never stopped (one in an uninterruptible sleep) stays attached, with our
//! interrupt pending, until its tracer exits; the kernel then detaches it and drops the
//! interrupt.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::arch::Regs;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("process {pid} exited")]
    Exited { pid: u32 },
    #[error(
        "threads {tids:?} of process {pid} did not stop within {within:?} (state {states}: \
         an uninterruptible system call); the process was left running untouched"
    )]
    NotStopping {
        pid: u32,
        tids: Vec<i32>,
        states: String,
        within: Duration,
    },
    #[error("cannot trace process {pid}: {source} (another tracer, or not permitted)")]
    Seize { pid: u32, source: Errno },
    #[error("ptrace {op} on thread {tid}: {source}")]
    Ptrace {
        op: &'static str,
        tid: i32,
        source: Errno,
    },
    #[error("memory of process {pid} at {addr:#x}: {source}")]
    Memory {
        pid: u32,
        addr: u64,
        source: std::io::Error,
    },
}

/// One stopped thread, as syscall injection needs it.
pub trait Tracee {
    fn regs(&mut self) -> Result<Regs, TraceError>;
    fn set_regs(&mut self, regs: &Regs) -> Result<(), TraceError>;
    /// Runs one instruction and returns once the thread has stopped again (it may have
    /// stopped for a signal before running it: the caller checks the instruction pointer).
    fn step(&mut self) -> Result<(), TraceError>;
    fn read_word(&mut self, addr: u64) -> Result<u64, TraceError>;
    fn write_word(&mut self, addr: u64, word: u64) -> Result<(), TraceError>;
    /// Reads what it can of `buf.len()` bytes at `addr`.
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, TraceError>;
}

/// A process whose every thread is stopped under our trace. Dropping it lets them all run
/// again, re-delivering any signal that arrived while they were stopped.
#[derive(Debug)]
pub struct StoppedProcess {
    pid: u32,
    /// Every thread we seized, stopped or not.
    seized: BTreeSet<i32>,
    /// Signals that stopped a thread while we held it, to deliver on detach.
    signals: BTreeMap<i32, Signal>,
    /// The thread system calls are injected into.
    worker: i32,
    mem: Option<File>,
}

fn tasks(pid: u32) -> Result<BTreeSet<i32>, TraceError> {
    let dir =
        std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|_| TraceError::Exited { pid })?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn thread_state(pid: u32, tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            after.split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

impl StoppedProcess {
    /// Seizes and interrupts every thread of `pid` (also threads created meanwhile) and
    /// waits up to `within` for all of them to stop.
    pub fn stop(pid: u32, within: Duration) -> Result<StoppedProcess, TraceError> {
        let mut process = StoppedProcess {
            pid,
            seized: BTreeSet::new(),
            signals: BTreeMap::new(),
            worker: pid as i32,
            mem: None,
        };
        let deadline = Instant::now() + within;
        let mut stopped = BTreeSet::new();
        loop {
            let new: Vec<i32> = tasks(pid)?.difference(&process.seized).copied().collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                match ptrace::seize(Pid::from_raw(tid), ptrace::Options::empty()) {
                    Ok(()) => {}
                    Err(Errno::ESRCH) => continue, // the thread ended
                    Err(source) => return Err(TraceError::Seize { pid, source }),
                }
                process.seized.insert(tid);
                if let Err(source) = ptrace::interrupt(Pid::from_raw(tid))
                    && source != Errno::ESRCH
                {
                    return Err(TraceError::Ptrace {
                        op: "interrupt",
                        tid,
                        source,
                    });
                }
            }
            process.wait_for_stops(&mut stopped, deadline, within)?;
        }
        if !stopped.contains(&(pid as i32)) {
            process.worker = *stopped.iter().next().ok_or(TraceError::Exited { pid })?;
        }
        Ok(process)
    }

    fn wait_for_stops(
        &mut self,
        stopped: &mut BTreeSet<i32>,
        deadline: Instant,
        within: Duration,
    ) -> Result<(), TraceError> {
        loop {
            let waiting: Vec<i32> = self.seized.difference(stopped).copied().collect();
            if waiting.is_empty() {
                return Ok(());
            }
            for tid in waiting {
                let status = waitpid(
                    Pid::from_raw(tid),
                    Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
                );
                match status {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(WaitStatus::Stopped(_, signal)) => {
                        // A signal arrived before our interrupt: keep it for later, and let
                        // the thread reach the interrupt stop.
                        self.signals.insert(tid, signal);
                        let _ = ptrace::cont(Pid::from_raw(tid), None);
                    }
                    Ok(WaitStatus::PtraceEvent(..)) => {
                        stopped.insert(tid);
                    }
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                        self.seized.remove(&tid);
                        if tid == self.pid as i32 || self.seized.is_empty() {
                            return Err(TraceError::Exited { pid: self.pid });
                        }
                    }
                    Ok(_) => {
                        stopped.insert(tid);
                    }
                    Err(source) => {
                        return Err(TraceError::Ptrace {
                            op: "wait",
                            tid,
                            source,
                        });
                    }
                }
            }
            if Instant::now() >= deadline {
                let tids: Vec<i32> = self.seized.difference(stopped).copied().collect();
                let states = tids
                    .iter()
                    .map(|t| thread_state(self.pid, *t))
                    .collect::<Vec<_>>()
                    .join(",");
                return Err(TraceError::NotStopping {
                    pid: self.pid,
                    tids,
                    states,
                    within,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn threads(&self) -> usize {
        self.seized.len()
    }

    /// The registers of every thread we hold (after [`StoppedProcess::stop`] returned, all of
    /// them are stopped): to check where each thread is before code it may be running is
    /// rewritten.
    pub fn thread_regs(&self) -> Result<Vec<(i32, Regs)>, TraceError> {
        self.seized
            .iter()
            .map(|&tid| {
                ptrace::getregs(Pid::from_raw(tid))
                    .map(|regs| (tid, regs))
                    .map_err(|source| {
                        if source == Errno::ESRCH {
                            TraceError::Exited { pid: self.pid }
                        } else {
                            TraceError::Ptrace {
                                op: "getregs",
                                tid,
                                source,
                            }
                        }
                    })
            })
            .collect()
    }

    fn tid(&self) -> Pid {
        Pid::from_raw(self.worker)
    }

    fn err(&self, op: &'static str) -> impl Fn(Errno) -> TraceError + '_ {
        move |source| {
            if source == Errno::ESRCH {
                TraceError::Exited { pid: self.pid }
            } else {
                TraceError::Ptrace {
                    op,
                    tid: self.worker,
                    source,
                }
            }
        }
    }
}

impl Tracee for StoppedProcess {
    fn regs(&mut self) -> Result<Regs, TraceError> {
        ptrace::getregs(self.tid()).map_err(self.err("getregs"))
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), TraceError> {
        ptrace::setregs(self.tid(), *regs).map_err(self.err("setregs"))
    }

    fn step(&mut self) -> Result<(), TraceError> {
        ptrace::step(self.tid(), None).map_err(self.err("singlestep"))?;
        // Blocks while the injected call runs (it may wait for a FUSE reply): the thread must
        // not be let go with our registers in it. Waits for any thread this OS thread traces
        // (`__WNOTHREAD`: not those of other tracer threads): when the process is killed
        // meanwhile, its other threads' exits must be collected before the kernel reports the
        // leader's, so waiting for the worker alone could wait forever.
        loop {
            let status = waitpid(
                Pid::from_raw(-1),
                Some(WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD),
            );
            let tid = status.as_ref().ok().and_then(|s| s.pid()).map(Pid::as_raw);
            match status {
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD)
                    if tid.is_none_or(|t| t == self.worker) =>
                {
                    self.seized.remove(&self.worker);
                    return Err(TraceError::Exited { pid: self.pid });
                }
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                    if let Some(tid) = tid {
                        self.seized.remove(&tid);
                    }
                }
                _ if tid != Some(self.worker) && status.is_ok() => {
                    // Another thread of ours stopped again (a signal it got while held): keep
                    // the signal for the detach.
                    if let (Ok(WaitStatus::Stopped(_, signal)), Some(tid)) = (status, tid) {
                        self.signals.insert(tid, signal);
                    }
                }
                Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => return Ok(()),
                Ok(WaitStatus::Stopped(_, signal)) => {
                    self.signals.insert(self.worker, signal);
                    return Ok(());
                }
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(source) => return Err(self.err("wait")(source)),
            }
        }
    }

    fn read_word(&mut self, addr: u64) -> Result<u64, TraceError> {
        ptrace::read(self.tid(), addr as ptrace::AddressType)
            .map(|w| w as u64)
            .map_err(self.err("peekdata"))
    }

    fn write_word(&mut self, addr: u64, word: u64) -> Result<(), TraceError> {
        ptrace::write(
            self.tid(),
            addr as ptrace::AddressType,
            word as libc::c_long,
        )
        .map_err(self.err("pokedata"))
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, TraceError> {
        let pid = self.pid;
        if self.mem.is_none() {
            self.mem =
                Some(
                    File::open(format!("/proc/{pid}/mem"))
                        .map_err(|source| TraceError::Memory { pid, addr, source })?,
                );
        }
        let mem = self.mem.as_ref().ok_or(TraceError::Exited { pid })?;
        mem.read_at(buf, addr)
            .map_err(|source| TraceError::Memory { pid, addr, source })
    }
}

impl Drop for StoppedProcess {
    fn drop(&mut self) {
        for &tid in &self.seized {
            // Fails for a thread that never stopped (it stays attached until this OS thread
            // ends) or that is gone; nothing else to do for either.
            let _ = ptrace::detach(Pid::from_raw(tid), self.signals.get(&tid).copied());
        }
    }
}
