//! Connecting to an agent: plaintext over its local unix socket, or mTLS over TCP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the agent at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A channel to the agent's plaintext unix socket.
pub async fn connect_unix(socket: &Path) -> Result<Channel, ConnectError> {
    let unreachable = |reason: String| ConnectError::Unreachable {
        target: socket.display().to_string(),
        reason,
    };
    if !socket.exists() {
        return Err(unreachable(
            "no such socket (is the agent running with --unix-socket?)".into(),
        ));
    }
    let path = socket.to_owned();
    Endpoint::from_static("http://[::]:31767")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| unreachable(e.to_string()))
}

/// Client certificate material for mTLS.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The name the agent's certificate is checked against.
    pub server_name: String,
}

/// A channel to an agent over mTLS.
pub async fn connect_tls(addr: &str, tls: &ClientTls) -> Result<Channel, ConnectError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ConnectError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
        .domain_name(tls.server_name.clone());
    let unreachable = |reason: String| ConnectError::Unreachable {
        target: addr.to_owned(),
        reason,
    };
    Endpoint::from_shared(addr.to_owned())
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(config)
        .map_err(|e| unreachable(e.to_string()))?
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
