//! Listeners: mTLS gRPC on TCP, plaintext gRPC on a unix socket (local CLI, explicit opt-in),
//! and HTTP `/metrics` + `/healthz`.

use std::sync::Arc;

use faultline_proto::agent::v1::agent_server::AgentServer;
use faultline_proto::pb::chaos_daemon_server::ChaosDaemonServer;
use rustls::ServerConfig;
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::metrics_layer::MetricsLayer;
use super::{AgentService, ChaosDaemonService};
use crate::metrics::Metrics;

/// Sockets bound by the caller (so tests can bind port 0 and read the address).
#[derive(Debug, Default)]
pub struct Listeners {
    pub tls: Option<(TcpListener, Arc<ServerConfig>)>,
    pub unix_plaintext: Option<UnixListener>,
    pub http: Option<TcpListener>,
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listeners: Listeners,
    chaos: ChaosDaemonService,
    agent: AgentService,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let router = || {
        tonic::transport::Server::builder()
            .layer(MetricsLayer::new(Arc::clone(&metrics)))
            .add_service(ChaosDaemonServer::new(chaos.clone()))
            .add_service(AgentServer::new(agent.clone()))
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some((listener, config)) = listeners.tls {
        let incoming = tls_incoming(listener, config, Arc::clone(&metrics));
        let shutdown = shutdown.clone();
        let server = router();
        tasks.spawn(async move {
            server
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        });
    }
    if let Some(listener) = listeners.unix_plaintext {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let shutdown = shutdown.clone();
        let server = router();
        tasks.spawn(async move {
            server
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        });
    }
    if let Some(listener) = listeners.http {
        let app = http_app(Arc::clone(&metrics));
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
            {
                tracing::error!(%err, "the HTTP endpoint failed");
            }
            Ok(())
        });
    }
    // Until shutdown, a failing listener stops everything; after it, connections get a grace
    // period to finish their calls, then are dropped (an idle client must not hold up the
    // recovery that follows a stop).
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => return Ok(()),
                Some(Ok(Err(err))) => {
                    shutdown.cancel();
                    return Err(err);
                }
                Some(_) => {}
            },
            () = shutdown.cancelled() => break,
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(grace = ?SHUTDOWN_GRACE, "closing connections still open after the grace period");
        tasks.abort_all();
    }
    Ok(())
}

/// How long open connections may take to finish once the agent is asked to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Accepted TLS connections; handshakes run concurrently so a slow or hostile client cannot hold
/// up others, and failed ones are logged and counted.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    metrics: Arc<Metrics>,
) -> impl futures::Stream<
    Item = Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(stream),
                )
                .await;
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(err)) => {
                        metrics.failure("tls", "handshake");
                        tracing::warn!(%peer, %err, "refused a TLS client");
                    }
                    Err(_) => {
                        metrics.failure("tls", "handshake_timeout");
                        tracing::warn!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn http_app(metrics: Arc<Metrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}
