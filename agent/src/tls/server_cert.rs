use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::pem_files::{ChangeWatch, read_certs, read_key};
use super::{TlsError, provider};

/// The agent's own certificate, re-read when its files change.
#[derive(Debug)]
pub(crate) struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    watch: ChangeWatch,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    pub(crate) fn new(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let current = load(&cert, &key)?;
        Ok(Self {
            watch: ChangeWatch::new(vec![cert.clone(), key.clone()]),
            cert,
            key,
            current: RwLock::new(current),
        })
    }
}

fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let key = read_key(key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.watch.changed() {
            match load(&self.cert, &self.key) {
                Ok(fresh) => {
                    if let Ok(mut current) = self.current.write() {
                        *current = fresh;
                    }
                    tracing::info!(cert = %self.cert.display(), "reloaded the server certificate");
                }
                Err(err) => tracing::warn!(%err, "keeping the previous server certificate"),
            }
        }
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}
