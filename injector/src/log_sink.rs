//! Where the injector's log lines go. Started by an agent, our stderr is a pipe that agent reads
//! and forwards into its own log. The agent may die (a crash, an OOM kill) while we keep the
//! fault in force; the pipe then fails (EPIPE), and without this module what we logged from
//! then on — and everything after a later agent adopted us — was lost.
//!
//! [`LogSink`] is the `MakeWriter` of our tracing subscriber. It writes to stderr while stderr
//! takes it; lines it cannot deliver are kept (the newest [`BACKLOG`], the others counted as
//! dropped). An agent that adopts us attaches a connection of our control socket as our log
//! ([`LogSink::attach`], on the line [`ATTACH_LINE`]): it first gets what was kept, then every
//! line as it is logged. Logging never blocks a FUSE worker on that connection: lines go
//! through a bounded queue to a thread of their own, and a line the queue cannot take is
//! dropped and counted.
//!
//! (tracing-appender's non-blocking writer does the queueing part, but neither swaps its
//! destination at run time nor keeps what a dead destination refused, which is the job here.)

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

/// The first line an agent sends on a control connection that is to carry our log (not JSON:
/// it can never be taken for a JSON-RPC request).
pub const ATTACH_LINE: &str = "LOGS";
/// How many undelivered lines are kept for the next agent.
pub const BACKLOG: usize = 256;
/// How many lines may wait for a slow attached agent before new ones are dropped.
const QUEUE: usize = 1024;

/// Writes one line to stderr (a test gives one that fails).
type StderrWrite = dyn Fn(&[u8]) -> io::Result<()> + Send + Sync;

/// A `MakeWriter` for the tracing subscriber; clones share one destination.
#[derive(Clone)]
pub struct LogSink {
    state: Arc<Mutex<State>>,
    stderr: Arc<StderrWrite>,
}

#[derive(Default)]
struct State {
    stderr_failed: bool,
    backlog: VecDeque<Vec<u8>>,
    dropped: u64,
    attached: Option<SyncSender<Vec<u8>>>,
}

impl Default for LogSink {
    fn default() -> Self {
        Self::with_stderr(|line| {
            let mut stderr = io::stderr().lock();
            stderr.write_all(line)?;
            stderr.flush()
        })
    }
}

impl LogSink {
    /// A sink whose "stderr" is `stderr` (tests give one that fails).
    pub fn with_stderr(stderr: impl Fn(&[u8]) -> io::Result<()> + Send + Sync + 'static) -> Self {
        Self {
            state: Arc::default(),
            stderr: Arc::new(stderr),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the state inconsistent (each field is
        // updated on its own): keep logging.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers one formatted event.
    fn deliver(&self, line: &[u8]) {
        let mut state = self.state();
        if let Some(attached) = &state.attached {
            match attached.try_send(line.to_vec()) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    state.dropped += 1;
                    return;
                }
                // The agent went away: keep lines for the next one.
                Err(TrySendError::Disconnected(_)) => state.attached = None,
            }
        }
        if !state.stderr_failed {
            match (self.stderr)(line) {
                Ok(()) => return,
                Err(_) => state.stderr_failed = true,
            }
        }
        if state.backlog.len() == BACKLOG {
            state.backlog.pop_front();
            state.dropped += 1;
        }
        state.backlog.push_back(line.to_vec());
    }

    /// Makes `connection` our log from now on: the lines kept meanwhile first (after a line
    /// saying how many were dropped, if any), then each line as it is logged.
    pub fn attach(&self, mut connection: UnixStream) -> io::Result<()> {
        connection.set_nonblocking(false)?;
        let (sender, lines) = sync_channel::<Vec<u8>>(QUEUE);
        {
            let mut state = self.state();
            let dropped = std::mem::take(&mut state.dropped);
            if dropped > 0 {
                let notice = format!(
                    "faultline-injector: {dropped} log lines were dropped while no agent read them\n"
                );
                let _ = sender.try_send(notice.into_bytes());
            }
            for line in state.backlog.drain(..) {
                let _ = sender.try_send(line);
            }
            state.attached = Some(sender);
        }
        std::thread::Builder::new()
            .name("log-forwarder".into())
            .spawn(move || {
                for line in lines {
                    if connection.write_all(&line).is_err() {
                        // Dropping the receiver tells the next write to keep lines instead.
                        return;
                    }
                }
            })?;
        Ok(())
    }
}

/// One event being formatted; delivered whole when the subscriber drops it.
pub struct EventWriter {
    sink: LogSink,
    line: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.sink.deliver(&self.line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: self.clone(),
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn log(sink: &LogSink, line: &str) {
        let mut writer = tracing_subscriber::fmt::MakeWriter::make_writer(sink);
        writer.write_all(line.as_bytes()).unwrap();
    }

    /// A stderr that works until `broken` is set, recording what it took.
    fn stderr(broken: Arc<AtomicBool>, took: Arc<Mutex<Vec<String>>>) -> LogSink {
        LogSink::with_stderr(move |line| {
            if broken.load(Ordering::SeqCst) {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            took.lock()
                .unwrap()
                .push(String::from_utf8_lossy(line).into());
            Ok(())
        })
    }

    fn read_lines(reader: &mut BufReader<UnixStream>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                line
            })
            .collect()
    }

    #[test]
    fn lines_logged_after_the_agent_died_reach_the_agent_that_attaches() {
        let broken = Arc::new(AtomicBool::new(false));
        let took = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr(Arc::clone(&broken), Arc::clone(&took));
        log(&sink, "while the first agent lives\n");
        assert_eq!(*took.lock().unwrap(), ["while the first agent lives\n"]);

        broken.store(true, Ordering::SeqCst); // the agent died: EPIPE
        log(&sink, "alone 1\n");
        log(&sink, "alone 2\n");

        let (ours, agents) = UnixStream::pair().unwrap();
        sink.attach(ours).unwrap();
        log(&sink, "adopted\n");
        let mut reader = BufReader::new(agents);
        assert_eq!(
            read_lines(&mut reader, 3),
            ["alone 1\n", "alone 2\n", "adopted\n"]
        );
        // Nothing went to the broken stderr after it failed.
        assert_eq!(took.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_backlog_keeps_the_newest_lines_and_counts_the_rest() {
        let sink = LogSink::with_stderr(|_| Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        for n in 0..BACKLOG + 10 {
            log(&sink, &format!("line {n}\n"));
        }
        let (ours, agents) = UnixStream::pair().unwrap();
        sink.attach(ours).unwrap();
        let mut reader = BufReader::new(agents);
        let lines = read_lines(&mut reader, 2);
        assert!(lines[0].contains("10 log lines were dropped"), "{lines:?}");
        assert_eq!(lines[1], "line 10\n");
    }

    #[test]
    fn an_agent_that_goes_away_again_leaves_lines_for_the_next() {
        let sink = LogSink::with_stderr(|_| Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        let (ours, agents) = UnixStream::pair().unwrap();
        sink.attach(ours).unwrap();
        drop(agents);
        // The forwarder notices on its first failed write; then lines are kept again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut n = 0u32;
        while sink.state().attached.is_some() && std::time::Instant::now() < deadline {
            log(&sink, &format!("probe {n}\n"));
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(sink.state().attached.is_none());
        log(&sink, "for the next agent\n");
        let (ours, agents) = UnixStream::pair().unwrap();
        sink.attach(ours).unwrap();
        // Kept probes come first (those sent before the forwarder noticed were lost with the
        // connection).
        agents
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(agents);
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "for the next agent\n" {
                break;
            }
            assert!(line.starts_with("probe "), "{line:?} after {seen:?}");
            seen.push(line);
        }
    }
}
