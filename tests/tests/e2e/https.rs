//! HTTPS interception end to end, driven as Chaos Mesh's controller drives it (ApplyHttpChaos
//! with `tls`): an HTTPS server in one pod (rustls, its certificate from a "real" CA), a client
//! in another that trusts both the real CA and the one of the certificate the chaos is given.
//! Bad material is refused before anything changes; in force, the client is shown the chaos
//! certificate and sees abort, delay and a replaced code on the selected paths only, the real
//! server being reached over verified TLS behind the proxy; after recovery the client talks to
//! the server directly again: its own certificate, no redirect, no record.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine;
use faultline_proto::pb;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use testbed::{Pod, Testbed};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, eventually, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![(
        "http::https_intercepted_with_the_given_certificate_then_direct",
        https,
    )]
}

const PORT: u16 = 8443;
const NAME: &str = "web.shop.svc";

const RULES: &str = r#"[
  {"target": "Request", "selector": {"port": 8443, "path": "/abort"}, "actions": {"abort": true}},
  {"target": "Request", "selector": {"port": 8443, "path": "/slow"}, "actions": {"delay": "400ms"}},
  {"target": "Response", "selector": {"port": 8443, "path": "/replace"}, "actions": {"replace": {"code": 503}}}
]"#;

struct Issued {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a certificate it signed for [`NAME`] and `ip`.
fn issue(ca_name: &str, ip: Ipv4Addr) -> anyhow::Result<Issued> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![
        SanType::DnsName(NAME.try_into()?),
        SanType::IpAddress(ip.into()),
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        ca_pem: issuer.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn der(pem: &str) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?.to_vec())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The HTTPS server: a thread in the server pod's network namespace answering every request
/// with `200` and `PATH body`, one request per connection.
struct HttpsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpsServer {
    fn start(pod: &Pod, issued: &Issued) -> anyhow::Result<HttpsServer> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())?],
                PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?,
            )?;
        let config = Arc::new(config);
        let stop = Arc::new(AtomicBool::new(false));
        let halt = Arc::clone(&stop);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = testbed::http_fixture::in_netns(pod.sandbox_pid, move || {
            let listener = TcpListener::bind(("0.0.0.0", PORT))?;
            listener.set_nonblocking(true)?;
            let _ = ready_tx.send(());
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let config = Arc::clone(&config);
                        std::thread::spawn(move || serve_tls(tcp, config));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        ready
            .recv_timeout(Duration::from_secs(5))
            .context("the HTTPS server did not start")?;
        Ok(HttpsServer {
            stop,
            thread: Some(std::thread::spawn(move || {
                let _ = thread.join();
            })),
        })
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_tls(tcp: TcpStream, config: Arc<rustls::ServerConfig>) -> anyhow::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config)?, tcp);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let body = format!("{path} body\n");
    write!(
        tls,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(())
}

struct Fetched {
    /// The certificate the client was shown.
    shown: Vec<u8>,
    text: String,
    took: Duration,
}

impl Fetched {
    fn status(&self) -> Option<&str> {
        self.text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
    }
}

/// One HTTPS GET from the client pod's network namespace, trusting `roots`, asking for
/// `name` (a DNS name, sent as SNI, or the server's address).
fn fetch(
    client: &Pod,
    server: SocketAddr,
    roots: &[&str],
    name: &str,
    path: &str,
) -> anyhow::Result<Fetched> {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        store.add(CertificateDer::from_pem_slice(pem.as_bytes())?)?;
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth(),
    );
    let name = ServerName::try_from(name.to_owned())?;
    let path = path.to_owned();
    testbed::http_fixture::in_netns(client.sandbox_pid, move || {
        let started = Instant::now();
        let tcp = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.conn.complete_io(&mut tls.sock)?;
        let shown = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nhost: {NAME}\r\nconnection: close\r\n\r\n"
        )?;
        tls.flush()?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the end, or the connection is closed under it (an abort).
        while let Ok(n) = tls.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        Ok(Fetched {
            shown,
            text: String::from_utf8_lossy(&answer).into_owned(),
            took: started.elapsed(),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
    .map_err(anyhow::Error::from)
}

fn tls_json(cert: &str, key: &str, ca: Option<&str>) -> String {
    let item = |pem: &str| {
        serde_json::json!({
            "type": "Contents",
            "value": base64::engine::general_purpose::STANDARD.encode(pem),
        })
    };
    let mut tls = serde_json::json!({"cert_file": item(cert), "key_file": item(key)});
    if let Some(ca) = ca {
        tls["ca_file"] = item(ca);
    }
    tls.to_string()
}

fn journal_records(agent: &AgentProcess) -> usize {
    std::fs::read_dir(agent.state_dir.join("journal"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

fn https(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-https"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-https")?;
    let server = crate::network::idle_pod(tb, "https-server")?;
    let client = crate::network::idle_pod(tb, "https-client")?;
    let ip = crate::network::ip(&server)?;
    let address = SocketAddr::from((ip, PORT));
    let real = issue("the real CA", ip)?;
    let chaos = issue("the chaos CA", ip)?;
    let _https = HttpsServer::start(&server, &real)?;
    let roots = [real.ca_pem.as_str(), chaos.ca_pem.as_str()];
    let get = |name: &str, path: &str| fetch(&client, address, &roots, name, path);

    let direct = get(NAME, "/index")?;
    ensure!(direct.status() == Some("200"), "{}", direct.text);
    ensure!(direct.shown == der(&real.cert_pem)?);

    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    let mut apply = |tls: String, rules: &str, ports: Vec<u32>| {
        rt.block_on(daemon.apply_http_chaos(pb::ApplyHttpChaosRequest {
            rules: rules.into(),
            proxy_ports: ports,
            tls,
            container_id: server.container_uri(),
            enter_ns: true,
            ..Default::default()
        }))
    };

    // Bad material: refused, naming the field; nothing in the pod.
    for (tls, field) in [
        (
            tls_json(&chaos.cert_pem, &real.key_pem, None),
            "tls.key_file.value",
        ),
        (
            tls_json(&chaos.key_pem, &chaos.key_pem, None),
            "tls.cert_file.value",
        ),
        (
            tls_json(&chaos.cert_pem, &chaos.key_pem, Some("no PEM here")),
            "tls.ca_file.value",
        ),
    ] {
        let err = apply(tls, RULES, vec![PORT.into()]).expect_err("bad TLS material taken");
        ensure!(
            err.code() == tonic::Code::InvalidArgument && err.message().starts_with(field),
            "{field}: {err:?}"
        );
    }
    let left = crate::http::redirect_rules(&server)?;
    ensure!(left.is_empty(), "a refused apply left a redirect: {left}");
    ensure!(
        journal_records(&agent) == 0,
        "a refused apply left a record"
    );

    // In force, verifying the real server with its CA.
    let applied = apply(
        tls_json(&chaos.cert_pem, &chaos.key_pem, Some(&real.ca_pem)),
        RULES,
        vec![PORT.into()],
    )?
    .into_inner();
    ensure!(applied.status_code == 200, "{applied:?}");
    let plain = get(NAME, "/index")?;
    ensure!(
        plain.shown == der(&chaos.cert_pem)?,
        "the client was not shown the chaos certificate"
    );
    ensure!(
        plain.status() == Some("200") && plain.text.ends_with("/index body\n"),
        "{}",
        plain.text
    );
    // By address (no SNI): the real server is checked against its IP.
    let by_ip = get(&ip.to_string(), "/index")?;
    ensure!(by_ip.status() == Some("200"), "{}", by_ip.text);
    let aborted = get(NAME, "/abort")?;
    ensure!(aborted.text.is_empty(), "abort: {}", aborted.text);
    let slow = get(NAME, "/slow")?;
    ensure!(
        slow.status() == Some("200") && slow.took >= Duration::from_millis(400),
        "delay: {:?} {}",
        slow.took,
        slow.text
    );
    let replaced = get(NAME, "/replace")?;
    ensure!(
        replaced.status() == Some("503"),
        "replace: {}",
        replaced.text
    );
    ensure!(
        get(NAME, "/other")?.took < Duration::from_millis(300),
        "an unselected path was slowed"
    );

    // Chaos Mesh removes with no rules and no ports: direct again, the server's own certificate.
    let removed = apply(String::new(), "", vec![])?.into_inner();
    ensure!(removed.status_code == 200, "{removed:?}");
    ensure!(
        eventually(Duration::from_secs(2), || !std::path::Path::new(&format!(
            "/proc/{}",
            applied.instance
        ))
        .exists()),
        "the proxy outlived the removal"
    );
    let after = get(NAME, "/abort")?;
    ensure!(after.shown == der(&real.cert_pem)?, "still intercepted");
    ensure!(after.status() == Some("200"), "{}", after.text);
    let left = crate::http::redirect_rules(&server)?;
    ensure!(left.is_empty(), "redirect left: {left}");
    ensure!(journal_records(&agent) == 0, "records left");
    drop(agent);
    tb.remove_pod(&server)?;
    tb.remove_pod(&client)?;
    Ok(())
}
