//! `faultline-agent serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use agent::container_runtime::Resolver;
use agent::grpc::{AgentService, ChaosDaemonService, Listeners, serve};
use agent::io_chaos::{IoChaos, IoChaosConfig};
use agent::journal::Journal;
use agent::metrics::Metrics;
use agent::stress::{StressChaos, StressConfig};
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

pub async fn run(args: ServeArgs, resolver: Resolver) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let tls = match (&args.cert, &args.key, &args.ca) {
        (Some(cert), Some(key), Some(ca)) => Some(server_config(&TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            allowed_clients: args.allowed_clients.clone(),
        })?),
        _ => None,
    };
    if args.enable_fuse_io_uring {
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
    if args.unix_socket.is_some() && !args.insecure_unix_plaintext {
        bail!("--unix-socket serves plaintext: add --insecure-unix-plaintext to confirm");
    }
    if tls.is_none() && args.unix_socket.is_none() {
        bail!(
            "nothing to serve: give --cert/--key/--ca for mTLS, or --unix-socket with --insecure-unix-plaintext"
        );
    }
    let injector_binary = match args.injector_bin {
        Some(path) => path,
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

    let metrics = Arc::new(Metrics::new());
    let journal = Journal::open(&args.state_dir)?;
    let io = IoChaos::new(
        IoChaosConfig { injector_binary },
        resolver.clone(),
        journal.clone(),
        Arc::clone(&metrics),
    );
    for (id, outcome) in io.recover_journal().await {
        if let Err(err) = outcome {
            tracing::error!(%id, %err, "journal recovery left this experiment in place");
        }
    }
    // Stressors are the agent binary itself (its hidden `stressor` subcommand).
    let stress = StressChaos::new(
        StressConfig {
            stressor_binary: std::env::current_exe()?,
        },
        resolver.clone(),
        journal.clone(),
        Arc::clone(&metrics),
    );
    for (id, outcome) in stress.recover_journal().await {
        if let Err(err) = outcome {
            tracing::error!(%id, %err, "journal recovery left this stressor in place");
        }
    }
    let network = agent::network::NetworkChaos::new(
        resolver.clone(),
        journal.clone(),
        Arc::clone(&metrics),
        Arc::new(agent::network::runner::NamespaceRunner),
        args.netem_path,
    );
    for (id, outcome) in network.recover_journal().await {
        if let Err(err) = outcome {
            tracing::error!(%id, %err, "journal recovery left this network fault in place");
        }
    }

    let time = agent::time_chaos::TimeChaos::new(
        resolver.clone(),
        journal.clone(),
        Arc::new(agent::time_chaos::host::RealHost::default()),
        std::time::Duration::from_millis(100),
    );
    for (id, outcome) in time.recover_journal().await {
        if let Err(err) = outcome {
            tracing::error!(%id, %err, "journal recovery left this time shift in place");
        }
    }

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

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        on_signal.cancel();
    });
    let chaos =
        ChaosDaemonService::new(resolver.clone(), Arc::clone(&io)).with_stress(Arc::clone(&stress));
    let chaos = chaos.with_network(Arc::clone(&network));
    let chaos = chaos.with_time(Arc::clone(&time));
    let agent = AgentService::new(resolver, Arc::clone(&io)).with_stress(Arc::clone(&stress));
    let agent = agent.with_network(Arc::clone(&network));
    let agent = agent.with_time(Arc::clone(&time));
    println!("faultline-agent ready");
    serve(listeners, chaos, agent, metrics, shutdown).await?;

    // A clean stop recovers everything: a fault must never outlive the agent that can undo it.
    for id in io.ids() {
        if let Err(err) = io.recover(&id).await {
            tracing::error!(%id, %err, "recovery at shutdown failed; the journal keeps the record");
        }
    }
    for id in network.ids() {
        if let Err(err) = network.recover(&id).await {
            tracing::error!(%id, %err, "network recovery at shutdown failed; the journal keeps the record");
        }
    }
    for id in time.ids() {
        if let Err(err) = time.recover(&id).await {
            tracing::error!(%id, %err, "time recovery at shutdown failed; the journal keeps the record");
        }
    }
    for id in stress.ids() {
        if let Err(err) = stress.recover(&id).await {
            tracing::error!(%id, %err, "stopping a stressor at shutdown failed; the journal keeps the record");
        }
    }
    if let Some(path) = &args.unix_socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
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
