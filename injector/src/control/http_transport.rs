//! JSON-RPC over HTTP (sidecar mode, `--listen ADDR`), served by jsonrpsee's server.
//!
//! The endpoint speaks nothing but JSON-RPC, so every POST body is read as JSON whatever its
//! `Content-Type` says: `curl -d '{...}' http://POD_IP:65533/`, as the documentation (and
//! chaosfs's users) write it, sends `application/x-www-form-urlencoded`, which jsonrpsee
//! alone refuses ("Content-Type: application/json is required"). A body that is not JSON
//! still gets JSON-RPC's parse error.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use http::header::{CONTENT_TYPE, HeaderValue};
use jsonrpsee::RpcModule;
use jsonrpsee::server::{HttpRequest, Server, ServerConfig, ServerHandle};

use super::context::ControlContext;
use super::error::ControlError;

/// A running HTTP control server; it stops when [`HttpControl::stop`] is called or this
/// value is dropped.
#[derive(Debug)]
pub struct HttpControl {
    local_addr: SocketAddr,
    handle: ServerHandle,
}

impl HttpControl {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting requests and waits until the server has shut down.
    pub async fn stop(self) {
        // Already stopped is fine: the goal is a stopped server.
        let _ = self.handle.stop();
        self.handle.clone().stopped().await;
    }
}

impl Drop for HttpControl {
    fn drop(&mut self) {
        let _ = self.handle.stop();
    }
}

pub(super) async fn start(
    module: RpcModule<ControlContext>,
    addr: SocketAddr,
) -> Result<HttpControl, ControlError> {
    let bind_error = |source| ControlError::Bind {
        addr: addr.to_string(),
        source,
    };
    let server = Server::builder()
        .set_config(ServerConfig::builder().http_only().build())
        .set_http_middleware(tower::ServiceBuilder::new().layer(BodyIsJsonLayer))
        .build(addr)
        .await
        .map_err(bind_error)?;
    let local_addr = server.local_addr().map_err(bind_error)?;
    let handle = server.start(module);
    tracing::info!(%local_addr, "HTTP control server listening");
    Ok(HttpControl { local_addr, handle })
}

/// Marks every POST body as JSON (see the module comment).
#[derive(Debug, Clone, Copy)]
struct BodyIsJsonLayer;

impl<S> tower::Layer<S> for BodyIsJsonLayer {
    type Service = BodyIsJson<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyIsJson { inner }
    }
}

#[derive(Debug, Clone)]
struct BodyIsJson<S> {
    inner: S,
}

impl<S, B> tower::Service<HttpRequest<B>> for BodyIsJson<S>
where
    S: tower::Service<HttpRequest<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: HttpRequest<B>) -> Self::Future {
        if request.method() == http::Method::POST {
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        self.inner.call(request)
    }
}
