//! The chaosfs sidecar of the original documentation, as far as it differs from mounting for
//! the agent: Go-style single-dash flags (`-addr=:65534 -pidfile=/tmp/fuse/pid
//! -original=DIR -mountpoint=DIR`), Go's listen addresses (`:65534`), and the pidfile that
//! `wait-fuse.sh` in the application container waits for.
//!
//! Boundaries: no mounting or serving here (that is [`crate::serve`], called by the binary
//! with the injector's own mount namespace as the target); this module only translates the
//! sidecar's interface.
#![forbid(unsafe_code)]

pub mod go_flags;
pub mod listen_addr;
pub mod pidfile;

pub use listen_addr::parse_listen_addr;
pub use pidfile::PidFile;

/// Why the sidecar's interface refused something; each names the flag or the file.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("-addr {value:?}: {reason}")]
    Addr { value: String, reason: String },
    #[error("pidfile {path:?}: {what}: {source}")]
    PidFile {
        path: std::path::PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}
