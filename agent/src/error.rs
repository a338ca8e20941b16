//! The agent's error type: every failure a caller can see, mapped to a gRPC status.

use crate::container_fs::PathError;
use crate::container_runtime::RuntimeError;
use crate::injector_process::InjectorError;
use crate::journal::JournalError;
use crate::network::NetworkError;
use crate::stress::StressError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Volume(#[from] PathError),
    #[error("actions: {0}")]
    InvalidActions(String),
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("another request for {target} is in progress; retry when it is done")]
    Busy { target: String },
    #[error("no experiment {0}")]
    UnknownExperiment(String),
    #[error("injector: {0}")]
    Injector(#[from] InjectorError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// Recovery ran, but the fault mount is still in the target's mount table: the record is
    /// kept and recovery is tried again.
    #[error(
        "the fault mount over {volume} is still in the mount table of process {pid} ({entry}); the journal keeps the record and recovery is retried"
    )]
    FaultMountRemains {
        volume: String,
        pid: u32,
        entry: String,
    },
    /// Recovery ran, but the target's mount table could not be read to confirm it.
    #[error(
        "cannot confirm the fault mount over {volume} is gone: reading the mount table of process {pid}: {reason}; the journal keeps the record and recovery is retried"
    )]
    FaultMountUnverified {
        volume: String,
        pid: u32,
        reason: String,
    },
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("{0} is not implemented by this agent yet")]
    Unimplemented(&'static str),
    /// A pb.ChaosDaemon rpc of a Chaos Mesh kind faultline does not inject yet.
    #[error("{rpc} ({kind}) is not implemented by the faultline agent; {instead}")]
    KindNotYet {
        rpc: &'static str,
        kind: &'static str,
        instead: &'static str,
    },
    #[error(transparent)]
    Stress(#[from] StressError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Time(#[from] crate::time_chaos::TimeError),
    /// A failure of the agent itself, not of the request (a poisoned lock, a record missing).
    #[error("internal error: {0}")]
    Internal(String),
    /// A journal record of a kind this agent has no module for (written by another version).
    #[error("journal record {id} is of kind {kind:?}, which this agent does not know")]
    UnknownKind { id: String, kind: String },
}

impl AgentError {
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            AgentError::Runtime(err) => err.code(),
            AgentError::Volume(PathError::Missing { .. }) => Code::NotFound,
            AgentError::Volume(PathError::Lookup { .. }) => Code::FailedPrecondition,
            AgentError::Volume(_) => Code::InvalidArgument,
            AgentError::InvalidActions(_) | AgentError::InvalidArgument { .. } => {
                Code::InvalidArgument
            }
            AgentError::Busy { .. } => Code::Aborted,
            AgentError::UnknownExperiment(_) => Code::NotFound,
            AgentError::Injector(InjectorError::Refused { .. }) => Code::FailedPrecondition,
            AgentError::Injector(InjectorError::ExitedEarly { .. }) => Code::FailedPrecondition,
            AgentError::Injector(_) | AgentError::Journal(_) => Code::Internal,
            AgentError::FaultMountRemains { .. } => Code::FailedPrecondition,
            AgentError::FaultMountUnverified { .. } => Code::Internal,
            AgentError::Network(err) => err.code(),
            AgentError::Unimplemented(_) | AgentError::KindNotYet { .. } => Code::Unimplemented,
            AgentError::Stress(err) => err.code(),
            AgentError::Dns(err) => err.code(),
            AgentError::Http(err) => err.code(),
            AgentError::Time(err) => err.code(),
            AgentError::Internal(_) => Code::Internal,
            AgentError::UnknownKind { .. } => Code::FailedPrecondition,
        }
    }

    /// A short label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::Runtime(_) => "runtime",
            AgentError::Volume(_) => "volume",
            AgentError::InvalidActions(_) | AgentError::InvalidArgument { .. } => {
                "invalid_argument"
            }
            AgentError::Busy { .. } => "busy",
            AgentError::UnknownExperiment(_) => "unknown_experiment",
            AgentError::Injector(_) => "injector",
            AgentError::Journal(_) => "journal",
            AgentError::FaultMountRemains { .. } | AgentError::FaultMountUnverified { .. } => {
                "mount_remains"
            }
            AgentError::Network(err) => err.reason(),
            AgentError::Unimplemented(_) | AgentError::KindNotYet { .. } => "unimplemented",
            AgentError::Stress(err) => err.reason(),
            AgentError::Dns(err) => err.reason(),
            AgentError::Http(err) => err.reason(),
            AgentError::Time(err) => err.reason(),
            AgentError::Internal(_) => "internal",
            AgentError::UnknownKind { .. } => "unknown_kind",
        }
    }
}

impl From<AgentError> for tonic::Status {
    fn from(err: AgentError) -> Self {
        tonic::Status::new(err.code(), err.to_string())
    }
}
