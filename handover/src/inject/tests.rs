use std::collections::BTreeMap;

use super::*;
use crate::arch::Native;

const SP: u64 = 0x7fff_0000;
const IP: u64 = 0x40_0000;
const VDSO: u64 = 0x7ffd_0000;

/// A thread in memory: it executes a system call instruction by calling `kernel`.
struct FakeThread {
    regs: Regs,
    memory: BTreeMap<u64, u8>,
    /// (number, args, the NUL-terminated string at args[1] if any)
    calls: Vec<(u64, [u64; 6], String)>,
    kernel: Box<dyn FnMut(u64, usize) -> i64>,
    /// Steps that stop for a signal without running anything.
    signal_stops: usize,
}

fn initial_regs() -> Regs {
    // Distinct values everywhere, so any register we forget to restore shows.
    let bytes: Vec<u8> = (0..std::mem::size_of::<Regs>())
        .map(|i| i as u8 ^ 0x5a)
        .collect();
    let mut regs = regs_from_bytes(&bytes);
    set_ip_sp(&mut regs, IP, SP);
    regs
}

fn regs_from_bytes(bytes: &[u8]) -> Regs {
    // Regs is a struct of u64s: fill it word by word.
    let words: Vec<u64> = bytes
        .chunks(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    regs_from_words(&words)
}

#[cfg(target_arch = "x86_64")]
fn regs_from_words(w: &[u64]) -> Regs {
    Regs {
        r15: w[0],
        r14: w[1],
        r13: w[2],
        r12: w[3],
        rbp: w[4],
        rbx: w[5],
        r11: w[6],
        r10: w[7],
        r9: w[8],
        r8: w[9],
        rax: w[10],
        rcx: w[11],
        rdx: w[12],
        rsi: w[13],
        rdi: w[14],
        orig_rax: w[15],
        rip: w[16],
        cs: w[17],
        eflags: w[18],
        rsp: w[19],
        ss: w[20],
        fs_base: w[21],
        gs_base: w[22],
        ds: w[23],
        es: w[24],
        fs: w[25],
        gs: w[26],
    }
}

#[cfg(target_arch = "x86_64")]
fn set_ip_sp(regs: &mut Regs, ip: u64, sp: u64) {
    regs.rip = ip;
    regs.rsp = sp;
}

#[cfg(target_arch = "x86_64")]
fn call_of(regs: &Regs) -> (u64, [u64; 6]) {
    (
        regs.rax,
        [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
    )
}

#[cfg(target_arch = "x86_64")]
fn set_result(regs: &mut Regs, value: i64) {
    regs.rax = value as u64;
}

#[cfg(target_arch = "aarch64")]
fn regs_from_words(w: &[u64]) -> Regs {
    let mut regs = Regs {
        regs: [0; 31],
        sp: w[31],
        pc: w[32],
        pstate: w[33],
    };
    regs.regs.copy_from_slice(&w[..31]);
    regs
}

#[cfg(target_arch = "aarch64")]
fn set_ip_sp(regs: &mut Regs, ip: u64, sp: u64) {
    regs.pc = ip;
    regs.sp = sp;
}

#[cfg(target_arch = "aarch64")]
fn call_of(regs: &Regs) -> (u64, [u64; 6]) {
    let mut args = [0; 6];
    args.copy_from_slice(&regs.regs[..6]);
    (regs.regs[8], args)
}

#[cfg(target_arch = "aarch64")]
fn set_result(regs: &mut Regs, value: i64) {
    regs.regs[0] = value as u64;
}

fn same(a: &Regs, b: &Regs) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

impl FakeThread {
    fn new(kernel: impl FnMut(u64, usize) -> i64 + 'static) -> FakeThread {
        let mut memory = BTreeMap::new();
        // Code at IP (no syscall instruction there), a vDSO with one, the stack.
        for i in 0..64 {
            memory.insert(IP + i, 0x90);
            memory.insert(VDSO + i, 0x00);
        }
        for (i, b) in Native::SYSCALL_INSTRUCTION.iter().enumerate() {
            memory.insert(VDSO + 16 + i as u64, *b);
        }
        for a in (SP - 8192)..(SP + 64) {
            memory.insert(a, (a % 251) as u8);
        }
        FakeThread {
            regs: initial_regs(),
            memory,
            calls: Vec::new(),
            kernel: Box::new(kernel),
            signal_stops: 0,
        }
    }

    fn string_at(&self, addr: u64) -> String {
        let mut s = Vec::new();
        let mut a = addr;
        while let Some(&b) = self.memory.get(&a) {
            if b == 0 {
                break;
            }
            s.push(b);
            a += 1;
        }
        String::from_utf8_lossy(&s).into_owned()
    }
}

fn no_memory(addr: u64) -> TraceError {
    TraceError::Memory {
        pid: 1,
        addr,
        source: std::io::Error::from_raw_os_error(libc::EIO),
    }
}

impl Tracee for FakeThread {
    fn regs(&mut self) -> Result<Regs, TraceError> {
        Ok(self.regs)
    }
    fn set_regs(&mut self, regs: &Regs) -> Result<(), TraceError> {
        self.regs = *regs;
        Ok(())
    }
    fn step(&mut self) -> Result<(), TraceError> {
        if self.signal_stops > 0 {
            self.signal_stops -= 1;
            return Ok(());
        }
        let ip = Native::instruction_pointer(&self.regs);
        let insn = Native::SYSCALL_INSTRUCTION;
        let here: Vec<u8> = (0..insn.len() as u64)
            .map(|i| self.memory.get(&(ip + i)).copied().unwrap_or(0))
            .collect();
        assert_eq!(
            here, insn,
            "stepped over something that is not a system call"
        );
        let (number, args) = call_of(&self.regs);
        let path = self.string_at(args[1]);
        self.calls.push((number, args, path));
        let result = (self.kernel)(number, self.calls.len());
        set_result(&mut self.regs, result);
        let sp = Native::stack_pointer(&self.regs);
        set_ip_sp(&mut self.regs, ip + insn.len() as u64, sp);
        Ok(())
    }
    fn read_word(&mut self, addr: u64) -> Result<u64, TraceError> {
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = *self
                .memory
                .get(&(addr + i as u64))
                .ok_or_else(|| no_memory(addr))?;
        }
        Ok(u64::from_ne_bytes(b))
    }
    fn write_word(&mut self, addr: u64, word: u64) -> Result<(), TraceError> {
        for (i, byte) in word.to_ne_bytes().iter().enumerate() {
            let slot = self
                .memory
                .get_mut(&(addr + i as u64))
                .ok_or_else(|| no_memory(addr))?;
            *slot = *byte;
        }
        Ok(())
    }
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, TraceError> {
        for (i, byte) in buf.iter_mut().enumerate() {
            match self.memory.get(&(addr + i as u64)) {
                Some(b) => *byte = *b,
                None => return Ok(i),
            }
        }
        Ok(buf.len())
    }
}

fn maps() -> Vec<MapLine> {
    [
        "400000-400040 r-xp 00000000 fd:01 12 /usr/bin/app",
        "7ffd0000-7ffd0040 r-xp 00000000 00:00 0 [vdso]",
    ]
    .iter()
    .filter_map(|l| crate::scan::parse_map_line(l))
    .collect()
}

#[test]
fn registers_and_memory_are_exactly_as_before() {
    let mut thread = FakeThread::new(|_, n| n as i64 + 100);
    let before_regs = thread.regs;
    let before_memory = thread.memory.clone();
    let source = find_instruction::<Native>(&mut thread, &maps());
    assert_eq!(source, InstructionSource::Found(VDSO + 16));
    let mut remote = Remote::<_, Native>::begin(&mut thread, source).unwrap();
    let path = remote.put_path(b"/data/some/file").unwrap();
    let fd = remote
        .syscall(Native::NUMBERS.openat, [-100i64 as u64, path, 2, 0, 0, 0])
        .unwrap();
    assert_eq!(fd, 101);
    assert_eq!(
        remote
            .syscall(Native::NUMBERS.close, [fd as u64, 0, 0, 0, 0, 0])
            .unwrap(),
        102
    );
    remote.end().unwrap();
    assert!(same(&thread.regs, &before_regs), "registers changed");
    assert_eq!(thread.memory, before_memory, "memory changed");
    let (number, args, name) = &thread.calls[0];
    assert_eq!(*number, Native::NUMBERS.openat);
    assert_eq!(name, "/data/some/file");
    // The string sits below the red zone, and 16-byte aligned.
    assert!(args[1] + 16 <= SP - Native::RED_ZONE, "{:#x}", args[1]);
    assert_eq!(args[1] % 16, 0);
}

#[test]
fn without_a_syscall_instruction_one_is_written_and_put_back() {
    let mut thread = FakeThread::new(|_, _| 0);
    for i in 0..64 {
        thread.memory.insert(VDSO + i, 0); // no instruction anywhere now
    }
    let before = thread.memory.clone();
    let source = find_instruction::<Native>(&mut thread, &maps());
    assert_eq!(source, InstructionSource::Written);
    let mut remote = Remote::<_, Native>::begin(&mut thread, source).unwrap();
    remote
        .syscall(Native::NUMBERS.fchdir, [3, 0, 0, 0, 0, 0])
        .unwrap();
    remote.end().unwrap();
    assert_eq!(thread.calls.len(), 1);
    assert_eq!(
        thread.memory, before,
        "the written instruction is still there"
    );
    assert_eq!(Native::instruction_pointer(&thread.regs), IP);
}

#[test]
fn a_signal_stop_or_an_interrupted_call_runs_it_again() {
    let mut thread = FakeThread::new(|_, n| if n == 1 { -512 } else { 7 });
    thread.signal_stops = 1;
    let mut remote =
        Remote::<_, Native>::begin(&mut thread, InstructionSource::Found(VDSO + 16)).unwrap();
    assert_eq!(
        remote
            .syscall(Native::NUMBERS.dup3, [5, 3, 0, 0, 0, 0])
            .unwrap(),
        7
    );
    drop(remote); // dropping restores too
    assert_eq!(thread.calls.len(), 2);
    assert!(same(&thread.regs, &initial_regs()));
}

#[test]
fn errors_come_back_as_negative_errno() {
    let mut thread = FakeThread::new(|_, _| -(libc::EPERM as i64));
    let mut remote =
        Remote::<_, Native>::begin(&mut thread, InstructionSource::Found(VDSO + 16)).unwrap();
    assert_eq!(
        remote.syscall(Native::NUMBERS.openat, [0; 6]).unwrap(),
        -(libc::EPERM as i64)
    );
}

#[test]
fn a_path_too_long_is_refused() {
    let mut thread = FakeThread::new(|_, _| 0);
    let mut remote =
        Remote::<_, Native>::begin(&mut thread, InstructionSource::Found(VDSO + 16)).unwrap();
    assert!(matches!(
        remote.put_path(&[b'a'; 5000]),
        Err(InjectError::PathTooLong(5000))
    ));
}
