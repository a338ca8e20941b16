//! The code that replaces the vDSO's clock functions, per architecture, and the jump written
//! over each vDSO entry to reach it. Both modules are built on every host (they are bytes and
//! pure functions), so both are unit-tested everywhere; [`Native`] is the one this build patches
//! processes with.
//!
//! The page the agent maps into a shifted process (see [`crate::page`]): a data block at offset
//! 0 (magic, offset seconds, nanoseconds, microseconds, clock mask), the architecture's
//! [`ShiftArch::CODE`] at [`CODE_AT`]. Each replacement makes the real system call (the vDSO
//! entry it replaces would have answered from the vvar page, or made the same call as its
//! fallback), returns its error unchanged, and adds the offset when the clock is in the mask.
//! The source of the code is `stubs/*.S` (assembled with binutils; the bytes below are its
//! output).

pub mod aarch64;
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::Aarch64 as Native;
#[cfg(target_arch = "x86_64")]
pub use x86_64::X86_64 as Native;

/// Where the code starts in the page; the data block is before it.
pub const CODE_AT: u64 = 64;

/// The data block's first word, to recognise our page in a process.
pub const MAGIC: &[u8; 8] = b"FLTSHIFT";

/// Offsets of the data words in the page.
pub mod data {
    pub const MAGIC: u64 = 0;
    pub const SEC: u64 = 8;
    pub const NSEC: u64 = 16;
    pub const USEC: u64 = 24;
    pub const MASK: u64 = 32;
}

/// A vDSO function we replace.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    ClockGettime,
    Gettimeofday,
    Time,
}

/// One function: the vDSO symbols that name it (aliases share an address) and where its
/// replacement starts in the page.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub function: Function,
    pub symbols: &'static [&'static str],
    pub stub_offset: u64,
}

/// System call numbers the patcher makes (beyond what the handover's `Arch` has).
#[derive(Debug, Clone, Copy)]
pub struct Numbers {
    pub munmap: u64,
    pub clock_gettime: u64,
    pub gettimeofday: u64,
}

pub trait ShiftArch {
    const NAME: &'static str;
    /// The ELF machine of the vDSO this code replaces functions of.
    const ELF_MACHINE: u16;
    const CODE: &'static [u8];
    const TARGETS: &'static [Target];
    const NUMBERS: Numbers;
    /// How many bytes [`ShiftArch::jump`] writes at `entry`.
    fn jump_len(entry: u64) -> usize;
    /// The instructions that send a call of `entry` to `target`.
    fn jump(entry: u64, target: u64) -> Vec<u8>;
    /// Where `code` (read at `entry`) jumps, if it is a jump written by [`ShiftArch::jump`].
    fn jump_target(code: &[u8], entry: u64) -> Option<u64>;
}

/// The whole page image: data block (with `sec`, `nsec`, `mask`) and code.
pub fn page_image<A: ShiftArch>(sec: i64, nsec: i64, mask: u64) -> Vec<u8> {
    let mut page = vec![0u8; CODE_AT as usize + A::CODE.len()];
    page[..8].copy_from_slice(MAGIC);
    page[CODE_AT as usize..].copy_from_slice(A::CODE);
    write_data(&mut page, sec, nsec, mask);
    page
}

/// The data block's words for an offset (`nsec` normalized to `0..1e9`).
pub fn data_words(sec: i64, nsec: i64, mask: u64) -> [(u64, u64); 4] {
    [
        (data::SEC, sec as u64),
        (data::NSEC, nsec as u64),
        (data::USEC, (nsec / 1000) as u64),
        (data::MASK, mask),
    ]
}

fn write_data(page: &mut [u8], sec: i64, nsec: i64, mask: u64) {
    for (at, word) in data_words(sec, nsec, mask) {
        page[at as usize..at as usize + 8].copy_from_slice(&word.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
