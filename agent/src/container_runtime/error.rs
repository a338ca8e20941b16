use std::path::PathBuf;

/// What went wrong talking to a container runtime, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container id {input:?}: {reason}")]
    InvalidArgument { input: String, reason: String },
    #[error("container {id} not found in {runtime}")]
    NotFound { id: String, runtime: String },
    #[error("pod {uid} has no ready sandbox in {runtime}")]
    PodNotFound { uid: String, runtime: String },
    #[error("container {id} in {runtime} has no running process")]
    NotRunning { id: String, runtime: String },
    #[error("container runtime socket {} is unavailable: {reason}", socket.display())]
    Unavailable { socket: PathBuf, reason: String },
    #[error("{runtime} failed {operation} for {id}: {status}")]
    Runtime {
        runtime: String,
        operation: &'static str,
        id: String,
        status: Box<tonic::Status>,
    },
    #[error("{runtime} returned no usable {what} for {id}: {reason}")]
    BadResponse {
        runtime: String,
        what: &'static str,
        id: String,
        reason: String,
    },
}

impl RuntimeError {
    /// The gRPC status code this error should be reported with.
    pub fn code(&self) -> tonic::Code {
        match self {
            RuntimeError::InvalidArgument { .. } => tonic::Code::InvalidArgument,
            RuntimeError::NotFound { .. } | RuntimeError::PodNotFound { .. } => {
                tonic::Code::NotFound
            }
            RuntimeError::NotRunning { .. } => tonic::Code::FailedPrecondition,
            RuntimeError::Unavailable { .. } => tonic::Code::Unavailable,
            RuntimeError::Runtime { status, .. } => status.code(),
            RuntimeError::BadResponse { .. } => tonic::Code::Internal,
        }
    }
}

impl From<RuntimeError> for tonic::Status {
    fn from(err: RuntimeError) -> Self {
        tonic::Status::new(err.code(), err.to_string())
    }
}

/// Maps a runtime's error status for one object: NotFound (or CRI-O's "not found" text) becomes
/// [`RuntimeError::NotFound`], a broken connection [`RuntimeError::Unavailable`].
pub(crate) fn from_status(
    status: tonic::Status,
    runtime: &str,
    socket: &std::path::Path,
    operation: &'static str,
    id: &str,
) -> RuntimeError {
    let not_found = status.code() == tonic::Code::NotFound
        || status.message().to_ascii_lowercase().contains("not found");
    if not_found {
        RuntimeError::NotFound {
            id: id.to_owned(),
            runtime: runtime.to_owned(),
        }
    } else if status.code() == tonic::Code::Unavailable {
        RuntimeError::Unavailable {
            socket: socket.to_owned(),
            reason: status.message().to_owned(),
        }
    } else {
        RuntimeError::Runtime {
            runtime: runtime.to_owned(),
            operation,
            id: id.to_owned(),
            status: Box::new(status),
        }
    }
}
