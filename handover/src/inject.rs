//! Making a stopped thread run system calls for us: save its registers, point it at a system
//! call instruction (one already in its executable memory, preferably the vDSO's, or one
//! written over the current instruction and put back afterwards), set the call's registers,
//! single-step, read the result; at the end put every register, every overwritten word of
//! memory, and the instruction back exactly as they were.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::arch::{Arch, Regs, find_syscall_instruction};
use crate::ptrace::{TraceError, Tracee};
use crate::scan::MapLine;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the injected system call left the thread at {ip:#x}, expected {expected:#x}")]
    UnexpectedStop { ip: u64, expected: u64 },
    #[error("path too long for the stack: {0} bytes")]
    PathTooLong(usize),
}

/// How much of an executable mapping is searched for a system call instruction.
const SEARCH_LIMIT: usize = 1 << 20;
const MAX_PATH: usize = 4096;

/// A thread running system calls on our behalf; see the module doc.
pub struct Remote<'t, T: Tracee, A: Arch> {
    tracee: &'t mut T,
    saved: Regs,
    at: u64,
    /// The instruction we wrote: (address of the word, its original value).
    patched: Option<(u64, u64)>,
    /// Stack words we overwrote, with their original values.
    stack: BTreeMap<u64, u64>,
    restored: bool,
    arch: PhantomData<A>,
}

/// Where the system call instruction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstructionSource {
    Found(u64),
    /// None found: write one over the instruction at the thread's instruction pointer.
    Written,
}

/// Searches the executable mappings, the vDSO first, for a system call instruction.
pub fn find_instruction<A: Arch>(tracee: &mut impl Tracee, maps: &[MapLine]) -> InstructionSource {
    let mut executable: Vec<&MapLine> = maps
        .iter()
        .filter(|m| m.perms.as_bytes().get(2) == Some(&b'x') && m.perms.starts_with('r'))
        .collect();
    executable.sort_by_key(|m| m.path != "[vdso]");
    for map in executable {
        let len = ((map.end - map.start) as usize).min(SEARCH_LIMIT);
        let mut code = vec![0u8; len];
        let Ok(n) = tracee.read_memory(map.start, &mut code) else {
            continue;
        };
        if let Some(at) = find_syscall_instruction::<A>(&code[..n], map.start) {
            return InstructionSource::Found(at);
        }
    }
    InstructionSource::Written
}

impl<'t, T: Tracee, A: Arch> Remote<'t, T, A> {
    pub fn begin(tracee: &'t mut T, source: InstructionSource) -> Result<Self, InjectError> {
        let saved = tracee.regs()?;
        let mut remote = Remote {
            tracee,
            saved,
            at: A::instruction_pointer(&saved),
            patched: None,
            stack: BTreeMap::new(),
            restored: false,
            arch: PhantomData,
        };
        match source {
            InstructionSource::Found(at) => remote.at = at,
            InstructionSource::Written => {
                let at = remote.at;
                let original = remote.tracee.read_word(at)?;
                let mut bytes = original.to_ne_bytes();
                bytes[..A::SYSCALL_INSTRUCTION.len()].copy_from_slice(A::SYSCALL_INSTRUCTION);
                remote.patched = Some((at, original));
                remote.tracee.write_word(at, u64::from_ne_bytes(bytes))?;
            }
        }
        Ok(remote)
    }

    /// Runs system call `number`; the raw result (negative errno on failure).
    pub fn syscall(&mut self, number: u64, args: [u64; 6]) -> Result<i64, InjectError> {
        let call = A::prepare_call(&self.saved, self.at, number, args);
        let after_insn = self.at + A::SYSCALL_INSTRUCTION.len() as u64;
        for attempt in 0..8 {
            self.tracee.set_regs(&call)?;
            self.tracee.step()?;
            let regs = self.tracee.regs()?;
            let ip = A::instruction_pointer(&regs);
            if ip == self.at {
                continue; // stopped for a signal before running it (or rewound to restart it)
            }
            if ip != after_insn {
                return Err(InjectError::UnexpectedStop {
                    ip,
                    expected: after_insn,
                });
            }
            let result = A::result(&regs);
            // ERESTARTSYS..ERESTART_RESTARTBLOCK: interrupted; run it again.
            if (-516..=-512).contains(&result) && attempt < 7 {
                continue;
            }
            return Ok(result);
        }
        Err(InjectError::UnexpectedStop {
            ip: self.at,
            expected: after_insn,
        })
    }

    /// Writes `path` NUL-terminated on the thread's stack, below the red zone, and returns its
    /// address. Valid until the next call of this.
    pub fn put_path(&mut self, path: &[u8]) -> Result<u64, InjectError> {
        if path.len() >= MAX_PATH {
            return Err(InjectError::PathTooLong(path.len()));
        }
        let padded = (path.len() + 1).div_ceil(8) * 8;
        let addr = (A::stack_pointer(&self.saved) - A::RED_ZONE - padded as u64) & !15;
        let mut bytes = path.to_vec();
        bytes.resize(padded, 0);
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let word_addr = addr + 8 * i as u64;
            if !self.stack.contains_key(&word_addr) {
                let original = self.tracee.read_word(word_addr)?;
                self.stack.insert(word_addr, original);
            }
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.tracee
                .write_word(word_addr, u64::from_ne_bytes(word))?;
        }
        Ok(addr)
    }

    fn restore(&mut self) -> Result<(), InjectError> {
        self.restored = true;
        let mut first_error = None;
        let stack = std::mem::take(&mut self.stack);
        for (addr, word) in stack {
            if let Err(e) = self.tracee.write_word(addr, word) {
                first_error.get_or_insert(e);
            }
        }
        if let Some((addr, word)) = self.patched.take()
            && let Err(e) = self.tracee.write_word(addr, word)
        {
            first_error.get_or_insert(e);
        }
        if let Err(e) = self.tracee.set_regs(&self.saved) {
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Puts everything back.
    pub fn end(mut self) -> Result<(), InjectError> {
        self.restore()
    }
}

impl<T: Tracee, A: Arch> Drop for Remote<'_, T, A> {
    fn drop(&mut self) {
        if !self.restored {
            let _ = self.restore();
        }
    }
}

#[cfg(test)]
mod tests;
