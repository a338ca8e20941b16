//! JSON-RPC over HTTP (sidecar mode, `--listen ADDR`), served by jsonrpsee's server.

use std::net::SocketAddr;

use jsonrpsee::RpcModule;
use jsonrpsee::server::{Server, ServerConfig, ServerHandle};

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
        .build(addr)
        .await
        .map_err(bind_error)?;
    let local_addr = server.local_addr().map_err(bind_error)?;
    let handle = server.start(module);
    tracing::info!(%local_addr, "HTTP control server listening");
    Ok(HttpControl { local_addr, handle })
}
