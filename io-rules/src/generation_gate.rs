//! Rule-set generations and the waits that end when the generation moves: latency sleeps
//! (cut short so removed rules stop delaying at once) and watchers of rule changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

/// How a latency sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepOutcome {
    /// The whole delay passed.
    Elapsed,
    /// The rules changed first.
    CutShort,
    /// The caller's cancel flag was set first (a FUSE interrupt: the waiting process got a
    /// signal, maybe SIGKILL, and must not wait out the rest of the delay).
    Interrupted,
}

#[derive(Debug)]
pub(super) struct GenerationGate {
    current: Mutex<u64>,
    changed: Condvar,
    // For async waiters; the condvar serves the FUSE worker threads.
    published: watch::Sender<u64>,
}

impl GenerationGate {
    pub fn new() -> GenerationGate {
        GenerationGate {
            current: Mutex::new(0),
            changed: Condvar::new(),
            published: watch::Sender::new(0),
        }
    }

    /// Moves to the next generation: `publish` runs with the new number while waiters
    /// still see the old one, then every waiter is woken.
    pub fn advance(&self, publish: impl FnOnce(u64)) -> u64 {
        let mut current = self.current.lock();
        let next = *current + 1;
        publish(next);
        *current = next;
        drop(current);
        self.changed.notify_all();
        self.published.send_replace(next);
        next
    }

    /// Blocks until `delay` has passed or the generation is no longer `generation`.
    pub fn sleep(&self, delay: Duration, generation: u64) -> SleepOutcome {
        self.sleep_unless(delay, generation, &AtomicBool::new(false))
    }

    /// [`GenerationGate::sleep`] that also ends once `cancelled` is set; whoever sets it calls
    /// [`GenerationGate::wake_all`] after.
    pub fn sleep_unless(
        &self,
        delay: Duration,
        generation: u64,
        cancelled: &AtomicBool,
    ) -> SleepOutcome {
        let deadline = Instant::now().checked_add(delay);
        let mut current = self.current.lock();
        while *current == generation {
            if cancelled.load(Ordering::Acquire) {
                return SleepOutcome::Interrupted;
            }
            match deadline {
                Some(deadline) => {
                    if self.changed.wait_until(&mut current, deadline).timed_out() {
                        return if *current == generation {
                            SleepOutcome::Elapsed
                        } else {
                            SleepOutcome::CutShort
                        };
                    }
                }
                // A delay too long for the clock: wait for a change only.
                None => self.changed.wait(&mut current),
            }
        }
        SleepOutcome::CutShort
    }

    /// Wakes every sleeper so that each checks its cancel flag again.
    pub fn wake_all(&self) {
        // Taking the lock orders this after a sleeper's flag check and before its wait.
        let _current = self.current.lock();
        self.changed.notify_all();
    }

    /// The async form of [`GenerationGate::sleep`].
    pub async fn sleep_async(&self, delay: Duration, generation: u64) -> SleepOutcome {
        let mut receiver = self.published.subscribe();
        let changed = receiver.wait_for(|current| *current != generation);
        match tokio::time::timeout(delay, changed).await {
            Ok(_) => SleepOutcome::CutShort,
            Err(_elapsed) => SleepOutcome::Elapsed,
        }
    }

    /// Blocks until the generation differs from `seen` or `timeout` passes; returns the
    /// generation then current.
    pub fn wait_for_change(&self, seen: u64, timeout: Option<Duration>) -> u64 {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut current = self.current.lock();
        while *current == seen {
            match deadline {
                Some(deadline) => {
                    if self.changed.wait_until(&mut current, deadline).timed_out() {
                        break;
                    }
                }
                None => self.changed.wait(&mut current),
            }
        }
        *current
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }
}
