//! The control plane: JSON-RPC 2.0 (`update`, `get_status`, `recover`) over one request
//! per line on any byte stream (an inherited socket, stdin/stdout) or over HTTP.
//!
//! Boundaries: this module changes the rules in force and reports; it never touches the
//! mount. Recovery is *signalled* here ([`RecoverySignal`]); the binary awaits the signal,
//! unmounts and exits. Facts only the filesystem knows come in through [`FsStatus`].
#![forbid(unsafe_code)]

mod context;
mod error;
mod http_transport;
mod line_transport;
mod methods;
mod recovery;
mod reports;
mod update_params;

pub use context::{ControlContext, FsStatus};
pub use error::{ControlError, UpdateError};
pub use http_transport::HttpControl;
pub use line_transport::{LinesEnded, MAX_REQUEST_BYTES};
pub use methods::ControlPlane;
pub use recovery::RecoverySignal;
pub use reports::{RecoverReport, StatusReport, UpdateReport};

#[cfg(test)]
mod tests;
