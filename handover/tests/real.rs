//! The handover for real, as root: a test program (tests/programs/holder.c, built static)
//! holds a file, a working directory or a mapping in a directory; a tmpfs mounted over that
//! directory plays the fault mount. Every file is a run of 4-byte tokens, a letter for the
//! file and the token's index (`O000O001..` on the original, `F000F001..` on the mount), so
//! each 4-byte read tells which file it reached and at what offset.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use handover::proc_source::HostProc;
use handover::scan::find_fault_mount;
use handover::{Direction, FaultMount, Options, Report, Scope, hand_over_pids};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Builds the holder once per test binary.
fn holder() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Cargo's scratch directory for integration tests: nothing left in /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("handover-holder");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("holder");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/holder.c");
        let out = Command::new("cc")
            .args(["-O2", "-static", "-mno-red-zone", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("cc (gcc) runs");
        assert!(
            out.status.success(),
            "building holder: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

fn tokens(letter: char) -> String {
    (0..4000)
        .map(|i| format!("{letter}{:03}", i % 1000))
        .collect()
}

/// A directory with the original file, a tmpfs over it with the fault file, the holder.
struct Setup {
    dir: PathBuf,
    log: PathBuf,
    child: Child,
    mounted: bool,
    fault: Option<FaultMount>,
}

impl Setup {
    fn start(name: &str, mode: &str, target: &str) -> Setup {
        let base = std::env::temp_dir().join(format!("handover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("vol");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("f"), tokens('O')).unwrap();
        std::fs::write(dir.join("sub/f"), tokens('O')).unwrap();
        let log = base.join("log");
        let child = Command::new(holder())
            .arg(mode)
            .arg(dir.join(target))
            .arg(&log)
            .spawn()
            .unwrap();
        let setup = Setup {
            dir,
            log,
            child,
            mounted: false,
            fault: None,
        };
        assert!(setup.wait_lines(0, 3), "the holder never logged");
        setup
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn wait_lines(&self, after: usize, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.lines().len() >= after + n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Mounts the stand-in fault mount over the directory, with its own files.
    fn mount_fault(&mut self) {
        mount(
            Some("handover-test"),
            &self.dir,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        self.mounted = true;
        std::fs::create_dir_all(self.dir.join("sub")).unwrap();
        std::fs::write(self.dir.join("f"), tokens('F')).unwrap();
        std::fs::write(self.dir.join("sub/f"), tokens('F')).unwrap();
        self.fault =
            find_fault_mount(&HostProc::default(), std::process::id(), &self.dir, "tmpfs").unwrap();
        assert!(self.fault.is_some());
    }

    fn detach_fault(&mut self) {
        umount2(&self.dir, MntFlags::MNT_DETACH).unwrap();
        self.mounted = false;
    }

    fn hand_over(&self, direction: Direction, options: &Options) -> Report {
        let scope = Scope {
            volume: self.dir.clone(),
            fault: self.fault.unwrap(),
            direction,
        };
        hand_over_pids(&HostProc::default(), &[self.child.id()], &scope, options)
    }

    /// The lines logged after line `after` once `n` more have come.
    fn next_lines(&self, after: usize, n: usize) -> Vec<String> {
        assert!(
            self.wait_lines(after, n),
            "the holder stopped logging: {:?}",
            self.lines().last()
        );
        self.lines()[after..].to_vec()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.mounted {
            let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
        }
        if let Some(base) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

fn token_index(line: &str) -> u32 {
    value(line, "data")[1..].parse().unwrap()
}

fn an_open_file_moves_onto_the_mount_and_back_at_the_same_offset_and_number() {
    let mut s = Setup::start("fd", "fd", "f");
    let fd = value(&s.lines()[0], "fd").to_owned();
    s.mount_fault();
    let report = s.hand_over(Direction::ToFault, &Options::default());
    assert_eq!(
        (report.stopped, report.fds, report.cwds, report.mappings),
        (1, 1, 0, 0),
        "{report:?}"
    );
    assert!(report.skipped.is_empty(), "{report:?}");
    let mark = s.lines().len();
    let lines = s.next_lines(mark, 3);
    // At most one read was in flight during the handover; from the next on, the mount.
    let last_original = lines
        .iter()
        .rev()
        .find(|l| value(l, "data").starts_with('O'))
        .map(|l| token_index(l));
    let on_fault: Vec<&String> = lines
        .iter()
        .filter(|l| value(l, "data").starts_with('F'))
        .collect();
    assert!(on_fault.len() >= 2, "{lines:?}");
    let first = on_fault[0];
    let before = s.lines()[..mark].last().cloned().unwrap();
    let expected = last_original.unwrap_or(token_index(&before)) + 1;
    assert_eq!(
        token_index(first),
        expected % 1000,
        "offset changed: {before} -> {first}"
    );
    assert!(
        lines.iter().all(|l| value(l, "fd") == fd),
        "fd number changed: {lines:?}"
    );

    s.detach_fault();
    let report = s.hand_over(Direction::ToOriginal, &Options::default());
    assert_eq!((report.stopped, report.fds), (1, 1), "{report:?}");
    let mark = s.lines().len();
    let lines = s.next_lines(mark, 3);
    let back: Vec<&String> = lines
        .iter()
        .filter(|l| value(l, "data").starts_with('O'))
        .collect();
    assert!(back.len() >= 2, "{lines:?}");
    assert!(lines.iter().all(|l| value(l, "fd") == fd));
    // Continuous offsets across the way back.
    let all = s.lines();
    let idx: Vec<u32> = all.iter().map(|l| token_index(l)).collect();
    assert!(
        idx.windows(2).all(|w| w[1] == (w[0] + 1) % 1000),
        "a read was lost or repeated: {idx:?}"
    );
}

fn a_working_directory_and_a_shared_mapping_move_and_come_back() {
    for (mode, target, kind) in [("cwd", "sub", "cwds"), ("mmap", "f", "mappings")] {
        let mut s = Setup::start(mode, mode, target);
        s.mount_fault();
        let report = s.hand_over(Direction::ToFault, &Options::default());
        let moved = if kind == "cwds" {
            report.cwds
        } else {
            report.mappings
        };
        assert_eq!(moved, 1, "{mode}: {report:?}");
        let mark = s.lines().len();
        let lines = s.next_lines(mark + 1, 2);
        assert!(
            lines[1..].iter().all(|l| value(l, "data") == "F000"),
            "{mode}: {lines:?}"
        );
        s.detach_fault();
        let report = s.hand_over(Direction::ToOriginal, &Options::default());
        let moved = if kind == "cwds" {
            report.cwds
        } else {
            report.mappings
        };
        assert_eq!(moved, 1, "{mode} back: {report:?}");
        let mark = s.lines().len();
        let lines = s.next_lines(mark + 1, 2);
        assert!(
            lines[1..].iter().all(|l| value(l, "data") == "O000"),
            "{mode} back: {lines:?}"
        );
        if mode == "mmap" {
            // Same address throughout.
            let addrs: std::collections::BTreeSet<String> = s
                .lines()
                .iter()
                .map(|l| value(l, "pos").to_owned())
                .collect();
            assert_eq!(addrs.len(), 1, "{addrs:?}");
        }
    }
}

fn a_private_mapping_with_written_pages_is_left_alone_and_reported() {
    let mut s = Setup::start("cow", "cow", "f");
    s.mount_fault();
    let report = s.hand_over(Direction::ToFault, &Options::default());
    assert_eq!(report.mappings, 0, "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(
        report.skipped[0].what.starts_with("mapping ")
            && report.skipped[0].reason.contains("written copy-on-write"),
        "{report:?}"
    );
    // Its own written page is intact.
    let mark = s.lines().len();
    let lines = s.next_lines(mark, 3);
    assert!(
        lines.iter().all(|l| value(l, "data") == "X000"),
        "{lines:?}"
    );
}

fn registers_survive_a_handover_in_the_middle_of_a_blocking_read() {
    let mut s = Setup::start("regs", "regs", "f");
    s.mount_fault();
    for round in 0..3 {
        let direction = if round % 2 == 0 {
            Direction::ToFault
        } else {
            Direction::ToOriginal
        };
        if direction == Direction::ToOriginal {
            s.detach_fault();
        } else if !s.mounted {
            s.mount_fault();
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap();
        let state = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let report = s.hand_over(direction, &Options::default());
        assert_eq!(
            (report.fds, report.cwds, report.mappings),
            (1, 1, 1),
            "round {round}: {report:?}"
        );
        let mark = s.lines().len();
        let lines = s.next_lines(mark, 2);
        assert!(
            lines.iter().all(|l| value(l, "r") == "REGS_OK"),
            "round {round} (state was {state}): {lines:?}"
        );
    }
    assert!(
        s.lines().iter().all(|l| value(l, "r") == "REGS_OK"),
        "{:?}",
        s.lines()
    );
}

fn a_seccomp_filter_forbidding_openat_is_reported_and_the_process_goes_on() {
    let mut s = Setup::start("seccomp", "seccomp", "f");
    s.mount_fault();
    let report = s.hand_over(Direction::ToFault, &Options::default());
    assert_eq!(report.fds, 0, "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(
        report.skipped[0].reason.contains("Operation not permitted"),
        "{report:?}"
    );
    assert!(report.skipped[0].reason.contains("seccomp"), "{report:?}");
    let mark = s.lines().len();
    let lines = s.next_lines(mark, 3);
    assert!(
        lines.iter().all(|l| value(l, "data").starts_with('O')),
        "{lines:?}"
    );
}

fn a_process_that_exits_mid_handover_is_reported() {
    fn kill_it(pid: u32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let mut s = Setup::start("exit", "fd", "f");
    s.mount_fault();
    let options = Options {
        on_stopped: Some(kill_it),
        ..Options::default()
    };
    let report = s.hand_over(Direction::ToFault, &options);
    assert_eq!(report.fds, 0, "{report:?}");
    let skipped = report
        .skipped
        .iter()
        .find(|k| k.what == "process")
        .unwrap_or_else(|| panic!("not reported: {report:?}"));
    assert!(skipped.reason.contains("exited"), "{report:?}");
    assert!(
        s.child.wait().unwrap().code().is_none(),
        "killed by the signal"
    );
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("not running as root: every handover test is ignored (they mount and ptrace)");
    }
    let trial = |name: &'static str, test: fn(), ignored: bool| {
        libtest_mimic::Trial::test(name, move || {
            std::panic::catch_unwind(test).map_err(|e| {
                let text = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                libtest_mimic::Failed::from(text)
            })
        })
        .with_ignored_flag(ignored)
    };
    let trials = vec![
        trial(
            "an_open_file_moves_onto_the_mount_and_back_at_the_same_offset_and_number",
            an_open_file_moves_onto_the_mount_and_back_at_the_same_offset_and_number,
            !root,
        ),
        trial(
            "a_working_directory_and_a_shared_mapping_move_and_come_back",
            a_working_directory_and_a_shared_mapping_move_and_come_back,
            !root,
        ),
        trial(
            "a_private_mapping_with_written_pages_is_left_alone_and_reported",
            a_private_mapping_with_written_pages_is_left_alone_and_reported,
            !root,
        ),
        trial(
            "registers_survive_a_handover_in_the_middle_of_a_blocking_read",
            registers_survive_a_handover_in_the_middle_of_a_blocking_read,
            !root || !cfg!(target_arch = "x86_64"),
        ),
        trial(
            "a_seccomp_filter_forbidding_openat_is_reported_and_the_process_goes_on",
            a_seccomp_filter_forbidding_openat_is_reported_and_the_process_goes_on,
            !root,
        ),
        trial(
            "a_process_that_exits_mid_handover_is_reported",
            a_process_that_exits_mid_handover_is_reported,
            !root,
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}
