//! The JSON-RPC methods, registered on one `RpcModule` shared by every transport.

use std::net::SocketAddr;

use jsonrpsee::RpcModule;
use jsonrpsee::types::ErrorObjectOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use super::context::ControlContext;
use super::error::ControlError;
use super::http_transport::{self, HttpControl};
use super::line_transport::{self, LinesEnded};
use super::reports::{RecoverReport, StatusReport};
use super::update_params::actions_from_params;

/// The control plane: the RPC methods and the transports that serve them.
///
/// Methods:
/// - `update(actions)` → [`UpdateReport`](super::UpdateReport): validates and swaps the rule set atomically;
///   a refused set leaves the rules in force untouched (error -32602 with
///   `data: {index, field}`);
/// - `get_status()` → [`StatusReport`];
/// - `recover()` → [`RecoverReport`]: stops injecting now and fires the recovery signal.
#[derive(Debug)]
pub struct ControlPlane {
    context: ControlContext,
    module: RpcModule<ControlContext>,
}

impl ControlPlane {
    pub fn new(context: ControlContext) -> Result<ControlPlane, ControlError> {
        let mut module = RpcModule::new(context.clone());
        register(&mut module, "update", |params, context, _| {
            let actions = actions_from_params(&params)?;
            context.update(&actions).map_err(ErrorObjectOwned::from)
        })?;
        register(&mut module, "get_status", |_, context, _| {
            Ok::<StatusReport, ErrorObjectOwned>(context.status())
        })?;
        register(&mut module, "recover", |_, context, _| {
            Ok::<RecoverReport, ErrorObjectOwned>(context.recover())
        })?;
        Ok(ControlPlane { context, module })
    }

    pub fn context(&self) -> &ControlContext {
        &self.context
    }

    pub fn rpc_module(&self) -> &RpcModule<ControlContext> {
        &self.module
    }

    /// Serves one JSON-RPC request per line from `reader`, one response per line to
    /// `writer`, until the input ends or recovery is requested (the answer to a `recover`
    /// request is written and flushed first).
    pub async fn serve_lines<R, W>(&self, reader: R, writer: W) -> Result<LinesEnded, ControlError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        line_transport::serve(&self.module, self.context.recovery(), reader, writer).await
    }

    /// Starts serving the methods over HTTP (JSON-RPC in POST bodies) on `addr`.
    pub async fn serve_http(&self, addr: SocketAddr) -> Result<HttpControl, ControlError> {
        http_transport::start(self.module.clone(), addr).await
    }
}

fn register<R, F>(
    module: &mut RpcModule<ControlContext>,
    method: &'static str,
    callback: F,
) -> Result<(), ControlError>
where
    R: jsonrpsee::IntoResponse + 'static,
    F: Fn(jsonrpsee::types::Params, &ControlContext, &jsonrpsee::Extensions) -> R
        + Send
        + Sync
        + 'static,
{
    module
        .register_method(method, callback)
        .map(|_| ())
        .map_err(|source| ControlError::Register { method, source })
}
