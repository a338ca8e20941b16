//! x86-64: `syscall` (0f 05), number in rax, arguments in rdi, rsi, rdx, r10, r8, r9, result in
//! rax; a 128-byte red zone below the stack pointer.

use super::{Arch, Regs, SyscallNumbers};

pub struct X86_64;

impl Arch for X86_64 {
    const SYSCALL_INSTRUCTION: &'static [u8] = &[0x0f, 0x05];
    const INSTRUCTION_ALIGN: u64 = 1;
    const RED_ZONE: u64 = 128;
    const O_DIRECTORY: i32 = 0o200000;
    const NUMBERS: SyscallNumbers = SyscallNumbers {
        openat: 257,
        close: 3,
        lseek: 8,
        dup3: 292,
        fchdir: 81,
        mmap: 9,
    };

    fn instruction_pointer(regs: &Regs) -> u64 {
        regs.rip
    }

    fn stack_pointer(regs: &Regs) -> u64 {
        regs.rsp
    }

    fn prepare_call(saved: &Regs, at: u64, number: u64, args: [u64; 6]) -> Regs {
        let mut regs = *saved;
        regs.rip = at;
        regs.rax = number;
        // Not in a system call: the kernel must not treat our registers as an interrupted
        // call to restart (it would rewind rip and reload rax from orig_rax).
        regs.orig_rax = u64::MAX;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs
    }

    fn result(regs: &Regs) -> i64 {
        regs.rax as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed() -> Regs {
        // Every field is a plain integer.
        Regs {
            r15: 15,
            r14: 14,
            r13: 13,
            r12: 12,
            rbp: 0xbb,
            rbx: 0xb,
            r11: 11,
            r10: 10,
            r9: 9,
            r8: 8,
            rax: (-512i64) as u64, // -ERESTARTSYS: stopped inside a blocking read
            rcx: 0xc,
            rdx: 0xd,
            rsi: 0x51,
            rdi: 0xd1,
            orig_rax: 0, // read
            rip: 0x401000,
            cs: 0x33,
            eflags: 0x246,
            rsp: 0x7ffc_0000_1000,
            ss: 0x2b,
            fs_base: 0x7f00_0000_0000,
            gs_base: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
        }
    }

    #[test]
    fn a_call_sets_number_arguments_and_instruction_pointer_and_nothing_else() {
        let saved = zeroed();
        let call = X86_64::prepare_call(&saved, 0x7fff_1234, 257, [1, 2, 3, 4, 5, 6]);
        assert_eq!(call.rip, 0x7fff_1234);
        assert_eq!(call.rax, 257);
        assert_eq!(call.orig_rax, u64::MAX);
        assert_eq!(
            [call.rdi, call.rsi, call.rdx, call.r10, call.r8, call.r9],
            [1, 2, 3, 4, 5, 6]
        );
        // Callee-saved registers, the stack and thread pointers are untouched.
        assert_eq!(
            [call.rbx, call.rbp, call.r12, call.r13, call.r14, call.r15],
            [
                saved.rbx, saved.rbp, saved.r12, saved.r13, saved.r14, saved.r15
            ]
        );
        assert_eq!(call.rsp, saved.rsp);
        assert_eq!(call.fs_base, saved.fs_base);
        assert_eq!(call.eflags, saved.eflags);
    }

    #[test]
    fn the_result_is_signed() {
        let mut regs = zeroed();
        regs.rax = (-2i64) as u64;
        assert_eq!(X86_64::result(&regs), -2);
        regs.rax = 7;
        assert_eq!(X86_64::result(&regs), 7);
    }

    #[test]
    fn numbers_are_the_x86_64_table() {
        assert_eq!(X86_64::NUMBERS.openat, libc::SYS_openat as u64);
        assert_eq!(X86_64::NUMBERS.close, libc::SYS_close as u64);
        assert_eq!(X86_64::NUMBERS.lseek, libc::SYS_lseek as u64);
        assert_eq!(X86_64::NUMBERS.dup3, libc::SYS_dup3 as u64);
        assert_eq!(X86_64::NUMBERS.fchdir, libc::SYS_fchdir as u64);
        assert_eq!(X86_64::NUMBERS.mmap, libc::SYS_mmap as u64);
        assert_eq!(X86_64::O_DIRECTORY, libc::O_DIRECTORY);
    }
}
