//! The `faultline-injector` binary as the chaosfs sidecar of a pod: started with chaosfs's
//! Go-style command line, it serves `-original` over `-mountpoint`, writes the pidfile only
//! once the mount is in place, takes fault rules as JSON-RPC over HTTP on `-addr`, and on
//! SIGTERM unmounts, removes the pidfile and exits 0. (In a pod it mounts in its own mount
//! namespace; here that namespace is the test's.)

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_faultline-injector");

/// A JSON-RPC call in an HTTP/1.1 POST, as `curl -d` sends it.
fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut stream = TcpStream::connect(addr).expect("connect to -addr");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).expect("JSON-RPC reply")
}

fn fault_mounted(path: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.contains(" fuse.faultline ") && l.split(' ').nth(4) == path.to_str())
}

struct Sidecar(Child);

/// Spawns the sidecar with chaosfs's command line and waits for its ready line; the bound
/// `-addr`.
fn start(dir: &Path) -> (Sidecar, SocketAddr) {
    let arg = |flag: &str, path: &str| format!("-{flag}={}", dir.join(path).display());
    let mut sidecar = Sidecar(
        Command::new(BIN)
            .arg("-addr=127.0.0.1:0")
            .arg(arg("pidfile", "fuse/pid"))
            .arg(arg("original", "fuse-data"))
            .arg(arg("mountpoint", "data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn"),
    );
    let mut stdout = BufReader::new(sidecar.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    let ready: Value = serde_json::from_str(&line).expect("ready JSON");
    assert_eq!(ready["ready"], json!(true), "{ready}");
    let addr = ready["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {ready}"));
    (sidecar, addr)
}

/// Lazily detaches every fault mount under a directory when dropped (a failed test must not
/// leave a dead mount behind).
struct Unmounter(std::path::PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        for _ in 0..8 {
            if !fault_mounted(&self.0) {
                return;
            }
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn chaosfs_command_line_serves_the_original_with_http_rules_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let original = dir.path().join("fuse-data");
    let pidfile = dir.path().join("fuse/pid");
    fs::create_dir(&data).expect("mkdir data");
    fs::create_dir(&original).expect("mkdir original");
    fs::write(original.join("f"), b"kept").expect("f");
    let _unmounter = Unmounter(data.clone());

    let arg = |flag: &str, path: &Path| format!("-{flag}={}", path.display());
    let mut sidecar = Sidecar(
        Command::new(BIN)
            .arg("-addr=127.0.0.1:0")
            .arg(arg("pidfile", &pidfile))
            .arg(arg("original", &original))
            .arg(arg("mountpoint", &data))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn"),
    );
    let mut stdout = BufReader::new(sidecar.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    let ready: Value = serde_json::from_str(&line).expect("ready JSON");
    assert_eq!(ready["ready"], json!(true), "{ready}");
    let addr: SocketAddr = ready["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {ready}"));

    // Ready means mounted, and only then is the pidfile there.
    assert!(fault_mounted(&data));
    assert_eq!(
        fs::read_to_string(&pidfile).expect("pidfile"),
        format!("{}\n", sidecar.0.id())
    );
    // The original's content, through the mount point; writes land in the original.
    assert_eq!(fs::read(data.join("f")).expect("read"), b"kept");
    fs::write(data.join("g"), b"new").expect("write");
    assert_eq!(fs::read(original.join("g")).expect("in original"), b"new");

    let update = rpc(
        addr,
        "update",
        json!({"actions": [{"type": "fault", "path": format!("{}/**", data.display()),
            "methods": ["READ", "OPEN"], "percent": 100, "faults": [{"errno": 5, "weight": 1}]}]}),
    );
    assert_eq!(update["result"]["ruleCount"], json!(1), "{update}");
    let err = fs::read(data.join("f")).expect_err("the rule fails reads");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let status = rpc(addr, "get_status", json!({}));
    assert_eq!(status["result"]["ready"], json!(true), "{status}");
    assert_eq!(
        rpc(addr, "update", json!({"actions": []}))["result"]["ruleCount"],
        json!(0)
    );
    assert_eq!(fs::read(data.join("f")).expect("read again"), b"kept");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = sidecar.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(!fault_mounted(&data));
    assert!(!pidfile.exists(), "the pidfile outlived the mount");
    // The data directory is the empty mount point again; the data stayed in the original.
    assert_eq!(fs::read_dir(&data).expect("list").count(), 0);
    assert_eq!(fs::read(original.join("f")).expect("kept"), b"kept");
}

fn chaosfs_flags_are_checked_before_anything_is_mounted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mountpoint = format!("-mountpoint={}", dir.path().display());
    let err = run(&["-addr=65534", "-original=/nonexistent", &mountpoint]);
    assert!(err.contains("-addr \"65534\""), "{err}");
    let err = run(&["-addr=127.0.0.1:0", &mountpoint]);
    assert!(err.contains("--original"), "{err}");
}

fn a_missing_original_is_refused_before_anything_is_mounted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mountpoint = format!("-mountpoint={}", dir.path().display());
    let pidfile = dir.path().join("pid");
    let out = Command::new(BIN)
        .args([
            "-addr=127.0.0.1:0",
            "-original=/nonexistent-faultline-original",
            &mountpoint,
            &format!("-pidfile={}", pidfile.display()),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success(), "a missing original was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nonexistent-faultline-original"), "{err}");
    assert!(!pidfile.exists());
    assert!(!fault_mounted(dir.path()));
}

fn killed_outright_then_restarted_it_clears_its_dead_mount_and_stale_pidfile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let pidfile = dir.path().join("fuse/pid");
    fs::create_dir(&data).expect("mkdir data");
    fs::create_dir(dir.path().join("fuse-data")).expect("mkdir original");
    fs::write(dir.path().join("fuse-data/f"), b"kept").expect("f");
    let _unmounter = Unmounter(data.clone());

    let (mut first, _) = start(dir.path());
    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("reaped");
    // What a SIGKILL leaves: a pidfile, and a mount nobody serves.
    assert!(pidfile.exists());
    assert!(fault_mounted(&data));
    common::assert_unserved(&data.join("f"));

    let (mut second, addr) = start(dir.path());
    assert_eq!(
        fs::read_to_string(&pidfile).expect("pidfile"),
        format!("{}\n", second.0.id())
    );
    assert_eq!(fs::read(data.join("f")).expect("served again"), b"kept");
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let ours = mounts
        .lines()
        .filter(|l| l.contains(" fuse.faultline ") && l.split(' ').nth(4) == data.to_str())
        .count();
    assert_eq!(ours, 1, "stacked mounts:\n{mounts}");
    assert_eq!(
        rpc(addr, "get_status", json!({}))["result"]["ready"],
        json!(true)
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert!(!fault_mounted(&data));
    assert!(!pidfile.exists());
}

fn main() -> std::process::ExitCode {
    common::run_tests(
        &[
            (
                "a_missing_original_is_refused_before_anything_is_mounted",
                a_missing_original_is_refused_before_anything_is_mounted,
            ),
            (
                "chaosfs_command_line_serves_the_original_with_http_rules_and_stops_on_sigterm",
                chaosfs_command_line_serves_the_original_with_http_rules_and_stops_on_sigterm,
            ),
            (
                "killed_outright_then_restarted_it_clears_its_dead_mount_and_stale_pidfile",
                killed_outright_then_restarted_it_clears_its_dead_mount_and_stale_pidfile,
            ),
        ],
        &[(
            "chaosfs_flags_are_checked_before_anything_is_mounted",
            chaosfs_flags_are_checked_before_anything_is_mounted,
        )],
    )
}
