//! The agent's TLS identity and its mTLS policy, in one place: TLS 1.3 only, a client
//! certificate is required and verified against the configured CA, and the client's identity
//! (a SAN DNS name or URI) must be on the allow-list. Certificate, key and CA files are re-read
//! when they change on disk (checked at most once a second, on handshakes), so rotation needs no
//! restart; a broken new file is reported and the previous material kept.

mod client_verifier;
mod identity;
mod pem_files;
mod server_cert;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;

pub use identity::{ClientIdentity, peer_identities};

/// Files and policy of the agent's mTLS endpoint.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub allowed_clients: Vec<ClientIdentity>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("no client identity is allowed: give at least one --allowed-client")]
    NoAllowedClients,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration; fails if any file is missing or unusable now.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    if settings.allowed_clients.is_empty() {
        return Err(TlsError::NoAllowedClients);
    }
    let verifier = client_verifier::AllowListVerifier::new(
        settings.ca.clone(),
        settings.allowed_clients.clone(),
    )?;
    let resolver = server_cert::ReloadingCert::new(settings.cert.clone(), settings.key.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
