//! FUSE interrupts of requests the injector holds in an injected delay.
//!
//! When a process waiting on a FUSE request gets a signal, the kernel sends FUSE_INTERRUPT
//! for that request and then waits, unkillably, for its answer. A latency of an hour would
//! keep a SIGKILLed process in D state for the hour. So a delay ends when its request is
//! interrupted, and the operation then goes on as if the delay had run out (never an
//! unexpected `EINTR`: a harmless signal only shortens that one delay).
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
