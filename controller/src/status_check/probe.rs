//! One HTTP status check request: the method, headers and body of the spec, within the timeout;
//! success when the response's status code is in `criteria.statusCode`. Redirects are followed as
//! Go's http.Client (Chaos Mesh's) follows them: at most 10; 301, 302 and 303 go on as a GET
//! without the body, 307 and 308 repeat the method and body.

use std::time::Duration;

use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::crd::{HttpMethod, HttpStatusCheck, StatusCodes};

/// Ok when the response's code matches; otherwise what went wrong.
pub async fn probe(check: &HttpStatusCheck, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, follow(check)).await {
        Err(_) => Err(format!("no response within {}s", timeout.as_secs())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(code)) => {
            let codes = StatusCodes::parse(&check.criteria.status_code)?;
            if codes.contains(code) {
                Ok(())
            } else {
                Err(format!(
                    "status code {code}, expected {}",
                    check.criteria.status_code
                ))
            }
        }
    }
}

/// Go's http.Client stops after 10 redirects.
const MAX_REDIRECTS: usize = 10;

/// The final status code after the redirects.
async fn follow(check: &HttpStatusCheck) -> Result<u16, String> {
    let mut current = check.clone();
    for _ in 0..=MAX_REDIRECTS {
        let (code, location) = request(&current).await?;
        let Some(location) = location.filter(|_| matches!(code, 301 | 302 | 303 | 307 | 308))
        else {
            return Ok(code);
        };
        current.url = resolve(&current.url, &location)?;
        if matches!(code, 301..=303) {
            current.method = HttpMethod::GET;
            current.body.clear();
        }
    }
    Err(format!(
        "{}: stopped after {MAX_REDIRECTS} redirects",
        check.url
    ))
}

/// A Location header against the URL that answered it.
fn resolve(base: &str, location: &str) -> Result<String, String> {
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let uri: Uri = base.parse().map_err(|e| format!("{base:?}: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let dir = uri.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    Ok(format!("{scheme}://{authority}{dir}/{location}"))
}

/// One request: its status code and Location header.
async fn request(check: &HttpStatusCheck) -> Result<(u16, Option<String>), String> {
    let uri: Uri = check
        .url
        .parse()
        .map_err(|e| format!("{:?}: {e}", check.url))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "{:?}: scheme {other} is not supported (http, https)",
                check.url
            ));
        }
        None => return Err(format!("{:?}: no scheme", check.url)),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{:?}: no host", check.url))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let mut sender = if tls {
        let stream = tls_connect(host, stream).await?;
        handshake(TokioIo::new(stream), host, port).await?
    } else {
        handshake(TokioIo::new(stream), host, port).await?
    };
    let method = match check.method {
        HttpMethod::GET => Method::GET,
        HttpMethod::POST => Method::POST,
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority);
    for (name, values) in &check.headers {
        for value in values {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let request = builder
        .body(Full::new(Bytes::from(check.body.clone())))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{} {}: {e}", check.method_name(), check.url))?;
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((response.status().as_u16(), location))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn handshake<T>(io: TokioIo<T>, host: &str, port: u16) -> Result<Sender, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// TLS to `host`, its certificate verified against the system's roots.
async fn tls_connect(
    host: &str,
    stream: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("https: no trusted root certificates on this system".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("https: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("https: {host:?}: {e}"))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with {host}: {e}"))
}

impl HttpStatusCheck {
    fn method_name(&self) -> &'static str {
        match self.method {
            HttpMethod::GET => "GET",
            HttpMethod::POST => "POST",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::HttpCriteria;

    fn check(url: String) -> HttpStatusCheck {
        HttpStatusCheck {
            url,
            criteria: HttpCriteria {
                status_code: "200".into(),
            },
            ..HttpStatusCheck::default()
        }
    }

    /// A TLS server with a self-signed certificate for localhost: a check must not trust it
    /// (Chaos Mesh's Go client verifies against the system's roots).
    #[tokio::test]
    async fn https_verifies_the_server_certificate() {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let cert = key.cert.der().clone();
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der())
            .expect("key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = acceptor.accept(stream).await;
            }
        });
        let outcome = probe(
            &check(format!("https://localhost:{port}/")),
            Duration::from_secs(5),
        )
        .await;
        let error = outcome.expect_err("an untrusted certificate fails the check");
        assert!(
            error.starts_with("TLS with localhost") || error.contains("no trusted root"),
            "{error}"
        );
        // An unsupported scheme is a failure that says so.
        assert_eq!(
            resolve("http://a:1/x/y?q", "z").as_deref(),
            Ok("http://a:1/x/z")
        );
        let error = probe(&check("ftp://localhost/".into()), Duration::from_secs(1))
            .await
            .expect_err("ftp");
        assert!(error.contains("not supported"), "{error}");
    }

    /// 302 to a relative path, then 200: Go's client follows it, so the check succeeds; a POST
    /// goes on as a GET. A loop stops after 10.
    #[tokio::test]
    async fn redirects_are_followed_like_go_s_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                log.lock().expect("lock").push(line.clone());
                let reply = if line.contains(" /start ") {
                    "HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else if line.contains(" /loop ") {
                    "HTTP/1.1 307 Again\r\nlocation: /loop\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        let mut post = check(format!("http://127.0.0.1:{port}/start"));
        post.method = HttpMethod::POST;
        post.body = "x".into();
        assert_eq!(probe(&post, Duration::from_secs(5)).await, Ok(()));
        assert_eq!(
            *seen.lock().expect("lock"),
            ["POST /start HTTP/1.1", "GET /ok HTTP/1.1"]
        );
        let error = probe(
            &check(format!("http://127.0.0.1:{port}/loop")),
            Duration::from_secs(5),
        )
        .await
        .expect_err("a loop");
        assert!(error.contains("stopped after 10 redirects"), "{error}");
    }
}
