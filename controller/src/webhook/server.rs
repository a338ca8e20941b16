//! The webhook's HTTPS server: axum on hyper (HTTP/1.1, keep-alive) behind rustls (ring).
//! `POST /inject` answers AdmissionReviews, `GET /healthz` says it serves.
//!
//! The serving certificate is read from files and re-read when they change (a Secret volume
//! update, cert-manager's renewal): each handshake compares the files' modification time and
//! size with those of the loaded pair, a cheap stat, and a new pair that does not load keeps
//! the old one (logged).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::review::Webhook;

/// The path the MutatingWebhookConfiguration calls.
pub const INJECT_PATH: &str = "/inject";
/// A client that does not finish its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Nor one that starts a request and does not finish its headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the webhook's {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook's {what} {}: {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let invalid = |what, path: &Path, reason: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_pem = read("certificate", cert)?;
    let key_pem = read("key", key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid("certificate", cert, "no PEM certificate".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("key", key, e.to_string()))?;
    let signing = any_supported_type(&key_der).map_err(|e| invalid("key", key, e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    // Mid-rotation, the key of the new pair beside the old certificate: not a pair.
    pair.keys_match().map_err(|e| {
        invalid(
            "key",
            key,
            format!("does not match the certificate {}: {e}", cert.display()),
        )
    })?;
    Ok(Arc::new(pair))
}

/// What tells one version of a file from another: an in-place rewrite changes the time or
/// size, a replacement (the kubelet swaps a Secret volume's symlink) the inode.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// The serving certificate, reloaded when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Arc<CertifiedKey>, [Stamp; 2])>,
}

impl ReloadingCert {
    pub fn new(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let stamps = [stamp(cert), stamp(key)];
        let loaded = load(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Mutex::new((loaded, stamps)),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamps = [stamp(&self.cert), stamp(&self.key)];
        let mut current = self.current.lock();
        if stamps != current.1 {
            match load(&self.cert, &self.key) {
                Ok(loaded) => {
                    tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                    *current = (loaded, stamps);
                }
                // Half-written during a rotation: keep serving the old pair, try again later.
                Err(e) => tracing::warn!(error = %e, "webhook certificate not reloaded"),
            }
        }
        Some(current.0.clone())
    }
}

pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = ReloadingCert::new(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            what: "TLS settings",
            path: cert.to_owned(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route(INJECT_PATH, post(inject))
        .route(super::chaos::VALIDATE_PATH, post(validate_chaos))
        .route(super::chaos::DEFAULT_PATH, post(default_chaos))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(webhook)
}

async fn inject(State(webhook): State<Arc<Webhook>>, body: Bytes) -> Response {
    match webhook.review(&body) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "bad admission request");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}

fn answer(result: Result<Vec<u8>, super::review::BadReview>) -> Response {
    match result {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "bad admission request");
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
    }
}

async fn validate_chaos(body: Bytes) -> Response {
    answer(super::chaos::validate_review(&body))
}

async fn default_chaos(body: Bytes) -> Response {
    answer(super::chaos::default_review(&body))
}

/// Serves HTTPS on `listener` until the process ends; a failing connection only ends itself.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    webhook: Arc<Webhook>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let service = TowerToHyperService::new(router(webhook));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug(peer, "TLS handshake", &e),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug(peer, "connection", &e);
            }
        });
    }
}

fn debug(peer: SocketAddr, what: &str, e: &dyn std::fmt::Display) {
    tracing::debug!(%peer, error = %e, "{what}");
}

/// Errors of accept(2) that concern one connection or a passing shortage, not the listener.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(e.raw_os_error(), Some(23 | 24 | 12 | 105))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["faultline-webhook.faultline.svc".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_pair_loads_and_mismatched_or_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair(dir.path(), "a");
        let (_, key_b) = pair(dir.path(), "b");
        assert!(load(&cert_a, &key_a).is_ok());
        let err = load(&cert_a, &key_b).unwrap_err().to_string();
        assert!(
            err.contains("b.key") && err.contains("does not match"),
            "{err}"
        );
        let err = load(&dir.path().join("none.crt"), &key_a)
            .unwrap_err()
            .to_string();
        assert!(err.contains("reading the webhook's certificate"), "{err}");
        std::fs::write(dir.path().join("empty.crt"), "").unwrap();
        let err = load(&dir.path().join("empty.crt"), &key_a)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
