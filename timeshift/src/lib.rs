//! Timeshift: shifts the clocks a running process reads through its vDSO.
//!
//! Programs read the time without a system call, through the vDSO the kernel maps into every
//! process (`clock_gettime`, `gettimeofday`, `time`; `__kernel_*` on aarch64). For one process,
//! [`process::shift`] stops it (every thread; the handover crate's ptrace), maps a page holding
//! replacements of those functions and the offset ([`arch`]), and writes a jump over each vDSO
//! entry ([`vdso`] finds them). The replacements make the real system call and add the offset
//! to the clocks in the mask ([`clock`]). Every thread of the process sees it at once (the vDSO
//! is per process); a process it forks inherits it; a process it execs gets a fresh vDSO.
//! [`process::unshift`] writes the original bytes back and unmaps the page.
//!
//! No `unsafe`: ptrace goes through `nix`, via the handover crate.

#![forbid(unsafe_code)]

pub mod arch;
pub mod clock;
pub mod process;
pub mod vdso;

pub use clock::{ClockError, ClockMask, Offset};
pub use process::{
    Options, Outcome, Patched, ProcessReport, Shift, Site, Skip, shift, start_time,
    this_kernels_originals, unshift, vdso_base,
};
