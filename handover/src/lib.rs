//! Handover: makes IO faults reach files that were opened before the fault mount existed.
//!
//! A FUSE mount only affects opens made after it; a process that already holds a file, a
//! working directory or a shared file mapping under the volume would never see a fault. This
//! crate finds exactly the processes that hold something under the volume ([`scan`], from
//! `/proc/PID/{fd,fdinfo,cwd,maps,smaps}`), stops each one briefly ([`ptrace`]: every thread,
//! `PTRACE_SEIZE` + `PTRACE_INTERRUPT`), and makes it reopen what it holds through system
//! calls injected into one of its threads ([`inject`], [`moves`]): `openat` the same path with
//! the same flags, `lseek` to the same offset, `dup3` over the same descriptor number,
//! `fchdir`, `mmap(MAP_FIXED)` at the same address. Registers and memory are restored exactly.
//! Recovery is the same in the other direction, once the fault mount is detached.
//!
//! The architecture-specific part is [`arch`] (x86-64 and aarch64). Boundaries: this crate
//! neither mounts nor unmounts; the agent calls it after the injector has mounted and after
//! the injector has detached its mount. No `unsafe`: ptrace goes through `nix`.

#![forbid(unsafe_code)]

pub mod arch;
pub mod inject;
pub mod moves;
pub mod proc_source;
pub mod ptrace;
pub mod report;
pub mod run;
pub mod scan;

pub use report::Report;
pub use run::{FAULT_FSTYPE, HandoverError, Options, fault_mount, hand_over, hand_over_pids};
pub use scan::{Dev, Direction, FaultMount, Scope, Skipped};
