//! The injector on its own, over a directory of a real CRI pod: the pod's own processes see
//! each kind of fault, rules change live without a remount, recovery leaves the data intact, and
//! a killed injector is cleaned up without leaving "Transport endpoint is not connected".

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use testbed::{Pod, PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{eventually, fault_mounts};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "injector::every_fault_kind_reaches_the_pod_and_recovery_keeps_its_data",
            every_fault_kind,
        ),
        (
            "injector::killed_injector_is_cleaned_up_without_enotconn",
            killed_then_cleanup,
        ),
        ("injector::bad_input_mounts_nothing", bad_input),
    ]
}

const CONTENT: &str = "0123456789abcdefghijklmnopqrstuvwxyz\n";

/// `faultline-injector mount --pid --path --stdio`, driven over its stdin/stdout.
struct Injector {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Injector {
    fn start(pod: &Pod, path: &str) -> anyhow::Result<Injector> {
        let mut child = Command::new(crate::binaries::path("faultline-injector")?)
            .args([
                "mount",
                "--pid",
                &pod.pid.to_string(),
                "--path",
                path,
                "--stdio",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut injector = Injector {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        let ready = eventually(Duration::from_secs(10), || {
            injector
                .call("get_status", json!({}))
                .is_ok_and(|s| s["ready"] == json!(true))
        });
        ensure!(ready, "the injector never became ready");
        Ok(injector)
    }

    fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("the injector closed its control channel");
            }
            let reply: Value = match serde_json::from_str(&line) {
                Ok(reply) => reply,
                Err(_) => continue, // not a JSON-RPC line (e.g. the readiness line)
            };
            if reply["id"] != json!(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                bail!("{method} refused: {error}");
            }
            return Ok(reply["result"].clone());
        }
    }

    fn update(&mut self, actions: Value) -> anyhow::Result<Value> {
        self.call("update", json!({ "actions": actions }))
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

fn pod_with_volume(tb: &Testbed, name: &str) -> anyhow::Result<(Pod, std::path::PathBuf)> {
    let dir = tb.host_dir(&format!("{name}-vol"))?;
    std::fs::write(dir.join("f"), CONTENT)?;
    let pod = tb.run_pod(PodSpec::new(name).volume(Volume::host_dir(&dir, "/data")))?;
    Ok((pod, dir))
}

fn every_fault_kind(tb: &Testbed) -> anyhow::Result<()> {
    let (pod, dir) = pod_with_volume(tb, "inj-kinds")?;
    let mut injector = Injector::start(&pod, "/data")?;
    let mounts = fault_mounts(pod.pid);
    ensure!(mounts.len() == 1, "fault mounts: {mounts:?}");
    ensure!(
        pod.exec_ok(&["cat", "/data/f"])? == CONTENT,
        "no rule, but the data differs"
    );

    // errno 5 on everything under /data.
    injector.update(json!([{"type": "fault", "path": "/data/**", "percent": 100, "faults": [{"errno": 5, "weight": 1}]}]))?;
    let out = pod.exec_sync(&["cat", "/data/f"])?;
    ensure!(
        out.exit_code != 0 && out.stderr.contains("Input/output error"),
        "fault: {out:?}"
    );

    // 50 ms on reads: the pod's read takes at least that long.
    injector.update(
        json!([{"type": "latency", "path": "/data/f", "methods": ["read"], "latency": "50ms"}]),
    )?;
    let started = Instant::now();
    ensure!(
        pod.exec_ok(&["cat", "/data/f"])? == CONTENT,
        "latency changed the data"
    );
    ensure!(
        started.elapsed() >= Duration::from_millis(50),
        "the read took {:?}",
        started.elapsed()
    );

    // Attribute override: the pod sees the overridden mode and size.
    injector.update(
        json!([{"type": "attrOverride", "path": "/data/f", "perm": 0o600, "size": 4096}]),
    )?;
    let stat = pod.exec_ok(&["stat", "-c", "%a %s", "/data/f"])?;
    ensure!(stat.trim() == "600 4096", "stat in the pod: {stat:?}");

    // Mistake: read data comes back corrupted (zero-filled), the file itself is untouched.
    injector.update(json!([{"type": "mistake", "path": "/data/f", "methods": ["read"], "mistake": {"filling": "zero", "maxOccurrences": 1, "maxLength": 8}}]))?;
    // The corrupted region sits at a random offset of each read: look at the whole read.
    let out = pod.exec_sync(&["sh", "-c", "cat /data/f | od -An -c"])?;
    ensure!(
        out.stdout.contains("\\0"),
        "no zero bytes in what the pod read: {out:?}"
    );
    ensure!(
        std::fs::read_to_string(dir.join("f"))? == CONTENT,
        "the mistake reached the file"
    );

    // The pod writes during the experiment; no rules: all normal, same mount.
    pod.exec_ok(&["sh", "-c", "echo written-during-the-experiment > /data/new"])?;
    injector.update(json!([]))?;
    ensure!(
        pod.exec_ok(&["cat", "/data/f"])? == CONTENT,
        "not normal after update([])"
    );
    ensure!(
        pod.exec_ok(&["stat", "-c", "%a", "/data/f"])?.trim() == "644",
        "attributes still overridden"
    );
    ensure!(
        fault_mounts(pod.pid) == mounts,
        "update([]) remounted: {:?}",
        fault_mounts(pod.pid)
    );

    injector.call("recover", json!({}))?;
    let status = injector.child.wait()?;
    ensure!(status.success(), "the injector exited with {status}");
    ensure!(
        fault_mounts(pod.pid).is_empty(),
        "mount left: {:?}",
        fault_mounts(pod.pid)
    );
    ensure!(
        std::fs::read_to_string(dir.join("new"))? == "written-during-the-experiment\n",
        "the pod's write is not in the volume"
    );
    ensure!(pod.exec_ok(&["cat", "/data/new"])? == "written-during-the-experiment\n");
    tb.remove_pod(&pod)?;
    Ok(())
}

fn killed_then_cleanup(tb: &Testbed) -> anyhow::Result<()> {
    let (pod, _dir) = pod_with_volume(tb, "inj-kill")?;
    let mut injector = Injector::start(&pod, "/data")?;
    injector.child.kill()?;
    injector.child.wait()?;
    let out = pod.exec_sync(&["cat", "/data/f"])?;
    // ENOTCONN; a read racing with the teardown of the dead injector's io_uring queues may
    // get ECONNABORTED or ECANCELED instead.
    ensure!(
        out.stderr.contains("Transport endpoint is not connected")
            || out.stderr.contains("Software caused connection abort")
            || out.stderr.contains("Operation canceled"),
        "with the injector dead the pod saw {out:?}"
    );

    let cleanup = Command::new(crate::binaries::path("faultline-injector")?)
        .args(["cleanup", "--pid", &pod.pid.to_string(), "--path", "/data"])
        .output()?;
    ensure!(
        cleanup.status.success(),
        "cleanup failed: {}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    ensure!(
        fault_mounts(pod.pid).is_empty(),
        "mount left: {:?}",
        fault_mounts(pod.pid)
    );
    ensure!(
        pod.exec_ok(&["cat", "/data/f"])? == CONTENT,
        "the pod does not see its directory again"
    );
    // Cleanup with nothing to clean is fine.
    let again = Command::new(crate::binaries::path("faultline-injector")?)
        .args(["cleanup", "--pid", &pod.pid.to_string(), "--path", "/data"])
        .output()?;
    ensure!(
        again.status.success(),
        "a second cleanup failed: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    tb.remove_pod(&pod)?;
    Ok(())
}

fn bad_input(tb: &Testbed) -> anyhow::Result<()> {
    let (pod, _dir) = pod_with_volume(tb, "inj-bad")?;
    let pid = pod.pid.to_string();
    let injector = crate::binaries::path("faultline-injector")?;
    for (args, says) in [
        (vec!["--path", "/nope"], "/nope"),
        (vec!["--path", "/data/../etc"], ".."),
        (vec!["--path", "/data", "--rules", "[{"], "rules"),
        (
            vec!["--path", "/data", "--rules", r#"[{"type":"explode"}]"#],
            "type",
        ),
        (
            vec![
                "--path",
                "/data",
                "--rules",
                r#"[{"type":"fault","percent":150,"faults":[{"errno":5}]}]"#,
            ],
            "percent",
        ),
        (
            vec![
                "--path",
                "/data",
                "--rules",
                r#"[{"type":"fault","faults":[{"errno":"x"}]}]"#,
            ],
            "errno",
        ),
    ] {
        let out = Command::new(&injector)
            .args(["mount", "--pid", &pid, "--stdio"])
            .args(&args)
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{args:?} was accepted");
        ensure!(
            stderr.contains(says),
            "{args:?}: the error does not name {says:?}: {stderr}"
        );
        ensure!(fault_mounts(pod.pid).is_empty(), "{args:?} left a mount");
    }
    // A symlink in the container resolves inside the container: /data/escape/apt is /etc/apt
    // on the host (it exists there) but not in the busybox image, so this must be refused.
    ensure!(
        std::path::Path::new("/etc/apt").is_dir(),
        "the host has no /etc/apt to escape to"
    );
    pod.exec_ok(&["ln", "-s", "/etc", "/data/escape"])?;
    let out = Command::new(&injector)
        .args([
            "mount",
            "--pid",
            &pid,
            "--stdio",
            "--path",
            "/data/escape/apt",
        ])
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        !out.status.success(),
        "followed a container symlink to a host directory"
    );
    ensure!(
        fault_mounts(pod.pid).is_empty(),
        "the escape attempt left a mount"
    );
    tb.remove_pod(&pod)?;
    Ok(())
}
