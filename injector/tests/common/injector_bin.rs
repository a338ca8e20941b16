//! The `faultline-injector` binary driven as its users drive it: the chaosfs sidecar (rules
//! over HTTP, sent as `curl -d` sends them) and agent mode (`mount --pid`, JSON-RPC lines on
//! an inherited socket). Both stop and unmount whatever happens to the test.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_faultline-injector");

/// A control channel to a running injector.
pub trait Control {
    /// A JSON-RPC call; the `result` (panics on an error answer).
    fn call(&mut self, method: &str, params: Value) -> Value;

    /// `update` with an array of IOChaos actions.
    fn update(&mut self, actions: Value) -> Value {
        self.call("update", json!({ "actions": actions }))
    }

    fn status(&mut self) -> Value {
        self.call("get_status", json!({}))
    }
}

pub fn lazy_unmount(path: &Path) {
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" fuse.faultline ") && l.split(' ').nth(4) == path.to_str());
    if mounted {
        let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The chaosfs sidecar: `-original=DIR/fuse-data` served over `-mountpoint=DIR/data`.
pub struct Sidecar {
    pub child: Child,
    pub addr: SocketAddr,
    pub mountpoint: PathBuf,
    /// The ready line said kernel passthrough is in use.
    pub passthrough: bool,
}

impl Sidecar {
    /// chaosfs's command line (no rules), plus `extra` flags.
    pub fn start(dir: &Path, extra: &[&str]) -> Sidecar {
        let arg = |flag: &str, path: &str| format!("-{flag}={}", dir.join(path).display());
        let mut child = Command::new(BIN)
            .arg("-addr=127.0.0.1:0")
            .arg(arg("pidfile", "pid"))
            .arg(arg("original", "fuse-data"))
            .arg(arg("mountpoint", "data"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sidecar");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let ready: Value = serde_json::from_str(&line).expect("ready JSON");
        let addr = ready["listen"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not ready: {ready}"));
        Sidecar {
            child,
            addr,
            mountpoint: dir.join("data"),
            passthrough: ready["passthrough"] == json!(true),
        }
    }

    /// A JSON-RPC call as `curl -d` sends it: no `Content-Type: application/json`.
    pub fn call(&self, method: &str, params: Value) -> Value {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("reply");
        let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        let reply: Value = serde_json::from_str(body).expect("JSON-RPC reply");
        assert!(reply["error"].is_null(), "{method}: {reply}");
        reply["result"].clone()
    }

    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status}");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        lazy_unmount(&self.mountpoint);
    }
}

impl Control for Sidecar {
    fn call(&mut self, method: &str, params: Value) -> Value {
        Sidecar::call(self, method, params)
    }
}

/// The injector as the agent drives it: `mount --pid PID --path VOLUME` with the experiment's
/// rules, JSON-RPC lines on an inherited socket.
pub struct AgentInjector {
    child: Child,
    rpc: BufReader<UnixStream>,
    target: Child,
    volume: PathBuf,
}

impl AgentInjector {
    pub fn start(volume: &Path, rules: &Value) -> AgentInjector {
        // The "container": a process in our mount namespace, as the agent's --pid names one.
        let target = Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn target");
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let child = Command::new(BIN)
            .arg("mount")
            .args(["--pid", &target.id().to_string()])
            .arg("--path")
            .arg(volume)
            .args(["--rules", &rules.to_string(), "--control-fd", "0"])
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn injector");
        let mut injector = AgentInjector {
            child,
            rpc: BufReader::new(ours),
            target,
            volume: volume.to_owned(),
        };
        for _ in 0..2000 {
            if injector.call("get_status", json!({}))["ready"] == json!(true) {
                return injector;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the injector did not get ready");
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let mut line =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        line.push('\n');
        self.rpc.get_mut().write_all(line.as_bytes()).expect("send");
        let mut reply = String::new();
        self.rpc.read_line(&mut reply).expect("reply");
        let reply: Value = serde_json::from_str(&reply).expect("JSON reply");
        assert!(reply["error"].is_null(), "{method}: {reply}");
        reply["result"].clone()
    }
}

impl Drop for AgentInjector {
    fn drop(&mut self) {
        let _ = self.call("recover", json!({}));
        let _ = self.child.wait();
        let _ = self.target.kill();
        let _ = self.target.wait();
        lazy_unmount(&self.volume);
    }
}

impl Control for AgentInjector {
    fn call(&mut self, method: &str, params: Value) -> Value {
        AgentInjector::call(self, method, params)
    }
}
