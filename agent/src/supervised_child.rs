//! A helper process (injector, stressor) owned by a reaper task: its exit status is published,
//! signals go through the reaper so they can never reach a reaped and reused PID, and its stderr
//! is forwarded to our log with the last lines kept to explain a failure.

use crate::process_identity::ProcessIdentity;
use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

/// How many stderr lines are kept.
const STDERR_TAIL: usize = 20;

#[derive(Debug)]
pub struct SupervisedChild {
    pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
    signals: mpsc::Sender<Signal>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// Turns true once its stderr reached end of file (every line is in the tail).
    stderr_closed: watch::Receiver<bool>,
}

/// How long a child that has exited gets for its last stderr lines to be read: the pipe is
/// drained by another task, which may not have seen the end yet when the exit is published.
const STDERR_DRAIN: Duration = Duration::from_millis(500);

impl SupervisedChild {
    /// The identity of a child just spawned, before it is adopted (so it cannot have been
    /// reaped yet: a zombie still has its /proc entry).
    pub fn identity_of(child: &Child) -> std::io::Result<ProcessIdentity> {
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child was reaped before it was adopted"))?;
        ProcessIdentity::of(pid)
    }

    /// Takes over `child` (and its piped stderr, if any), whose identity was read with
    /// [`Self::identity_of`]. `role` names it in our log.
    pub fn adopt(mut child: Child, identity: ProcessIdentity, role: &'static str) -> Self {
        let pid = identity.pid;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (stderr_closed_tx, stderr_closed) = watch::channel(child.stderr.is_none());
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&stderr_tail);
            tokio::spawn(async move {
                forward_stderr(stderr, role, pid, tail).await;
                let _ = stderr_closed_tx.send(true);
            });
        }
        let (exit_tx, exit) = watch::channel(None);
        let (signals, mut signal_rx) = mpsc::channel::<Signal>(4);
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(signal) = signal_rx.recv() => signal_child(&mut child, signal),
                }
            };
            let status = status.unwrap_or_else(|_| ExitStatus::from_raw(Signal::SIGKILL as i32));
            let _ = exit_tx.send(Some(status));
        });
        Self {
            pid,
            exit,
            signals,
            stderr_tail,
            stderr_closed,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the process has exited (and been reaped).
    pub async fn wait(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        loop {
            if let Some(status) = *exit.borrow_and_update() {
                return status;
            }
            if exit.changed().await.is_err() {
                // The reaper is gone without a status: count it as killed.
                return ExitStatus::from_raw(Signal::SIGKILL as i32);
            }
        }
    }

    /// The exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// The exit status, if it exits within `within`.
    pub async fn wait_for(&self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.wait()).await.ok()
    }

    /// SIGKILL, and wait until reaped.
    pub async fn kill(&self) -> ExitStatus {
        let _ = self.signals.send(Signal::SIGKILL).await;
        self.wait().await
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`; waits until reaped.
    pub async fn terminate(&self, grace: Duration) -> ExitStatus {
        let _ = self.signals.send(Signal::SIGTERM).await;
        match self.wait_for(grace).await {
            Some(status) => status,
            None => self.kill().await,
        }
    }

    /// The last lines it wrote to stderr, joined, once it has exited and its stderr has been
    /// read to the end (or [`STDERR_DRAIN`] has passed): what explains a failure is usually
    /// the very last line, written just before the exit.
    pub async fn stderr_tail_after_exit(&self) -> String {
        let mut closed = self.stderr_closed.clone();
        let _ = tokio::time::timeout(STDERR_DRAIN, closed.wait_for(|closed| *closed)).await;
        self.stderr_tail()
    }

    /// The last lines it wrote to stderr so far, joined.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }
}

/// Only the reaper calls this, so the child cannot have been reaped (and its PID reused) in
/// between.
fn signal_child(child: &mut Child, signal: Signal) {
    if signal == Signal::SIGKILL {
        let _ = child.start_kill();
    } else if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

/// Forwards a helper's log lines (its stderr, or the log connection of an adopted injector)
/// into ours, keeping the last [`STDERR_TAIL`] in `tail`.
pub(crate) async fn forward_stderr(
    stderr: impl tokio::io::AsyncRead + Unpin,
    role: &'static str,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(helper = role, pid, "{line}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_the_exit_and_keeps_stderr() {
        let child = tokio::process::Command::new("sh")
            .args(["-c", "echo first >&2; echo last >&2; exit 3"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let identity = SupervisedChild::identity_of(&child).unwrap();
        let supervised = SupervisedChild::adopt(child, identity, "test");
        assert_eq!(supervised.wait().await.code(), Some(3));
        assert_eq!(supervised.exited().and_then(|s| s.code()), Some(3));
        // stderr is forwarded by another task: the tail after the exit waits for its end.
        assert_eq!(supervised.stderr_tail_after_exit().await, "first | last");
    }

    #[tokio::test]
    async fn terminate_escalates_to_kill() {
        let child = tokio::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .spawn()
            .unwrap();
        let identity = SupervisedChild::identity_of(&child).unwrap();
        let supervised = SupervisedChild::adopt(child, identity, "test");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = supervised.terminate(Duration::from_millis(200)).await;
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    }
}
