//! The `faultline-injector` binary as the agent drives it: mounting over a volume inside a
//! container's mount namespace (a chrooted busybox with a read-only root and a bind-mounted
//! volume, in its own mount namespace), JSON-RPC on an inherited socket, recovery, SIGKILL
//! followed by `cleanup`, and bad input refused with nothing left mounted.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_faultline-injector");

/// A process in its own mount namespace, chrooted into a read-only busybox root with a
/// writable volume bind-mounted at /vol (like a container with a Kubernetes volume).
struct Container {
    dir: tempfile::TempDir,
    child: Child,
}

impl Container {
    fn start() -> Container {
        assert!(
            Path::new("/bin/busybox").exists() && which("unshare").is_some(),
            "needs /bin/busybox (busybox-static) and unshare: scripts/setup.sh installs them"
        );
        let dir = tempfile::Builder::new()
            .prefix("faultline-ctr-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("root");
        let volume = dir.path().join("volume");
        for d in ["vol", "plain", "etc-like"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::create_dir_all(&volume).expect("mkdir volume");
        fs::copy("/bin/busybox", root.join("busybox")).expect("busybox");
        fs::write(root.join("plain/readme"), b"in the read-only root").expect("readme");
        fs::write(volume.join("f"), b"volume data").expect("f");
        // A symlink that would leave the root if resolved on the host.
        std::os::unix::fs::symlink("../../../../../../../../etc", root.join("escape"))
            .expect("symlink");
        let script = format!(
            "mount --bind {r} {r} && mount -o remount,bind,ro {r} && mount --bind {v} {r}/vol && exec chroot {r} /busybox sleep 3600",
            r = root.display(),
            v = volume.display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .spawn()
            .expect("unshare");
        let c = Container { dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_link(format!("/proc/{}/root", c.pid())).ok() != Some(root.clone()) {
            assert!(Instant::now() < deadline, "container did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        c
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A path as the container sees it, reachable from the host through /proc.
    fn at(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }

    fn volume(&self) -> PathBuf {
        self.dir.path().join("volume")
    }

    fn fault_mounts(&self) -> Vec<PathBuf> {
        fault_mounts_in(&format!("/proc/{}/mountinfo", self.pid()))
    }

    /// Does a fault mount show up in our (the host's) namespace, at /vol or in our files?
    fn visible_in_host_namespace(&self) -> bool {
        fault_mounts_in("/proc/self/mountinfo")
            .iter()
            .any(|p| p == Path::new("/vol") || p.starts_with(self.dir.path()))
    }

    /// The container's own view, via nsenter into its mount namespace and root.
    fn cat(&self, path: &str) -> std::process::Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid().to_string(),
                "-m",
                "-r",
                "/busybox",
                "cat",
                path,
            ])
            .output()
            .expect("nsenter")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.exists())
    })
}

fn fault_mounts_in(mountinfo: &str) -> Vec<PathBuf> {
    let table = fs::read_to_string(mountinfo).unwrap_or_default();
    injector::mount::parse_mountinfo(&table)
        .into_iter()
        .filter(|e| e.fstype == injector::mount::FSTYPE)
        .map(|e| e.mount_point)
        .collect()
}

/// The injector, controlled over a socket passed as its descriptor 0.
struct Injector {
    child: Child,
    rpc: BufReader<UnixStream>,
    next_id: u64,
}

impl Injector {
    fn spawn(args: &[&str]) -> Injector {
        Self::spawn_env(args, &[])
    }

    fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Injector {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let child = Command::new(BIN)
            .envs(env.iter().copied())
            .arg("mount")
            .args(args)
            .args(["--control-fd", "0"])
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn injector");
        Injector {
            child,
            rpc: BufReader::new(ours),
            next_id: 1,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        self.rpc.get_mut().write_all(line.as_bytes()).expect("send");
        let mut reply = String::new();
        self.rpc.read_line(&mut reply).expect("reply");
        serde_json::from_str(&reply).expect("JSON reply")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.call("get_status", json!({}));
            if status["result"]["ready"] == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "not ready: {status}");
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("injector exited before ready: {exit}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        wait_exit(&mut self.child, within)
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tree(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn faults_in_a_container_volume_live_and_recovered() {
    let ctr = Container::start();
    let pid = ctr.pid().to_string();
    let root_before = tree(&ctr.at("/"));
    let mut inj = Injector::spawn(&["--pid", &pid, "--path", "/vol"]);
    inj.wait_ready();

    assert_eq!(ctr.fault_mounts(), [PathBuf::from("/vol")]);
    assert!(
        !ctr.visible_in_host_namespace(),
        "leaked into the host namespace"
    );
    assert_eq!(
        tree(&ctr.at("/")),
        root_before,
        "nothing new in the container's tree"
    );
    let out = ctr.cat("/vol/f");
    assert_eq!(
        out.stdout,
        b"volume data",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let reply = inj.call(
        "update",
        json!({"actions": [{"type": "fault", "path": "/vol/**", "methods": ["read"], "percent": 100,
                            "faults": [{"errno": 5, "weight": 1}]}]}),
    );
    assert!(reply["error"].is_null(), "{reply}");
    let out = ctr.cat("/vol/f");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );

    let reply = inj.call(
        "update",
        json!({"actions": [{"type": "latency", "path": "/vol/f", "methods": ["read"], "latency": "50ms"}]}),
    );
    assert!(reply["error"].is_null(), "{reply}");
    let t = Instant::now();
    assert_eq!(fs::read(ctr.at("/vol/f")).expect("read"), b"volume data");
    assert!(t.elapsed() >= Duration::from_millis(50));

    inj.call("update", json!({"actions": []}));
    fs::write(ctr.at("/vol/written"), b"during the experiment").expect("write through the mount");
    assert_eq!(ctr.cat("/vol/f").stdout, b"volume data");

    let reply = inj.call("recover", json!({}));
    assert_eq!(reply["result"]["recovering"], json!(true), "{reply}");
    assert!(inj.wait_exit(Duration::from_secs(20)).success());
    assert!(ctr.fault_mounts().is_empty());
    assert_eq!(
        fs::read(ctr.volume().join("written")).expect("kept"),
        b"during the experiment"
    );
}

fn a_plain_directory_of_a_read_only_root_can_be_covered() {
    let ctr = Container::start();
    let pid = ctr.pid().to_string();
    let mut inj = Injector::spawn(&["--pid", &pid, "--path", "/plain"]);
    inj.wait_ready();
    assert_eq!(ctr.fault_mounts(), [PathBuf::from("/plain")]);
    assert_eq!(ctr.cat("/plain/readme").stdout, b"in the read-only root");
    let err = fs::write(ctr.at("/plain/new"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    inj.call("recover", json!({}));
    assert!(inj.wait_exit(Duration::from_secs(20)).success());
    assert!(ctr.fault_mounts().is_empty());
}

fn sigkill_then_cleanup_gives_the_original_back() {
    let ctr = Container::start();
    let pid = ctr.pid().to_string();
    let mut inj = Injector::spawn(&["--pid", &pid, "--path", "/vol"]);
    inj.wait_ready();
    inj.child.kill().expect("SIGKILL");
    inj.child.wait().expect("reap");

    common::assert_unserved(&ctr.at("/vol/f"));

    let out = Command::new(BIN)
        .args(["cleanup", "--pid", &pid, "--path", "/vol"])
        .output()
        .expect("cleanup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unmounted"));
    assert_eq!(
        fs::read(ctr.at("/vol/f")).expect("original again"),
        b"volume data"
    );
    assert!(ctr.fault_mounts().is_empty());

    // Again: nothing to do, still success.
    let out = Command::new(BIN)
        .args(["cleanup", "--pid", &pid, "--path", "/vol"])
        .output()
        .expect("cleanup");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no fault mount"));
}

fn cleanup_leaves_a_live_mount_alone_and_a_dead_container_ends_the_injector() {
    let mut ctr = Container::start();
    let pid = ctr.pid().to_string();
    let mut inj = Injector::spawn(&["--pid", &pid, "--path", "/vol"]);
    inj.wait_ready();
    let out = Command::new(BIN)
        .args(["cleanup", "--pid", &pid, "--path", "/vol"])
        .output()
        .expect("cleanup");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still served by a running injector"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(ctr.at("/vol/f")).expect("still served"),
        b"volume data"
    );
    // The container goes away: the injector notices and exits cleanly.
    ctr.child.kill().expect("kill container");
    ctr.child.wait().expect("reap container");
    assert!(inj.wait_exit(Duration::from_secs(10)).success());
}

fn refused(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("mount")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn bad_input_is_refused_and_nothing_is_mounted() {
    let ctr = Container::start();
    let pid = ctr.pid().to_string();
    let base = ["--pid", pid.as_str(), "--path", "/vol"];
    let with_rules = |rules: &str| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(["--rules", rules]);
        refused(&a)
    };
    let cases = [
        (with_rules("[{"), "not valid JSON"),
        (with_rules(r#"[{"type":"explode"}]"#), "type"),
        (
            with_rules(r#"[{"type":"latency","latency":"1ms","percent":150}]"#),
            "percent",
        ),
        (
            with_rules(r#"[{"type":"fault","faults":[{"errno":"EIO"}]}]"#),
            "errno",
        ),
        (
            refused(&["--pid", &pid, "--path", "/missing"]),
            "does not exist",
        ),
        (
            refused(&["--pid", &pid, "--path", "/vol/../../etc"]),
            "must not contain '..'",
        ),
        // The symlink resolves inside the container root, where there is no etc.
        (
            refused(&["--pid", &pid, "--path", "/escape"]),
            "does not exist",
        ),
        (
            refused(&["--pid", &pid, "--path", "/plain/readme"]),
            "not a directory",
        ),
        (
            refused(&["--pid", "999999999", "--path", "/vol"]),
            "does not exist",
        ),
    ];
    for (stderr, expected) in cases {
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
    }
    assert!(ctr.fault_mounts().is_empty());
    assert!(!ctr.visible_in_host_namespace());
}

fn own_namespace_with_stdio_control_and_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vol");
    fs::create_dir(&path).expect("mkdir");
    fs::write(path.join("f"), b"own").expect("f");
    let mut child = Command::new(BIN)
        .args(["mount", "--stdio", "--path"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get_status\"}\n")
            .expect("send");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reply");
        let v: Value = serde_json::from_str(&line).expect("json");
        if v["result"]["ready"] == json!(true) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(fault_mounts_in("/proc/self/mountinfo").contains(&path));
    assert_eq!(fs::read(path.join("f")).expect("read"), b"own");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(!fault_mounts_in("/proc/self/mountinfo").contains(&path));
}

/// FUSE over io_uring, once agreed at INIT, makes the kernel hold every request until each
/// CPU's queue has registered. A queue that cannot start (here: made to fail by the vendored
/// fuser's test hook) must not leave the mount hanging: the injector makes the kernel give
/// the transport up, serves from /dev/fuse, and says so in `get_status`.
fn a_queue_that_cannot_start_falls_back_to_dev_fuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("f"), b"original").expect("f");
    let path = dir.path().to_str().expect("utf-8 path");
    for (fail, io_uring) in [(false, true), (true, false)] {
        let env: &[(&str, &str)] = if fail {
            &[("FUSER_TEST_FAIL_QUEUE_1", "1")]
        } else {
            &[]
        };
        let mut inj = Injector::spawn_env(&["--path", path], env);
        inj.wait_ready();
        let status = inj.call("get_status", json!({}));
        assert_eq!(status["result"]["ioUring"], json!(io_uring), "{status}");
        // Every kind of request is answered: a hang here is the failure this guards against.
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let ok = (0..20).all(|i| {
                let p = root.join(format!("n{i}"));
                fs::write(&p, b"x").is_ok() && fs::remove_file(&p).is_ok()
            }) && fs::read(root.join("f")).is_ok_and(|d| d == b"original");
            let _ = tx.send(ok);
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(true));
        inj.call("recover", json!({}));
        assert!(inj.wait_exit(Duration::from_secs(20)).success());
    }
}

/// `faultline-injector standby`, its control channel on descriptor 0 and its ready line on a
/// pipe, as the agent keeps a spare.
fn spawn_standby() -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let child = Command::new(BIN)
        .args(["standby", "--control-fd", "0"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn standby injector");
    (child, ours)
}

fn a_standby_injector_mounts_what_its_first_line_assigns() {
    let ctr = Container::start();
    let (mut child, control) = spawn_standby();
    let comm = |pid: u32| fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while comm(child.id()).trim_end() != "faultline-spare" {
        assert!(
            Instant::now() < deadline,
            "a spare is named faultline-spare: {}",
            comm(child.id())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        ctr.fault_mounts().is_empty(),
        "nothing mounted before the assignment"
    );
    let assignment = json!({"pid": ctr.pid(), "path": "/vol", "actions": [
        {"type": "fault", "path": "/vol/f", "methods": ["read"], "percent": 100,
         "faults": [{"errno": 5, "weight": 1}]}]});
    (&control)
        .write_all(format!("{assignment}\n").as_bytes())
        .expect("assign");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("ready line");
    let ready: Value = serde_json::from_str(&ready).expect("JSON ready line");
    assert_eq!(ready["ready"], json!(true), "{ready}");
    assert_eq!(
        comm(child.id()).trim_end(),
        "faultline-injec",
        "assigned, it is an injector"
    );
    assert_eq!(ctr.fault_mounts(), [PathBuf::from("/vol")]);
    // It names its mount as the container's mount table does (the agent's handover uses it).
    let table = fs::read_to_string(format!("/proc/{}/mountinfo", ctr.pid())).expect("mountinfo");
    let line = table
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/vol") && l.contains(" - fuse.faultline "))
        .expect("the fault mount's line");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        ready["mount_id"].to_string(),
        fields[0],
        "{ready} against {line}"
    );
    assert_eq!(ready["dev"], json!(fields[2]), "{ready} against {line}");
    // The assigned rules are in force from the mount on.
    let out = ctr.cat("/vol/f");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
    // From here on it is an injector like any other, on the same channel.
    let mut inj = Injector {
        child,
        rpc: BufReader::new(control),
        next_id: 1,
    };
    inj.call("update", json!({"actions": []}));
    assert_eq!(ctr.cat("/vol/f").stdout, b"volume data");
    inj.call("recover", json!({}));
    assert!(inj.wait_exit(Duration::from_secs(20)).success());
    assert!(ctr.fault_mounts().is_empty());
}

fn a_standby_injector_ends_with_its_channel_and_refuses_a_bad_assignment() {
    let ctr = Container::start();
    // The agent went before assigning anything: it ends, cleanly.
    let (mut child, control) = spawn_standby();
    drop(control);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    for (assignment, says) in [
        (
            json!({"pid": ctr.pid(), "path": "/vol"}),
            "unreadable assignment",
        ),
        (
            json!({"pid": ctr.pid(), "path": "vol", "actions": []}),
            "vol",
        ),
        (
            json!({"pid": ctr.pid(), "path": "/vol", "actions": [{"type": "fault"}]}),
            "invalid rules",
        ),
    ] {
        let (mut child, control) = spawn_standby();
        (&control)
            .write_all(format!("{assignment}\n").as_bytes())
            .expect("assign");
        let status = wait_exit(&mut child, Duration::from_secs(10));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        assert!(!status.success(), "{assignment} was taken");
        assert!(stderr.contains(says), "{assignment}: {stderr}");
        assert!(ctr.fault_mounts().is_empty(), "{assignment} left a mount");
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the injector did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() -> std::process::ExitCode {
    common::run_tests_when(
        &[
            (
                "faults_in_a_container_volume_live_and_recovered",
                faults_in_a_container_volume_live_and_recovered,
            ),
            (
                "a_plain_directory_of_a_read_only_root_can_be_covered",
                a_plain_directory_of_a_read_only_root_can_be_covered,
            ),
            (
                "sigkill_then_cleanup_gives_the_original_back",
                sigkill_then_cleanup_gives_the_original_back,
            ),
            (
                "cleanup_leaves_a_live_mount_alone_and_a_dead_container_ends_the_injector",
                cleanup_leaves_a_live_mount_alone_and_a_dead_container_ends_the_injector,
            ),
            (
                "bad_input_is_refused_and_nothing_is_mounted",
                bad_input_is_refused_and_nothing_is_mounted,
            ),
            (
                "own_namespace_with_stdio_control_and_sigterm",
                own_namespace_with_stdio_control_and_sigterm,
            ),
            (
                "a_standby_injector_mounts_what_its_first_line_assigns",
                a_standby_injector_mounts_what_its_first_line_assigns,
            ),
            (
                "a_standby_injector_ends_with_its_channel_and_refuses_a_bad_assignment",
                a_standby_injector_ends_with_its_channel_and_refuses_a_bad_assignment,
            ),
        ],
        &[],
        &[(
            "a_queue_that_cannot_start_falls_back_to_dev_fuse",
            a_queue_that_cannot_start_falls_back_to_dev_fuse,
            common::needs_fuse_io_uring_and_two_cpus,
        )],
    )
}
