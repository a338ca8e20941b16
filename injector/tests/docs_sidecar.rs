//! docs/sidecar.md's chaosfs example, run as written: the sidecar's command line from the
//! template (only the binary's path differs) and the `curl -d` calls of "Sidecar injector"
//! (only `POD_IP` is replaced, by 127.0.0.1), read from the document at test time, so that
//! an edit that breaks them fails here. It runs in a private mount and network namespace,
//! as a pod's sidecar would: `/var/lib` and `/tmp` are fresh tmpfs there (the document's
//! paths, `/var/lib/tikv/...` and `/tmp/fuse/pid`, touch nothing on the host), port 65533 is
//! the namespace's own. An application process opens the data file before any rule.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::PYTHON;
use common::injector_bin::BIN;
use serde_json::Value;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sidecar.md");

/// The text of the first fenced block of `lang` after `heading`.
fn block_after<'a>(doc: &'a str, heading: &str, lang: &str) -> &'a str {
    let from = doc
        .find(heading)
        .unwrap_or_else(|| panic!("{heading:?} is not in {DOC}"));
    let fence = format!("```{lang}\n");
    let start = doc[from..]
        .find(&fence)
        .map(|i| from + i + fence.len())
        .unwrap_or_else(|| panic!("no {lang} block after {heading:?}"));
    let end = doc[start..].find("```").expect("closing fence") + start;
    &doc[start..end]
}

/// The sidecar's command from the template's YAML (`- arg  # comment` lines).
fn documented_command(doc: &str) -> Vec<String> {
    block_after(doc, "## Sidecar injector", "yaml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|arg| arg.split(" #").next().unwrap_or(arg).trim().to_owned())
        .collect()
}

/// The `curl` commands of the example, each with its continuation lines.
fn documented_calls(doc: &str) -> Vec<String> {
    let block = block_after(doc, "Rule\n   paths are container paths", "sh");
    let mut calls: Vec<String> = Vec::new();
    for line in block.lines() {
        let line = line.strip_prefix("   ").unwrap_or(line);
        if line.starts_with("curl ") {
            calls.push(String::new());
        }
        let call = calls.last_mut().expect("the block starts with curl");
        call.push_str(line);
        call.push('\n');
    }
    calls
}

/// The application: opened its file before any rule; reads it from the start on request.
struct App {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl App {
    fn open(ns_pid: u32, file: &str) -> App {
        let script = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print("open", flush=True)
for _ in sys.stdin:
    try:
        print(os.pread(fd, 100, 0).decode().strip(), flush=True)
    except OSError as e:
        print("errno %d" % e.errno, flush=True)
"#;
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &ns_pid.to_string(),
                "-m",
                "--",
                PYTHON,
                "-c",
                script,
                file,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("nsenter python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("app");
        assert_eq!(line.trim(), "open");
        App {
            child,
            stdin,
            stdout,
        }
    }

    fn read(&mut self) -> String {
        writeln!(self.stdin).expect("to app");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("from app");
        line.trim().to_owned()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sidecar in its own mount and network namespace (killed, with the namespace, on drop).
struct Pod(Child);

impl Drop for Pod {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Pod {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// A documented call, from the pod's network namespace (the node's view of POD_IP).
    fn curl(&self, call: &str) -> Value {
        let call = call.replace("POD_IP", "127.0.0.1");
        let out = Command::new("nsenter")
            .args(["-t", &self.pid(), "-n", "--", "sh", "-c", &call])
            .output()
            .expect("nsenter sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{call}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{call}: {e}: {text}"));
        assert!(answer["error"].is_null(), "{call}: {answer}");
        answer["result"].clone()
    }

    /// `cat FILE` in the pod's mount namespace: its output, or its error.
    fn cat(&self, file: &str) -> Result<String, String> {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid(), "-m", "--", "cat", file])
            .output()
            .expect("nsenter cat");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

fn the_documented_sidecar_and_curl_calls_work_as_written() {
    for tool in ["unshare", "nsenter", "ip", "curl"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is missing (util-linux, iproute2, curl)"
        );
    }
    let doc = std::fs::read_to_string(DOC).expect("docs/sidecar.md");
    let command = documented_command(&doc);
    assert_eq!(
        command.first().map(String::as_str),
        Some("/usr/local/bin/faultline-injector"),
        "{command:?}"
    );
    let calls = documented_calls(&doc);
    assert_eq!(calls.len(), 3, "{calls:?}");

    // The pod: its data volume prepared as init.sh leaves it, then the sidecar, as documented.
    // The injector is held open (fd 9) before the tmpfs mounts: the checkout, and with it the
    // binary's path, may itself lie under /tmp or /var/lib (CI clones into a temporary folder),
    // and the magic link /proc/self/fd/9 reaches the file whatever now covers its path.
    let prepare = "exec 9<\"$1\" && shift && ip link set lo up && mount -t tmpfs tmpfs /var/lib \
                   && mount -t tmpfs tmpfs /tmp \
                   && mkdir -p /var/lib/tikv/data /var/lib/tikv/fuse-data /tmp/fuse \
                   && echo 'the data' > /var/lib/tikv/fuse-data/f && exec /proc/self/fd/9 \"$@\"";
    let mut pod = Pod(Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "--"])
        .args(["sh", "-c", prepare, "sh", BIN])
        .args(&command[1..])
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare"));
    let mut ready = String::new();
    BufReader::new(pod.0.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("ready line");
    let ready: Value = serde_json::from_str(&ready).expect("ready JSON");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["listen"], "0.0.0.0:65533", "{ready}");
    assert_eq!(
        pod.cat("/tmp/fuse/pid"),
        Ok(pod.pid()),
        "the documented pidfile"
    );

    let mut app = App::open(pod.0.id(), "/var/lib/tikv/data/f");
    assert_eq!(app.read(), "the data");

    let updated = pod.curl(&calls[0]);
    assert_eq!(updated["ruleCount"], 1, "{updated}");
    assert_eq!(app.read(), "errno 5", "the file open since before the rule");
    let err = pod.cat("/var/lib/tikv/data/f").expect_err("EIO");
    assert!(err.contains("Input/output error"), "{err}");

    let status = pod.curl(&calls[1]);
    assert_eq!(status["fileIo"], "reachable", "{status}");
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");
    assert!(
        status["rules"][0]["injected"].as_u64() >= Some(2),
        "{status}"
    );

    let cleared = pod.curl(&calls[2]);
    assert_eq!(cleared["ruleCount"], 0, "{cleared}");
    assert_eq!(app.read(), "the data");
    assert_eq!(pod.cat("/var/lib/tikv/data/f").as_deref(), Ok("the data"));
    drop(app);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pod.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let exit = pod.0.wait().expect("wait");
    assert!(exit.success(), "{exit}");
}

fn main() -> std::process::ExitCode {
    common::run_tests(
        &[(
            "the_documented_sidecar_and_curl_calls_work_as_written",
            the_documented_sidecar_and_curl_calls_work_as_written,
        )],
        &[],
    )
}
