//! The stressor process against the real `faultline-agent` binary, without a container: it
//! waits, doing nothing, until released; it exits by itself if it never is; once released it
//! works (CPU workers run, memory is resident); kill reaps it. No root needed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::stress::methods::{CpuMethod, VmMethod};
use agent::stress::process::StressorProcess;
use agent::stress::worker::{NOT_RELEASED, StressorCommand};

const BINARY: &str = env!("CARGO_BIN_EXE_faultline-agent");

/// Waits until `check` holds, up to `within`.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    check()
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Blocked on its stdin: the only thread, sleeping (no worker started yet).
fn held(pid: u32) -> bool {
    threads(pid) == 1 && status_field(pid, "State:").is_some_and(|s| s.starts_with('S'))
}

#[test]
fn a_stressor_never_released_exits_by_itself() {
    let mut child = Command::new(BINARY)
        .args(["stressor", "cpu", "--workers", "1", "--load", "100"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(
        eventually(Duration::from_secs(5), || held(pid)),
        "not held: {} threads, {:?}",
        threads(pid),
        status_field(pid, "State:")
    );
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(i32::from(NOT_RELEASED)), "{status}");
}

#[test]
fn a_wrong_byte_does_not_release_it() {
    let mut child = Command::new(BINARY)
        .args(["stressor", "cpu", "--workers", "1", "--load", "100"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"x").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(i32::from(NOT_RELEASED)), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_then_released_then_killed_and_reaped() {
    let command = StressorCommand::Cpu {
        workers: 2,
        load: 10,
        slice_ms: 10,
        method: CpuMethod::Sqrt,
    };
    let stressor = StressorProcess::spawn(BINARY.as_ref(), &command).unwrap();
    let pid = stressor.identity.pid;
    assert!(stressor.identity.is_alive());
    assert!(
        eventually(Duration::from_secs(5), || held(pid)),
        "not held before release"
    );
    stressor.release().unwrap();
    // Two workers and the watcher of its parent, besides the main thread.
    assert!(
        eventually(Duration::from_secs(5), || threads(pid) == 4),
        "{} threads after release",
        threads(pid)
    );
    // Releasing twice is harmless.
    stressor.release().unwrap();
    let status = stressor.kill().await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(!stressor.identity.is_alive(), "not reaped");
    assert_eq!(stressor.exited(), Some(status));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_stressor_holds_its_size_resident() {
    let bytes: u64 = 24 << 20;
    let stressor = StressorProcess::spawn(
        BINARY.as_ref(),
        &StressorCommand::Memory {
            workers: 2,
            bytes,
            growth_ms: 0,
            hang_ms: 0,
            keep: false,
            method: VmMethod::All,
        },
    )
    .unwrap();
    let pid = stressor.identity.pid;
    let rss = || {
        status_field(pid, "VmRSS:")
            .and_then(|v| v.trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    assert!(
        eventually(Duration::from_secs(5), || held(pid)),
        "not held before release"
    );
    // Held, it has only the binary's own pages (a debug build's are some 14 MiB); touched,
    // its 24 MiB would come on top of them.
    assert!(rss() < bytes, "memory touched before release: {}", rss());
    stressor.release().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || rss() >= bytes),
        "resident {} of {bytes}",
        rss()
    );
    stressor.kill().await;
}
