//! `faultline-controller webhook`'s flags: the mutating admission webhook of the template
//! sidecar mode, in a cluster (watching the API) or offline (`--manifests DIR`), and the chaos
//! kinds' admission (stateless: the same in both).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use controller::webhook::config::{
    DEFAULT_CONFIG_LABELS, DEFAULT_TEMPLATE_LABELS, LabelFilter, Settings,
};
use controller::webhook::{Source, WebhookConfig};

#[derive(clap::Args)]
pub struct WebhookArgs {
    /// HTTPS address the API server calls (paths /inject, /validate-chaos, /default-chaos).
    #[arg(long, default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// The serving certificate (PEM); its SAN must be the webhook Service's DNS name.
    #[arg(
        long,
        env = "FAULTLINE_WEBHOOK_CERT",
        default_value = "/etc/faultline/webhook-tls/tls.crt"
    )]
    tls_cert: PathBuf,
    #[arg(
        long,
        env = "FAULTLINE_WEBHOOK_KEY",
        default_value = "/etc/faultline/webhook-tls/tls.key"
    )]
    tls_key: PathBuf,
    /// Offline: read the ConfigMaps and Namespaces from the YAML files of this directory
    /// instead of watching the API server.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// The controller's namespace: template ConfigMaps are read here, and its pods are never
    /// injected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "faultline")]
    namespace: String,
    /// Labels of the template ConfigMaps.
    #[arg(long, default_value = DEFAULT_TEMPLATE_LABELS)]
    template_labels: LabelFilter,
    /// Labels of the config ConfigMaps (any namespace).
    #[arg(long, default_value = DEFAULT_CONFIG_LABELS)]
    config_labels: LabelFilter,
    /// Log as JSON.
    #[arg(long)]
    log_json: bool,
}

pub fn run(args: WebhookArgs) -> anyhow::Result<()> {
    crate::init_logging(args.log_json);
    let config = WebhookConfig {
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        source: match args.manifests {
            Some(dir) => Source::Manifests(dir),
            None => Source::Cluster,
        },
        settings: Settings {
            namespace: args.namespace,
            template_labels: args.template_labels,
            config_labels: args.config_labels,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(controller::webhook::run(config))?;
    Ok(())
}
