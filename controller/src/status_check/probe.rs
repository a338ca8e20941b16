//! One HTTP status check request: the method, headers and body of the spec, within the timeout;
//! success when the response's status code is in `criteria.statusCode`.

use std::time::Duration;

use http::{Method, Request, Uri};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::crd::{HttpMethod, HttpStatusCheck, StatusCodes};

/// Ok when the response's code matches; otherwise what went wrong.
pub async fn probe(check: &HttpStatusCheck, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, request(check)).await {
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

async fn request(check: &HttpStatusCheck) -> Result<u16, String> {
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
    Ok(response.status().as_u16())
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
        let error = probe(&check("ftp://localhost/".into()), Duration::from_secs(1))
            .await
            .expect_err("ftp");
        assert!(error.contains("not supported"), "{error}");
    }
}
