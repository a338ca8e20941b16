//! The HTTP proxy of an HTTPChaos: connections redirected to it (nat REDIRECT, original
//! destination from SO_ORIGINAL_DST) are served over HTTP/1.1 and relayed to where they were
//! going, with the rules in force applied. Bodies are streamed; only a rule that changes a body
//! reads it. Rules change live ([`Rules::replace`]) without touching open connections.

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
use tokio::net::{TcpSocket, TcpStream};

use crate::control::RuleSet;
use crate::engine;
use crate::spec::{BodyChange, Rule};

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

/// Serves one downstream connection, relaying to `upstream` (one upstream connection, kept
/// alive as long as the client keeps its own).
pub async fn serve_connection(
    client: TcpStream,
    upstream: SocketAddr,
    mark: Option<u32>,
    rules: Rules,
) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    if let Some(mark) = mark {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &mark)?;
    }
    let server = socket.connect(upstream).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(server)).await?;
    tokio::spawn(connection);
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let port = upstream.port();
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
    let original = head.clone();
    let mut body: Body = body.boxed();
    for rule in on_port(&rules, port).filter(|r| r.selects_request(port, &original)) {
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
}
