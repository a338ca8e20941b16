//! The HTTP interface (axum): `GET /latency/<delay>`, `DELETE /latency`, `GET /status`,
//! `GET /healthz`. Answers are JSON; a refused request says why with a 4xx/5xx status.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::SidecarError;
use super::backend::DelayBackend;
use super::delay::parse_delay;
use super::latency::Latency;
use agent::network::NetworkError;

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            text + "\n",
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn error(e: &NetworkError) -> Response {
    let status = match e {
        NetworkError::InvalidArgument { .. } | NetworkError::UnknownDevice { .. } => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, &serde_json::json!({ "error": e.to_string() }))
}

async fn set_latency<B: DelayBackend + 'static>(
    State(latency): State<Arc<Latency<B>>>,
    Path(delay): Path<String>,
) -> Response {
    let result = match parse_delay(&delay) {
        Ok(us) => latency.set(us).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(report) => {
            tracing::info!(action = report.action, delay = %report.delay, path = ?report.path, "latency");
            json(StatusCode::OK, &report)
        }
        Err(e) => {
            tracing::warn!(%delay, error = %e, "latency request refused");
            error(&e)
        }
    }
}

async fn clear_latency<B: DelayBackend + 'static>(
    State(latency): State<Arc<Latency<B>>>,
) -> Response {
    match latency.clear().await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => error(&e),
    }
}

async fn status<B: DelayBackend + 'static>(State(latency): State<Arc<Latency<B>>>) -> Response {
    json(StatusCode::OK, &latency.status().await)
}

pub fn router<B: DelayBackend + 'static>(latency: Arc<Latency<B>>) -> Router {
    Router::new()
        .route("/latency/{delay}", get(set_latency::<B>))
        .route("/latency", axum::routing::delete(clear_latency::<B>))
        .route("/status", get(status::<B>))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(latency)
}

/// Serves until SIGTERM or SIGINT, then removes the delay.
pub async fn serve<B: DelayBackend + 'static>(
    addr: SocketAddr,
    latency: Arc<Latency<B>>,
) -> Result<(), SidecarError> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SidecarError::Listen { addr, source })?;
    tracing::info!(%addr, "latency agent listening");
    let mut sigterm = signal(SignalKind::terminate()).map_err(SidecarError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(SidecarError::Signals)?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM"),
            _ = sigint.recv() => tracing::info!("SIGINT"),
        }
    };
    let served = axum::serve(listener, router(Arc::clone(&latency)))
        .with_graceful_shutdown(stop)
        .await;
    // Whatever ended serving, leave the pod's network as it was.
    let cleared = latency.clear().await;
    match &cleared {
        Ok(report) => tracing::info!(action = report.action, "latency agent stopped"),
        Err(e) => tracing::error!(error = %e, "the delay could not be removed"),
    }
    served.map_err(SidecarError::Serve)?;
    cleared?;
    Ok(())
}
