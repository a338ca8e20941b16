//! The controller's mTLS identity towards the agents: CA, client certificate and key, and the
//! name the agents' certificate must carry.
//!
//! Read from files, the material follows rotation without a restart: every new connection to an
//! agent checks whether one of the three files changed (a Secret volume update swaps a symlink,
//! cert-manager renews in place) and re-reads them; a half-written or unreadable set keeps the
//! last good material and is logged. Established connections keep their session, which stays
//! valid because TLS checks identities at the handshake only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
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
#[derive(Clone, Debug, PartialEq, Eq)]
struct Material {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// What identifies one version of a file: enough to notice an in-place rewrite or a swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

#[derive(Debug)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Stamps of the files the current material was read from.
    stamps: Mutex<[Option<FileStamp>; 3]>,
}

impl TlsFiles {
    fn paths(&self) -> [(&'static str, &Path); 3] {
        [
            ("CA certificate", &self.ca),
            ("client certificate", &self.cert),
            ("client key", &self.key),
        ]
    }

    fn current_stamps(&self) -> [Option<FileStamp>; 3] {
        self.paths().map(|(_, path)| stamp(path))
    }

    fn read(&self) -> Result<Material, TlsFileError> {
        let read = |(what, path): (&'static str, &Path)| {
            std::fs::read(path).map_err(|source| TlsFileError {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let [ca, cert, key] = self.paths();
        Ok(Material {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// The controller's client TLS settings; cheap to clone (clones share the reloaded material).
#[derive(Clone, Debug)]
pub struct ClientTls {
    material: Arc<Mutex<Material>>,
    files: Option<Arc<TlsFiles>>,
    /// The DNS name checked in the agents' certificate.
    server_name: String,
}

impl ClientTls {
    /// Fixed material, never reloaded.
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8], server_name: &str) -> Self {
        ClientTls {
            material: Arc::new(Mutex::new(Material {
                ca_pem: ca_pem.to_vec(),
                cert_pem: cert_pem.to_vec(),
                key_pem: key_pem.to_vec(),
            })),
            files: None,
            server_name: server_name.to_owned(),
        }
    }

    /// Material read from files now, and again whenever they change.
    pub fn from_files(
        ca: &Path,
        cert: &Path,
        key: &Path,
        server_name: &str,
    ) -> Result<ClientTls, TlsFileError> {
        let files = TlsFiles {
            ca: ca.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
            stamps: Mutex::new([None; 3]),
        };
        let stamps = files.current_stamps();
        let material = files.read()?;
        *files.stamps.lock() = stamps;
        Ok(ClientTls {
            material: Arc::new(Mutex::new(material)),
            files: Some(Arc::new(files)),
            server_name: server_name.to_owned(),
        })
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Re-reads the files if any of them changed since the last read. Returns whether the
    /// material changed; on a read error the last good material stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsFileError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let now = files.current_stamps();
        if *files.stamps.lock() == now {
            return Ok(false);
        }
        let fresh = files.read()?;
        *files.stamps.lock() = now;
        let mut material = self.material.lock();
        if *material == fresh {
            return Ok(false);
        }
        *material = fresh;
        Ok(true)
    }

    /// The settings for a new connection, with the newest material.
    pub fn config(&self) -> ClientTlsConfig {
        match self.reload_if_changed() {
            Ok(true) => {
                tracing::info!("client TLS material changed on disk; new connections use it")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "client TLS files changed but cannot be read; keeping the previous material")
            }
        }
        let material = self.material.lock();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&material.ca_pem))
            .identity(Identity::from_pem(&material.cert_pem, &material.key_pem))
            .domain_name(self.server_name.clone())
    }

    #[cfg(test)]
    fn cert_pem(&self) -> Vec<u8> {
        self.material.lock().cert_pem.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_set(dir: &Path, tag: &str) {
        std::fs::write(dir.join("ca.crt"), format!("ca {tag}")).unwrap();
        std::fs::write(dir.join("tls.crt"), format!("cert {tag}")).unwrap();
        std::fs::write(dir.join("tls.key"), format!("key {tag}")).unwrap();
    }

    fn load(dir: &Path) -> ClientTls {
        ClientTls::from_files(
            &dir.join("ca.crt"),
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
            "faultline-agent.faultline.svc",
        )
        .unwrap()
    }

    #[test]
    fn follows_a_secret_volume_symlink_swap() {
        // The kubelet's atomic writer: files are links into ..data, itself a link to a
        // timestamped directory that is replaced as a whole.
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("..v1");
        let v2 = dir.path().join("..v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        write_set(&v1, "one");
        write_set(&v2, "two-longer");
        std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
        for name in ["ca.crt", "tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.path().join(name)).unwrap();
        }
        let tls = load(dir.path());
        assert_eq!(tls.cert_pem(), b"cert one");
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed yet");

        std::os::unix::fs::symlink("..v2", dir.path().join("..data.tmp")).unwrap();
        std::fs::rename(dir.path().join("..data.tmp"), dir.path().join("..data")).unwrap();
        assert!(tls.reload_if_changed().unwrap());
        assert_eq!(tls.cert_pem(), b"cert two-longer");
        let clone = tls.clone();
        assert_eq!(
            clone.cert_pem(),
            b"cert two-longer",
            "clones share the material"
        );
    }

    #[test]
    fn a_vanished_file_keeps_the_last_good_material() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), "one");
        let tls = load(dir.path());
        std::fs::remove_file(dir.path().join("tls.key")).unwrap();
        let error = tls.reload_if_changed().unwrap_err().to_string();
        assert!(error.contains("client key"), "{error}");
        assert_eq!(tls.cert_pem(), b"cert one");
        // Once the set is whole again it is picked up.
        write_set(dir.path(), "three-and-more");
        assert!(tls.reload_if_changed().unwrap());
        assert_eq!(tls.cert_pem(), b"cert three-and-more");
    }

    #[test]
    fn fixed_material_never_reloads() {
        let tls = ClientTls::from_pem(b"ca", b"cert", b"key", "agent");
        assert!(!tls.reload_if_changed().unwrap());
        assert_eq!(tls.server_name(), "agent");
    }
}
