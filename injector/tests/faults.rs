//! Fault rules acting on a mounted filesystem, changed live through the control context
//! (what the `update` RPC calls), and gone again after `update([])` without remounting.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::Fixture;
use injector::fs::{FileIo, FsOptions};
use injector::serve::ServeOptions;
use serde_json::json;

fn data_file(p: &std::path::Path) {
    fs::create_dir(p.join("data")).expect("mkdir");
    fs::write(p.join("data/f"), vec![0xffu8; 64 * 1024]).expect("f");
    // Explicit: the filesystem sets this process's umask to 0.
    fs::set_permissions(p.join("data/f"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::write(p.join("other"), b"untouched").expect("other");
}

fn eio(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

fn fault_rule_fails_reads_under_the_glob_until_removed() {
    let fx = Fixture::mount_with(data_file);
    let mount_id = fx.running().mount().expect("mounted").mount_id();
    let glob = format!("{}/data/**", fx.path.display());
    fx.update(json!([{
        "type": "fault", "path": glob, "methods": ["READ"], "percent": 100,
        "faults": [{"errno": 5, "weight": 1}]
    }]));
    let err = fs::read(fx.at("data/f")).expect_err("EIO");
    assert!(eio(&err), "{err}");
    assert_eq!(
        fs::read(fx.at("other")).expect("outside the glob"),
        b"untouched"
    );
    let status = fx.status();
    assert!(status.ready);
    assert!(status.rules[0].injected >= 1, "{:?}", status.rules);

    fx.update(json!([]));
    assert_eq!(
        fs::read(fx.at("data/f")).expect("normal again").len(),
        64 * 1024
    );
    assert_eq!(
        fx.running().mount().expect("still mounted").mount_id(),
        mount_id,
        "no remount"
    );
}

fn write_faults_hit_writes() {
    let fx = Fixture::mount_with(data_file);
    fx.update(json!([{
        "type": "fault", "path": format!("{}/data/*", fx.path.display()),
        "methods": ["write"], "faults": [{"errno": 28}]
    }]));
    let mut f = OpenOptions::new()
        .write(true)
        .open(fx.at("data/f"))
        .expect("open");
    let err = f.write_all(b"x").expect_err("ENOSPC");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
}

fn latency_delays_reads_and_nothing_else() {
    let fx = Fixture::mount_with(data_file);
    fx.update(json!([{
        "type": "latency", "path": format!("{}/data/**", fx.path.display()),
        "methods": ["read"], "latency": "50ms"
    }]));
    let mut f = File::open(fx.at("data/f")).expect("open");
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    f.read_exact(&mut buf).expect("read");
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    fs::read(fx.at("other")).expect("other");
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
}

fn removing_a_latency_rule_cuts_sleeps_short() {
    let fx = Fixture::mount_with(data_file);
    fx.update(json!([{
        "type": "latency", "path": format!("{}/data/**", fx.path.display()),
        "methods": ["read"], "latency": "30s"
    }]));
    let path = fx.at("data/f");
    let reader = std::thread::spawn(move || {
        let t = Instant::now();
        fs::read(path).expect("read");
        t.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    fx.update(json!([]));
    let took = reader.join().expect("reader");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

fn delayed_operations_do_not_hold_up_other_files() {
    let fx = Fixture::mount_with(data_file);
    fx.update(json!([{
        "type": "latency", "path": format!("{}/data/**", fx.path.display()),
        "methods": ["read"], "latency": "2s"
    }]));
    // More slow readers than FUSE worker threads.
    let slow: Vec<_> = (0..24)
        .map(|_| {
            let p = fx.at("data/f");
            std::thread::spawn(move || fs::read(p).map(|d| d.len()))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(fs::read(fx.at("other")).expect("other"), b"untouched");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    for s in slow {
        assert_eq!(s.join().expect("join").expect("read"), 64 * 1024);
    }
}

fn attr_override_shows_even_for_attributes_the_kernel_had_cached() {
    let fx = Fixture::mount_with(data_file);
    // Cached by the kernel with the long timeout while no rule exists.
    let before = fs::metadata(fx.at("data/f")).expect("stat");
    assert_eq!(before.mode() & 0o7777, 0o644);
    fx.update(json!([{
        "type": "attrOverride", "path": format!("{}/data/f", fx.path.display()),
        "perm": 0o600, "uid": 4242
    }]));
    let after = fs::metadata(fx.at("data/f")).expect("stat");
    assert_eq!(after.mode() & 0o7777, 0o600);
    assert_eq!(after.uid(), 4242);
    assert_eq!(
        fs::metadata(fx.orig("data/f")).expect("stat").mode() & 0o7777,
        0o644
    );
    fx.update(json!([]));
    assert_eq!(
        fs::metadata(fx.at("data/f")).expect("stat").mode() & 0o7777,
        0o644
    );
}

fn lookup_faults_reach_cached_entries() {
    let fx = Fixture::mount_with(data_file);
    assert!(fx.at("data/f").exists());
    fx.update(json!([{
        "type": "fault", "path": format!("{}/data/f", fx.path.display()),
        "methods": ["lookup"], "faults": [{"errno": 2}]
    }]));
    let err = fs::metadata(fx.at("data/f")).expect_err("ENOENT");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    fx.update(json!([]));
    assert!(fx.at("data/f").exists());
}

fn mistakes_corrupt_read_data_only() {
    let fx = Fixture::mount_with(data_file);
    fx.update(json!([{
        "type": "mistake", "path": format!("{}/data/**", fx.path.display()),
        "methods": ["read"],
        "mistake": {"filling": "zero", "maxOccurrences": 3, "maxLength": 100}
    }]));
    let data = fs::read(fx.at("data/f")).expect("read");
    assert_eq!(data.len(), 64 * 1024);
    assert!(data.contains(&0), "no byte corrupted");
    assert!(
        fs::read(fx.orig("data/f"))
            .expect("original")
            .iter()
            .all(|&b| b == 0xff)
    );
}

fn files_open_in_passthrough_are_reported_unreachable() {
    let fx = Fixture::mount_opts(
        data_file,
        ServeOptions {
            fs: FsOptions {
                file_io: FileIo::Passthrough,
                ..FsOptions::default()
            },
            ..ServeOptions::default()
        },
    );
    let passthrough = fx.running().fs().passthrough_active();
    let mut held = File::open(fx.at("data/f")).expect("open before the rule");
    fx.update(json!([{
        "type": "fault", "path": format!("{}/data/**", fx.path.display()),
        "methods": ["read"], "faults": [{"errno": 5}]
    }]));
    let status = fx.status();
    if passthrough {
        assert_eq!(
            status.unreachable_open_files,
            [fx.at("data/f")],
            "{status:?}"
        );
        assert_eq!(status.warnings.len(), 1, "said loudly: {status:?}");
        // The kernel serves it directly: the rule cannot reach it ...
        let mut buf = [0u8; 16];
        held.read_exact(&mut buf).expect("passthrough read");
    }
    // ... but a fresh open goes through the daemon, also while the first is still open in
    // passthrough ...
    let err = fs::read(fx.at("data/f")).expect_err("EIO on a new open");
    assert!(eio(&err), "{err}");
    let mut buf = [0u8; 16];
    held.read_exact(&mut buf).expect("passthrough read");
    drop(held);
    // ... and after it is closed.
    let err = fs::read(fx.at("data/f")).expect_err("EIO after reopen");
    assert!(eio(&err), "{err}");
}

/// A python3 child doing `script` on the file at `p`, printing "done" when it returns.
fn python_on(path: &std::path::Path, script: &str) -> std::process::Child {
    std::process::Command::new(common::PYTHON)
        .arg("-c")
        .arg(format!(
            "import os, signal, sys\np = sys.argv[1]\n{script}\nprint('done', flush=True)"
        ))
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3")
}

/// Waits for `child` to exit, up to `within` (a liveness bound, far below the injected delay).
fn exits_within(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits until the rule has delayed at least `n` operations.
fn delayed_at_least(fx: &Fixture, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fx.status().rules[0].injected < n {
        assert!(
            Instant::now() < deadline,
            "the operation never reached the delay"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the request settle into the kernel's wait for our answer.
    std::thread::sleep(Duration::from_millis(100));
}

/// Issue 23: a process blocked in an `open` latency of 1,000,000 h could not be killed (the
/// kernel waits for the answer of a request it has sent, and our ENOSYS answer to its first
/// FUSE_INTERRUPT had turned interrupts off). Now a SIGKILL ends the delay of every method.
fn a_process_killed_in_an_injected_delay_dies_at_once() {
    let fx = Fixture::mount_with(data_file);
    let cases = [
        ("open", "open(p, 'rb')"),
        ("read", "f = open(p, 'rb', buffering=0)\nf.read(4096)"),
        ("write", "f = open(p, 'r+b', buffering=0)\nf.write(b'x')"),
    ];
    for (method, script) in cases {
        fx.update(json!([{
            "type": "latency", "path": format!("{}/data/**", fx.path.display()),
            "methods": [method], "latency": "1000000h"
        }]));
        let mut child = python_on(&fx.at("data/f"), script);
        delayed_at_least(&fx, 1);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL");
        let status = exits_within(&mut child, Duration::from_secs(30));
        assert!(
            status.is_some(),
            "{method}: a SIGKILLed process is still held in the delay"
        );
    }
    fx.update(json!([]));
    assert_eq!(
        fs::read(fx.at("data/f")).expect("read after").len(),
        64 * 1024
    );
}

/// A signal that does not kill (a handler runs) leaves the delay in force, and the kernel
/// interrupts a request only once: a SIGKILL that comes after it must still end the delay.
fn a_handled_signal_leaves_the_delay_and_a_later_sigkill_still_ends_it() {
    let fx = Fixture::mount_with(data_file);
    fx.update(json!([{
        "type": "latency", "path": format!("{}/data/**", fx.path.display()),
        "methods": ["read"], "latency": "1000000h"
    }]));
    let script = "signal.signal(signal.SIGUSR1, lambda *_: None)\n\
                  fd = os.open(p, os.O_RDONLY)\n\
                  os.read(fd, 65536)";
    let mut child = python_on(&fx.at("data/f"), script);
    delayed_at_least(&fx, 1);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).expect("SIGUSR1");
    // Not a timing claim: the delay is a million hours; the read must simply not be done.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "a handled signal ended the delay"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let status = exits_within(&mut child, Duration::from_secs(30));
    assert!(
        status.is_some(),
        "a SIGKILL after a handled signal did not end the delay"
    );
}

/// Clears the rules when dropped, so that no delayed operation outlives a failing test.
struct ReleaseOnDrop<'a>(&'a Fixture);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.update(json!([]));
    }
}

/// Issue 23, bug 2: an update's cache invalidation (which locks the file's cached pages) ran
/// on the control thread and waited, in D state, for a page-cache read the rules delay;
/// holding the update lock, so not even a recovery could cut the delay short. Now the update
/// waits a bounded time, says what is left, and everything finishes once the delay ends.
fn a_cache_invalidation_held_by_a_delayed_read_does_not_wedge_updates() {
    use std::os::unix::fs::FileExt;
    // Cached: reads go through the page cache, each holding its page locked until answered.
    let opts = ServeOptions {
        fs: FsOptions {
            file_io: FileIo::Cached,
            ..FsOptions::default()
        },
        ..ServeOptions::default()
    };
    let fx = Fixture::mount_opts(data_file, opts);
    // Whatever fails below, the delayed read must be released before the filesystem stops:
    // a thread of this process left waiting on its own mount would keep it from exiting.
    let _release = ReleaseOnDrop(&fx);
    let file = File::open(fx.at("data/f")).expect("open");
    fx.update(json!([{
        "type": "latency", "path": format!("{}/data/**", fx.path.display()),
        "methods": ["read"], "latency": "1000000h"
    }]));
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        file.read_at(&mut buf, 0)
    });
    delayed_at_least(&fx, 1);
    // What the update hook does, while that read holds its page locked.
    let fs = fx.running().fs().clone();
    let invalidating = std::thread::spawn(move || fs.rules_changed());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !invalidating.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the invalidation holds the caller until the delayed read ends"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fx.running().fs().invalidations_waiting() > 0);
    // A recovery goes through at once and releases the read; the invalidation then ends.
    fx.update(json!([]));
    assert_eq!(reader.join().expect("reader").expect("read"), 4096);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fx.running().fs().invalidations_waiting() > 0 {
        assert!(Instant::now() < deadline, "the invalidation never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> std::process::ExitCode {
    common::run_tests(
        &[
            (
                "a_cache_invalidation_held_by_a_delayed_read_does_not_wedge_updates",
                a_cache_invalidation_held_by_a_delayed_read_does_not_wedge_updates,
            ),
            (
                "a_process_killed_in_an_injected_delay_dies_at_once",
                a_process_killed_in_an_injected_delay_dies_at_once,
            ),
            (
                "a_handled_signal_leaves_the_delay_and_a_later_sigkill_still_ends_it",
                a_handled_signal_leaves_the_delay_and_a_later_sigkill_still_ends_it,
            ),
            (
                "fault_rule_fails_reads_under_the_glob_until_removed",
                fault_rule_fails_reads_under_the_glob_until_removed,
            ),
            ("write_faults_hit_writes", write_faults_hit_writes),
            (
                "latency_delays_reads_and_nothing_else",
                latency_delays_reads_and_nothing_else,
            ),
            (
                "removing_a_latency_rule_cuts_sleeps_short",
                removing_a_latency_rule_cuts_sleeps_short,
            ),
            (
                "delayed_operations_do_not_hold_up_other_files",
                delayed_operations_do_not_hold_up_other_files,
            ),
            (
                "attr_override_shows_even_for_attributes_the_kernel_had_cached",
                attr_override_shows_even_for_attributes_the_kernel_had_cached,
            ),
            (
                "lookup_faults_reach_cached_entries",
                lookup_faults_reach_cached_entries,
            ),
            (
                "mistakes_corrupt_read_data_only",
                mistakes_corrupt_read_data_only,
            ),
            (
                "files_open_in_passthrough_are_reported_unreachable",
                files_open_in_passthrough_are_reported_unreachable,
            ),
        ],
        &[],
    )
}
