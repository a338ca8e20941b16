//! Kernel cache invalidations on a thread of their own, waited for with a bound.
//!
//! Dropping an inode's cached pages (`FUSE_NOTIFY_INVAL_INODE` with offset 0) locks each of
//! its page-cache folios. A read through the page cache holds its folio locked until we
//! answer it, and a read the new rules delay is answered late: an invalidation done on the
//! control thread then waited, in D state, for that delay — while holding the rule store's
//! update lock, so a recovery could not even begin to cut the delay short (issue 23, bug 2).
//! Here the control thread hands the batch over and waits at most [`WAIT`]; what is left
//! finishes in the background, counted in [`Invalidator::waiting`] and reported.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use fuser::{INodeNo, Notifier};

/// How long an update waits for its invalidations before reporting them as still waiting.
pub(crate) const WAIT: Duration = Duration::from_secs(2);

/// One cache entry to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// Attributes (offset -1) or attributes and cached pages (offset 0) of an inode.
    Inode { ino: u64, offset: i64 },
    /// The dentry `name` in directory `parent`.
    Entry { parent: u64, name: OsString },
}

/// Where invalidations go: the kernel, or a recording double in tests.
pub(crate) trait InvalidationSink: Send + 'static {
    fn invalidate(&self, item: &Invalidation);
}

impl InvalidationSink for Notifier {
    fn invalidate(&self, item: &Invalidation) {
        let result = match item {
            Invalidation::Inode { ino, offset } => self.inval_inode(INodeNo(*ino), *offset, 0),
            Invalidation::Entry { parent, name } => self.inval_entry(INodeNo(*parent), name),
        };
        // ENOENT: the kernel already forgot it. Nothing else is actionable here.
        if let Err(e) = result {
            tracing::debug!(?item, error = %e, "cache invalidation");
        }
    }
}

struct Batch {
    items: Vec<Invalidation>,
    done: mpsc::SyncSender<()>,
}

pub(crate) struct Invalidator {
    batches: mpsc::Sender<Batch>,
    waiting: Arc<AtomicUsize>,
}

impl Invalidator {
    /// Starts the invalidation thread over `sink`.
    pub fn start(sink: impl InvalidationSink) -> std::io::Result<Invalidator> {
        let (batches, inbox) = mpsc::channel::<Batch>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let counter = waiting.clone();
        std::thread::Builder::new()
            .name("fuse-invalidate".into())
            .spawn(move || {
                for batch in inbox {
                    for item in &batch.items {
                        sink.invalidate(item);
                        counter.fetch_sub(1, Ordering::AcqRel);
                    }
                    // The waiter may have given up: nobody to tell.
                    let _ = batch.done.try_send(());
                }
            })?;
        Ok(Invalidator { batches, waiting })
    }

    /// Invalidates `items`, waiting up to `wait`. True when all were done in time.
    pub fn run(&self, items: Vec<Invalidation>, wait: Duration) -> bool {
        if items.is_empty() {
            return true;
        }
        let (done, finished) = mpsc::sync_channel(1);
        let count = items.len();
        self.waiting.fetch_add(count, Ordering::AcqRel);
        if self.batches.send(Batch { items, done }).is_err() {
            // The thread is gone (it cannot panic: nothing in it does); count nothing.
            self.waiting.fetch_sub(count, Ordering::AcqRel);
            return false;
        }
        finished.recv_timeout(wait).is_ok()
    }

    /// Invalidations handed over and not yet done.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what it is asked; blocks on inode 13 until released (a locked folio).
    #[derive(Clone, Default)]
    struct Recorder {
        seen: Arc<Mutex<Vec<Invalidation>>>,
        release: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }

    impl InvalidationSink for Recorder {
        fn invalidate(&self, item: &Invalidation) {
            if *item == (Invalidation::Inode { ino: 13, offset: 0 }) {
                let (lock, cv) = &*self.release;
                let mut released = lock.lock().unwrap();
                while !*released {
                    released = cv.wait(released).unwrap();
                }
            }
            self.seen.lock().unwrap().push(item.clone());
        }
    }

    #[test]
    fn a_batch_is_done_in_order_and_waited_for() {
        let recorder = Recorder::default();
        let invalidator = Invalidator::start(recorder.clone()).unwrap();
        let items = vec![
            Invalidation::Inode { ino: 2, offset: -1 },
            Invalidation::Entry {
                parent: 1,
                name: "f".into(),
            },
        ];
        assert!(invalidator.run(items.clone(), Duration::from_secs(20)));
        assert_eq!(*recorder.seen.lock().unwrap(), items);
        assert_eq!(invalidator.waiting(), 0);
        assert!(invalidator.run(Vec::new(), Duration::ZERO));
    }

    #[test]
    fn a_blocked_invalidation_does_not_hold_the_caller_and_finishes_later() {
        let recorder = Recorder::default();
        let invalidator = Invalidator::start(recorder.clone()).unwrap();
        let blocked = vec![
            Invalidation::Inode { ino: 13, offset: 0 },
            Invalidation::Inode { ino: 14, offset: 0 },
        ];
        assert!(!invalidator.run(blocked, Duration::from_millis(50)));
        assert_eq!(invalidator.waiting(), 2);
        // A later update queues behind it and is reported as waiting too, not lost.
        assert!(!invalidator.run(
            vec![Invalidation::Inode {
                ino: 15,
                offset: -1
            }],
            Duration::from_millis(50)
        ));
        assert_eq!(invalidator.waiting(), 3);
        let (lock, cv) = &*recorder.release;
        *lock.lock().unwrap() = true;
        cv.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while invalidator.waiting() > 0 {
            assert!(std::time::Instant::now() < deadline, "never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(recorder.seen.lock().unwrap().len(), 3);
    }
}
