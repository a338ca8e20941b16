//! `faultline-controller run`'s flags, turned into the library's run configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use controller::agent::discovery::AgentService;
use controller::agent::pool::PoolSettings;
use controller::agent::tls::ClientTls;
use controller::leader::LeaseSettings;
use controller::reconcile::Settings;
use controller::run::RunConfig;

#[derive(clap::Args)]
pub struct RunArgs {
    /// CA that signed the agents' certificates.
    #[arg(
        long,
        env = "FAULTLINE_CA",
        default_value = "/etc/faultline/tls/ca.crt"
    )]
    ca: PathBuf,
    /// The controller's client certificate (its SAN must be on the agents' allow-list).
    #[arg(
        long,
        env = "FAULTLINE_CERT",
        default_value = "/etc/faultline/tls/tls.crt"
    )]
    cert: PathBuf,
    #[arg(
        long,
        env = "FAULTLINE_KEY",
        default_value = "/etc/faultline/tls/tls.key"
    )]
    key: PathBuf,
    /// The DNS name the agents' certificate must carry.
    #[arg(long, default_value = "faultline-agent.faultline.svc")]
    agent_server_name: String,
    /// Namespace and name of the agents' headless Service.
    #[arg(long, env = "FAULTLINE_AGENT_NAMESPACE", default_value = "faultline")]
    agent_namespace: String,
    #[arg(long, default_value = "faultline-agent")]
    agent_service: String,
    /// Name of the gRPC port in the agents' EndpointSlices.
    #[arg(long, default_value = "grpc")]
    agent_port_name: String,
    /// Seconds to connect to an agent, and for one call.
    #[arg(long, default_value_t = 5)]
    connect_timeout: u64,
    #[arg(long, default_value_t = 30)]
    call_timeout: u64,
    /// The image pod-failure swaps in.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    pause_image: String,
    /// `/metrics` and `/healthz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// Leader election Lease (namespace/name); "off" for a single replica.
    #[arg(long, default_value = "faultline/faultline-controller")]
    lease: String,
    /// This replica's identity in the Lease and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log as JSON.
    #[arg(long)]
    log_json: bool,
    /// Select pods in this namespace only (Chaos Mesh's clusterScoped=false with
    /// targetNamespace); default: every namespace.
    #[arg(long)]
    target_namespace: Option<String>,
    /// Select pods only in namespaces annotated chaos-mesh.org/inject=enabled (or
    /// chaos.faultline.dev/inject=enabled), as Chaos Mesh's enableFilterNamespace.
    #[arg(long)]
    filter_namespaces: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.log_json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }

    let tls = ClientTls::from_files(&args.ca, &args.cert, &args.key, &args.agent_server_name)?;
    let identity = args
        .identity
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "faultline-controller".into());
    let lease = match args.lease.as_str() {
        "off" => None,
        spec => {
            let (namespace, name) = spec
                .split_once('/')
                .with_context(|| format!("--lease {spec:?}: NAMESPACE/NAME or off"))?;
            Some(LeaseSettings {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
            })
        }
    };
    let config = RunConfig {
        tls,
        agent_service: AgentService {
            namespace: args.agent_namespace,
            name: args.agent_service,
            port_name: args.agent_port_name,
            ..AgentService::default()
        },
        pool: PoolSettings {
            connect_timeout: Duration::from_secs(args.connect_timeout),
            call_timeout: Duration::from_secs(args.call_timeout),
            ..PoolSettings::default()
        },
        settings: Settings {
            pause_image: args.pause_image,
            scoping: controller::selection::Scoping {
                cluster_scoped: args.target_namespace.is_none(),
                target_namespace: args.target_namespace.unwrap_or_default(),
                filter_namespaces: args.filter_namespaces,
            },
            ..Settings::default()
        },
        http_listen: args.http_listen,
        lease,
        instance: Some(identity),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(controller::run::run(config))?;
    Ok(())
}
