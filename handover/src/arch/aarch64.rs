//! aarch64: `svc #0` (01 00 00 d4), number in x8, arguments in x0..x5, result in x0; no red
//! zone in the ABI (we keep 128 bytes anyway, which costs nothing).
//!
//! Unlike x86-64, the kernel rewinds an interrupted system call (pc back onto `svc`, x0 from
//! orig_x0) before the thread stops for us, so the registers we save are already the ones
//! that restart it; restoring them exactly is all that is needed.

use super::{Arch, Regs, SyscallNumbers};

pub struct Aarch64;

impl Arch for Aarch64 {
    const SYSCALL_INSTRUCTION: &'static [u8] = &[0x01, 0x00, 0x00, 0xd4];
    const INSTRUCTION_ALIGN: u64 = 4;
    const RED_ZONE: u64 = 128;
    const O_DIRECTORY: i32 = 0o40000;
    const NUMBERS: SyscallNumbers = SyscallNumbers {
        openat: 56,
        close: 57,
        lseek: 62,
        dup3: 24,
        fchdir: 50,
        mmap: 222,
    };

    fn instruction_pointer(regs: &Regs) -> u64 {
        regs.pc
    }

    fn stack_pointer(regs: &Regs) -> u64 {
        regs.sp
    }

    fn prepare_call(saved: &Regs, at: u64, number: u64, args: [u64; 6]) -> Regs {
        let mut regs = *saved;
        regs.pc = at;
        regs.regs[8] = number;
        regs.regs[..6].copy_from_slice(&args);
        regs
    }

    fn result(regs: &Regs) -> i64 {
        regs.regs[0] as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Regs {
        let mut regs = Regs {
            regs: [0; 31],
            sp: 0x7fff_f000,
            pc: 0x40_1000,
            pstate: 0x6000_0000,
        };
        for (i, r) in regs.regs.iter_mut().enumerate() {
            *r = 0x1000 + i as u64;
        }
        regs
    }

    #[test]
    fn a_call_sets_number_arguments_and_pc_and_nothing_else() {
        let saved = sample();
        let call = Aarch64::prepare_call(&saved, 0xffff_0040, 56, [1, 2, 3, 4, 5, 6]);
        assert_eq!(call.pc, 0xffff_0040);
        assert_eq!(call.regs[8], 56);
        assert_eq!(&call.regs[..6], &[1, 2, 3, 4, 5, 6]);
        // x6, x7, x9.. (x19..x28 callee-saved, x29 frame, x30 link) untouched.
        assert_eq!(call.regs[6], saved.regs[6]);
        assert_eq!(call.regs[7], saved.regs[7]);
        assert_eq!(&call.regs[9..], &saved.regs[9..]);
        assert_eq!(call.sp, saved.sp);
        assert_eq!(call.pstate, saved.pstate);
    }

    #[test]
    fn the_result_is_signed_x0() {
        let mut regs = sample();
        regs.regs[0] = (-13i64) as u64;
        assert_eq!(Aarch64::result(&regs), -13);
    }

    #[test]
    fn numbers_are_the_generic_table() {
        assert_eq!(Aarch64::NUMBERS.openat, libc::SYS_openat as u64);
        assert_eq!(Aarch64::NUMBERS.close, libc::SYS_close as u64);
        assert_eq!(Aarch64::NUMBERS.lseek, libc::SYS_lseek as u64);
        assert_eq!(Aarch64::NUMBERS.dup3, libc::SYS_dup3 as u64);
        assert_eq!(Aarch64::NUMBERS.fchdir, libc::SYS_fchdir as u64);
        assert_eq!(Aarch64::NUMBERS.mmap, libc::SYS_mmap as u64);
        assert_eq!(Aarch64::O_DIRECTORY, libc::O_DIRECTORY);
    }

    #[test]
    fn svc_is_found_only_word_aligned() {
        let mut code = vec![0u8; 16];
        code[2..6].copy_from_slice(Aarch64::SYSCALL_INSTRUCTION);
        assert_eq!(
            super::super::find_syscall_instruction::<Aarch64>(&code, 0),
            None
        );
        code[8..12].copy_from_slice(Aarch64::SYSCALL_INSTRUCTION);
        assert_eq!(
            super::super::find_syscall_instruction::<Aarch64>(&code, 0x100),
            Some(0x108)
        );
    }
}
