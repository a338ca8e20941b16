//! The per-pod latency agent of the original documentation (`faultline-agent sidecar`): a
//! sidecar container with NET_ADMIN in the pod's network namespace, answering
//! `GET /latency/20ms` by delaying everything the pod sends on eth0.
//!
//! Boundaries: it changes its own network namespace only (no runtime, no other pods, no
//! journal: the delay lives as long as the sidecar, and SIGTERM removes it). The delay goes
//! through the same code as the node agent's network faults (`agent::network`): netem over
//! netlink, or, where the kernel has no sch_netem, the userspace NFQUEUE path.

mod backend;
mod delay;
mod http;
mod latency;
mod local_runner;

pub use backend::NetlinkBackend;
pub use delay::parse_listen;
pub use http::serve;
pub use latency::Latency;
pub use local_runner::LocalRunner;

/// Why the latency agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("--listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("installing the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    #[error("removing the delay: {0}")]
    Network(#[from] agent::network::NetworkError),
}
