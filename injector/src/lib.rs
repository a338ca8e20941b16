//! FUSE IO-fault injector.
pub mod control;
pub mod fault_rules;
