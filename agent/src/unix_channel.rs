//! A gRPC channel over a unix socket, shared by the runtime clients (containerd, CRI) and the
//! CLI's connection to the local agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Why a unix socket could not be connected, in words for an error message.
pub(crate) type Unreachable = String;

/// Connects a gRPC channel over a unix socket (the URI is required by tonic and never used),
/// bounded by `timeout`.
pub(crate) async fn connect(socket: &Path, timeout: Duration) -> Result<Channel, Unreachable> {
    if !socket.exists() {
        return Err("no such socket".into());
    }
    let path: PathBuf = socket.to_owned();
    let endpoint = Endpoint::from_static("http://[::]:50051")
        .connect_timeout(timeout)
        .timeout(timeout);
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    }));
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(err)) => Err(error_chain(&err)),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// An error and all its causes, on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
