//! The controller's mTLS identity towards the agents: CA, client certificate and key read from
//! files once at start, and the name the agents' certificate must carry.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

#[derive(Debug, thiserror::Error)]
#[error("cannot read the {what} {}: {source}", path.display())]
pub struct TlsFileError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// PEM material for the client side of mTLS.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The DNS name checked in the agents' certificate.
    pub server_name: String,
}

impl ClientTls {
    pub fn from_files(
        ca: &Path,
        cert: &Path,
        key: &Path,
        server_name: &str,
    ) -> Result<ClientTls, TlsFileError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsFileError {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Ok(ClientTls {
            ca_pem: read("CA certificate", ca)?,
            cert_pem: read("client certificate", cert)?,
            key_pem: read("client key", key)?,
            server_name: server_name.to_owned(),
        })
    }

    pub fn config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(self.server_name.clone())
    }
}
