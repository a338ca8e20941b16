//! From a Kubernetes container ID (`containerd://ID`, `cri-o://ID`, `docker://ID`) to the host PID
//! of its process, through the container runtime: the containerd API (Tasks.Get) or any CRI
//! runtime (ContainerStatus verbose), and from a pod UID to its sandbox (pause) PID, so network
//! faults can still be set and recovered while a container crash-loops.

mod container_ref;
mod containerd;
mod cri;
mod error;
mod pid_cache;
mod resolver;

pub use container_ref::{ContainerRef, RuntimeKind};
pub use containerd::ContainerdClient;
pub use cri::{CriClient, PodContainer};
pub use error::RuntimeError;
pub use resolver::{Resolver, RuntimeConfig};

/// The runtime's answer for one container: its process on the host.
pub type HostPid = u32;
