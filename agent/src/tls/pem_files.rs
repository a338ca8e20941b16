use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no CERTIFICATE block".into()));
    }
    Ok(certs)
}

pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| invalid(path, format!("no usable private key: {e}")))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn invalid(path: &Path, reason: String) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        reason,
    }
}

/// Tells when a set of files changed on disk (modification time, size or inode: a Kubernetes
/// Secret update swaps a symlink, which changes the inode), checking at most once per interval.
#[derive(Debug)]
pub(crate) struct ChangeWatch {
    paths: Vec<PathBuf>,
    state: Mutex<WatchState>,
}

#[derive(Debug)]
struct WatchState {
    stamps: Vec<Option<Stamp>>,
    last_check: Instant,
}

type Stamp = (SystemTime, u64, u64);

const CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl ChangeWatch {
    pub(crate) fn new(paths: Vec<PathBuf>) -> Self {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        Self {
            paths,
            state: Mutex::new(WatchState {
                stamps,
                last_check: Instant::now(),
            }),
        }
    }

    /// True once per change (the new stamps are remembered).
    pub(crate) fn changed(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.last_check.elapsed() < CHECK_INTERVAL {
            return false;
        }
        state.last_check = Instant::now();
        let now: Vec<_> = self.paths.iter().map(|p| stamp(p)).collect();
        if now != state.stamps {
            state.stamps = now;
            true
        } else {
            false
        }
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}
