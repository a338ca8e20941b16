//! Handshakes between real rustls clients and the agent's server configuration.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, sans: &[SanType]) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans.to_vec();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
    settings: TlsSettings,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("faultline test CA");
        let server = ca.leaf(&[dns("agent.test")]);
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &server.key_pem).unwrap();
        let settings = TlsSettings {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            ca: dir.path().join("ca.pem"),
            allowed_clients: vec![
                "controller.faultline.svc".parse().unwrap(),
                "spiffe://cluster.local/ns/faultline/sa/cli"
                    .parse()
                    .unwrap(),
            ],
        };
        Self { dir, ca, settings }
    }
}

fn client_config(ca_pem: &str, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Runs one handshake plus a one-byte exchange; returns the server's verdict and the server
/// certificate the client saw.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Result<(), String>, Option<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server)
            .accept(a)
            .await
            .map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let client_side = async move {
        let name = ServerName::try_from("agent.test").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, b).await.ok()?;
        let seen = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        tls.write_all(b"x").await.ok()?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.ok()?;
        seen
    };
    tokio::join!(server_side, client_side)
}

#[tokio::test]
async fn an_allowed_client_gets_in() {
    let fx = Fixture::new();
    let server = server_config(&fx.settings).unwrap();
    for identity in [
        dns("controller.faultline.svc"),
        uri("spiffe://cluster.local/ns/faultline/sa/cli"),
    ] {
        let client = fx.ca.leaf(&[dns("other.name"), identity]);
        let (verdict, seen) =
            handshake(server.clone(), client_config(&fx.ca.pem(), Some(&client))).await;
        assert_eq!(verdict, Ok(()));
        assert!(seen.is_some());
    }
}

#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    let fx = Fixture::new();
    let server = server_config(&fx.settings).unwrap();
    let (verdict, _) = handshake(server, client_config(&fx.ca.pem(), None)).await;
    let err = verdict.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_client_from_another_ca_is_refused() {
    let fx = Fixture::new();
    let server = server_config(&fx.settings).unwrap();
    let rogue = Ca::new("rogue CA").leaf(&[dns("controller.faultline.svc")]);
    let (verdict, _) = handshake(server, client_config(&fx.ca.pem(), Some(&rogue))).await;
    let err = verdict.unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("issuer"),
        "{err}"
    );
}

#[tokio::test]
async fn a_valid_client_with_a_foreign_identity_is_refused() {
    let fx = Fixture::new();
    let server = server_config(&fx.settings).unwrap();
    let stranger = fx.ca.leaf(&[dns("someone.else.svc")]);
    let (verdict, _) = handshake(server, client_config(&fx.ca.pem(), Some(&stranger))).await;
    let err = verdict.unwrap_err();
    assert!(
        err.contains("dns:someone.else.svc") && err.contains("not allowed"),
        "{err}"
    );
}

#[tokio::test]
async fn tls12_clients_are_refused() {
    let fx = Fixture::new();
    let server = server_config(&fx.settings).unwrap();
    let leaf = fx.ca.leaf(&[dns("controller.faultline.svc")]);
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(fx.ca.pem().as_bytes()).unwrap())
        .unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let (verdict, _) = handshake(server, Arc::new(client)).await;
    assert!(verdict.is_err());
}

#[tokio::test]
async fn rotated_certificates_are_picked_up_without_restart() {
    let fx = Fixture::new();
    let server = server_config(&fx.settings).unwrap();
    let client_leaf = fx.ca.leaf(&[dns("controller.faultline.svc")]);
    let (_, before) = handshake(
        server.clone(),
        client_config(&fx.ca.pem(), Some(&client_leaf)),
    )
    .await;

    let rotated = fx.ca.leaf(&[dns("agent.test")]);
    write_atomically(&fx.dir.path().join("tls.crt"), &rotated.cert_pem);
    write_atomically(&fx.dir.path().join("tls.key"), &rotated.key_pem);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (verdict, after) = handshake(server, client_config(&fx.ca.pem(), Some(&client_leaf))).await;
    assert_eq!(verdict, Ok(()));
    assert_ne!(
        before, after,
        "the server still presents the old certificate"
    );
    let expected = CertificateDer::from_pem_slice(rotated.cert_pem.as_bytes()).unwrap();
    assert_eq!(after.as_deref(), Some(expected.as_ref()));
}

#[test]
fn missing_files_and_empty_allow_lists_are_named() {
    let fx = Fixture::new();
    let mut settings = fx.settings.clone();
    settings.ca = fx.dir.path().join("nope.pem");
    let err = server_config(&settings).unwrap_err().to_string();
    assert!(err.contains("nope.pem"), "{err}");
    let mut settings = fx.settings.clone();
    settings.allowed_clients.clear();
    assert!(matches!(
        server_config(&settings),
        Err(TlsError::NoAllowedClients)
    ));
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
