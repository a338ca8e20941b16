//! Time chaos on a container of N processes (root only): `time_bench [COUNTS..]` (default
//! 1 100 1000).
//!
//! For each count, a new pid namespace (`unshare --pid --fork`) holds N idle `sleep`s (plus
//! its init); the agent's own pipeline (`time_chaos::engine` on the real host) shifts them all
//! (+1 h on CLOCK_REALTIME), runs one watcher pass with nothing new (what the agent does every
//! 100 ms while the experiment runs), and recovers them. Reported, median of 3 rounds: each
//! phase's wall time, and the longest time any one process was stopped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::time_chaos::engine;
use agent::time_chaos::host::{RealHost, TimeHost};
use agent::time_chaos::record::TimeRecord;
use timeshift::{ClockMask, Offset, Shift};

type Error = Box<dyn std::error::Error>;

struct Namespace {
    unshare: Child,
    init: u32,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // --kill-child: the namespace's init, and with it every process in it, dies with us.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn start(n: usize) -> Result<Namespace, Error> {
    let script =
        format!("i=0; while [ $i -lt {n} ]; do sleep 3600 & i=$((i+1)); done; echo up; wait");
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(unshare.stdout.take().ok_or("no stdout")?),
        &mut line,
    )?;
    let init = *children(unshare.id()).first().ok_or("no namespace init")?;
    Ok(Namespace { unshare, init })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root (ptrace)".into());
    }
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let counts = if counts.is_empty() {
        vec![1, 100, 1000]
    } else {
        counts
    };
    let host = RealHost::default();
    let shift = Shift {
        offset: Offset::parse_go("1h")?,
        mask: ClockMask::REALTIME,
    };
    println!(
        "| processes | shift all | per process | longest stop of one process | watcher pass (nothing new) | recover all |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in counts {
        let (mut shifts, mut stops, mut passes, mut recovers) = (vec![], vec![], vec![], vec![]);
        for _ in 0..3 {
            let ns = start(n)?;
            let scope = host.scope_of(ns.init)?;
            let mut record = TimeRecord {
                pod_container_name: String::new(),
                shift,
                scope,
                originals: host.originals()?,
                processes: vec![],
                skipped: vec![],
                longest_stop_us: 0,
            };
            let t = Instant::now();
            let pass = engine::shift_new(&host, &mut record)?;
            shifts.push(t.elapsed());
            if pass.shifted.len() != n + 1 {
                return Err(format!(
                    "shifted {} of {}: {}",
                    pass.shifted.len(),
                    n + 1,
                    pass.summary()
                )
                .into());
            }
            stops.push(Duration::from_micros(pass.longest_stop_us));
            let t = Instant::now();
            let idle = engine::shift_new(&host, &mut record)?;
            passes.push(t.elapsed());
            if idle.changed() {
                return Err("the idle pass changed something".into());
            }
            let t = Instant::now();
            let recovered = engine::recover(&host, &record);
            recovers.push(t.elapsed());
            if recovered.restored.len() != n + 1 || !recovered.problems.is_empty() {
                return Err(format!("recovered {:?}", recovered.problems).into());
            }
        }
        let shift_all = median(shifts);
        println!(
            "| {} | {:.1} ms | {:.0} µs | {:.0} µs | {:.1} ms | {:.1} ms |",
            n + 1,
            shift_all.as_secs_f64() * 1e3,
            shift_all.as_secs_f64() * 1e6 / (n + 1) as f64,
            median(stops).as_secs_f64() * 1e6,
            median(passes).as_secs_f64() * 1e3,
            median(recovers).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
