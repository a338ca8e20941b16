//! What the `procfs` crate would cost the handover scan, measured against the scanner's own
//! parsers on the same files: every process of this host, `maps` and `mountinfo` (the two
//! tables both can read; `procfs` 0.18 has no reader for `fdinfo`'s `pos`/`flags`/`mnt_id`,
//! which the handover needs for every open file, so that parser stays ours either way).
//!
//! `cargo run --release -p faultline-handover --example proc_parse_cost [ROUNDS]` (as root, to
//! read every process). Prints the median and range over rounds of one pass over all processes.

use std::path::Path;
use std::time::{Duration, Instant};

use handover::proc_source::{HostProc, ProcSource};
use handover::scan::{find_fault_mount, parse_map_line};

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One pass with the scanner's parsers; returns the lines parsed (so nothing is optimised away).
fn ours(pids: &[u32]) -> usize {
    let src = HostProc::default();
    let volume = Path::new("/nonexistent-volume");
    let mut seen = 0;
    for &pid in pids {
        if let Ok(maps) = src.read(&format!("{pid}/maps")) {
            seen += maps.lines().filter_map(parse_map_line).count();
        }
        if let Ok(found) = find_fault_mount(&src, pid, volume, "fuse.faultline") {
            seen += usize::from(found.is_some());
        }
    }
    seen
}

/// The same pass through `procfs`.
fn with_procfs(pids: &[u32]) -> usize {
    let mut seen = 0;
    for &pid in pids {
        let Ok(process) = procfs::process::Process::new(pid as i32) else {
            continue;
        };
        if let Ok(maps) = process.maps() {
            seen += maps.iter().count();
        }
        if let Ok(table) = process.mountinfo() {
            let found = table.0.iter().rev().find(|m| {
                m.mount_point == Path::new("/nonexistent-volume") && m.fs_type == "fuse.faultline"
            });
            seen += usize::from(found.is_some());
        }
    }
    seen
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:.2} ms (min {:.2}, max {:.2})",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    )
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(21)
        .max(1);
    let pids = pids();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut lines_a, mut lines_b) = (0, 0);
    for _ in 0..rounds {
        let start = Instant::now();
        lines_a = ours(&pids);
        a.push(start.elapsed());
        let start = Instant::now();
        lines_b = with_procfs(&pids);
        b.push(start.elapsed());
    }
    println!(
        "{} processes, {rounds} rounds, one pass reads maps + mountinfo of each",
        pids.len()
    );
    println!("scanner's parsers: {} ({lines_a} map lines)", summary(a));
    println!("procfs 0.18:       {} ({lines_b} map lines)", summary(b));
}
