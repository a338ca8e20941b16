//! `faultline-agent serve`: the node daemon's lifecycle around the gRPC and HTTP listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use agent::container_runtime::Resolver;
use agent::fault_kinds::{RETRY_RECOVERY_EVERY, VANISHED_SWEEP_EVERY};
use agent::faults::{Faults, FaultsConfig};
use agent::grpc::{AgentService, ChaosDaemonService, Listeners, serve};
use agent::journal::Journal;
use agent::metrics::Metrics;
use agent::tls::{ClientIdentity, TlsSettings, server_config};
use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// gRPC address (mTLS).
    #[arg(long, default_value = "0.0.0.0:31767")]
    listen: SocketAddr,
    /// HTTP address of /metrics and /healthz ("off" to disable).
    #[arg(long, default_value = "0.0.0.0:31766")]
    http_listen: String,
    /// The agent's certificate (PEM).
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// The agent's private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// CA that signs client certificates (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// A client identity allowed in (SAN DNS name, or URI such as spiffe://…); repeatable.
    #[arg(
        long = "allowed-client",
        default_value = "faultline-controller.faultline.svc"
    )]
    allowed_clients: Vec<ClientIdentity>,
    /// Also serve plaintext gRPC on this unix socket (for the local `faultline` CLI); needs
    /// --insecure-unix-plaintext.
    #[arg(long)]
    unix_socket: Option<PathBuf>,
    /// Allow plaintext on --unix-socket (only root and whoever the socket's mode admits can
    /// connect).
    #[arg(long)]
    insecure_unix_plaintext: bool,
    /// Where the journal of injected faults lives (a host directory that survives restarts).
    #[arg(long, default_value = "/var/lib/faultline")]
    state_dir: PathBuf,
    /// The injector binary (default: faultline-injector beside this binary).
    #[arg(long)]
    injector_bin: Option<PathBuf>,
    /// The DNS responder binary (default: faultline-dns-responder beside this binary).
    #[arg(long)]
    dns_responder_bin: Option<PathBuf>,
    /// The HTTP proxy binary (default: faultline-http-proxy beside this binary).
    #[arg(long)]
    http_proxy_bin: Option<PathBuf>,
    /// Where netem runs: auto (the kernel's netem qdisc; the userspace NFQUEUE path when the
    /// kernel refuses it), kernel, or userspace.
    #[arg(long, default_value = "auto")]
    netem_path: agent::network::NetemPath,
    /// Turn on the fuse module's enable_uring parameter at start (Linux 6.14+), so IO-fault
    /// injectors take requests through FUSE over io_uring, each CPU's on that CPU. Other
    /// FUSE servers on the node are unaffected unless they ask for it themselves.
    #[arg(long)]
    enable_fuse_io_uring: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

/// `faultline-agent serve`: builds the fault kinds, undoes what a previous run left (from the
/// journal), serves the APIs until SIGTERM/SIGINT, then recovers everything the journal holds.
pub async fn run(args: ServeArgs, resolver: Resolver) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    // Before anything listens: a SIGTERM that arrives as soon as we do is a clean stop, not
    // the default action (death without recovery).
    let signals = StopSignals::install()?;
    let tls = tls_config(&args)?;
    if args.enable_fuse_io_uring {
        enable_fuse_io_uring();
    }
    if args.unix_socket.is_some() && !args.insecure_unix_plaintext {
        bail!("--unix-socket serves plaintext: add --insecure-unix-plaintext to confirm");
    }
    if tls.is_none() && args.unix_socket.is_none() {
        bail!(
            "nothing to serve: give --cert/--key/--ca for mTLS, or --unix-socket with --insecure-unix-plaintext"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let journal = Journal::open(&args.state_dir)?;
    match agent::journal::boot_time() {
        Ok(boot) => {
            for path in journal.clear_unreadable_from_before(boot) {
                tracing::warn!(path = %path.display(), "removed an unreadable journal record written before this boot (its fault ended with the boot)");
            }
        }
        Err(err) => {
            tracing::warn!(%err, "the boot time is unknown: unreadable journal records stay")
        }
    }
    let faults = Arc::new(Faults::build(
        FaultsConfig {
            injector_binary: injector_binary(&args)?,
            // Beside the journal: the next agent adopts the injectors through them.
            control_sockets: args.state_dir.join("injectors"),
            // Stressors are the agent binary itself (its hidden `stressor` subcommand).
            stressor_binary: std::env::current_exe()?,
            netem_path: args.netem_path,
            dns_responder_binary: beside_agent(&args.dns_responder_bin, "faultline-dns-responder")?,
            http_proxy_binary: beside_agent(&args.http_proxy_bin, "faultline-http-proxy")?,
            // A process started in a shifted container reads the true time for at most this
            // long (plus one pass) before the watcher shifts it.
            time_watch_every: std::time::Duration::from_millis(100),
        },
        resolver,
        journal,
        Arc::clone(&metrics),
    ));
    // The journal is read here, once: whatever a previous run left in force is undone.
    faults.registry.recover_left_over().await;
    faults.io.warm_up();

    let listeners = bind(&args, tls).await?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        signals.wait().await;
        on_signal.cancel();
    });
    spawn_vanished_sweep(Arc::clone(&faults), shutdown.clone());
    let chaos = ChaosDaemonService::new(Arc::clone(&faults));
    let agent = AgentService::new(Arc::clone(&faults));
    println!("faultline-agent ready");
    serve(listeners, chaos, agent, metrics, shutdown).await?;

    // A clean stop recovers everything the journal holds: a fault must never outlive the agent
    // that can undo it.
    faults.registry.recover_all().await;
    if let Some(path) = &args.unix_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Every [`VANISHED_SWEEP_EVERY`], clears the records of faults whose container and namespace
/// are gone (a container SIGKILLed for good, a pod deleted), instead of keeping them until the
/// next restart; every [`RETRY_RECOVERY_EVERY`], tries again the recoveries that failed.
fn spawn_vanished_sweep(faults: Arc<Faults>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut vanished = tokio::time::interval(VANISHED_SWEEP_EVERY);
        vanished.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut retry = tokio::time::interval(RETRY_RECOVERY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The first ticks are at once: start-up recovery just ran.
        vanished.tick().await;
        retry.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = vanished.tick() => {
                    faults.registry.clear_vanished().await;
                }
                _ = retry.tick() => {
                    faults.registry.retry_unrecovered().await;
                }
            }
        }
    });
}

fn tls_config(args: &ServeArgs) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    Ok(match (&args.cert, &args.key, &args.ca) {
        (Some(cert), Some(key), Some(ca)) => Some(server_config(&TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            allowed_clients: args.allowed_clients.clone(),
        })?),
        _ => None,
    })
}

/// A node without FUSE over io_uring still serves: the injectors use /dev/fuse.
fn enable_fuse_io_uring() {
    use agent::fuse_io_uring::{Outcome, PARAMETER, enable};
    match enable(std::path::Path::new(PARAMETER)) {
        Ok(Outcome::Enabled) => tracing::info!("FUSE over io_uring turned on ({PARAMETER})"),
        Ok(Outcome::AlreadyOn) => tracing::info!("FUSE over io_uring is on"),
        Ok(Outcome::Unsupported) => tracing::warn!(
            "this kernel has no FUSE over io_uring (Linux 6.14+): injectors use /dev/fuse"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot turn on FUSE over io_uring ({PARAMETER}): injectors use /dev/fuse")
        }
    }
}

/// The binary given by its flag, or `name` beside this binary.
fn beside_agent(flag: &Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    Ok(match flag {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the agent binary has no directory")?
            .join(name),
    })
}

/// --injector-bin, or faultline-injector beside this binary; it must exist.
fn injector_binary(args: &ServeArgs) -> anyhow::Result<PathBuf> {
    let injector_binary = match &args.injector_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the agent binary has no directory")?
            .join("faultline-injector"),
    };
    if !injector_binary.exists() {
        bail!(
            "the injector binary {} does not exist (--injector-bin)",
            injector_binary.display()
        );
    }
    Ok(injector_binary)
}

/// Binds every listener asked for: mTLS gRPC, the plaintext unix socket (mode 0600), HTTP.
async fn bind(
    args: &ServeArgs,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<Listeners> {
    let mut listeners = Listeners::default();
    if let Some(config) = tls {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "serving gRPC over mTLS");
        listeners.tls = Some((listener, config));
    }
    if let Some(path) = &args.unix_socket {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tracing::info!(socket = %path.display(), "serving plaintext gRPC on a unix socket");
        listeners.unix_plaintext = Some(listener);
    }
    if args.http_listen != "off" {
        let addr: SocketAddr = args.http_listen.parse().context("--http-listen")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
        listeners.http = Some(listener);
    }
    Ok(listeners)
}

/// SIGTERM and SIGINT, handled from the moment they are installed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
