//! One `faultline-injector` process serving a fault mount for the agent: spawned with a
//! socketpair as its control channel (JSON-RPC 2.0, one message per line) and a control socket
//! on a path under the agent's state directory, its stderr forwarded to our logs. It outlives
//! the agent (no parent-death signal): the next agent connects to its control socket, checks
//! the peer is the journaled process, and takes it over ([`InjectorProcess::adopt`]).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::Command;
use tokio::sync::Mutex as AsyncMutex;

use crate::process_identity::ProcessIdentity;
use crate::supervised_child::SupervisedChild;

/// The descriptor number the control socket gets in the injector.
const CONTROL_FD: i32 = 3;
/// The descriptor the injector reads its first rules from (a memfd: a command line holds at
/// most 128 KiB in one argument, and 5,000 actions once failed with E2BIG).
const RULES_FD: i32 = 4;
/// The descriptor of the control socket (bound, not listening) the injector listens on.
const CONTROL_LISTEN_FD: i32 = 5;
/// How long an injector that ignored `recover` gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the injector exited ({status}) before it was ready: {stderr}")]
    ExitedEarly { status: String, stderr: String },
    #[error("the injector was not ready within {0:?}")]
    NotReady(Duration),
    #[error("the injector's control channel failed: {0}")]
    Control(String),
    #[error("the injector refused {method}: {message}")]
    Refused {
        method: &'static str,
        message: String,
    },
    #[error("setting up the injector process: {0}")]
    Setup(#[from] nsexec::Error),
    #[error("reading the injector's process identity: {source}")]
    Identity {
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {}: {reason}", path.display())]
    ControlSocket { path: PathBuf, reason: String },
    /// The process behind a journaled control socket is not the journaled injector.
    #[error("control socket {}: its peer is {found}, not the journaled injector {expected}", path.display())]
    NotOurs {
        path: PathBuf,
        expected: String,
        found: String,
    },
}

/// How an injector ended: its exit status when it is our child; an adopted one is not, and
/// its status is for its parent (init) to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Status(ExitStatus),
    NotOurChild,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Status(status) => status.fmt(f),
            Exit::NotOurChild => f.write_str("exited (adopted: not our child, status unknown)"),
        }
    }
}

/// The injector's answer to `update` (its `control::UpdateReport`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateReport {
    /// The generation of the rules now in force.
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub rule_count: usize,
    /// Files open through kernel passthrough the new rules cannot reach until reopened.
    #[serde(default)]
    pub unreachable_open_files: Vec<PathBuf>,
    /// What the rules in force cannot reach, said loudly (empty when they reach everything).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The rules in an anonymous memory file, positioned at its start, for the injector to read.
fn rules_memfd(actions: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::{Seek, Write};
    let fd =
        nix::sys::memfd::memfd_create(c"faultline-rules", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(actions.as_bytes())?;
    file.rewind()?;
    Ok(file.into())
}

/// A running injector as the IO pipeline drives it: the real [`InjectorProcess`], or a
/// recording double in the pipeline's unit tests.
#[tonic::async_trait]
pub trait Injector: Send + Sync + std::fmt::Debug {
    /// Which process it is (journaled: after a crash, a left-over one is told from a stranger).
    fn identity(&self) -> ProcessIdentity;
    /// Replaces the rule set, live; the injector's report of what the rules cannot reach.
    async fn update(&self, actions: &Value) -> Result<UpdateReport, InjectorError>;
    /// Its status document.
    async fn status(&self) -> Result<Value, InjectorError>;
    /// Asks it to recover (unmount and exit), runs `meanwhile`, waits up to `within` for the
    /// exit; see [`InjectorProcess::recover_then`].
    async fn recover_then(
        &self,
        within: Duration,
        meanwhile: futures::future::BoxFuture<'_, ()>,
    ) -> Result<Exit, InjectorError>;
    /// Waits until it has exited.
    async fn wait(&self) -> Exit;
    /// Its last stderr lines (all of them once it has exited).
    async fn stderr_tail(&self) -> String;
    /// Its fault mount as it reported it when ready (none when adopted or not said).
    fn fault_mount(&self) -> Option<handover::FaultMount> {
        None
    }
}

#[tonic::async_trait]
impl Injector for InjectorProcess {
    fn identity(&self) -> ProcessIdentity {
        self.identity
    }
    async fn update(&self, actions: &Value) -> Result<UpdateReport, InjectorError> {
        InjectorProcess::update(self, actions).await
    }
    async fn status(&self) -> Result<Value, InjectorError> {
        InjectorProcess::status(self).await
    }
    async fn recover_then(
        &self,
        within: Duration,
        meanwhile: futures::future::BoxFuture<'_, ()>,
    ) -> Result<Exit, InjectorError> {
        InjectorProcess::recover_then(self, within, meanwhile).await
    }
    async fn wait(&self) -> Exit {
        InjectorProcess::wait(self).await
    }
    async fn stderr_tail(&self) -> String {
        InjectorProcess::stderr_tail(self).await
    }
    fn fault_mount(&self) -> Option<handover::FaultMount> {
        self.fault_mount
    }
}

/// What to mount, where.
#[derive(Clone, Debug)]
pub struct MountRequest<'a> {
    pub binary: &'a Path,
    pub target_pid: u32,
    pub volume: &'a str,
    pub actions: &'a str,
    /// Where its control socket is bound: a path that outlives the agent (its state directory),
    /// journaled, so that the next agent finds it.
    pub control_socket: &'a Path,
}

/// An injector spawned and mounting: [`Starting::ready`] waits for the line it prints once its
/// mount is in place (no polling: the line comes the moment it is).
#[derive(Debug)]
pub struct Starting {
    process: InjectorProcess,
    stdout: Option<tokio::process::ChildStdout>,
}

impl Starting {
    pub fn identity(&self) -> ProcessIdentity {
        self.process.identity
    }

    /// Waits until the mount is in place; an injector that exits first, or is not ready within
    /// `within`, is killed and the reason returned (with its last log lines).
    pub async fn ready(self, within: Duration) -> Result<InjectorProcess, InjectorError> {
        let Starting {
            mut process,
            stdout,
        } = self;
        let outcome = match stdout {
            Some(stdout) => tokio::time::timeout(within, ready_line(stdout)).await,
            None => Ok(Err(InjectorError::Control(
                "its stdout was not a pipe".into(),
            ))),
        };
        match outcome {
            Ok(Ok(ready)) => {
                process.fault_mount = fault_mount_of(&ready);
                Ok(process)
            }
            Ok(Err(err)) => {
                // No ready line usually means the process exited: say why.
                if let Some(status) = process.try_exit_status(Duration::from_millis(500)).await {
                    return Err(InjectorError::ExitedEarly {
                        status: status.to_string(),
                        stderr: process.process.stderr_tail_after_exit().await,
                    });
                }
                process.kill().await;
                Err(err)
            }
            Err(_) => {
                process.kill().await;
                Err(InjectorError::NotReady(within))
            }
        }
    }
}

/// The control descriptors every injector the agent starts gets.
fn control_args() -> [std::ffi::OsString; 4] {
    [
        "--control-fd".into(),
        CONTROL_FD.to_string().into(),
        "--control-listen-fd".into(),
        CONTROL_LISTEN_FD.to_string().into(),
    ]
}

/// A spare injector: started, listening on a spare control socket, waiting for the line that
/// says what to mount. Dropped unassigned, it ends (its control channel closes) and its
/// socket's path goes.
#[derive(Debug)]
pub struct Standby {
    starting: Starting,
    socket: SpareSocket,
}

/// A spare's control socket path, removed when the spare goes; once assigned the path has
/// been renamed away (each spare has a path of its own), and there is nothing to remove.
#[derive(Debug)]
struct SpareSocket(PathBuf);

impl Drop for SpareSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Standby {
    pub fn identity(&self) -> ProcessIdentity {
        self.starting.identity()
    }

    /// Gives it `request`'s mount: its control socket moves to the request's path (a rename:
    /// the socket it listens on is the same), then it is told what to mount. Ready as a
    /// spawned injector is, through [`Starting::ready`]. An error leaves nothing: the spare
    /// ends, and the request's socket path is not taken.
    pub async fn assign(self, request: &MountRequest<'_>) -> Result<Starting, InjectorError> {
        let Standby { starting, socket } = self;
        let actions: Value = serde_json::from_str(request.actions)
            .map_err(|e| InjectorError::Control(format!("the rules are not JSON: {e}")))?;
        let mut line = json!({
            "pid": request.target_pid,
            "path": request.volume,
            "actions": actions,
        })
        .to_string();
        line.push('\n');
        std::fs::rename(&socket.0, request.control_socket).map_err(|e| {
            InjectorError::ControlSocket {
                path: request.control_socket.to_owned(),
                reason: format!("moving the spare's socket there: {e}"),
            }
        })?;
        let sent = {
            let mut control = starting.process.control.lock().await;
            control.writer.write_all(line.as_bytes()).await
        };
        if let Err(e) = sent {
            let _ = std::fs::remove_file(request.control_socket);
            starting.process.kill().await;
            return Err(InjectorError::Control(format!(
                "sending the spare its mount: {e}"
            )));
        }
        Ok(starting)
    }
}

/// The fault mount a ready line names (`"mount_id": N, "dev": "MAJOR:MINOR"`).
fn fault_mount_of(ready: &Value) -> Option<handover::FaultMount> {
    let mount_id = ready.get("mount_id")?.as_u64()?;
    let (major, minor) = ready.get("dev")?.as_str()?.split_once(':')?;
    Some(handover::FaultMount {
        mount_id,
        dev: handover::Dev {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        },
    })
}

/// Reads the injector's stdout up to its ready line (`{"ready": true, ...}`), and returns it.
async fn ready_line(stdout: tokio::process::ChildStdout) -> Result<Value, InjectorError> {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| InjectorError::Control(format!("reading its ready line: {e}")))?
            .ok_or_else(|| {
                InjectorError::Control("it closed its stdout before it was ready".into())
            })?;
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if value.get("ready").and_then(Value::as_bool) == Some(true) {
            return Ok(value);
        }
    }
}

/// A running injector.
#[derive(Debug)]
pub struct InjectorProcess {
    pub identity: ProcessIdentity,
    /// Its fault mount, as its ready line said (see [`Injector::fault_mount`]).
    fault_mount: Option<handover::FaultMount>,
    process: Lifeline,
    control: AsyncMutex<ControlChannel>,
}

/// How the agent follows an injector's life: as its parent, or, once adopted, through a pidfd
/// (which names that very process: a signal through it never reaches a reused PID).
#[derive(Debug)]
enum Lifeline {
    Child(SupervisedChild),
    Adopted(AdoptedProcess),
}

#[derive(Debug)]
struct AdoptedProcess {
    pidfd: OwnedFd,
    exited: tokio::sync::watch::Receiver<bool>,
    /// The last lines it logged to us (see [`attach_log`]).
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

impl AdoptedProcess {
    /// Follows the process `pidfd` refers to: the pidfd turns readable when it exits. Watched
    /// from a plain thread (not the runtime's blocking pool, which a shutdown waits for).
    fn follow(pidfd: OwnedFd) -> std::io::Result<Self> {
        let watched = pidfd.try_clone()?;
        let (exited_tx, exited) = tokio::sync::watch::channel(false);
        std::thread::Builder::new()
            .name("injector-pidfd".into())
            .spawn(move || {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                use std::os::fd::AsFd;
                loop {
                    let mut fds = [PollFd::new(watched.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        // Readable (exited), or the pidfd failed: either way it is no longer
                        // a process we can follow.
                        _ => break,
                    }
                }
                let _ = exited_tx.send(true);
            })?;
        Ok(Self {
            pidfd,
            exited,
            log_tail: Arc::default(),
        })
    }

    async fn wait(&self) -> Exit {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(|exited| *exited).await;
        Exit::NotOurChild
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, signal);
    }
}

impl Lifeline {
    async fn wait(&self) -> Exit {
        match self {
            Lifeline::Child(child) => Exit::Status(child.wait().await),
            Lifeline::Adopted(adopted) => adopted.wait().await,
        }
    }

    async fn wait_for(&self, within: Duration) -> Option<Exit> {
        tokio::time::timeout(within, self.wait()).await.ok()
    }

    async fn kill(&self) {
        match self {
            Lifeline::Child(child) => {
                child.kill().await;
            }
            Lifeline::Adopted(adopted) => {
                adopted.signal(rustix::process::Signal::KILL);
                adopted.wait().await;
            }
        }
    }

    async fn terminate(&self, grace: Duration) {
        match self {
            Lifeline::Child(child) => {
                child.terminate(grace).await;
            }
            Lifeline::Adopted(adopted) => {
                adopted.signal(rustix::process::Signal::TERM);
                if self.wait_for(grace).await.is_none() {
                    self.kill().await;
                }
            }
        }
    }

    async fn stderr_tail_after_exit(&self) -> String {
        match self {
            Lifeline::Child(child) => child.stderr_tail_after_exit().await,
            Lifeline::Adopted(adopted) => {
                let tail = adopted
                    .log_tail
                    .lock()
                    .map(|t| t.clone())
                    .unwrap_or_default();
                if tail.is_empty() {
                    "(adopted: nothing logged since)".into()
                } else {
                    Vec::from(tail).join("\n")
                }
            }
        }
    }
}

/// The line that makes a control connection the injector's log (the injector's
/// `log_sink::ATTACH_LINE`): its stderr pipe went with the agent that started it, so an
/// adopting agent asks for its log this way, gets what it logged meanwhile, then each line.
const ATTACH_LOG_LINE: &[u8] = b"LOGS\n";

/// Connects to an adopted injector's control socket as its log and forwards what comes into
/// ours (role `injector`, its PID), keeping the last lines for a failure's explanation. Ends
/// when the injector closes it (its exit).
async fn attach_log(
    control_socket: &Path,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
    within: Duration,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::time::timeout(within, UnixStream::connect(control_socket))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.write_all(ATTACH_LOG_LINE).await?;
    tokio::spawn(crate::supervised_child::forward_stderr(
        stream, "injector", pid, tail,
    ));
    Ok(())
}

/// Binds a unix stream socket at `path` without listening on it: the injector listens, so a
/// client's SO_PEERCRED names the injector. A file left at the path (by an injector long
/// gone) is replaced.
fn bind_control_socket(path: &Path) -> Result<OwnedFd, InjectorError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
    let failed = |reason: String| InjectorError::ControlSocket {
        path: path.to_owned(),
        reason,
    };
    let address = UnixAddr::new(path).map_err(|e| {
        failed(format!(
            "{e} (a unix socket path holds at most 107 bytes: use a shorter --state-dir)"
        ))
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("creating its directory: {e}")))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(format!("removing a stale socket: {e}"))),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| failed(e.to_string()))?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address).map_err(|e| failed(e.to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed(e.to_string()))?;
    Ok(fd)
}

#[derive(Debug)]
struct ControlChannel {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

impl InjectorProcess {
    /// Starts the injector; [`Starting::ready`] then waits until its mount is in place. In
    /// between, the caller may work on the process (move it into a cgroup) while it mounts.
    pub fn spawn(request: MountRequest<'_>) -> Result<Starting, InjectorError> {
        let rules =
            rules_memfd(request.actions).map_err(|e| InjectorError::Control(e.to_string()))?;
        let listen = bind_control_socket(request.control_socket)?;
        let mut args: Vec<std::ffi::OsString> = vec![
            "mount".into(),
            "--pid".into(),
            request.target_pid.to_string().into(),
            "--path".into(),
            request.volume.into(),
            "--rules-fd".into(),
            RULES_FD.to_string().into(),
        ];
        args.extend(control_args());
        let (process, stdout) =
            Self::launch(request.binary, &args, vec![(rules, RULES_FD)], listen)?;
        Ok(Starting { process, stdout })
    }

    /// Starts a spare injector (`faultline-injector standby`), listening on `control_socket`,
    /// to be given a mount later ([`Standby::assign`]).
    pub fn spawn_standby(binary: &Path, control_socket: &Path) -> Result<Standby, InjectorError> {
        let listen = bind_control_socket(control_socket)?;
        let mut args: Vec<std::ffi::OsString> = vec!["standby".into()];
        args.extend(control_args());
        let (process, stdout) = Self::launch(binary, &args, Vec::new(), listen)?;
        Ok(Standby {
            starting: Starting { process, stdout },
            socket: SpareSocket(control_socket.to_owned()),
        })
    }

    /// Spawns `binary args`, with the control channel, the bound control socket `listen` and
    /// `more_fds` passed, its stderr forwarded and its stdout (the ready line) piped to us.
    fn launch(
        binary: &Path,
        args: &[std::ffi::OsString],
        more_fds: Vec<(OwnedFd, i32)>,
        listen: OwnedFd,
    ) -> Result<(Self, Option<tokio::process::ChildStdout>), InjectorError> {
        let (ours, theirs) =
            StdUnixStream::pair().map_err(|e| InjectorError::Control(e.to_string()))?;
        let mut cmd = std::process::Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            // Its ready line: read once, then closed (it ignores a closed stdout).
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut pass_fds = vec![(theirs.into(), CONTROL_FD), (listen, CONTROL_LISTEN_FD)];
        pass_fds.extend(more_fds);
        nsexec::spawn::prepare(
            &mut cmd,
            nsexec::spawn::ChildSetup {
                // No parent-death signal: the fault stays in force while the agent restarts,
                // and the next agent adopts the injector.
                die_with_parent: None,
                pass_fds,
                ..Default::default()
            },
        )?;
        let mut child = Command::from(cmd)
            .spawn()
            .map_err(|source| InjectorError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        // Without its identity a left-over injector could never be told from a stranger after
        // a crash: no identity, no injector.
        let identity = match SupervisedChild::identity_of(&child) {
            Ok(identity) => identity,
            Err(source) => {
                let _ = child.start_kill();
                tokio::spawn(async move { child.wait().await });
                return Err(InjectorError::Identity { source });
            }
        };
        let stdout = child.stdout.take();
        let process = Lifeline::Child(SupervisedChild::adopt(child, identity, "injector"));
        ours.set_nonblocking(true)
            .map_err(|e| InjectorError::Control(e.to_string()))?;
        let stream =
            UnixStream::from_std(ours).map_err(|e| InjectorError::Control(e.to_string()))?;
        let (reader, writer) = stream.into_split();
        let process = Self {
            identity,
            fault_mount: None,
            process,
            control: AsyncMutex::new(ControlChannel {
                reader: BufReader::new(reader),
                writer,
                next_id: 1,
            }),
        };
        Ok((process, stdout))
    }

    /// Takes over an injector a previous agent started, through its control socket: the peer
    /// must be the journaled process (SO_PEERCRED's PID, then its start time read after a pidfd
    /// pins it), and must answer that its mount is serving within `within`.
    pub async fn adopt(
        journaled: ProcessIdentity,
        control_socket: &Path,
        within: Duration,
    ) -> Result<Self, InjectorError> {
        let failed = |reason: String| InjectorError::ControlSocket {
            path: control_socket.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(within, UnixStream::connect(control_socket))
            .await
            .map_err(|_| failed(format!("no connection within {within:?}")))?
            .map_err(|e| failed(format!("connecting: {e}")))?;
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| failed(format!("reading its peer: {e}")))?;
        let not_ours = |found: String| InjectorError::NotOurs {
            path: control_socket.to_owned(),
            expected: format!("pid {} started at {}", journaled.pid, journaled.start_time),
            found,
        };
        let pid = u32::try_from(peer.pid()).map_err(|_| not_ours(format!("pid {}", peer.pid())))?;
        if pid != journaled.pid {
            return Err(not_ours(format!("pid {pid}")));
        }
        let raw = rustix::process::Pid::from_raw(peer.pid())
            .ok_or_else(|| not_ours(format!("pid {pid}")))?;
        let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
            .map_err(|e| failed(format!("pidfd_open({pid}): {e}")))?;
        // Read after the pidfd pins the process: the PID cannot have been reused meanwhile.
        let now = ProcessIdentity::of(pid).map_err(|source| InjectorError::Identity { source })?;
        if now != journaled {
            return Err(not_ours(format!(
                "pid {pid} started at {} (another process)",
                now.start_time
            )));
        }
        let process = Lifeline::Adopted(
            AdoptedProcess::follow(pidfd).map_err(|e| failed(format!("watching it: {e}")))?,
        );
        let (reader, writer) = stream.into_split();
        let injector = Self {
            identity: journaled,
            fault_mount: None,
            process,
            control: AsyncMutex::new(ControlChannel {
                reader: BufReader::new(reader),
                writer,
                next_id: 1,
            }),
        };
        match tokio::time::timeout(within, injector.status()).await {
            Ok(Ok(status)) if status.get("ready").and_then(Value::as_bool) == Some(true) => {
                if let Lifeline::Adopted(adopted) = &injector.process
                    && let Err(err) =
                        attach_log(control_socket, pid, Arc::clone(&adopted.log_tail), within).await
                {
                    // It serves all the same; only its log stays with it.
                    tracing::warn!(pid, %err, "cannot attach to the adopted injector's log");
                }
                Ok(injector)
            }
            Ok(Ok(status)) => Err(failed(format!("it is not serving: {status}"))),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(failed(format!("no answer within {within:?}"))),
        }
    }

    /// Replaces the rule set, live (`actions`: the validated document, sent as is). Returns the
    /// injector's report, with the open files the new rules cannot reach (only where it was
    /// mounted with `--file-io passthrough` or `cached`).
    pub async fn update(&self, actions: &Value) -> Result<UpdateReport, InjectorError> {
        let report = self.call("update", json!({ "actions": actions })).await?;
        serde_json::from_value(report)
            .map_err(|e| InjectorError::Control(format!("unreadable answer to update: {e}")))
    }

    /// The injector's own status document.
    pub async fn status(&self) -> Result<Value, InjectorError> {
        self.call("get_status", json!({})).await
    }

    /// Asks the injector to stop injecting, unmount and exit; waits for it to exit (and kills it
    /// if it does not within `within`).
    pub async fn recover(&self, within: Duration) -> Result<Exit, InjectorError> {
        self.recover_then(within, async {}).await
    }

    /// [`Self::recover`], running `meanwhile` once the injector has been asked: it detaches its
    /// mount (lazily while files on it are open) and serves those files until they are closed,
    /// which is when the handover moves them back.
    pub async fn recover_then(
        &self,
        within: Duration,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> Result<Exit, InjectorError> {
        if let Err(err) = self.call("recover", json!({})).await {
            // Dead (its channel closed) or refusing: it has not unmounted, whatever its exit
            // status says. Make sure it is gone; the caller unmounts from the agent.
            self.terminate(TERM_GRACE).await;
            return Err(err);
        }
        meanwhile.await;
        match tokio::time::timeout(within, self.wait()).await {
            Ok(status) => Ok(status),
            Err(_) => {
                self.terminate(TERM_GRACE).await;
                Err(InjectorError::Control(format!(
                    "did not exit within {within:?} after recover"
                )))
            }
        }
    }

    /// Waits until the process has exited (and been reaped, when it is our child).
    pub async fn wait(&self) -> Exit {
        self.process.wait().await
    }

    /// The exit status, if the process has exited within `within`.
    async fn try_exit_status(&self, within: Duration) -> Option<Exit> {
        self.process.wait_for(within).await
    }

    /// SIGKILL, and wait until reaped.
    pub async fn kill(&self) {
        self.process.kill().await;
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`; waits until reaped.
    pub async fn terminate(&self, grace: Duration) {
        self.process.terminate(grace).await;
    }

    pub async fn stderr_tail(&self) -> String {
        self.process.stderr_tail_after_exit().await
    }

    async fn call(&self, method: &'static str, params: Value) -> Result<Value, InjectorError> {
        let mut control = self.control.lock().await;
        let id = control.next_id;
        control.next_id += 1;
        let mut line = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .map_err(|e| InjectorError::Control(e.to_string()))?;
        line.push(b'\n');
        let io = |e: std::io::Error| InjectorError::Control(e.to_string());
        control.writer.write_all(&line).await.map_err(io)?;
        loop {
            let mut reply = String::new();
            if control.reader.read_line(&mut reply).await.map_err(io)? == 0 {
                return Err(InjectorError::Control(
                    "the injector closed its control channel".into(),
                ));
            }
            let reply: Value = serde_json::from_str(&reply)
                .map_err(|e| InjectorError::Control(format!("unparsable reply: {e}")))?;
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // a notification or a stale reply
            }
            if let Some(error) = reply.get("error") {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(InjectorError::Refused {
                    method,
                    message: message.to_owned(),
                });
            }
            return Ok(reply.get("result").cloned().unwrap_or(Value::Null));
        }
    }
}

/// Unmounts a fault mount whose injector is gone (`faultline-injector cleanup`), so the workload
/// sees its original directory again instead of "Transport endpoint is not connected".
pub async fn cleanup_mount(
    binary: &Path,
    target_pid: u32,
    volume: &str,
) -> Result<(), InjectorError> {
    let output = Command::new(binary)
        .arg("cleanup")
        .arg("--pid")
        .arg(target_pid.to_string())
        .arg("--path")
        .arg(volume)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| InjectorError::Spawn {
            binary: binary.to_owned(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(InjectorError::Refused {
            method: "cleanup",
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The `warnings` of an injector's `update` or `get_status` answer.
pub fn warnings_of(report: &Value) -> Vec<String> {
    report["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_line_names_the_fault_mount_or_nothing() {
        let ready = json!({"ready": true, "mount_id": 412, "dev": "0:58"});
        assert_eq!(
            fault_mount_of(&ready),
            Some(handover::FaultMount {
                mount_id: 412,
                dev: handover::Dev {
                    major: 0,
                    minor: 58
                }
            })
        );
        // An older injector, or one that could not read its device: the mount table is read.
        for ready in [
            json!({"ready": true}),
            json!({"ready": true, "mount_id": 412, "dev": null}),
            json!({"ready": true, "mount_id": 412, "dev": "0-58"}),
            json!({"ready": true, "mount_id": "412", "dev": "0:58"}),
            json!({"ready": true, "mount_id": 412, "dev": "x:58"}),
        ] {
            assert_eq!(fault_mount_of(&ready), None, "{ready}");
        }
    }
}
