use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use super::RuntimeError;

/// Connects a gRPC channel over a unix socket (the URI is required by tonic and never used).
pub(crate) async fn connect(socket: &Path, timeout: Duration) -> Result<Channel, RuntimeError> {
    let unavailable = |reason: String| RuntimeError::Unavailable {
        socket: socket.to_owned(),
        reason,
    };
    if !socket.exists() {
        return Err(unavailable("no such socket".into()));
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
        Ok(Err(err)) => Err(unavailable(error_chain(&err))),
        Err(_) => Err(unavailable(format!("no answer within {timeout:?}"))),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
