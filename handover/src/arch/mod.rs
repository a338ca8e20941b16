//! What differs between CPU architectures: the register file, where a system call takes its
//! number and arguments and leaves its result, the instruction that makes it, and the syscall
//! numbers. One small module per architecture; [`Native`] is the one this build runs on.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::Aarch64 as Native;
#[cfg(target_arch = "x86_64")]
pub use x86_64::X86_64 as Native;

/// The general-purpose registers as `PTRACE_GETREGS`/`GETREGSET(NT_PRSTATUS)` return them.
pub type Regs = libc::user_regs_struct;

/// System call numbers the handover makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallNumbers {
    pub openat: u64,
    pub close: u64,
    pub lseek: u64,
    pub dup3: u64,
    pub fchdir: u64,
    pub mmap: u64,
}

/// One architecture's calling convention for system calls, as seen from a tracer.
pub trait Arch {
    /// The system call instruction's bytes, as they sit in memory.
    const SYSCALL_INSTRUCTION: &'static [u8];
    /// Instructions start at multiples of this.
    const INSTRUCTION_ALIGN: u64;
    /// Bytes below the stack pointer that the ABI lets a function use without moving it
    /// (x86-64's red zone); data we place on the stack goes below them.
    const RED_ZONE: u64;
    /// Open flags whose values differ between architectures.
    const O_DIRECTORY: i32;
    const NUMBERS: SyscallNumbers;

    fn instruction_pointer(regs: &Regs) -> u64;
    fn stack_pointer(regs: &Regs) -> u64;
    /// Registers that make the thread execute system call `number` with `args` when it runs
    /// the system call instruction at `at`. Everything else is kept as it was.
    fn prepare_call(saved: &Regs, at: u64, number: u64, args: [u64; 6]) -> Regs;
    /// The raw return value (a negative errno on failure).
    fn result(regs: &Regs) -> i64;
}

/// The address of the first occurrence of `A::SYSCALL_INSTRUCTION` at an instruction boundary in `code`,
/// which starts at address `base`.
pub fn find_syscall_instruction<A: Arch>(code: &[u8], base: u64) -> Option<u64> {
    let insn = A::SYSCALL_INSTRUCTION;
    (0..code.len().saturating_sub(insn.len() - 1))
        .filter(|&i| (base + i as u64).is_multiple_of(A::INSTRUCTION_ALIGN))
        .find(|&i| &code[i..i + insn.len()] == insn)
        .map(|i| base + i as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_instruction_only_at_instruction_boundaries() {
        let insn = Native::SYSCALL_INSTRUCTION;
        let align = Native::INSTRUCTION_ALIGN as usize;
        let mut code = vec![0x90u8; 64];
        // Misaligned first (only counts where instructions are aligned), then aligned.
        let misaligned = if align > 1 { 5 } else { usize::MAX };
        if misaligned != usize::MAX {
            code[misaligned..misaligned + insn.len()].copy_from_slice(insn);
        }
        code[32..32 + insn.len()].copy_from_slice(insn);
        assert_eq!(
            find_syscall_instruction::<Native>(&code, 0x1000),
            Some(0x1000 + 32)
        );
        assert_eq!(find_syscall_instruction::<Native>(&[0x90; 16], 0), None);
        assert_eq!(find_syscall_instruction::<Native>(&[], 0), None);
        // Cut off at the end of the region: not an instruction.
        assert_eq!(find_syscall_instruction::<Native>(&insn[..1], 0), None);
    }
}
