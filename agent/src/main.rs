//! `faultline-agent`: the node agent. `serve` runs the gRPC server (mTLS on TCP, optionally
//! plaintext on a unix socket for the local CLI) and the HTTP metrics endpoint; the other
//! subcommands answer container-resolution queries against the node's runtime.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use agent::container_runtime::{Resolver, RuntimeConfig, RuntimeKind};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "faultline-agent", version, about = "faultline node agent")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RuntimeArgs {
    /// The node's container runtime: the runtime of bare container IDs and of the CRI socket.
    #[arg(long, default_value = "containerd", global = true)]
    runtime: RuntimeKind,
    /// containerd API socket.
    #[arg(long, global = true)]
    containerd_socket: Option<PathBuf>,
    /// containerd namespace of Kubernetes pods.
    #[arg(long, default_value = "k8s.io", global = true)]
    containerd_namespace: String,
    /// CRI socket (default: the usual one of --runtime).
    #[arg(long, global = true)]
    cri_socket: Option<PathBuf>,
}

impl RuntimeArgs {
    fn config(&self) -> RuntimeConfig {
        let mut config = RuntimeConfig::for_runtime(self.runtime);
        if let Some(socket) = &self.containerd_socket {
            config.containerd_socket = socket.clone();
            if self.runtime == RuntimeKind::Containerd && self.cri_socket.is_none() {
                config.cri_socket = socket.clone();
            }
        }
        if let Some(socket) = &self.cri_socket {
            config.cri_socket = socket.clone();
        }
        config.containerd_namespace = self.containerd_namespace.clone();
        config.timeout = Duration::from_secs(10);
        config
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (pb.ChaosDaemon and faultline.agent.v1.Agent).
    Serve(Box<daemon::ServeArgs>),
    /// Print the host PID of a container (`containerd://ID`, `cri-o://ID`, `docker://ID` or a bare ID).
    Pid { container_id: String },
    /// Print the host PID of a pod's sandbox, by pod UID.
    SandboxPid { pod_uid: String },
    /// List a pod's containers, by pod UID.
    Containers { pod_uid: String },
    /// The per-pod latency agent: a sidecar with NET_ADMIN in the pod's network namespace;
    /// `GET /latency/20ms` delays what the pod sends on --device, `GET /latency/0` or
    /// `DELETE /latency` removes it, `GET /status` tells; SIGTERM removes it too.
    Sidecar(SidecarArgs),
    /// Run a stressor (spawned by `serve` for ExecStressors; waits for the agent on stdin).
    #[command(subcommand, hide = true)]
    Stressor(agent::stress::worker::StressorCommand),
}

#[derive(clap::Args)]
struct SidecarArgs {
    /// HTTP address: ADDR:PORT, or Go's :PORT for every IPv4 address.
    #[arg(long, default_value = ":2332", value_parser = sidecar::parse_listen)]
    listen: std::net::SocketAddr,
    /// The device whose egress is delayed.
    #[arg(long, default_value = "eth0")]
    device: String,
    /// Where netem runs: auto (the kernel's, else userspace NFQUEUE), kernel or userspace.
    #[arg(long, default_value = "auto")]
    netem_path: agent::network::NetemPath,
}

async fn run_sidecar(args: SidecarArgs) -> anyhow::Result<()> {
    use sidecar::{Latency, LocalRunner, NetlinkBackend};
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let backend = NetlinkBackend::new(std::sync::Arc::new(LocalRunner), std::process::id())
        .context("reading our network namespace")?;
    let latency = std::sync::Arc::new(Latency::new(args.device, args.netem_path, backend));
    sidecar::serve(args.listen, latency).await?;
    Ok(())
}

mod daemon;
mod sidecar;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    // A stressor is a plain process: no async runtime, no threads but its workers.
    if let Command::Stressor(command) = &cli.command {
        return Ok(agent::stress::worker::run(command));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let resolver = Resolver::new(cli.runtime.config());
    match cli.command {
        Command::Serve(args) => daemon::run(*args, resolver).await?,
        Command::Sidecar(args) => run_sidecar(args).await?,
        Command::Pid { container_id } => {
            let pid = resolver
                .container_pid(&container_id)
                .await
                .context("resolving the container")?;
            println!("{pid}");
        }
        Command::SandboxPid { pod_uid } => {
            let pid = resolver
                .sandbox_pid(&pod_uid)
                .await
                .context("resolving the pod sandbox")?;
            println!("{pid}");
        }
        Command::Containers { pod_uid } => {
            for c in resolver
                .pod_containers(&pod_uid)
                .await
                .context("listing the pod's containers")?
            {
                println!(
                    "{}\t{}\t{}",
                    c.id,
                    c.name,
                    if c.running { "running" } else { "not running" }
                );
            }
        }
        Command::Stressor(_) => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}
