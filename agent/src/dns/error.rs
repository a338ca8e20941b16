//! What can go wrong with a DNS fault, with what the caller needs to act.

use crate::container_runtime::RuntimeError;
use crate::network::NetworkError;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error(transparent)]
    Spec(#[from] dns_responder::SpecError),
    #[error("{path} does not exist in container {container}")]
    MissingFile { path: String, container: String },
    #[error("{path} in the container of process {pid}: {reason}")]
    File {
        path: String,
        pid: u32,
        reason: String,
    },
    #[error(
        "{target} shares the node's network namespace (hostNetwork): a DNS redirect there would hit the node; refused"
    )]
    HostNetwork { target: String },
    #[error(
        "/etc/resolv.conf of {container} names no nameserver (other than loopback) to stand in for ({found})"
    )]
    NoNameserver { container: String, found: String },
    #[error("the pod of {container} already has DNS chaos {id}; recover it first")]
    AlreadyActive { container: String, id: String },
    #[error("the DNS responder: {0}")]
    Responder(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

impl DnsError {
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            DnsError::InvalidArgument { .. } | DnsError::Spec(_) => Code::InvalidArgument,
            DnsError::MissingFile { .. } => Code::NotFound,
            DnsError::HostNetwork { .. } | DnsError::NoNameserver { .. } => {
                Code::FailedPrecondition
            }
            DnsError::AlreadyActive { .. } => Code::AlreadyExists,
            DnsError::Runtime(err) => err.code(),
            DnsError::Network(err) => err.code(),
            DnsError::File { .. } | DnsError::Responder(_) | DnsError::Journal(_) => Code::Internal,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            DnsError::InvalidArgument { .. } | DnsError::Spec(_) => "invalid_argument",
            DnsError::MissingFile { .. } | DnsError::File { .. } => "container_file",
            DnsError::HostNetwork { .. } => "host_network",
            DnsError::NoNameserver { .. } => "no_nameserver",
            DnsError::AlreadyActive { .. } => "busy",
            DnsError::Responder(_) => "responder",
            DnsError::Runtime(_) => "runtime",
            DnsError::Network(err) => err.reason(),
            DnsError::Journal(_) => "journal",
        }
    }
}
