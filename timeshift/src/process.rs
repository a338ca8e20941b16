//! Shifting one process: stop it (every thread, through the handover's ptrace), find the
//! functions in its vDSO, map a page holding the replacements and the offset (an `mmap`
//! injected into one of its threads), and write a jump over each vDSO entry. Updating the
//! offset rewrites the page's data words; unshifting writes the original entry bytes back and
//! unmaps the page. The process is stopped for each of these, then let go.
//!
//! A thread stopped in the middle of an entry we are about to rewrite (inside the first
//! bytes, where the jump goes) would resume in the middle of an instruction: the process is
//! then let go and stopped again a little later, a few times, before it is reported busy.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use handover::arch::Arch as _;
use handover::inject::{InjectError, Remote, find_instruction};
use handover::ptrace::{StoppedProcess, TraceError, Tracee};
use handover::scan::{MapLine, parse_map_line};
use serde::{Deserialize, Serialize};

use crate::arch::{self, Function, Native, ShiftArch};
use crate::clock::{ClockMask, Offset};
use crate::vdso::{self, VdsoError};

const PAGE: u64 = 4096;
const PROT_READ: u64 = 1;
const PROT_EXEC: u64 = 4;
const MAP_PRIVATE: u64 = 2;
const MAP_ANONYMOUS: u64 = 0x20;

/// What to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    pub offset: Offset,
    pub mask: ClockMask,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long to wait for every thread of a process to stop.
    pub stop_within: Duration,
    /// How often a process with a thread inside an entry is let go and stopped again.
    pub busy_retries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stop_within: Duration::from_secs(1),
            busy_retries: 20,
        }
    }
}

/// One rewritten vDSO entry: where (offset in the vDSO), and the bytes that were there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub function: Function,
    pub vdso_offset: u64,
    pub original: Vec<u8>,
}

/// A process we shifted, as recovery needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patched {
    pub pid: u32,
    /// `/proc/PID/stat` start time: a reused PID is not taken for this process.
    pub start_time: u64,
    pub vdso: u64,
    pub page: u64,
    pub sites: Vec<Site>,
}

/// Why a process was left alone (or only partly handled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Skip {
    #[error("the process has no vDSO mapped")]
    NoVdso,
    #[error("{detail}")]
    Vdso { detail: String },
    #[error("its vDSO has none of the functions replaced here ({names})")]
    NoFunctions { names: String },
    #[error(
        "the {call} system call the replacement makes fails in it ({errno}): a seccomp filter? \
         nothing was changed"
    )]
    Refused { call: String, errno: String },
    #[error("the process exited meanwhile")]
    Exited,
    #[error("a thread stayed inside a vDSO entry being rewritten over {tries} stops")]
    Busy { tries: u32 },
    #[error("{detail}")]
    Trace { detail: String },
    #[error("the page its jumps lead to was not ours (no magic); left alone")]
    Foreign,
    #[error(
        "the process was shifted with entries this record has no original bytes for ({function:?} at vDSO offset {offset:#x})"
    )]
    NoOriginal { function: Function, offset: u64 },
}

/// What happened to one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Newly shifted.
    Shifted(Patched),
    /// Already shifted by us (a second SetTimeOffset, or a fork of a shifted process): the
    /// offset was rewritten in place.
    Updated {
        page: u64,
    },
    /// Put back: original bytes at every entry; the page unmapped unless a thread was in it.
    Restored {
        page_unmapped: bool,
    },
    /// Nothing of ours in it (never shifted, or it exec'd since: a fresh vDSO).
    NotShifted,
    Skipped(Skip),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long the process was stopped, in total over its stops.
    pub stopped_us: u64,
}

enum Fail {
    Skip(Skip),
    Busy,
}

impl From<TraceError> for Fail {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::Exited { .. } => Fail::Skip(Skip::Exited),
            // ESRCH on a thread we hold stopped: it was killed meanwhile, and is exiting (not
            // yet a zombie, so `alive` still says yes). A CI run saw it on a memory read.
            TraceError::Memory { ref source, .. } if source.raw_os_error() == Some(libc::ESRCH) => {
                Fail::Skip(Skip::Exited)
            }
            TraceError::Ptrace {
                source: nix::errno::Errno::ESRCH,
                ..
            } => Fail::Skip(Skip::Exited),
            other => Fail::Skip(Skip::Trace {
                detail: other.to_string(),
            }),
        }
    }
}

impl From<InjectError> for Fail {
    fn from(e: InjectError) -> Self {
        match e {
            InjectError::Trace(t) => t.into(),
            other => Fail::Skip(Skip::Trace {
                detail: other.to_string(),
            }),
        }
    }
}

impl From<VdsoError> for Fail {
    fn from(e: VdsoError) -> Self {
        Fail::Skip(Skip::Vdso {
            detail: e.to_string(),
        })
    }
}

/// `/proc/PID/stat` field 22.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Shifts `pid`, or updates the offset in place if it is shifted already.
pub fn shift(pid: u32, what: Shift, options: &Options) -> ProcessReport {
    with_stops(pid, options, |p| shift_stopped(p, pid, what))
}

/// Puts `pid` back if it is shifted; `originals` are the entry bytes recorded when shifting
/// (this process's, or any process's on this kernel: the vDSO is one image per kernel).
pub fn unshift(pid: u32, originals: &[Site], options: &Options) -> ProcessReport {
    with_stops(pid, options, |p| unshift_stopped(p, pid, originals))
}

/// Runs `work` on `pid` stopped, on a tracer thread of its own (it must end after the process
/// is let go), again after a short run when a thread was in the way.
fn with_stops(
    pid: u32,
    options: &Options,
    work: impl Fn(&mut StoppedProcess) -> Result<Outcome, Fail> + Sync,
) -> ProcessReport {
    let mut stopped = Duration::ZERO;
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            for attempt in 0..=options.busy_retries {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let began = Instant::now();
                let result = match StoppedProcess::stop(pid, options.stop_within) {
                    Ok(mut p) => {
                        let result = work(&mut p);
                        drop(p);
                        result
                    }
                    Err(_) if !alive(pid) => Err(Fail::Skip(Skip::Exited)),
                    Err(e) => Err(e.into()),
                };
                stopped += began.elapsed();
                match result {
                    Ok(outcome) => return outcome,
                    // Whatever failed, a process that is gone now (or a moment later: a
                    // SIGKILL that lands mid-patch tears the process down while we look) is
                    // reported as such.
                    Err(Fail::Skip(_)) if gone_within(pid, EXIT_GRACE) => {
                        return Outcome::Skipped(Skip::Exited);
                    }
                    Err(Fail::Skip(skip)) => return Outcome::Skipped(skip),
                    Err(Fail::Busy) => {}
                }
            }
            Outcome::Skipped(Skip::Busy {
                tries: options.busy_retries + 1,
            })
        })
        .join()
        .unwrap_or(Outcome::Skipped(Skip::Trace {
            detail: "the tracer thread panicked".into(),
        }))
    });
    ProcessReport {
        pid,
        outcome,
        stopped_us: stopped.as_micros() as u64,
    }
}

/// Not gone and not a zombie (a dying process refuses `PTRACE_SEIZE` with EPERM).
/// The kernel's PF_EXITING task flag (include/linux/sched.h): the process is in `do_exit`.
const PF_EXITING: u64 = 0x4;
/// How long a skipped process gets to show it was dying (a CI run saw a killed process still
/// running, its memory half gone, and reported as having no vDSO).
const EXIT_GRACE: Duration = Duration::from_millis(20);

/// Running, and not on its way out (a zombie, dead, or exiting counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace())
            .into_iter()
            .flatten();
        let state = fields.next();
        // After the state: ppid, pgrp, session, tty_nr, tpgid, then flags.
        let flags = fields.nth(5).and_then(|f| f.parse::<u64>().ok());
        !matches!(state, Some("Z" | "X" | "x") | None) && flags.is_some_and(|f| f & PF_EXITING == 0)
    })
}

/// Whether `pid` is gone, or is within `within`.
fn gone_within(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn maps(pid: u32) -> Result<Vec<MapLine>, Fail> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|_| Fail::Skip(Skip::Exited))?;
    if text.is_empty() {
        return Err(Fail::Skip(Skip::Exited)); // exiting: its memory is gone already
    }
    Ok(text.lines().filter_map(parse_map_line).collect())
}

/// A vDSO entry we rewrite (or find rewritten) in this process.
struct Entry {
    function: Function,
    vdso_offset: u64,
    addr: u64,
    len: usize,
    /// The bytes there now.
    current: Vec<u8>,
    stub_offset: u64,
}

struct Vdso {
    start: u64,
    entries: Vec<Entry>,
}

fn read_vdso(p: &mut StoppedProcess, maps: &[MapLine]) -> Result<Vdso, Fail> {
    // A user process always has mappings; none at all means its memory is being torn down
    // (it was killed while stopped), not a process without a vDSO.
    if maps.is_empty() {
        return Err(Fail::Skip(Skip::Exited));
    }
    let map = maps
        .iter()
        .find(|m| m.path == "[vdso]")
        .ok_or(Fail::Skip(Skip::NoVdso))?;
    let mut image = vec![0u8; (map.end - map.start) as usize];
    let n = p.read_memory(map.start, &mut image)?;
    if n < image.len() {
        return Err(Fail::Skip(Skip::Exited)); // its memory is going away
    }
    let symbols = vdso::symbols(&image, Native::ELF_MACHINE)?;
    let mut entries = Vec::new();
    for target in Native::TARGETS {
        let Some(sym) = symbols
            .iter()
            .find(|s| target.symbols.contains(&s.name.as_str()))
        else {
            continue;
        };
        let addr = map.start + sym.offset;
        let len = Native::jump_len(addr);
        let at = sym.offset as usize;
        if (sym.size as usize) < len || at + len > image.len() {
            continue; // too short to hold the jump
        }
        entries.push(Entry {
            function: target.function,
            vdso_offset: sym.offset,
            addr,
            len,
            current: image[at..at + len].to_vec(),
            stub_offset: target.stub_offset,
        });
    }
    if entries.is_empty() {
        let names: Vec<&str> = Native::TARGETS
            .iter()
            .flat_map(|t| t.symbols.iter().copied())
            .collect();
        return Err(Fail::Skip(Skip::NoFunctions {
            names: names.join(", "),
        }));
    }
    Ok(Vdso {
        start: map.start,
        entries,
    })
}

/// The page an entry jumps to, if it is a jump of ours to a page of ours.
fn our_page(p: &mut StoppedProcess, entry: &Entry) -> Result<Option<u64>, Fail> {
    let Some(target) = Native::jump_target(&entry.current, entry.addr) else {
        return Ok(None);
    };
    let page = target - entry.stub_offset;
    let magic = p.read_word(page + arch::data::MAGIC)?;
    if magic.to_le_bytes() != *arch::MAGIC {
        return Err(Fail::Skip(Skip::Foreign));
    }
    Ok(Some(page))
}

/// Whether any thread is stopped strictly inside one of `ranges` (at the first byte it is
/// fine: it runs either the whole old or the whole new code).
fn thread_inside(p: &StoppedProcess, ranges: &[(u64, u64)]) -> Result<bool, Fail> {
    for (_, regs) in p.thread_regs()? {
        let ip = handover::arch::Native::instruction_pointer(&regs);
        if ranges.iter().any(|&(start, end)| ip > start && ip < end) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn thread_in_page(p: &StoppedProcess, page: u64) -> Result<bool, Fail> {
    for (_, regs) in p.thread_regs()? {
        let ip = handover::arch::Native::instruction_pointer(&regs);
        if (page..page + PAGE).contains(&ip) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes `bytes` at `addr` a word at a time (reading the words they share with other bytes).
fn write_bytes(p: &mut StoppedProcess, addr: u64, bytes: &[u8]) -> Result<(), TraceError> {
    let first = addr & !7;
    let last = (addr + bytes.len() as u64).div_ceil(8) * 8;
    let mut word_addr = first;
    while word_addr < last {
        let mut word = p.read_word(word_addr)?.to_le_bytes();
        for (i, b) in word.iter_mut().enumerate() {
            let at = word_addr + i as u64;
            if at >= addr && at < addr + bytes.len() as u64 {
                *b = bytes[(at - addr) as usize];
            }
        }
        p.write_word(word_addr, u64::from_le_bytes(word))?;
        word_addr += 8;
    }
    Ok(())
}

fn read_bytes(p: &mut StoppedProcess, addr: u64, len: usize) -> Result<Vec<u8>, TraceError> {
    let mut out = Vec::with_capacity(len + 8);
    let mut word_addr = addr & !7;
    while word_addr < addr + len as u64 {
        out.extend_from_slice(&p.read_word(word_addr)?.to_le_bytes());
        word_addr += 8;
    }
    let skip = (addr - (addr & !7)) as usize;
    Ok(out[skip..skip + len].to_vec())
}

fn write_data(p: &mut StoppedProcess, page: u64, what: Shift) -> Result<(), TraceError> {
    for (at, word) in arch::data_words(what.offset.sec, what.offset.nsec, what.mask.0) {
        p.write_word(page + at, word)?;
    }
    Ok(())
}

fn errno_name(result: i64) -> String {
    nix::errno::Errno::from_raw((-result) as i32).to_string()
}

fn shift_stopped(p: &mut StoppedProcess, pid: u32, what: Shift) -> Result<Outcome, Fail> {
    let maps = maps(pid)?;
    let vdso = read_vdso(p, &maps)?;
    // Ours already: every entry leads to our page; rewrite the offset there.
    let mut pages = BTreeSet::new();
    for entry in &vdso.entries {
        if let Some(page) = our_page(p, entry)? {
            pages.insert(page);
        }
    }
    if let Some(&page) = pages.iter().next() {
        for &page in &pages {
            write_data(p, page, what)?;
        }
        return Ok(Outcome::Updated { page });
    }
    let ranges: Vec<(u64, u64)> = vdso
        .entries
        .iter()
        .map(|e| (e.addr, e.addr + e.len as u64))
        .collect();
    if thread_inside(p, &ranges)? {
        return Err(Fail::Busy);
    }
    let start_time = start_time(pid).ok_or(Fail::Skip(Skip::Exited))?;

    // Inject: check that the calls the replacements make are allowed, and map the page.
    let source = find_instruction::<handover::arch::Native>(p, &maps);
    let page = {
        let mut remote = Remote::<_, handover::arch::Native>::begin(p, source)?;
        let buf = remote.put_path(&[0u8; 23])?;
        let numbers = Native::NUMBERS;
        for (call, number, args) in [
            ("clock_gettime", numbers.clock_gettime, [0, buf, 0, 0, 0, 0]),
            ("gettimeofday", numbers.gettimeofday, [buf, 0, 0, 0, 0, 0]),
        ] {
            let result = remote.syscall(number, args)?;
            if result < 0 {
                return Err(Fail::Skip(Skip::Refused {
                    call: call.into(),
                    errno: errno_name(result),
                }));
            }
        }
        let mmap = handover::arch::Native::NUMBERS.mmap;
        let result = remote.syscall(
            mmap,
            [
                0,
                PAGE,
                PROT_READ | PROT_EXEC,
                MAP_PRIVATE | MAP_ANONYMOUS,
                u64::MAX,
                0,
            ],
        )?;
        remote.end()?;
        if (-4095..0).contains(&result) {
            return Err(Fail::Skip(Skip::Refused {
                call: "mmap".into(),
                errno: errno_name(result),
            }));
        }
        result as u64
    };
    let image = arch::page_image::<Native>(what.offset.sec, what.offset.nsec, what.mask.0);
    let mut written = Vec::new();
    let result = (|| -> Result<(), TraceError> {
        write_bytes(p, page, &image)?;
        if read_bytes(p, page, image.len())? != image {
            return Err(TraceError::Memory {
                pid,
                addr: page,
                source: std::io::Error::other("the page reads back different"),
            });
        }
        for entry in &vdso.entries {
            let jump = Native::jump(entry.addr, page + entry.stub_offset);
            write_bytes(p, entry.addr, &jump)?;
            written.push(entry);
        }
        Ok(())
    })();
    if let Err(e) = result {
        // Put back what was written; the page stays mapped (unused) if unmapping fails too.
        for entry in written {
            let _ = write_bytes(p, entry.addr, &entry.current);
        }
        let _ = unmap(p, &maps, page);
        return Err(e.into());
    }
    Ok(Outcome::Shifted(Patched {
        pid,
        start_time,
        vdso: vdso.start,
        page,
        sites: vdso
            .entries
            .iter()
            .map(|e| Site {
                function: e.function,
                vdso_offset: e.vdso_offset,
                original: e.current.clone(),
            })
            .collect(),
    }))
}

fn unmap(p: &mut StoppedProcess, maps: &[MapLine], page: u64) -> Result<bool, Fail> {
    if thread_in_page(p, page)? {
        return Ok(false);
    }
    let source = find_instruction::<handover::arch::Native>(p, maps);
    let mut remote = Remote::<_, handover::arch::Native>::begin(p, source)?;
    let result = remote.syscall(Native::NUMBERS.munmap, [page, PAGE, 0, 0, 0, 0])?;
    remote.end()?;
    Ok(result == 0)
}

fn unshift_stopped(p: &mut StoppedProcess, pid: u32, originals: &[Site]) -> Result<Outcome, Fail> {
    let maps = maps(pid)?;
    let vdso = read_vdso(p, &maps)?;
    let mut restore = Vec::new();
    let mut pages = BTreeSet::new();
    for entry in &vdso.entries {
        let Some(page) = our_page(p, entry)? else {
            continue;
        };
        let original = originals
            .iter()
            .find(|s| {
                s.function == entry.function
                    && s.vdso_offset == entry.vdso_offset
                    && s.original.len() == entry.len
            })
            .ok_or(Fail::Skip(Skip::NoOriginal {
                function: entry.function,
                offset: entry.vdso_offset,
            }))?;
        restore.push((entry, &original.original));
        pages.insert(page);
    }
    if restore.is_empty() {
        return Ok(Outcome::NotShifted);
    }
    let ranges: Vec<(u64, u64)> = restore
        .iter()
        .map(|(e, _)| (e.addr, e.addr + e.len as u64))
        .collect();
    if thread_inside(p, &ranges)? {
        return Err(Fail::Busy);
    }
    for (entry, original) in &restore {
        write_bytes(p, entry.addr, original)?;
        if read_bytes(p, entry.addr, original.len())? != **original {
            return Err(Fail::Skip(Skip::Trace {
                detail: format!("the entry at {:#x} reads back different", entry.addr),
            }));
        }
    }
    let mut all_unmapped = true;
    for page in pages {
        all_unmapped &= unmap(p, &maps, page)?;
    }
    Ok(Outcome::Restored {
        page_unmapped: all_unmapped,
    })
}

/// The entry bytes of this kernel's vDSO as this process has them (never patched: we do not
/// shift ourselves): the originals of every 64-bit process on this kernel, to journal before
/// any process is touched.
pub fn this_kernels_originals() -> Result<Vec<Site>, Skip> {
    use std::os::unix::fs::FileExt;
    let maps = maps(std::process::id()).map_err(|_| Skip::NoVdso)?;
    let map = maps
        .iter()
        .find(|m| m.path == "[vdso]")
        .ok_or(Skip::NoVdso)?;
    let mut image = vec![0u8; (map.end - map.start) as usize];
    std::fs::File::open("/proc/self/mem")
        .and_then(|mem| mem.read_exact_at(&mut image, map.start))
        .map_err(|e| Skip::Vdso {
            detail: format!("reading our own vDSO: {e}"),
        })?;
    let symbols = vdso::symbols(&image, Native::ELF_MACHINE).map_err(|e| Skip::Vdso {
        detail: e.to_string(),
    })?;
    let mut sites = Vec::new();
    for target in Native::TARGETS {
        let Some(sym) = symbols
            .iter()
            .find(|s| target.symbols.contains(&s.name.as_str()))
        else {
            continue;
        };
        let len = Native::jump_len(map.start + sym.offset);
        let at = sym.offset as usize;
        if (sym.size as usize) < len || at + len > image.len() {
            continue;
        }
        sites.push(Site {
            function: target.function,
            vdso_offset: sym.offset,
            original: image[at..at + len].to_vec(),
        });
    }
    Ok(sites)
}

/// Where `pid`'s vDSO is (`AT_SYSINFO_EHDR` in `/proc/PID/auxv`): it moves at every `exec`, so
/// a process that exec'd (a fresh, unshifted vDSO) is told apart from one we shifted.
pub fn vdso_base(pid: u32) -> Option<u64> {
    const AT_SYSINFO_EHDR: u64 = 33;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    auxv.chunks_exact(16).find_map(|pair| {
        let key = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let value = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (key == AT_SYSINFO_EHDR).then_some(value)
    })
}
