//! The HTTP proxy of an HTTPChaos: connections redirected to it (nat REDIRECT, original
//! destination from SO_ORIGINAL_DST) are served over HTTP/1.1 and relayed to where they were
//! going, with the rules in force applied. Bodies are streamed; only a rule that changes a body
//! reads it. Rules change live ([`Rules::replace`]) without touching open connections. On a
//! port whose set carries TLS, both legs are TLS ([`crate::tls`]): the client's is terminated
//! with the set's certificate, the real server's is verified like any client would.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use crate::control::RuleSet;
use crate::engine;
use crate::spec::{BodyChange, Rule, Target};

type Body = BoxBody<Bytes, hyper::Error>;

/// The rule sets in force (one per experiment in the pod), shared by every connection.
#[derive(Clone, Default)]
pub struct Rules(Arc<RwLock<Arc<Vec<RuleSet>>>>);

impl Rules {
    pub fn replace(&self, sets: Vec<RuleSet>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Arc::new(sets);
        }
    }

    fn current(&self) -> Arc<Vec<RuleSet>> {
        self.0.read().map(|r| Arc::clone(&r)).unwrap_or_default()
    }
}

/// How connections to `port` are intercepted: the TLS of the first set serving it (the sets
/// that share a port agree on it: [`crate::control::tls_conflict`]).
fn tls_on_port(sets: &[RuleSet], port: u16) -> Option<Arc<crate::tls::Interception>> {
    sets.iter()
        .find(|set| set.serves(port))
        .and_then(|set| set.tls.clone())
}

/// The rules that apply on `port`, set after set, in order.
fn on_port(sets: &[RuleSet], port: u16) -> impl Iterator<Item = &Rule> {
    sets.iter()
        .filter(move |set| set.serves(port))
        .flat_map(|set| set.rules.iter())
}

/// The destination a redirected connection was meant for.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let addr =
        nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::OriginalDst)
            .map_err(io::Error::from)?;
    let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddr::from((ip, u16::from_be(addr.sin_port))))
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one downstream connection, relaying to `upstream` (one upstream connection, kept
/// alive as long as the client keeps its own); as HTTPS where the port's set says so.
pub async fn serve_connection(
    client: TcpStream,
    upstream: SocketAddr,
    mark: Option<u32>,
    rules: Rules,
) -> anyhow::Result<()> {
    let port = upstream.port();
    // Each answer leaves in as few writes as hyper makes, none held back for an ACK.
    client.set_nodelay(true)?;
    let Some(tls) = tls_on_port(&rules.current(), port) else {
        let server = connect(upstream, mark).await?;
        return relay(client, server, port, rules).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server));
    let client = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(client)).await??;
    let name = crate::tls::upstream_name(client.get_ref().1.server_name(), upstream.ip());
    let server = async {
        let tcp = connect(upstream, mark).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.client));
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(io::Error::from)?
    };
    match server.await {
        Ok(server) => relay(client, server, port, rules).await,
        // The client's TLS is up: it gets 502 and why, as tproxy answers a failed forward.
        Err(e) => answer_bad_gateway(client, format!("upstream TLS ({upstream}): {e}")).await,
    }
}

async fn connect(upstream: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let socket = if upstream.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mark) = mark {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &mark)?;
    }
    let stream = socket.connect(upstream).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn relay<C, S>(client: C, server: S, port: u16, rules: Rules) -> anyhow::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(server)).await?;
    tokio::spawn(connection);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let sender = Arc::clone(&sender);
        let rules = rules.current();
        async move { handle(request, port, rules, sender).await }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}

async fn answer_bad_gateway<C>(client: C, why: String) -> anyhow::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
        let why = why.clone();
        async move {
            let mut bad = Response::new(full(why));
            *bad.status_mut() = StatusCode::BAD_GATEWAY;
            Ok::<_, Infallible>(bad)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}

/// Why a request gets no answer: the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("aborted by an HTTPChaos rule")]
    Aborted,
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

async fn handle(
    request: Request<Incoming>,
    port: u16,
    rules: Arc<Vec<RuleSet>>,
    sender: Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Body>>>,
) -> Result<Response<Body>, ProxyError> {
    let (mut head, body) = request.into_parts();
    // Selected against the request as it came (before any rule changed it); the request is
    // copied only when a Response rule on this port will need it.
    let selected: Vec<&Rule> = on_port(&rules, port)
        .filter(|r| r.selects_request(port, &head))
        .collect();
    let original = on_port(&rules, port)
        .any(|r| r.target == Target::Response)
        .then(|| head.clone());
    let mut body: Body = body.boxed();
    for rule in selected {
        if let Some(delay) = rule.action.delay {
            tokio::time::sleep(delay).await;
        }
        if rule.action.abort {
            return Err(ProxyError::Aborted);
        }
        engine::apply_to_request(&rule.action, &mut head);
        body = change_body(&rule.action.body, body, &mut head.headers).await?;
    }
    let response = {
        let mut sender = sender.lock().await;
        sender.ready().await?;
        sender.send_request(Request::from_parts(head, body)).await
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            let mut bad = Response::new(full(format!("upstream: {e}")));
            *bad.status_mut() = StatusCode::BAD_GATEWAY;
            return Ok(bad);
        }
    };
    let Some(original) = original else {
        return Ok(response.map(BodyExt::boxed));
    };
    let (mut head, body) = response.into_parts();
    let mut body: Body = body.boxed();
    let seen = head.clone();
    for rule in on_port(&rules, port).filter(|r| r.selects_response(port, &original, &seen)) {
        if let Some(delay) = rule.action.delay {
            tokio::time::sleep(delay).await;
        }
        if rule.action.abort {
            return Err(ProxyError::Aborted);
        }
        engine::apply_to_response(&rule.action, &mut head);
        body = change_body(&rule.action.body, body, &mut head.headers).await?;
    }
    Ok(Response::from_parts(head, body))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Reads the body only when the rule changes it.
async fn change_body(
    change: &BodyChange,
    body: Body,
    headers: &mut http::HeaderMap,
) -> Result<Body, hyper::Error> {
    if *change == BodyChange::Keep {
        return Ok(body);
    }
    let bytes = body.collect().await?.to_bytes();
    let new = engine::change_body(change, &bytes).unwrap_or_else(|| bytes.to_vec());
    engine::fix_length(headers, new.len());
    Ok(full(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::HttpChaosSpec;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An upstream that answers every request with 200, `x-upstream: 1` and the path it got.
    async fn upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|r: Request<Incoming>| async move {
                        let body = format!("{{\"path\": \"{}\"}}", r.uri());
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("x-upstream", "1")
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// A proxy for `upstream` on loopback (no redirect: the destination is given).
    async fn proxy(upstream: SocketAddr, rules: Rules) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let rules = rules.clone();
                tokio::spawn(serve_connection(stream, upstream, None, rules));
            }
        });
        addr
    }

    /// One raw HTTP/1.1 exchange on a fresh connection: the whole answer, or what was read
    /// before the proxy closed it.
    async fn get(proxy: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn set(json: &str, port: u16) -> RuleSet {
        let mut spec = HttpChaosSpec::parse(json, &[port.into()], "").unwrap();
        for rule in &mut spec.rules {
            rule.selector.port = rule.selector.port.map(|_| port);
        }
        RuleSet {
            ports: spec.proxy_ports,
            rules: spec.rules,
            tls: None,
        }
    }

    fn rules(json: &str, port: u16) -> Vec<RuleSet> {
        vec![set(json, port)]
    }

    #[tokio::test]
    async fn rules_apply_only_where_selected_and_change_live() {
        let up = upstream().await;
        let live = Rules::default();
        let proxy = proxy(up, live.clone()).await;
        let plain = get(proxy, "/plain").await;
        assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
        assert!(plain.contains("{\"path\": \"/plain\"}"), "{plain}");

        live.replace(rules(
            r#"[{"target": "Request", "selector": {"path": "/abort"}, "actions": {"abort": true}},
                {"target": "Response", "selector": {"path": "/replace"}, "actions": {"replace": {"code": 503, "body": "Z29uZQ=="}}},
                {"target": "Response", "selector": {"path": "/patch"}, "actions": {"patch": {"headers": [["X-Chaos", "yes"]], "body": {"type": "JSON", "value": "{\"chaos\": 1}"}}}},
                {"target": "Request", "selector": {"path": "/rewrite"}, "actions": {"replace": {"path": "/rewritten"}}}]"#,
            up.port(),
        ));
        assert_eq!(
            get(proxy, "/abort").await,
            "",
            "an abort closes the connection"
        );
        let replaced = get(proxy, "/replace").await;
        assert!(replaced.starts_with("HTTP/1.1 503"), "{replaced}");
        assert!(replaced.ends_with("\r\n\r\ngone"), "{replaced}");
        assert!(replaced.contains("content-length: 4"), "{replaced}");
        let patched = get(proxy, "/patch").await;
        assert!(patched.contains("x-chaos: yes"), "{patched}");
        assert!(patched.contains("\"chaos\":1"), "{patched}");
        assert!(get(proxy, "/rewrite").await.contains("/rewritten"));
        // Untouched paths stay untouched.
        let plain = get(proxy, "/plain").await;
        assert!(
            plain.starts_with("HTTP/1.1 200") && !plain.contains("x-chaos"),
            "{plain}"
        );

        live.replace(Vec::new());
        assert!(get(proxy, "/abort").await.starts_with("HTTP/1.1 200"));
    }

    /// Several experiments in one pod: each set applies on its own ports only, and on a port
    /// they share, every selected rule of every set applies, set after set (Chaos Mesh appends
    /// each HTTPChaos's rules to the pod's list in the order they came).
    #[tokio::test]
    async fn sets_apply_on_their_own_ports_in_order() {
        let up = upstream().await;
        let live = Rules::default();
        let proxy = proxy(up, live.clone()).await;
        let other_port = if up.port() == 9 { 10 } else { 9 };
        live.replace(vec![
            set(
                r#"[{"target": "Response", "selector": {"path": "/both"}, "actions": {"replace": {"headers": {"X-Order": "first"}}, "patch": {"headers": [["X-Seen", "first"]]}}}]"#,
                up.port(),
            ),
            set(
                r#"[{"target": "Request", "selector": {"path": "/elsewhere"}, "actions": {"abort": true}}]"#,
                other_port,
            ),
            set(
                r#"[{"target": "Response", "selector": {"path": "/both"}, "actions": {"replace": {"headers": {"X-Order": "second"}}, "patch": {"headers": [["X-Seen", "second"]]}}}]"#,
                up.port(),
            ),
        ]);
        let both = get(proxy, "/both").await;
        assert!(both.contains("x-order: second\r\n"), "{both}");
        assert!(!both.contains("x-order: first"), "{both}");
        let first = both.find("x-seen: first").expect(&both);
        let second = both.find("x-seen: second").expect(&both);
        assert!(first < second, "{both}");
        // The abort belongs to a set on another port: not applied here.
        assert!(get(proxy, "/elsewhere").await.starts_with("HTTP/1.1 200"));
    }

    /// An HTTPS upstream like [`upstream`], serving `pki`'s certificate.
    async fn https_upstream(pki: &crate::tls::tests::Pki) -> SocketAddr {
        let tls = crate::spec::TlsConfig {
            cert_pem: pki.cert_pem.clone().into_bytes(),
            key_pem: pki.key_pem.clone().into_bytes(),
            ca_pem: None,
        };
        let acceptor =
            tokio_rustls::TlsAcceptor::from(crate::tls::Interception::new(&tls).unwrap().server);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|r: Request<Incoming>| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                            "real server: {}",
                            r.uri()
                        )))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// One HTTPS exchange through `proxy`, trusting `ca`, asking for `name`: the answer, and
    /// the certificate the client was shown.
    async fn https_get(proxy: SocketAddr, ca: &str, name: &str, path: &str) -> (String, Vec<u8>) {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(proxy).await.unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut stream = connector.connect(server_name, tcp).await.unwrap();
        let shown = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let request = format!("GET {path} HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        (String::from_utf8_lossy(&out).into_owned(), shown)
    }

    fn tls_set(json: &str, port: u16, tls: &crate::tls::tests::Pki, ca: bool) -> RuleSet {
        let config = crate::spec::TlsConfig {
            cert_pem: tls.cert_pem.clone().into_bytes(),
            key_pem: tls.key_pem.clone().into_bytes(),
            ca_pem: ca.then(|| tls.ca_pem.clone().into_bytes()),
        };
        RuleSet {
            tls: Some(Arc::new(crate::tls::Interception::new(&config).unwrap())),
            ..set(json, port)
        }
    }

    fn der_of(pem: &str) -> Vec<u8> {
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// HTTPS intercepted: the client sees the given certificate and the rules applied to the
    /// decrypted requests; the real server is reached over TLS and verified with the CA, by
    /// the name the client asked for (or the address it dialled).
    #[tokio::test]
    async fn https_is_intercepted_with_the_given_certificate() {
        let pki = crate::tls::tests::pki(&["web.shop.svc", "127.0.0.1"]);
        let up = https_upstream(&pki).await;
        let live = Rules::default();
        let proxy = proxy(up, live.clone()).await;
        // The proxy's own certificate for the same names, from the same CA.
        let intercepting = crate::tls::tests::pki(&["web.shop.svc", "127.0.0.1"]);
        live.replace(vec![tls_set(
            r#"[{"target": "Request", "selector": {"path": "/abort"}, "actions": {"abort": true}},
                {"target": "Response", "selector": {"path": "/replace"}, "actions": {"replace": {"code": 503}}}]"#,
            up.port(),
            &intercepting,
            false,
        )]);
        // Without a CA, the real server (signed by a private CA) is not trusted: 502, and why.
        let (bad, shown) = https_get(proxy, &intercepting.ca_pem, "web.shop.svc", "/plain").await;
        assert_eq!(shown, der_of(&intercepting.cert_pem));
        assert!(bad.starts_with("HTTP/1.1 502"), "{bad}");
        assert!(bad.contains("upstream TLS"), "{bad}");

        // The real server's CA given: verified, relayed, rules applied.
        let mut set = tls_set(
            r#"[{"target": "Request", "selector": {"path": "/abort"}, "actions": {"abort": true}},
                {"target": "Response", "selector": {"path": "/replace"}, "actions": {"replace": {"code": 503}}}]"#,
            up.port(),
            &intercepting,
            false,
        );
        let with_ca = crate::spec::TlsConfig {
            cert_pem: intercepting.cert_pem.clone().into_bytes(),
            key_pem: intercepting.key_pem.clone().into_bytes(),
            ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        };
        set.tls = Some(Arc::new(crate::tls::Interception::new(&with_ca).unwrap()));
        live.replace(vec![set]);
        let (plain, shown) = https_get(proxy, &intercepting.ca_pem, "web.shop.svc", "/plain").await;
        assert_eq!(shown, der_of(&intercepting.cert_pem));
        assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
        assert!(plain.ends_with("real server: /plain"), "{plain}");
        let (replaced, _) =
            https_get(proxy, &intercepting.ca_pem, "web.shop.svc", "/replace").await;
        assert!(replaced.starts_with("HTTP/1.1 503"), "{replaced}");
        let (aborted, _) = https_get(proxy, &intercepting.ca_pem, "web.shop.svc", "/abort").await;
        assert_eq!(aborted, "", "an abort closes the connection");
        // Dialled by address (no SNI): the real server is checked against that address.
        let (by_ip, _) = https_get(proxy, &intercepting.ca_pem, "127.0.0.1", "/ip").await;
        assert!(by_ip.ends_with("real server: /ip"), "{by_ip}");
        // A name the real server's certificate does not carry: refused, 502.
        let wrong = crate::tls::tests::pki(&["elsewhere"]);
        let mut set = set_for_name(&wrong, &pki, up.port());
        set.rules.clear();
        live.replace(vec![set]);
        let (bad, _) = https_get(proxy, &wrong.ca_pem, "elsewhere", "/plain").await;
        assert!(bad.starts_with("HTTP/1.1 502"), "{bad}");
    }

    fn set_for_name(
        shown: &crate::tls::tests::Pki,
        real: &crate::tls::tests::Pki,
        port: u16,
    ) -> RuleSet {
        let config = crate::spec::TlsConfig {
            cert_pem: shown.cert_pem.clone().into_bytes(),
            key_pem: shown.key_pem.clone().into_bytes(),
            ca_pem: Some(real.ca_pem.clone().into_bytes()),
        };
        RuleSet {
            tls: Some(Arc::new(crate::tls::Interception::new(&config).unwrap())),
            ..set("[]", port)
        }
    }
}
