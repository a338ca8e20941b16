//! The stressor process itself (`faultline-agent stressor cpu|memory`, hidden): it waits until
//! the agent has moved it into its target's cgroups and released it (one byte on stdin), then
//! loads the CPU or holds memory until it is killed. It exits on its own if the agent goes away
//! (besides the parent-death signal the agent arms) or if it is never released.

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::methods::{CpuMethod, VmMethod};
use super::options::DEFAULT_SLICE_MS;

/// The byte the agent writes on the stressor's stdin to release it.
pub const RELEASE: u8 = b'g';
/// Exit status of a stressor that was never released (the agent closed its stdin).
pub const NOT_RELEASED: u8 = 3;
/// The byte a released stressor writes on its stdout once it runs: its workers started and,
/// for memory, the whole size reserved (so a size the node cannot give fails the request,
/// instead of a stressor that exits right after an OK).
pub const STARTED: u8 = b'r';
/// Exit status of a released stressor that could not start (its memory cannot be reserved).
pub const CANNOT_START: u8 = 4;

/// CPU time the scheduler withheld is made up for (so the load holds over any few seconds on a
/// busy node), but debt beyond this is forgiven rather than paid back in a long burst (the
/// worker was starved, e.g. throttled by the cgroup's CPU quota).
const MAX_DEBT: Duration = Duration::from_secs(1);
/// How often a memory worker touches its pages again (stress-ng's --vm-keep).
const RETOUCH: Duration = Duration::from_secs(5);
/// Memory is allocated and touched this much at a time.
const CHUNK: usize = 1 << 20;

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum StressorCommand {
    /// Load `workers` CPUs to `load` percent each, busy at most `slice_ms` at a stretch,
    /// computing `method`.
    Cpu {
        #[arg(long)]
        workers: u32,
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        load: u8,
        #[arg(long, default_value_t = DEFAULT_SLICE_MS)]
        slice_ms: u32,
        #[arg(long, default_value = "all")]
        method: CpuMethod,
    },
    /// Allocate, touch and hold `bytes` between `workers` threads, reaching the size over
    /// `growth_ms`; with `hang_ms`, a pass every `hang_ms` (writing `method`'s pattern, or,
    /// without `keep`, freeing and allocating again).
    Memory {
        #[arg(long)]
        workers: u32,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 0)]
        growth_ms: u64,
        #[arg(long, default_value_t = 0)]
        hang_ms: u64,
        #[arg(long)]
        keep: bool,
        #[arg(long, default_value = "all")]
        method: VmMethod,
    },
}

impl StressorCommand {
    /// The arguments that run this command (after the `stressor` subcommand).
    pub fn args(&self) -> Vec<String> {
        match self {
            StressorCommand::Cpu {
                workers,
                load,
                slice_ms,
                method,
            } => vec![
                "cpu".into(),
                "--workers".into(),
                workers.to_string(),
                "--load".into(),
                load.to_string(),
                "--slice-ms".into(),
                slice_ms.to_string(),
                "--method".into(),
                method.to_string(),
            ],
            StressorCommand::Memory {
                workers,
                bytes,
                growth_ms,
                hang_ms,
                keep,
                method,
            } => {
                let mut args = vec![
                    "memory".into(),
                    "--workers".into(),
                    workers.to_string(),
                    "--bytes".into(),
                    bytes.to_string(),
                    "--growth-ms".into(),
                    growth_ms.to_string(),
                    "--hang-ms".into(),
                    hang_ms.to_string(),
                    "--method".into(),
                    method.to_string(),
                ];
                if *keep {
                    args.push("--keep".into());
                }
                args
            }
        }
    }
}

/// Runs the stressor; returns only on failure or when never released.
pub fn run(command: &StressorCommand) -> ExitCode {
    let parent = nix::unistd::getppid();
    if !wait_for_release() {
        return ExitCode::from(NOT_RELEASED);
    }
    std::thread::spawn(move || exit_when_orphaned(parent));
    let workers: Vec<_> = match *command {
        StressorCommand::Cpu {
            workers,
            load,
            slice_ms,
            method,
        } => {
            let slice = Duration::from_millis(u64::from(slice_ms.max(1)));
            (0..workers.max(1))
                .map(|_| std::thread::spawn(move || cpu_worker(load, slice, method)))
                .collect()
        }
        StressorCommand::Memory {
            workers,
            bytes,
            growth_ms,
            hang_ms,
            keep,
            method,
        } => {
            let workers = u64::from(workers.max(1));
            let passes = Passes {
                growth: Duration::from_millis(growth_ms),
                hang: (hang_ms > 0).then(|| Duration::from_millis(hang_ms)),
                keep,
                method,
            };
            // Every worker's share is reserved before anything runs: a size that cannot be
            // had fails now, while the agent still waits for the start to answer the request.
            let mut buffers = Vec::new();
            for i in 0..workers {
                // The first worker takes the remainder.
                let share = bytes / workers + if i == 0 { bytes % workers } else { 0 };
                match reserve(share) {
                    Ok(buffer) => buffers.push((buffer, share as usize)),
                    Err(reason) => {
                        eprintln!("cannot start: {reason}");
                        return ExitCode::from(CANNOT_START);
                    }
                }
            }
            buffers
                .into_iter()
                .map(|(buffer, total)| {
                    std::thread::spawn(move || memory_worker(buffer, total, passes))
                })
                .collect()
        }
    };
    if !say_started() {
        return ExitCode::FAILURE;
    }
    for worker in workers {
        let _ = worker.join();
    }
    ExitCode::FAILURE
}

/// Tells the agent the stressor runs ([`STARTED`] on stdout); false if it cannot be told.
fn say_started() -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&[STARTED]).and_then(|()| out.flush()).is_ok()
}

/// Blocks until the agent writes [`RELEASE`]; false if stdin closes first.
fn wait_for_release() -> bool {
    let mut byte = [0u8; 1];
    matches!(std::io::stdin().read(&mut byte), Ok(1) if byte[0] == RELEASE)
}

/// The parent-death signal is bound to the agent thread that spawned us; this also covers the
/// agent itself going away.
fn exit_when_orphaned(parent: nix::unistd::Pid) {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if nix::unistd::getppid() != parent {
            eprintln!("the agent is gone: exiting");
            std::process::exit(0);
        }
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let to_duration = |tv: nix::sys::time::TimeVal| {
        Duration::new(
            tv.tv_sec().max(0) as u64,
            (tv.tv_usec().max(0) as u32) * 1000,
        )
    };
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| to_duration(u.user_time()) + to_duration(u.system_time()))
        .unwrap_or_default()
}

/// Computes `method` for `for_how_long` of wall-clock time.
fn spin(for_how_long: Duration, method: CpuMethod) {
    let until = Instant::now() + for_how_long;
    let mut round = 0u64;
    while Instant::now() < until {
        std::hint::black_box(method.unit(round));
        round = round.wrapping_add(1);
    }
}

/// Keeps this thread's CPU time at `load` percent of the wall-clock time, measured by the
/// thread's own CPU clock so that time the scheduler gave to others is made up for; busy at
/// most `slice` at a stretch (stress-ng's --cpu-load-slice).
fn cpu_worker(load: u8, slice: Duration, method: CpuMethod) {
    match load {
        0 => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        100.. => loop {
            spin(Duration::from_secs(1), method);
        },
        _ => {}
    }
    let share = f64::from(load) / 100.0;
    let (mut wall_origin, mut cpu_origin) = (Instant::now(), thread_cpu());
    loop {
        let due = wall_origin.elapsed().mul_f64(share);
        let used = thread_cpu().saturating_sub(cpu_origin);
        if used < due {
            let debt = due - used;
            if debt > MAX_DEBT {
                (wall_origin, cpu_origin) = (Instant::now(), thread_cpu());
                continue;
            }
            spin(debt.clamp(Duration::from_millis(1), slice), method);
        } else {
            let ahead = (used - due).div_f64(share);
            std::thread::sleep(ahead.clamp(Duration::from_millis(1), slice * 10));
        }
    }
}

/// How a memory worker reaches its size and what it does once there.
#[derive(Debug, Clone, Copy)]
struct Passes {
    growth: Duration,
    hang: Option<Duration>,
    keep: bool,
    method: VmMethod,
}

/// Allocates and touches `bytes` (in chunks spread over `growth`), then holds them: a pass
/// every `hang` (or every few seconds without one) writes the method's pattern to every page,
/// so they stay resident; with a hang and without `keep`, a pass frees the memory and
/// allocates it again instead (stress-ng's unmap and remap).
fn memory_worker(mut buffer: Vec<u8>, total: usize, passes: Passes) {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096);
    fill(&mut buffer, total, passes.growth);
    let mut pass = 0u64;
    loop {
        std::thread::sleep(passes.hang.unwrap_or(RETOUCH));
        pass = pass.wrapping_add(1);
        if passes.hang.is_some() && !passes.keep {
            drop(std::mem::take(&mut buffer));
            buffer = match reserve(total as u64) {
                Ok(buffer) => buffer,
                Err(reason) => {
                    eprintln!("{reason}");
                    std::process::exit(1);
                }
            };
            fill(&mut buffer, total, Duration::ZERO);
        }
        passes.method.touch(&mut buffer, page, pass);
    }
}

/// An empty buffer with room for `bytes` (address space only: nothing touched yet).
fn reserve(bytes: u64) -> Result<Vec<u8>, String> {
    let total = usize::try_from(bytes)
        .map_err(|_| format!("{bytes} bytes do not fit in this address space"))?;
    let mut buffer: Vec<u8> = Vec::new();
    buffer
        .try_reserve_exact(total)
        .map_err(|e| format!("cannot reserve {total} bytes: {e}"))?;
    Ok(buffer)
}

/// Writes `buffer` up to `total` bytes (every page), in chunks spread over `growth`.
fn fill(buffer: &mut Vec<u8>, total: usize, growth: Duration) {
    let steps = total.div_ceil(CHUNK).max(1);
    let pause = growth / u32::try_from(steps).unwrap_or(u32::MAX);
    while buffer.len() < total {
        let next = (buffer.len() + CHUNK).min(total);
        buffer.resize(next, 0xA5);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(subcommand)]
        command: StressorCommand,
    }

    #[test]
    fn arguments_round_trip() {
        for command in [
            StressorCommand::Cpu {
                workers: 2,
                load: 50,
                slice_ms: 10,
                method: CpuMethod::Sqrt,
            },
            StressorCommand::Memory {
                workers: 1,
                bytes: 64 << 20,
                growth_ms: 1500,
                hang_ms: 0,
                keep: false,
                method: VmMethod::All,
            },
            StressorCommand::Memory {
                workers: 3,
                bytes: 1 << 20,
                growth_ms: 0,
                hang_ms: 5000,
                keep: true,
                method: VmMethod::RandSet,
            },
        ] {
            let mut argv = vec!["stressor".to_owned()];
            argv.extend(command.args());
            assert_eq!(Harness::parse_from(argv).command, command);
        }
    }

    #[test]
    fn load_over_100_is_refused_by_the_worker_too() {
        let argv = ["stressor", "cpu", "--workers", "1", "--load", "101"];
        assert!(Harness::try_parse_from(argv).is_err());
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let before = thread_cpu();
        spin(Duration::from_millis(30), CpuMethod::Sqrt);
        assert!(thread_cpu() > before);
    }
}
