//! Looking at processes through /proc, and ending the ones the testbed owns, by PID only.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The argument vector of a process, or `None` if it is gone (or a kernel thread).
pub(crate) fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Alive and not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// PIDs of all processes (but this one) with an argument equal to `path` or below it.
pub(crate) fn mentioning(path: &Path) -> Vec<(u32, Vec<String>)> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .filter(|(_, args)| args.iter().any(|a| Path::new(a).starts_with(path)))
        .collect()
}

/// SIGTERM, wait up to `grace`, then SIGKILL and wait a little more. For processes that are not
/// our children (a stale run's), so "gone" is judged from /proc. Returns whether it is gone.
pub(crate) fn terminate(pid: u32, grace: Duration) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let target = Pid::from_raw(raw);
    for (signal, wait) in [
        (Signal::SIGTERM, grace),
        (Signal::SIGKILL, Duration::from_secs(5)),
    ] {
        if !alive(pid) {
            return true;
        }
        // ESRCH means it is already gone; anything else shows as still alive below.
        let _ = kill(target, signal);
        let deadline = Instant::now() + wait;
        while alive(pid) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
    }
    !alive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_itself() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(cmdline(me).is_some_and(|a| !a.is_empty()));
    }

    #[test]
    fn absent_pid_is_dead() {
        // Above the largest possible pid_max (2^22).
        assert!(!alive(5_000_000));
        assert_eq!(cmdline(5_000_000), None);
    }
}
