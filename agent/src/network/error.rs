//! What can go wrong with a network fault, with what the caller needs to act.

use netlink::NetlinkError;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("device {device} does not exist in the pod's network namespace (it has: {})", available.join(", "))]
    UnknownDevice {
        device: String,
        available: Vec<String>,
    },
    #[error(
        "{target} shares the node's network namespace (hostNetwork): a network fault there would hit the node; refused"
    )]
    HostNetwork { target: String },
    #[error(
        "the kernel refused netem ({reason}) and the kernel path was forced (netem path: kernel)"
    )]
    NetemUnavailable { reason: String },
    #[error("{what} needs the kernel's netem, which this kernel lacks ({reason})")]
    NeedsKernelNetem { what: String, reason: String },
    #[error(
        "device {device} already has a qdisc tree faultline cannot restore afterwards ({tree}); refused to replace it"
    )]
    UnrestorableQdisc { device: String, tree: String },
    #[error(
        "ipset {name} already exists in the pod and was not made by faultline; refused to replace it"
    )]
    ForeignSet { name: String },
    #[error("{operation}: {source}")]
    Netlink {
        operation: String,
        #[source]
        source: NetlinkError,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("the network namespace of process {pid}: {reason}")]
    Namespace { pid: u32, reason: String },
    #[error("{0}")]
    Internal(String),
}

impl NetworkError {
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            NetworkError::InvalidArgument { .. } | NetworkError::UnknownDevice { .. } => {
                Code::InvalidArgument
            }
            NetworkError::HostNetwork { .. }
            | NetworkError::NetemUnavailable { .. }
            | NetworkError::NeedsKernelNetem { .. }
            | NetworkError::UnrestorableQdisc { .. }
            | NetworkError::ForeignSet { .. }
            | NetworkError::Namespace { .. } => Code::FailedPrecondition,
            NetworkError::Netlink { .. }
            | NetworkError::Command { .. }
            | NetworkError::Internal(_) => Code::Internal,
        }
    }

    /// A short label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self {
            NetworkError::InvalidArgument { .. } | NetworkError::UnknownDevice { .. } => {
                "invalid_argument"
            }
            NetworkError::HostNetwork { .. } => "host_network",
            NetworkError::NetemUnavailable { .. } | NetworkError::NeedsKernelNetem { .. } => {
                "netem_unavailable"
            }
            NetworkError::UnrestorableQdisc { .. } => "unrestorable_qdisc",
            NetworkError::ForeignSet { .. } => "foreign_set",
            NetworkError::Netlink { .. } => "netlink",
            NetworkError::Command { .. } => "command",
            NetworkError::Namespace { .. } => "namespace",
            NetworkError::Internal(_) => "internal",
        }
    }

    pub(crate) fn netlink(operation: impl Into<String>) -> impl FnOnce(NetlinkError) -> Self {
        let operation = operation.into();
        move |source| NetworkError::Netlink { operation, source }
    }
}
