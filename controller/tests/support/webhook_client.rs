//! For the webhook's TLS test and benchmark: a CA and a serving certificate made with rcgen, the
//! `faultline-controller webhook` binary started in offline mode on a free loopback port (and
//! killed, by its PID, when dropped), and an HTTPS client on hyper + rustls (ring).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The name the API server checks: the webhook Service's.
pub const SERVER_NAME: &str = "faultline-webhook.faultline.svc";

pub struct Certs {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A new CA and a serving certificate for `SERVER_NAME` signed by it.
pub fn certs() -> Certs {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    Certs {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// The webhook binary, killed (by PID) and reaped when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `faultline-controller webhook --manifests DIR` on 127.0.0.1:0 with the certificate
/// pair written into `tls_dir`, and waits for the address it prints.
pub fn start(binary: &Path, manifests: &Path, tls_dir: &Path, certs: &Certs) -> Server {
    let (cert, key) = (tls_dir.join("tls.crt"), tls_dir.join("tls.key"));
    std::fs::write(&cert, &certs.cert_pem).expect("write the certificate");
    std::fs::write(&key, &certs.key_pem).expect("write the key");
    let mut child = Command::new(binary)
        .arg("webhook")
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--tls-cert={}", cert.display()))
        .arg(format!("--tls-key={}", key.display()))
        .arg(format!("--manifests={}", manifests.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the webhook prints its address");
    // "webhook serving on https://127.0.0.1:PORT/inject"
    let addr = line
        .trim()
        .strip_prefix("webhook serving on https://")
        .and_then(|rest| rest.strip_suffix("/inject"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    server.addr = addr.parse().expect("an address");
    server
}

/// One keep-alive HTTPS connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

pub async fn connect(addr: SocketAddr, ca_pem: &str, server_name: &str) -> Result<Client, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(server_name.to_owned())?, tcp)
        .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(Client { sender })
}

impl Client {
    /// GETs a path; the status.
    pub async fn get(&mut self, path: &str) -> Result<u16, Error> {
        self.sender.ready().await?;
        let request = hyper::Request::get(path)
            .header("host", SERVER_NAME)
            .body(Full::new(Bytes::new()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }

    /// POSTs a JSON body; the status and the response body.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<(u16, Bytes), Error> {
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header("host", SERVER_NAME)
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
