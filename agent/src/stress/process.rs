//! One stressor process as the agent sees it: spawned held (blocked on its stdin, so nothing it
//! does is charged anywhere yet), released once it sits in its target's cgroups, dying with the
//! agent (parent-death signal), killed and reaped on cancel. The agent is its parent; one task
//! owns the child, so a kill can never reach a reaped and reused PID.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use nix::sys::signal::Signal;
use tokio::process::Command;

use super::worker::{RELEASE, STARTED, StressorCommand};
use crate::process_identity::ProcessIdentity;
use crate::supervised_child::SupervisedChild;

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
    #[error("reading the stressor's process identity: {source}")]
    Identity {
        #[source]
        source: std::io::Error,
    },
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
    process: SupervisedChild,
    /// The write end of the stressor's stdin until it is released.
    hold: Mutex<Option<std::fs::File>>,
    /// Its stdout, where it says it started (once, after it is released).
    started: tokio::sync::Mutex<Option<tokio::process::ChildStdout>>,
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
            .stdout(Stdio::piped())
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
        // Held on its pipe, it cannot have exited; without its identity it could never be
        // told from a stranger after a crash. (Dropping the child kills it: kill_on_drop.)
        let mut child = child;
        let identity = SupervisedChild::identity_of(&child)
            .map_err(|source| ProcessError::Identity { source })?;
        let started = child.stdout.take();
        Ok(Self {
            identity,
            process: SupervisedChild::adopt(child, identity, "stressor"),
            hold: Mutex::new(Some(std::fs::File::from(write_end))),
            started: tokio::sync::Mutex::new(started),
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

    /// After [`StressorProcess::release`]: waits up to `within` for the stressor to say it
    /// runs. `Err` carries why it does not (its exit status, or that it said nothing in time).
    pub async fn started(&self, within: std::time::Duration) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        let Some(mut stdout) = self.started.lock().await.take() else {
            return Ok(()); // asked before: it had started
        };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(within, stdout.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == STARTED => Ok(()),
            Ok(_) => {
                // End of file (or garbage): it exited, or is about to.
                let status = tokio::time::timeout(within, self.wait()).await;
                Err(match status {
                    Ok(status) => format!("exited ({status})"),
                    Err(_) => "closed its output without starting".into(),
                })
            }
            Err(_) => Err(format!("did not start within {within:?}")),
        }
    }

    /// Waits until the process has exited (and been reaped).
    pub async fn wait(&self) -> ExitStatus {
        self.process.wait().await
    }

    /// The exit status, if it has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// SIGKILL, and wait until reaped.
    pub async fn kill(&self) -> ExitStatus {
        self.process.kill().await
    }

    /// Its last stderr lines, all of them once it has exited.
    pub async fn stderr_tail(&self) -> String {
        self.process.stderr_tail_after_exit().await
    }
}

/// A spawned (held) stressor as the lifecycle sees it; [`StressorProcess`] is the real one.
#[tonic::async_trait]
pub trait Stressor: Send + Sync + std::fmt::Debug {
    fn identity(&self) -> ProcessIdentity;
    /// Lets it start working.
    fn release(&self) -> Result<(), ProcessError>;
    /// After `release`: waits up to `within` until it runs; `Err` says why it does not.
    async fn started(&self, within: std::time::Duration) -> Result<(), String>;
    /// The exit status, if it has exited.
    fn exited(&self) -> Option<ExitStatus>;
    /// Waits until it has exited (and been reaped).
    async fn wait(&self) -> ExitStatus;
    /// SIGKILL, and wait until reaped.
    async fn kill(&self) -> ExitStatus;
    /// Its last stderr lines (waiting briefly for the last ones when it is exiting).
    async fn stderr_tail(&self) -> String;
}

#[tonic::async_trait]
impl Stressor for StressorProcess {
    fn identity(&self) -> ProcessIdentity {
        self.identity
    }
    fn release(&self) -> Result<(), ProcessError> {
        StressorProcess::release(self)
    }
    async fn started(&self, within: std::time::Duration) -> Result<(), String> {
        StressorProcess::started(self, within).await
    }
    fn exited(&self) -> Option<ExitStatus> {
        StressorProcess::exited(self)
    }
    async fn wait(&self) -> ExitStatus {
        StressorProcess::wait(self).await
    }
    async fn kill(&self) -> ExitStatus {
        StressorProcess::kill(self).await
    }
    async fn stderr_tail(&self) -> String {
        StressorProcess::stderr_tail(self).await
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
/// exiting is not gone yet (the kernel still lists it in its cgroup). A thread (or process) whose
/// stat cannot be read any more is gone.
fn all_threads_dead(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    let Ok(tasks) = procfs::process::Process::new(pid).and_then(|p| p.tasks()) else {
        return true;
    };
    tasks.flatten().all(|task| match task.stat() {
        Ok(stat) => stat.state == 'Z' || stat.state == 'X',
        Err(_) => true,
    })
}
