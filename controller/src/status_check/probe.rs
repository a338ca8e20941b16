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
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{:?}: scheme {other} is not supported (http only)",
                check.url
            ));
        }
        None => return Err(format!("{:?}: no scheme", check.url)),
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{:?}: no host", check.url))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
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

impl HttpStatusCheck {
    fn method_name(&self) -> &'static str {
        match self.method {
            HttpMethod::GET => "GET",
            HttpMethod::POST => "POST",
        }
    }
}
