//! Connecting to an agent: plaintext over its local unix socket, or mTLS over TCP.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    crate::unix_channel::connect(socket, CALL_TIMEOUT)
        .await
        .map_err(|reason| ConnectError::Unreachable {
            target: socket.display().to_string(),
            reason: if socket.exists() {
                reason
            } else {
                format!("{reason} (is the agent running with --unix-socket?)")
            },
        })
}

/// Bound on connecting and on each call (an IO attack waits for the mount).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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
        .map_err(|e| unreachable(crate::unix_channel::error_chain(&e)))
}
