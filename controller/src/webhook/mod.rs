//! The mutating admission webhook of the template sidecar mode: pods that ask for a config (by
//! annotation, in a namespace labelled `admission-webhook=enabled`) get the config's init
//! containers, sidecars, volumes, volume mounts and postStart commands, rendered from a Go
//! template ConfigMap or given in full, as an RFC 6902 JSON Patch.
//!
//! Modules, one job each: `template` (Go text/template behind a trait), `config` (what the
//! ConfigMaps say), `catalog` (the configs, rendered once per change), `decide` (whether and
//! with what a pod is injected), `mutate` (the patch), `review` (AdmissionReview in and out),
//! `sources` (ConfigMaps and Namespaces from files or watched in a cluster), `server` (HTTPS).
//!
//! The same server answers the chaos kinds' admission (`chaos`): validation as the controller
//! validates, and Chaos Mesh's defaults.
//!
//! Boundaries: the webhook only answers the API server; it never writes to the cluster.

pub mod catalog;
pub mod chaos;
pub mod config;
pub mod decide;
pub mod mutate;
pub mod review;
pub mod server;
pub mod sources;
pub mod template;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::Settings;
pub use review::Webhook;

/// Where the webhook's configs come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// YAML files (ConfigMaps and Namespaces) in a directory, read once.
    Manifests(PathBuf),
    /// The API server, watched.
    Cluster,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub source: Source,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Tls(#[from] server::TlsError),
    #[error(transparent)]
    Source(#[from] sources::SourceError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the webhook until the process ends.
pub async fn run(config: WebhookConfig) -> Result<(), WebhookError> {
    let tls = server::server_config(&config.tls_cert, &config.tls_key)?;
    let engine: Arc<dyn template::TemplateEngine> = Arc::new(template::GoTemplates);
    let listen_err = |source| WebhookError::Listen {
        addr: config.listen,
        source,
    };
    match config.source {
        Source::Manifests(dir) => {
            let webhook = Arc::new(sources::offline(engine.as_ref(), config.settings, &dir)?);
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(listen_err)?;
            let addr = listener.local_addr().map_err(listen_err)?;
            tracing::info!(%addr, manifests = %dir.display(), "webhook serving");
            // On stdout for whoever started it with port 0 (tests, scripts).
            println!("webhook serving on https://{addr}{}", server::INJECT_PATH);
            server::serve(listener, tls, webhook)
                .await
                .map_err(listen_err)
        }
        Source::Cluster => {
            let client = kube::Client::try_default()
                .await
                .map_err(WebhookError::Client)?;
            let cluster = sources::in_cluster(client, engine, config.settings);
            let watch = tokio::spawn(cluster.watch);
            cluster.ready.await;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(listen_err)?;
            tracing::info!(addr = %config.listen, "webhook serving (namespaces, templates and configs watched)");
            let served = server::serve(listener, tls, cluster.webhook).await;
            watch.abort();
            served.map_err(listen_err)
        }
    }
}
