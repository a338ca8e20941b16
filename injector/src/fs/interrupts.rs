//! FUSE interrupts of requests the injector holds in an injected delay.
//!
//! When a process waiting on a FUSE request gets a signal, the kernel sends FUSE_INTERRUPT
//! for that request and then waits, unkillably, for its answer. A latency of an hour would
//! keep a SIGKILLed process in D state for the hour. So once its request is interrupted, a
//! delay watches the process that asked: when it is dying (SIGKILL pending, or gone) the
//! delay ends and the operation goes on as if it had run out (never an unexpected `EINTR`).
//! A signal that does not kill leaves the delay in force — the kernel also interrupts for
//! things that are not signals at all (io_uring task work) — but the watch goes on, every
//! [`WATCH_EVERY`], since the kernel interrupts a request only once.
//!
//! An interrupt may be read (by another worker thread) before its request starts sleeping;
//! such early interrupts are kept, a bounded number of the latest, and a request that finds
//! its own there does not sleep at all.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Early interrupts kept; most are for requests that were answered without a delay.
const EARLY_KEPT: usize = 256;

/// How often an interrupted delay looks again whether the process that asked is dying.
pub(crate) const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The request a delay holds: its id and the thread that sent it (as the kernel numbers it
/// in the pid namespace of the mount's connection, ours in both modes; 0 when it has none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Requester {
    pub unique: u64,
    pub pid: u32,
}

impl Requester {
    pub fn of(req: &fuser::Request) -> Requester {
        Requester {
            unique: req.unique().0,
            pid: req.pid(),
        }
    }

    /// The thread that asked is being killed or is gone. Unknown (no pid, or a /proc that
    /// cannot say) counts as dying: a delay never holds a process we cannot see.
    pub fn dying(&self) -> bool {
        if self.pid == 0 {
            return true;
        }
        match std::fs::read_to_string(format!("/proc/{}/status", self.pid)) {
            Ok(status) => fatal_signal_pending(&status).unwrap_or(true),
            Err(_) => true,
        }
    }
}

/// Whether SIGKILL is pending for the thread (`SigPnd`) or its process (`ShdPnd`) in the
/// text of `/proc/TID/status`; `None` if the fields are missing or malformed.
fn fatal_signal_pending(status: &str) -> Option<bool> {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let pending = mask("SigPnd:")? | mask("ShdPnd:")?;
    Some(pending & SIGKILL_BIT != 0)
}

#[derive(Default)]
pub(crate) struct Interrupts {
    board: Mutex<Board>,
}

#[derive(Default)]
struct Board {
    sleeping: HashMap<u64, Arc<AtomicBool>>,
    early: VecDeque<u64>,
}

impl Interrupts {
    /// Request `unique` is about to sleep: its cancel flag, already set if its interrupt came
    /// first.
    pub fn register(&self, unique: u64) -> Arc<AtomicBool> {
        let mut board = self.board.lock();
        let early = board.early.iter().position(|&u| u == unique);
        let flag = Arc::new(AtomicBool::new(early.is_some()));
        if let Some(at) = early {
            board.early.remove(at);
        }
        board.sleeping.insert(unique, flag.clone());
        flag
    }

    /// Request `unique` is done sleeping.
    pub fn unregister(&self, unique: u64) {
        self.board.lock().sleeping.remove(&unique);
    }

    /// The kernel interrupts `unique`. True when a sleeping request was flagged: the caller
    /// then wakes the sleepers so that it sees its flag.
    pub fn interrupt(&self, unique: u64) -> bool {
        let mut board = self.board.lock();
        if let Some(flag) = board.sleeping.get(&unique) {
            flag.store(true, Ordering::Release);
            return true;
        }
        if board.early.len() == EARLY_KEPT {
            board.early.pop_front();
        }
        board.early.push_back(unique);
        false
    }

    #[cfg(test)]
    fn sleeping(&self) -> usize {
        self.board.lock().sleeping.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_flags_only_its_own_sleeping_request() {
        let interrupts = Interrupts::default();
        let (a, b) = (interrupts.register(10), interrupts.register(12));
        assert!(interrupts.interrupt(10));
        assert!(a.load(Ordering::Acquire));
        assert!(!b.load(Ordering::Acquire));
        interrupts.unregister(10);
        interrupts.unregister(12);
        assert_eq!(interrupts.sleeping(), 0);
    }

    #[test]
    fn an_interrupt_read_before_its_request_sleeps_is_kept_for_it() {
        let interrupts = Interrupts::default();
        assert!(!interrupts.interrupt(7));
        assert!(interrupts.register(7).load(Ordering::Acquire));
        interrupts.unregister(7);
        // Used once: the same id does not stay flagged.
        assert!(!interrupts.register(7).load(Ordering::Acquire));
    }

    #[test]
    fn sigkill_pending_is_read_from_either_mask() {
        let status = |sig: &str, shd: &str| format!("Name:\tx\nSigPnd:\t{sig}\nShdPnd:\t{shd}\n");
        assert_eq!(
            fatal_signal_pending(&status("0000000000000000", "0000000000000000")),
            Some(false)
        );
        // SIGUSR1 (10) only.
        assert_eq!(
            fatal_signal_pending(&status("0000000000000200", "0000000000000000")),
            Some(false)
        );
        assert_eq!(
            fatal_signal_pending(&status("0000000000000100", "0000000000000000")),
            Some(true)
        );
        assert_eq!(
            fatal_signal_pending(&status("0000000000000000", "0000000000000100")),
            Some(true)
        );
        assert_eq!(fatal_signal_pending("Name:\tx\n"), None);
        assert_eq!(fatal_signal_pending("SigPnd:\tzz\nShdPnd:\t0\n"), None);
    }

    #[test]
    fn an_unknown_or_gone_requester_counts_as_dying_and_we_do_not() {
        assert!(Requester { unique: 1, pid: 0 }.dying());
        assert!(
            Requester {
                unique: 1,
                pid: u32::MAX
            }
            .dying()
        );
        assert!(
            !Requester {
                unique: 1,
                pid: std::process::id()
            }
            .dying()
        );
    }

    #[test]
    fn early_interrupts_are_bounded() {
        let interrupts = Interrupts::default();
        for unique in 0..(EARLY_KEPT as u64 + 10) {
            interrupts.interrupt(unique);
        }
        assert!(
            !interrupts.register(0).load(Ordering::Acquire),
            "oldest dropped"
        );
        assert!(
            interrupts
                .register(EARLY_KEPT as u64 + 9)
                .load(Ordering::Acquire)
        );
    }
}
