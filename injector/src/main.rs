//! `faultline-injector`: mount the fault filesystem over a directory (ours, or a volume in a
//! container's mount namespace) and take JSON-RPC control; or clean up after a dead one. As
//! the chaosfs sidecar of a pod it also takes chaosfs's Go-style command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use injector::control::{ControlContext, ControlPlane, FsStatus, LinesEnded};
use injector::fault_rules::RuleStore;
use injector::fs::{FileIo, FsHandle, FsOptions};
use injector::log_sink::{self, LogSink};
use injector::mount::{self, LinuxMountSys, MountRequest, Target};
use injector::serve::{self, ServeOptions};
use injector::sidecar::PidFile;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(name = "faultline-injector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount the fault filesystem over a directory and serve until recovered.
    Mount(MountArgs),
    /// Unmount a fault mount left behind by a dead injector, so the application sees its
    /// original directory again.
    Cleanup(CleanupArgs),
    /// The chaosfs sidecar of a pod; also `faultline-injector -addr=:65534 -mountpoint=DIR ...`.
    ///
    /// Takes chaosfs's Go-style command line (`-addr=:65534 -pidfile=/tmp/fuse/pid
    /// -original=DIR -mountpoint=DIR`): serves --original over --mountpoint in our own mount
    /// namespace, writes the pidfile once mounted, takes JSON-RPC over HTTP on --addr;
    /// unmounts, removes the pidfile and exits on SIGTERM.
    Sidecar(SidecarArgs),
    /// Start ahead of need and wait for one mount to serve: the agent keeps a spare injector
    /// so that an injection does not wait for a process to start. The first line on
    /// --control-fd says what to mount (`{"pid": N, "path": "/data", "actions": [...]}`);
    /// from there on it is `mount --pid N --path /data` with those rules. The end of the
    /// control channel before that line (the agent is gone) ends it.
    Standby(StandbyArgs),
}

#[derive(Args, Debug)]
struct StandbyArgs {
    /// JSON-RPC control, one request per line, on this inherited socket descriptor; its first
    /// line is the assignment.
    #[arg(long)]
    control_fd: i32,
    /// As `mount --control-listen-fd`: the agent renames the socket's path to the
    /// experiment's before it sends the assignment.
    #[arg(long)]
    control_listen_fd: Option<i32>,
    #[command(flatten)]
    tuning: Tuning,
}

/// What a standby injector is to mount (see [`Command::Standby`]).
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Assignment {
    pid: u32,
    path: PathBuf,
    actions: Value,
}

#[derive(Args, Debug)]
struct SidecarArgs {
    /// JSON-RPC over HTTP (the methods of --control-fd): Go's `:PORT` is every IPv4 address.
    #[arg(long, default_value = ":65534", value_parser = parse_addr)]
    addr: SocketAddr,
    /// Written with our PID once the mount is in place (wait-fuse.sh waits for it); removed
    /// when we stop.
    #[arg(long, default_value = "/tmp/fuse/pid")]
    pidfile: PathBuf,
    /// The directory holding the data (init.sh moved it there).
    #[arg(long)]
    original: PathBuf,
    /// The application's data directory, covered by the fault filesystem.
    #[arg(long)]
    mountpoint: PathBuf,
    /// Initial fault rules: a JSON array of IOChaos actions.
    #[arg(long, conflicts_with = "rules_file")]
    rules: Option<String>,
    /// Initial fault rules from a file.
    #[arg(long)]
    rules_file: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

fn parse_file_io(value: &str) -> Result<FileIo, String> {
    value
        .parse()
        .map_err(|e: injector::fs::io_mode::UnknownFileIo| e.to_string())
}

impl Tuning {
    fn file_io(&self) -> FileIo {
        if self.no_passthrough {
            FileIo::Cached
        } else {
            self.file_io
        }
    }
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    injector::sidecar::parse_listen_addr(value).map_err(|e| e.to_string())
}

impl SidecarArgs {
    fn into_mount(self) -> MountArgs {
        MountArgs {
            path: self.mountpoint,
            pid: None,
            original: Some(self.original),
            rules: self.rules,
            rules_file: self.rules_file,
            rules_fd: None,
            control_fd: None,
            control_listen_fd: None,
            stdio: false,
            listen: Some(self.addr),
            pidfile: Some(self.pidfile),
            tuning: self.tuning,
        }
    }
}

#[derive(Args, Debug)]
struct MountArgs {
    /// The directory to cover: a path inside the target's mount namespace with --pid, else
    /// in ours. It need not be a mount point.
    #[arg(long)]
    path: PathBuf,
    /// Host PID of a process (a container's) whose mount namespace and root hold --path.
    #[arg(long)]
    pid: Option<u32>,
    /// Serve this directory (in the same namespace and root as --path) instead of the one
    /// under --path.
    #[arg(long)]
    original: Option<PathBuf>,
    /// Initial fault rules: a JSON array of IOChaos actions.
    #[arg(long, conflicts_with_all = ["rules_file", "rules_fd"])]
    rules: Option<String>,
    /// Initial fault rules from a file.
    #[arg(long, conflicts_with = "rules_fd")]
    rules_file: Option<PathBuf>,
    /// Initial fault rules from an inherited descriptor, read to its end (how the agent passes
    /// them: a command line holds at most 128 KiB in one argument).
    #[arg(long)]
    rules_fd: Option<i32>,
    /// JSON-RPC control, one request per line, on this inherited socket descriptor.
    #[arg(long, conflicts_with = "stdio")]
    control_fd: Option<i32>,
    /// An inherited unix stream socket, bound by the agent to a path that outlives it (not yet
    /// listening): we listen on it and serve JSON-RPC lines on every connection, so the next
    /// agent takes us over after the one that started us died. With it, the end of
    /// --control-fd (the agent is gone) no longer recovers: the rules stay in force.
    #[arg(long)]
    control_listen_fd: Option<i32>,
    /// JSON-RPC control on stdin/stdout.
    #[arg(long)]
    stdio: bool,
    /// Also serve JSON-RPC over HTTP on this address (sidecar mode).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Write our PID to this file once the mount is in place (removed when we stop).
    #[arg(long)]
    pidfile: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

/// How the filesystem is served.
#[derive(Args, Debug)]
struct Tuning {
    /// FUSE worker threads.
    #[arg(long, default_value_t = serve::default_threads())]
    threads: usize,
    /// Kernel entry/attribute cache timeout for paths no rule touches.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    cache_ttl: Duration,
    /// What happens to the data of files no rule in force may read or write. `reachable`:
    /// every read and write comes to the daemon, so a rule put in force later reaches every
    /// open file (the contract of `update`). `passthrough`: kernel FUSE passthrough (near
    /// native speed), but a rule added later misses files already open until they are
    /// reopened (`update` and `get_status` warn). `cached`: through the daemon with the page
    /// cache (later read rules miss cached pages).
    #[arg(long, default_value = "reachable", value_parser = parse_file_io)]
    file_io: FileIo,
    /// The same as `--file-io cached` (kept for older command lines).
    #[arg(long, conflicts_with = "file_io")]
    no_passthrough: bool,
    /// Read requests from /dev/fuse only, even where the kernel offers FUSE over io_uring.
    #[arg(long)]
    no_io_uring: bool,
    /// Inodes that may hold a descriptor on their original (default: from the open-files
    /// limit); beyond it inodes are kept as file handles.
    #[arg(long)]
    max_held_fds: Option<usize>,
    /// After a lazy unmount, how long to keep serving files still open before exiting.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

#[derive(Args, Debug)]
struct CleanupArgs {
    /// Host PID of a process in the mount namespace (omit for ours).
    #[arg(long)]
    pid: Option<u32>,
    /// The covered directory, as the process sees it.
    #[arg(long)]
    path: PathBuf,
}

fn target(pid: Option<u32>) -> Target {
    pid.map_or(Target::Own, Target::Process)
}

/// `FsStatus` before the filesystem exists: not mounted, nothing open.
struct LateFs(OnceLock<FsHandle>, FileIo);

impl FsStatus for LateFs {
    fn mounted(&self) -> bool {
        self.0.get().is_some_and(FsHandle::is_ready)
    }

    fn open_passthrough_files(&self) -> Vec<String> {
        self.0
            .get()
            .map(FsHandle::bypassing_open_files)
            .unwrap_or_default()
    }

    fn io_uring(&self) -> bool {
        self.0.get().is_some_and(FsHandle::io_uring_active)
    }

    fn file_io(&self) -> FileIo {
        self.1
    }

    fn invalidations_waiting(&self) -> usize {
        self.0.get().map_or(0, FsHandle::invalidations_waiting)
    }
}

/// Our log's destination, which an adopting agent re-attaches (see [`log_sink`]).
static LOG_SINK: OnceLock<LogSink> = OnceLock::new();

fn main() -> ExitCode {
    let cli = Cli::parse_from(injector::sidecar::go_flags::translate(
        std::env::args_os().collect(),
    ));
    tracing_subscriber::fmt()
        // Our stderr is a pipe to the agent that started us; once that agent is gone a write
        // fails (EPIPE): the sink keeps those lines for an agent that adopts us.
        .with_writer(LOG_SINK.get_or_init(LogSink::default).clone())
        // The default report of a failed write is an eprintln!, which panics on a broken
        // stderr, in whichever thread logged (a FUSE worker).
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Mount(args) => run_mount(args),
        Command::Cleanup(args) => run_cleanup(args),
        Command::Sidecar(args) => run_sidecar(args),
        Command::Standby(args) => run_standby(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: stderr may be a pipe nobody reads any more (see above).
            let _ = writeln!(std::io::stderr(), "faultline-injector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let sys = LinuxMountSys::new().context("opening /proc/self/fdinfo")?;
    let request = MountRequest {
        target: target(args.pid),
        path: args.path,
    };
    let outcome = mount::cleanup(&sys, &request)?;
    println!(
        "{}",
        serde_json::json!({ "path": request.path, "outcome": outcome.describe() })
    );
    Ok(())
}

/// The sidecar restarts in place after being killed outright (SIGKILL, OOM): its pidfile and
/// its dead mount are still there. The pidfile goes first, so that an application restarted
/// meanwhile waits for the new mount; then the dead mount, so that the new one is not
/// stacked on a mount that answers ENOTCONN.
fn run_sidecar(args: SidecarArgs) -> anyhow::Result<()> {
    mount::validate_path(&args.mountpoint)?;
    match std::fs::remove_file(&args.pidfile) {
        Ok(()) => tracing::warn!(pidfile = %args.pidfile.display(), "removed a stale pidfile"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("removing the stale pidfile {}", args.pidfile.display()));
        }
    }
    let sys = LinuxMountSys::new().context("opening /proc/self/fdinfo")?;
    let request = MountRequest {
        target: Target::Own,
        path: args.mountpoint.clone(),
    };
    let outcome = mount::cleanup(&sys, &request)
        .context("checking for a fault mount left by a previous run")?;
    if outcome != mount::Unmounted::NotMounted {
        tracing::warn!(
            path = %request.path.display(),
            outcome = outcome.describe(),
            "removed the dead fault mount of a previous run"
        );
    }
    run_mount(args.into_mount())
}

fn initial_rules(args: &MountArgs) -> anyhow::Result<Option<Value>> {
    let text = match (&args.rules, &args.rules_file, args.rules_fd) {
        (Some(text), _, _) => text.clone(),
        (None, Some(file), _) => std::fs::read_to_string(file)
            .with_context(|| format!("reading rules from {}", file.display()))?,
        (None, None, Some(number)) => {
            let fd = serve::inherited_fd(number).with_context(|| format!("rules fd {number}"))?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text)
                .with_context(|| format!("reading rules from descriptor {number}"))?;
            text
        }
        (None, None, None) => return Ok(None),
    };
    let value = serde_json::from_str(&text).context("rules are not valid JSON")?;
    Ok(Some(value))
}

fn run_mount(args: MountArgs) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    mount::validate_path(&args.path)?;
    if let Err(e) = serve::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
    let channels = Channels::inherited(args.control_fd, args.control_listen_fd)?;
    mount_and_serve(args, channels, control_runtime()?, began)
}

/// See [`Command::Standby`]: everything that does not depend on the target is done before the
/// assignment comes (the process start, the runtime, the control socket listening).
fn run_standby(args: StandbyArgs) -> anyhow::Result<()> {
    // A spare is told from an injector by its name (`ps`, /proc/PID/comm); it keeps its
    // command line once assigned.
    name_process(SPARE_NAME);
    if let Err(e) = serve::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
    let channels = Channels::inherited(Some(args.control_fd), args.control_listen_fd)?;
    let runtime = control_runtime()?;
    let Some(assignment) = channels.read_assignment()? else {
        tracing::debug!("the agent closed the control channel before assigning a mount");
        return Ok(());
    };
    let began = std::time::Instant::now();
    name_process(INJECTOR_NAME);
    mount::validate_path(&assignment.path)?;
    let mount = MountArgs {
        path: assignment.path,
        pid: Some(assignment.pid),
        original: None,
        rules: Some(assignment.actions.to_string()),
        rules_file: None,
        rules_fd: None,
        control_fd: None,
        control_listen_fd: None,
        stdio: false,
        listen: None,
        pidfile: None,
        tuning: args.tuning,
    };
    mount_and_serve(mount, channels, runtime, began)
}

/// A spare's process name while it waits for an assignment.
const SPARE_NAME: &std::ffi::CStr = c"faultline-spare";
/// The name an injector has when started as one (its file name, cut to 15 bytes).
const INJECTOR_NAME: &std::ffi::CStr = c"faultline-injec";

fn name_process(name: &std::ffi::CStr) {
    if let Err(e) = nix::sys::prctl::set_name(name) {
        tracing::debug!(error = %e, "cannot rename the process");
    }
}

/// The control runtime: JSON-RPC, signals and the watch over the mount.
fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("control")
        .build()?)
}

/// The control descriptors the agent passed: the channel of the agent that started us and
/// the socket later agents connect to.
struct Channels {
    stream: Option<StdUnixStream>,
    listener: Option<std::os::unix::net::UnixListener>,
}

impl Channels {
    fn inherited(control_fd: Option<i32>, listen_fd: Option<i32>) -> anyhow::Result<Self> {
        let stream = control_fd
            .map(|fd| -> anyhow::Result<StdUnixStream> {
                let fd = serve::inherited_fd(fd).with_context(|| format!("control fd {fd}"))?;
                Ok(StdUnixStream::from(fd))
            })
            .transpose()?;
        let listener = listen_fd
            .map(|fd| -> anyhow::Result<std::os::unix::net::UnixListener> {
                let fd =
                    serve::inherited_fd(fd).with_context(|| format!("control listen fd {fd}"))?;
                // We listen, not the agent: a client's SO_PEERCRED then names this process,
                // which is how the next agent tells us from a stranger on the same path.
                nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(8)?)
                    .context("listening on the control socket")?;
                let listener = std::os::unix::net::UnixListener::from(fd);
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .transpose()?;
        Ok(Self { stream, listener })
    }

    /// A standby's first line (blocking). `None` when the channel ends first. The agent sends
    /// nothing more until we are ready, so nothing read past the line may be left over.
    fn read_assignment(&self) -> anyhow::Result<Option<Assignment>> {
        use std::io::BufRead;
        let stream = self
            .stream
            .as_ref()
            .context("a standby injector needs --control-fd")?;
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        if reader
            .read_line(&mut line)
            .context("reading the assignment")?
            == 0
        {
            return Ok(None);
        }
        if !reader.buffer().is_empty() {
            bail!("the agent sent more than the assignment before we were ready");
        }
        let assignment = serde_json::from_str(&line).context("an unreadable assignment")?;
        Ok(Some(assignment))
    }
}

/// Mounts and serves as `args` say, under control through `channels`, until recovered.
fn mount_and_serve(
    args: MountArgs,
    channels: Channels,
    runtime: tokio::runtime::Runtime,
    began: std::time::Instant,
) -> anyhow::Result<()> {
    let rules = Arc::new(RuleStore::new(&args.path));
    let late_fs = Arc::new(LateFs(OnceLock::new(), args.tuning.file_io()));
    let context = ControlContext::new(rules.clone(), late_fs.clone());
    // Bad rules are refused before anything is mounted.
    if let Some(actions) = initial_rules(&args)? {
        context
            .update(&actions)
            .map_err(|e| anyhow::anyhow!("invalid rules: {e}"))?;
    }
    let plane = Arc::new(ControlPlane::new(context.clone())?);
    if let Some(stream) = &channels.stream {
        stream.set_nonblocking(true)?;
    }
    let result = runtime.block_on(serve_until_recovered(
        args,
        rules,
        plane,
        late_fs,
        channels.stream,
        channels.listener,
        began,
    ));
    // A read of stdin may still be blocked on a runtime thread: do not wait for it.
    runtime.shutdown_background();
    result
}

/// Serves JSON-RPC lines on every connection to the control socket, each on its own task; the
/// end of one is not the end of control (a later agent connects again). A connection whose
/// first line is [`log_sink::ATTACH_LINE`] carries our log instead.
async fn serve_adopters(listener: tokio::net::UnixListener, plane: Arc<ControlPlane>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let plane = plane.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_adopter(stream, plane).await {
                        tracing::warn!(error = %e, "a control connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the control socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_adopter(
    stream: tokio::net::UnixStream,
    plane: Arc<ControlPlane>,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    if reader.read_line(&mut first).await? == 0 {
        return Ok(()); // connected to learn who serves the socket, and gone
    }
    if first.trim_end() == log_sink::ATTACH_LINE {
        let stream = reader.into_inner().into_std()?;
        LOG_SINK
            .get_or_init(LogSink::default)
            .attach(stream)
            .context("attaching the agent's connection as our log")?;
        tracing::info!("an agent attached to our log");
        return Ok(());
    }
    tracing::info!("an agent connected to the control socket");
    let buffered = reader.buffer().to_vec();
    let (read_half, writer) = reader.into_inner().into_split();
    let requests = std::io::Cursor::new([first.into_bytes(), buffered].concat()).chain(read_half);
    plane.serve_lines(requests, writer).await?;
    Ok(())
}

async fn serve_until_recovered(
    args: MountArgs,
    rules: Arc<RuleStore>,
    plane: Arc<ControlPlane>,
    late_fs: Arc<LateFs>,
    control_stream: Option<StdUnixStream>,
    control_listener: Option<std::os::unix::net::UnixListener>,
    began: std::time::Instant,
) -> anyhow::Result<()> {
    let context = plane.context().clone();
    // Whoever connects to the control socket (the agent that adopts us) controls us too.
    let adoptable = control_listener.is_some();
    if let Some(listener) = control_listener {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        tokio::spawn(serve_adopters(listener, plane.clone()));
    }
    // Control first, so the agent gets "not ready yet" answers while we mount.
    let lines = if let Some(stream) = control_stream {
        let (reader, writer) = tokio::net::UnixStream::from_std(stream)?.into_split();
        let plane = plane.clone();
        Some(tokio::spawn(async move {
            plane.serve_lines(reader, writer).await
        }))
    } else if args.stdio {
        let plane = plane.clone();
        Some(tokio::spawn(async move {
            plane
                .serve_lines(tokio::io::stdin(), tokio::io::stdout())
                .await
        }))
    } else {
        None
    };
    let http = match args.listen {
        Some(addr) => Some(plane.serve_http(addr).await?),
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let request = MountRequest {
        target: target(args.pid),
        path: args.path.clone(),
    };
    let opts = ServeOptions {
        threads: args.tuning.threads,
        io_uring: !args.tuning.no_io_uring,
        fs: FsOptions {
            cache_ttl: args.tuning.cache_ttl,
            file_io: args.tuning.file_io(),
            max_held_fds: args.tuning.max_held_fds,
        },
    };
    let running = tokio::task::spawn_blocking({
        let request = request.clone();
        let original = args.original.clone();
        move || serve::start_serving(&request, original.as_deref(), rules, opts)
    })
    .await??;
    let _ = late_fs.0.set(running.fs().clone());
    tracing::info!(path = %request.path.display(), target = %request.target, since_main_us = began.elapsed().as_micros() as u64, "ready");
    // Only now: whoever waits for it may use the mount at once.
    let pidfile = args
        .pidfile
        .as_deref()
        .map(|path| PidFile::write(path, std::process::id()))
        .transpose()?;
    if !args.stdio {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({
                "ready": true,
                "path": request.path,
                "pid": args.pid,
                "fileIo": args.tuning.file_io().name(),
                "passthrough": running.fs().passthrough_active(),
                "io_uring": running.fs().io_uring_active(),
                "listen": http.as_ref().map(|h| h.local_addr()),
                // What the agent's handover recognises the mount's files by.
                "mount_id": running.mount().map(|m| m.mount_id()),
                "dev": running
                    .mount()
                    .and_then(|m| m.dev())
                    .map(|(major, minor)| format!("{major}:{minor}")),
            })
        );
        let _ = out.flush();
    }

    let mut lines = lines;
    let mut session_check = tokio::time::interval(Duration::from_millis(200));
    let outside_unmount = loop {
        tokio::select! {
            () = context.recovery().requested() => break false,
            _ = sigterm.recv() => { tracing::info!("SIGTERM"); context.recover(); }
            _ = sigint.recv() => { tracing::info!("SIGINT"); context.recover(); }
            ended = async {
                match lines.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if lines.is_some() => {
                lines = None;
                match ended {
                    Ok(Ok(LinesEnded::Recovered)) => {}
                    Ok(Ok(LinesEnded::EndOfInput)) if adoptable => {
                        // The agent that started us is gone; the next one adopts us through
                        // the control socket. Until then the rules stay in force.
                        tracing::warn!("control channel closed: serving on, for the next agent to adopt");
                    }
                    Ok(Ok(LinesEnded::EndOfInput)) => {
                        // Whoever controls us is gone: leave nothing behind.
                        tracing::warn!("control channel closed: recovering");
                        context.recover();
                    }
                    Ok(Err(e)) => { tracing::error!(error = %e, "control channel failed: recovering"); context.recover(); }
                    Err(e) => { tracing::error!(error = %e, "control task failed: recovering"); context.recover(); }
                }
            }
            _ = session_check.tick() => {
                let target_gone = matches!(request.target, Target::Process(pid)
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists());
                if target_gone {
                    // Its mount namespace, and our mount in it, go with it.
                    tracing::warn!("the target process exited: recovering");
                    context.recover();
                } else if running.session_finished() {
                    break true;
                }
            }
        }
    };
    if outside_unmount {
        context.recover();
        bail!(
            "the fault mount at {} was removed from outside",
            request.path.display()
        );
    }
    // From here on the mount goes: a restarted application must wait for the next one.
    drop(pidfile);
    let drain = args.tuning.drain_timeout;
    let stopped = tokio::task::spawn_blocking(move || running.stop(drain)).await??;
    tracing::info!(
        outcome = stopped.unmounted.describe(),
        drained = stopped.drained,
        "recovered"
    );
    if !args.stdio {
        // Whoever read the ready line may be gone (a sidecar's log pipe): not an error.
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({ "recovered": true, "unmount": stopped.unmounted.describe() })
        );
    }
    Ok(())
}
