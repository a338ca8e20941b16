//! The agent's fault kinds, built and registered in one place. A new kind gets a field here, a
//! line in [`Faults::build`] (its registration, so start-up, shutdown, Recover and listing know
//! it) and its RPCs in `grpc`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::container_runtime::Resolver;
use crate::dns::DnsChaos;
use crate::fault_kinds::{FaultKind, Registry};
use crate::http::HttpChaos;
use crate::io_chaos::{IoChaos, IoChaosConfig};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::network::runner::NamespaceRunner;
use crate::network::{NetemPath, NetworkChaos};
use crate::stress::{StressChaos, StressConfig};
use crate::time_chaos::TimeChaos;
use crate::time_chaos::host::RealHost;

/// Settings of every kind.
#[derive(Clone, Debug)]
pub struct FaultsConfig {
    /// The `faultline-injector` binary (IO).
    pub injector_binary: PathBuf,
    /// Where injectors' control sockets are bound (a directory that outlives the agent).
    pub control_sockets: PathBuf,
    /// The binary whose hidden `stressor` subcommand runs a stressor (the agent's own).
    pub stressor_binary: PathBuf,
    /// Where netem runs.
    pub netem_path: NetemPath,
    /// The `faultline-dns-responder` binary (DNSChaos).
    pub dns_responder_binary: PathBuf,
    /// The `faultline-http-proxy` binary (HTTPChaos).
    pub http_proxy_binary: PathBuf,
    /// How often a time experiment looks for new processes in its container.
    pub time_watch_every: Duration,
}

/// Every fault kind, and the registry that recovers and lists them whatever their kind.
#[derive(Clone, Debug)]
pub struct Faults {
    pub resolver: Resolver,
    pub io: Arc<IoChaos>,
    pub network: Arc<NetworkChaos>,
    pub stress: Arc<StressChaos>,
    pub dns: Arc<DnsChaos>,
    pub http: Arc<HttpChaos>,
    pub time: Arc<TimeChaos>,
    pub registry: Registry,
}

impl Faults {
    /// Builds every kind over one journal and registers it.
    pub fn build(
        config: FaultsConfig,
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
    ) -> Self {
        let io = IoChaos::new(
            IoChaosConfig {
                injector_binary: config.injector_binary,
                control_sockets: config.control_sockets,
            },
            resolver.clone(),
            journal.clone(),
            Arc::clone(&metrics),
        );
        let network = NetworkChaos::new(
            resolver.clone(),
            journal.clone(),
            Arc::clone(&metrics),
            Arc::new(NamespaceRunner),
            config.netem_path,
        );
        let stress = StressChaos::new(
            StressConfig {
                stressor_binary: config.stressor_binary,
            },
            resolver.clone(),
            journal.clone(),
            Arc::clone(&metrics),
        );
        let dns = DnsChaos::new(
            journal.clone(),
            Arc::clone(&metrics),
            Arc::new(crate::dns::host::NodeHost::new(
                resolver.clone(),
                config.dns_responder_binary,
            )),
            Arc::new(NamespaceRunner),
        );
        let http = HttpChaos::new(
            journal.clone(),
            Arc::clone(&metrics),
            Arc::new(crate::http::host::NodeHost::new(
                resolver.clone(),
                config.http_proxy_binary,
            )),
            Arc::new(NamespaceRunner),
        );
        let time = TimeChaos::new(
            resolver.clone(),
            journal.clone(),
            metrics,
            Arc::new(RealHost::default()),
            config.time_watch_every,
        );
        let registry = Registry::new(journal)
            .register(Arc::clone(&io) as Arc<dyn FaultKind>)
            .register(Arc::clone(&network) as Arc<dyn FaultKind>)
            .register(Arc::clone(&stress) as Arc<dyn FaultKind>)
            .register(Arc::clone(&dns) as Arc<dyn FaultKind>)
            .register(Arc::clone(&http) as Arc<dyn FaultKind>)
            .register(Arc::clone(&time) as Arc<dyn FaultKind>);
        Self {
            resolver,
            io,
            network,
            stress,
            dns,
            http,
            time,
            registry,
        }
    }
}
