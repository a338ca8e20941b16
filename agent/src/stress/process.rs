//! One stressor process as the agent sees it: spawned held (blocked on its stdin, so nothing it
//! does is charged anywhere yet), released once it sits in its target's cgroups, dying with the
//! agent (parent-death signal), killed and reaped on cancel. The agent is its parent; one task
//! owns the child, so a kill can never reach a reaped and reused PID.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::worker::{RELEASE, StressorCommand};
use crate::journal::ProcessIdentity;

const STDERR_TAIL: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start the stressor {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the stressor process: {0}")]
    Setup(#[from] nsexec::Error),
    #[error("releasing stressor {pid}: {source}")]
    Release {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A running (or held) stressor.
#[derive(Debug)]
pub struct StressorProcess {
    pub identity: ProcessIdentity,
    exit: watch::Receiver<Option<ExitStatus>>,
    kill_request: mpsc::Sender<()>,
    /// The write end of the stressor's stdin until it is released.
    hold: Mutex<Option<std::fs::File>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl StressorProcess {
    /// Starts `binary stressor <command>` held. Must be called from a long-lived thread (a
    /// tokio worker): the parent-death signal fires when the spawning thread exits.
    pub fn spawn(binary: &Path, command: &StressorCommand) -> Result<Self, ProcessError> {
        let (read_end, write_end): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ProcessError::Spawn {
                binary: binary.to_owned(),
                source: e.into(),
            })?;
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("stressor")
            .args(command.args())
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        nsexec::spawn::prepare(
            &mut cmd,
            nsexec::spawn::ChildSetup {
                die_with_parent: Some(Signal::SIGKILL),
                ..Default::default()
            },
        )?;
        let child = Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let identity = ProcessIdentity::of(pid).unwrap_or(ProcessIdentity { pid, start_time: 0 });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (exit, kill_request) = reap(child, pid, Arc::clone(&stderr_tail));
        Ok(Self {
            identity,
            exit,
            kill_request,
            hold: Mutex::new(Some(std::fs::File::from(write_end))),
            stderr_tail,
        })
    }

    /// Lets the stressor start working.
    pub fn release(&self) -> Result<(), ProcessError> {
        let pid = self.identity.pid;
        let mut hold = self.hold.lock().map_err(|_| ProcessError::Release {
            pid,
            source: std::io::Error::other("lock poisoned"),
        })?;
        if let Some(mut pipe) = hold.take() {
            pipe.write_all(&[RELEASE])
                .map_err(|source| ProcessError::Release { pid, source })?;
        }
        Ok(())
    }

    /// Waits until the process has exited (and been reaped).
    pub async fn wait(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        loop {
            if let Some(status) = *exit.borrow_and_update() {
                return status;
            }
            if exit.changed().await.is_err() {
                return std::os::unix::process::ExitStatusExt::from_raw(Signal::SIGKILL as i32);
            }
        }
    }

    /// The exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// SIGKILL, and wait until reaped.
    pub async fn kill(&self) -> ExitStatus {
        let _ = self.kill_request.try_send(());
        self.wait().await
    }

    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }
}

fn reap(
    mut child: Child,
    pid: u32,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
) -> (watch::Receiver<Option<ExitStatus>>, mpsc::Sender<()>) {
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_stderr(stderr, pid, stderr_tail));
    }
    let (exit_tx, exit_rx) = watch::channel(None);
    let (kill_tx, mut kill_rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(()) = kill_rx.recv() => { let _ = child.start_kill(); }
            }
        };
        let status = status.unwrap_or_else(|_| {
            std::os::unix::process::ExitStatusExt::from_raw(Signal::SIGKILL as i32)
        });
        let _ = exit_tx.send(Some(status));
    });
    (exit_rx, kill_tx)
}

async fn forward_stderr(
    stderr: tokio::process::ChildStderr,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(stressor_pid = pid, "{line}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// SIGKILLs a stressor left by a previous run (no longer our child) if it is still that very
/// process, and waits up to `within` for it to be gone (a zombie counts as gone once every
/// thread has exited: it then holds no CPU, memory or cgroup).
pub async fn kill_orphan(identity: ProcessIdentity, within: std::time::Duration) -> bool {
    if !identity.is_alive() {
        return true;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(identity.pid as i32),
        Signal::SIGKILL,
    );
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if !identity.is_alive() || all_threads_dead(identity.pid) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// True when no thread of the process is alive: a zombie leader whose worker threads are still
/// exiting is not gone yet (the kernel still lists it in its cgroup).
fn all_threads_dead(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    threads.flatten().all(|thread| {
        std::fs::read_to_string(thread.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let after = &stat[stat.rfind(')')? + 1..];
                after
                    .split_whitespace()
                    .next()
                    .map(|s| s == "Z" || s == "X")
            })
            .unwrap_or(true)
    })
}
