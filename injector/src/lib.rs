//! FUSE IO-fault injector.
pub mod fault_rules;
