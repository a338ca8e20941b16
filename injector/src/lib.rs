//! FUSE IO-fault injector.
pub mod control;
/// The rule language lives in its own crate (the agent and controller validate with it too).
pub use io_rules as fault_rules;
