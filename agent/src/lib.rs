//! faultline node agent: resolves a container to its host PID through the container runtime,
//! enters its namespaces and injects faults (IO, network, stress, kill), recovering every fault
//! it injected, even after a crash.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod client;
pub mod clock;
pub mod container_fs;
pub mod container_kill;
pub mod container_runtime;
pub mod dns;
pub mod error;
pub mod fault_kinds;
pub mod faults;
pub mod fuse_io_uring;
pub mod grpc;
pub mod http;
pub mod injector_process;
pub mod injector_spare;
pub mod io_chaos;
pub mod io_handover;
pub mod io_mount_table;
pub mod io_spec;
pub mod journal;
pub mod metrics;
pub mod network;
pub mod process_identity;
pub mod stress;
pub mod supervised_child;
pub mod time_chaos;
pub mod tls;
mod unix_channel;
