//! FUSE IO-fault injector.
//!
//! Mounts a passthrough filesystem ([`fs`]) over a directory, in our own mount namespace or
//! in a target process's ([`mount`]), and injects IOChaos faults into the operations that
//! fault rules match. Kernel FUSE passthrough keeps IO at native speed where no rule can
//! reach. All `unsafe` code lives in [`sys`].

pub mod control;
/// The rule language lives in its own crate (the agent and controller validate with it too).
pub use io_rules as fault_rules;
pub mod fs;
pub mod log_sink;
pub mod mount;
pub mod serve;
pub mod sidecar;
// The workspace denies unsafe code; this module is the one place of the crate allowed it.
#[allow(unsafe_code)]
mod sys;
