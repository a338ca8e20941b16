//! Shared fixture: a fault filesystem mounted over a fresh temporary directory in our own
//! mount namespace, with a handle on the original directory underneath.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use injector::control::{ControlContext, StatusReport};
use injector::fault_rules::RuleStore;
use injector::mount::{MountRequest, Target};
use injector::serve::{self, RunningFs, ServeOptions, Stopped};

pub mod injector_bin;
pub mod xattr;

/// Debian's python3 (scripts/setup.sh installs it): unprivileged children can run it too,
/// unlike a python under /root, and it starts quickly.
pub const PYTHON: &str = "/usr/bin/python3";

/// A root-only test that also needs something of the kernel: `needs` says why it cannot run
/// here (then it is reported *ignored*), or `None`.
pub type Conditional = (&'static str, fn(), fn() -> Option<&'static str>);

/// Runs a test binary's tests under libtest-mimic: `root` ones are reported *ignored* (and why)
/// when not root, `plain` ones always run. A panicking test fails, as under libtest.
pub fn run_tests(
    root: &[(&'static str, fn())],
    plain: &[(&'static str, fn())],
) -> std::process::ExitCode {
    run_tests_when(root, plain, &[])
}

/// [`run_tests`] plus root-only tests that also need a kernel feature.
pub fn run_tests_when(
    root: &[(&'static str, fn())],
    plain: &[(&'static str, fn())],
    conditional: &[Conditional],
) -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let is_root = nix::unistd::geteuid().is_root();
    let any_root_only = !root.is_empty() || !conditional.is_empty();
    if !is_root && any_root_only {
        eprintln!("not running as root: the tests that mount FUSE are ignored");
    }
    let trial = |name: &'static str, test: fn()| {
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
    };
    let conditional = conditional.iter().map(|&(name, test, needs)| {
        let missing = needs();
        if let (true, Some(reason)) = (is_root, missing) {
            eprintln!("{name} is ignored: {reason}");
        }
        trial(name, test).with_ignored_flag(!is_root || missing.is_some())
    });
    let trials = root
        .iter()
        .map(|&(name, test)| trial(name, test).with_ignored_flag(!is_root))
        .chain(conditional)
        .chain(plain.iter().map(|&(name, test)| trial(name, test)))
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Kernel FUSE passthrough came in Linux 6.9.
pub fn needs_fuse_passthrough() -> Option<&'static str> {
    let release = nix::sys::utsname::uname().ok()?;
    let release = release.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    ((major, minor) < (6, 9)).then_some("the kernel offers no FUSE passthrough (6.9+)")
}

/// FUSE over io_uring, with more than one CPU to spread queues over.
pub fn needs_fuse_io_uring_and_two_cpus() -> Option<&'static str> {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    if !io_uring_offered() || cpus.trim() == "0" {
        Some("FUSE over io_uring not offered, or one CPU")
    } else {
        None
    }
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    /// Where the fault filesystem is mounted (over the original).
    pub path: PathBuf,
    /// The original directory, opened before mounting (the hidden copy).
    original: File,
    pub rules: Arc<RuleStore>,
    pub control: ControlContext,
    running: Option<RunningFs>,
}

impl Fixture {
    /// Mount over a new temporary directory; `setup` fills the original first.
    pub fn mount_with(setup: impl FnOnce(&Path)) -> Fixture {
        Self::mount_opts(setup, ServeOptions::default())
    }

    pub fn mount() -> Fixture {
        Self::mount_with(|_| {})
    }

    pub fn mount_opts(setup: impl FnOnce(&Path), opts: ServeOptions) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("faultline-test-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().join("vol");
        std::fs::create_dir(&path).expect("mkdir vol");
        setup(&path);
        let original = File::open(&path).expect("open original");
        let rules = Arc::new(RuleStore::new(&path));
        let request = MountRequest {
            target: Target::Own,
            path: path.clone(),
        };
        let running = serve::start(&request, rules.clone(), opts).expect("mount");
        let control = ControlContext::new(rules.clone(), Arc::new(running.fs().clone()));
        Fixture {
            _dir: dir,
            path,
            original,
            rules,
            control,
            running: Some(running),
        }
    }

    /// A path through the mount.
    pub fn at(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The same path in the original directory, underneath the mount.
    pub fn orig(&self, rel: &str) -> PathBuf {
        // By PID, so that child processes (tools run by tests) can use it too.
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.original.as_raw_fd()
        ))
        .join(rel)
    }

    /// Replace the rules (JSON array of IOChaos actions), as the `update` RPC does.
    pub fn update(&self, actions: serde_json::Value) {
        self.control.update(&actions).expect("valid rules");
    }

    pub fn status(&self) -> StatusReport {
        self.control.status()
    }

    pub fn running(&self) -> &RunningFs {
        self.running.as_ref().expect("running")
    }

    /// Unmount (the temporary directory stays until the fixture is dropped).
    pub fn stop(&mut self) -> Stopped {
        self.running
            .take()
            .expect("running")
            .stop(Duration::from_secs(1))
            .expect("unmount")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop(Duration::from_secs(1));
        }
    }
}

/// Is `path` (or a parent) covered by a fuse.faultline mount in our namespace?
pub fn faultline_mounted_at(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    injector::mount::parse_mountinfo(&table)
        .iter()
        .any(|e| e.mount_point == path && e.fstype == injector::mount::FSTYPE)
}

/// Reading `file` shows a mount nobody serves: ENOTCONN, once the kernel has aborted the
/// connection. A read racing with the teardown of a dead server's io_uring queues may first
/// fail with ECONNABORTED or ECANCELED; those are retried (for up to 5 s).
pub fn assert_unserved(file: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let err = std::fs::read(file).expect_err("a dead mount");
        match err.raw_os_error() {
            Some(libc::ENOTCONN) => return,
            Some(libc::ECONNABORTED | libc::ECANCELED) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => panic!("{}: {err}", file.display()),
        }
    }
}

/// The kernel offers FUSE over io_uring (the `fuse` module's `enable_uring` is on).
pub fn io_uring_offered() -> bool {
    std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring")
        .is_ok_and(|v| v.trim() == "Y")
}
