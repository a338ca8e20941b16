//! One gRPC channel to containerd's unix socket, shared by the CRI and containerd API clients,
//! and the bounded-time wrapper every call goes through.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};

/// The URI is required by tonic but unused: the connector below always dials the socket.
const DUMMY_URI: &str = "http://[::]:50051";

/// A channel that dials the socket on first use and again after containerd restarts.
pub(crate) fn connect_lazy(socket: &Path) -> Result<Channel> {
    let path = socket.to_owned();
    let connect_err = |source| Error::Connect {
        socket: socket.to_owned(),
        source,
    };
    let endpoint = Endpoint::try_from(DUMMY_URI)
        .map_err(connect_err)?
        .connect_timeout(Duration::from_secs(5));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        })),
    )
}

/// Runs one RPC with a deadline, turning both failure kinds into [`Error`] naming the call.
pub(crate) async fn call<T>(
    name: &'static str,
    limit: Duration,
    rpc: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(limit, rpc).await {
        Err(_) => Err(Error::Timeout {
            call: name,
            after: limit,
        }),
        Ok(Err(status)) => Err(Error::Rpc {
            call: name,
            code: status.code(),
            message: status.message().to_owned(),
        }),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}
