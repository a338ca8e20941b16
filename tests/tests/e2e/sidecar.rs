//! The template sidecar mode, as a pod the mutating webhook patched runs it: the chaosfs
//! sidecar (`faultline-injector` with chaosfs's command line) over a TiKV-like data
//! directory, prepared by `init.sh` and waited for with `wait-fuse.sh`; and the per-pod
//! latency agent (`faultline-agent sidecar`) delaying everything a pod sends.
//!
//! The containers run the workspace's binaries from the busybox image: the binaries, and the
//! host's glibc (and, for the latency agent, iptables) are bind-mounted read-only, as an
//! image would hold them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use testbed::{ContainerSpec, Pod, PodSpec, Propagation, Testbed, Volume};

use crate::Story;
use crate::agent_support::eventually;

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "sidecar::chaosfs_pod_gets_eio_from_a_rule_on_addr_keeps_its_data_and_survives_sigkill",
            chaosfs_pod,
        ),
        (
            "sidecar::latency_agent_delays_the_pod_replaces_and_removes_the_delay",
            latency_agent,
        ),
    ]
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

/// The host's C library where the dynamic loader of a Debian binary looks for it.
fn glibc() -> Vec<Volume> {
    let triplet = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    let mut volumes = vec![
        Volume::host_dir(&triplet, triplet.replacen("/usr", "", 1)).readonly(),
        Volume::host_dir(&triplet, &triplet).readonly(),
    ];
    if Path::new("/usr/lib64").is_dir() {
        volumes.push(Volume::host_dir("/usr/lib64", "/lib64").readonly());
    }
    volumes
}

fn binary(name: &str) -> anyhow::Result<Volume> {
    Ok(Volume::host_dir(
        crate::binaries::path(name)?,
        format!("/usr/local/bin/{name}"),
    )
    .readonly())
}

/// What the image ships in /scripts.
fn scripts() -> Volume {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../injector/scripts");
    Volume::host_dir(dir, "/scripts").readonly()
}

/// One HTTP/1.1 request from the host, `Connection: close`; the status code and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").context("no HTTP header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line: {head}"))?;
    Ok((status, body.to_owned()))
}

fn pod_addr(pod: &Pod, port: u16) -> anyhow::Result<SocketAddr> {
    let ip = pod.ipv4().context("the pod has no IPv4 address")?;
    Ok(SocketAddr::from((ip, port)))
}

/// Stops a sidecar as kubelet does (SIGTERM to its PID 1) and waits until it exited.
fn stop_sidecar(pod: &Pod, name: &str) -> anyhow::Result<i32> {
    let out = pod.exec_in(name, &["kill", "-TERM", "1"], EXEC_TIMEOUT)?;
    ensure!(out.success(), "kill in {name}: {}", out.stderr);
    let mut exit = None;
    let stopped = eventually(Duration::from_secs(30), || {
        matches!(pod.sidecar_state(name), Ok((state, code)) if state == "CONTAINER_EXITED" && {
            exit = Some(code);
            true
        })
    });
    ensure!(
        stopped,
        "{name} did not stop on SIGTERM; its log:\n{}",
        pod.log(name)
    );
    Ok(exit.unwrap_or(-1))
}

fn faultline_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains(" fuse.faultline ")
                && l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir))
        })
        .map(str::to_owned)
        .collect()
}

const DATA: &str = "/var/lib/tikv/data";

/// The pod of the reference tikv template with arguments tikv, /var/lib/tikv/data,
/// /var/lib/tikv, tikv, as the webhook patches it: `inject-scripts` runs init.sh, the app's
/// command is wrapped to run wait-fuse.sh first, chaosfs mounts over the data directory
/// with Bidirectional propagation. The emptyDirs are host directories here, and the
/// template's volumeMounts reach the injected containers too (chaosfs writes its pidfile
/// into the shared `fuse` directory, init.sh copies the scripts into `scripts`).
fn chaosfs_pod(tb: &Testbed) -> anyhow::Result<()> {
    let tikv = tb.host_dir("tikv")?;
    let scripts_dir = tb.host_dir("scripts")?;
    let fuse_dir = tb.host_dir("fuse")?;
    // Data the application had before the sidecar was injected.
    std::fs::create_dir(tikv.join("data"))?;
    std::fs::write(tikv.join("data/existing"), "written before injection\n")?;

    let template_mounts = |c: ContainerSpec, tikv_propagation| {
        c.volume(Volume::host_dir(&tikv, "/var/lib/tikv").propagation(tikv_propagation))
            .volume(Volume::host_dir(&scripts_dir, "/tmp/scripts"))
            .volume(Volume::host_dir(&fuse_dir, "/tmp/fuse"))
    };
    let init = template_mounts(
        ContainerSpec::new("inject-scripts")
            .command([
                "sh",
                "-c",
                "/scripts/init.sh -d /var/lib/tikv/data -f /var/lib/tikv/fuse-data",
            ])
            .volume(scripts()),
        Propagation::HostToContainer,
    );
    let mut chaosfs = template_mounts(
        ContainerSpec::new("chaosfs")
            .command([
                "/usr/local/bin/faultline-injector",
                "-addr=:65533",
                "-pidfile=/tmp/fuse/pid",
                "-original=/var/lib/tikv/fuse-data",
                "-mountpoint=/var/lib/tikv/data",
            ])
            .privileged()
            .volume(binary("faultline-injector")?),
        Propagation::Bidirectional,
    );
    for v in glibc() {
        chaosfs = chaosfs.volume(v);
    }
    // The application: writes a file and copies the old data, then runs.
    let app_command = format!(
        "echo started > {DATA}/app.log && cat {DATA}/existing > {DATA}/copy && exec sleep 2147483647"
    );
    let spec = PodSpec::new("tikv")
        .container_name("tikv")
        .label("app.kubernetes.io/component", "tikv")
        .command([
            "/bin/sh",
            "-c",
            "'/tmp/scripts/wait-fuse.sh' && exec \"$@\"",
            "faultline-poststart",
            "/bin/sh",
            "-c",
            &app_command,
        ])
        .volume(Volume::host_dir(&tikv, "/var/lib/tikv").propagation(Propagation::HostToContainer))
        .volume(Volume::host_dir(&scripts_dir, "/tmp/scripts"))
        .volume(Volume::host_dir(&fuse_dir, "/tmp/fuse"))
        .init_container(init)
        .sidecar(chaosfs);
    let mut pod = tb.run_pod(spec)?;
    let result = chaosfs_story(tb, &mut pod, &tikv, &fuse_dir);
    let cleanup = if pod
        .sidecar_state("chaosfs")
        .is_ok_and(|(s, _)| s == "CONTAINER_RUNNING")
    {
        stop_sidecar(&pod, "chaosfs").map(drop)
    } else {
        Ok(())
    };
    tb.remove_pod(&pod)?;
    result.and(cleanup)?;
    ensure!(
        faultline_mounts_under(&tikv).is_empty(),
        "fault mounts left: {:?}",
        faultline_mounts_under(&tikv)
    );
    Ok(())
}

fn chaosfs_story(tb: &Testbed, pod: &mut Pod, tikv: &Path, fuse_dir: &Path) -> anyhow::Result<()> {
    let app = |cmd: &str| pod.exec_sync_timeout(&["sh", "-c", cmd], EXEC_TIMEOUT);
    // The application ran its command only after wait-fuse.sh saw the pidfile, and what it
    // wrote went through the mount into the original directory.
    let started = eventually(Duration::from_secs(60), || {
        app(&format!("cat {DATA}/copy"))
            .is_ok_and(|o| o.success() && o.stdout == "written before injection\n")
    });
    ensure!(
        started,
        "the application never got past wait-fuse.sh; its log:\n{}\nchaosfs:\n{}",
        pod.log("tikv"),
        pod.log("chaosfs")
    );
    ensure!(
        pod.log("tikv").contains("wait-fuse.sh: fuse server ready"),
        "{}",
        pod.log("tikv")
    );
    let mounts = app("cat /proc/self/mountinfo")?.stdout;
    ensure!(
        mounts
            .lines()
            .any(|l| l.contains(" /var/lib/tikv/data ") && l.contains("fuse.faultline")),
        "the application does not see the fault mount over its data directory:\n{mounts}"
    );
    let pid = std::fs::read_to_string(fuse_dir.join("pid"))?;
    ensure!(pid.trim().parse::<u32>().is_ok(), "pidfile: {pid:?}");
    ensure!(std::fs::read_to_string(tikv.join("fuse-data/app.log"))? == "started\n");
    ensure!(
        tikv.join("fuse-data/existing").is_file(),
        "init.sh did not move the data"
    );
    ensure!(app(&format!("echo before-fault > {DATA}/journal"))?.success());

    // A fault rule through the sidecar's -addr, from outside the pod.
    let addr = pod_addr(pod, 65533)?;
    let rpc = |method: &str, params: Value| -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (status, reply) = http(addr, "POST", "/", Some(&body))?;
        ensure!(status == 200, "{method}: HTTP {status}: {reply}");
        let reply: Value = serde_json::from_str(&reply)?;
        if let Some(error) = reply.get("error") {
            bail!("{method} refused: {error}");
        }
        Ok(reply["result"].clone())
    };
    let ready = eventually(Duration::from_secs(10), || {
        rpc("get_status", json!({})).is_ok_and(|s| s["ready"] == json!(true))
    });
    ensure!(ready, "chaosfs never answered get_status ready on {addr}");
    let update = rpc(
        "update",
        json!({"actions": [{"type": "fault", "path": format!("{DATA}/**"), "percent": 100,
            "faults": [{"errno": 5, "weight": 1}]}]}),
    )?;
    ensure!(update["ruleCount"] == json!(1), "{update}");
    for cmd in [
        format!("cat {DATA}/existing"),
        format!("echo during-fault >> {DATA}/journal"),
    ] {
        let out = app(&cmd)?;
        ensure!(
            !out.success()
                && (out.stderr.contains("Input/output error") || out.stderr.contains("I/O error")),
            "{cmd} under the EIO rule: exit {} stdout {:?} stderr {:?}",
            out.exit_code,
            out.stdout,
            out.stderr
        );
    }

    // Removing the rule gives normal IO back, with every byte there.
    let update = rpc("update", json!({"actions": []}))?;
    ensure!(update["ruleCount"] == json!(0), "{update}");
    let out = app(&format!(
        "cat {DATA}/existing {DATA}/copy {DATA}/journal {DATA}/app.log && echo after-fault >> {DATA}/journal"
    ))?;
    ensure!(out.success(), "after removing the rule: {}", out.stderr);
    ensure!(
        out.stdout == "written before injection\nwritten before injection\nbefore-fault\nstarted\n",
        "{:?}",
        out.stdout
    );
    ensure!(
        std::fs::read_to_string(tikv.join("fuse-data/journal"))? == "before-fault\nafter-fault\n"
    );

    // Killed outright (OOM), then restarted by kubelet: the application meets the dead mount
    // meanwhile; the new chaosfs removes it and the stale pidfile, and mounts again.
    let killed = pod.sidecar("chaosfs")?.pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let exited = eventually(Duration::from_secs(20), || {
        pod.sidecar_state("chaosfs")
            .is_ok_and(|(state, _)| state == "CONTAINER_EXITED")
    });
    ensure!(exited, "chaosfs survived SIGKILL");
    let out = app(&format!("cat {DATA}/existing"))?;
    ensure!(
        !out.success() && out.stderr.contains("not connected"),
        "with chaosfs dead: exit {} stderr {:?}",
        out.exit_code,
        out.stderr
    );
    // (Its PID is 1 in its container, before and after: the pidfile's content cannot tell.)
    ensure!(fuse_dir.join("pid").exists(), "SIGKILL leaves the pidfile");
    let restarted = tb.restart_sidecar(pod, "chaosfs")?;
    let app = |cmd: &str| pod.exec_sync_timeout(&["sh", "-c", cmd], EXEC_TIMEOUT);
    let back = eventually(Duration::from_secs(30), || {
        fuse_dir.join("pid").exists()
            && app(&format!("cat {DATA}/existing"))
                .is_ok_and(|o| o.success() && o.stdout == "written before injection\n")
    });
    ensure!(
        back,
        "the restarted chaosfs (attempt {}) did not serve again; its log:\n{}",
        restarted.attempt,
        pod.log("chaosfs")
    );
    ensure!(
        pod.log("chaosfs").contains("removed a stale pidfile"),
        "{}",
        pod.log("chaosfs")
    );
    let mounts = app("cat /proc/self/mountinfo")?.stdout;
    let stacked = mounts
        .lines()
        .filter(|l| l.contains(" /var/lib/tikv/data ") && l.contains("fuse.faultline"))
        .count();
    ensure!(
        stacked == 1,
        "{stacked} fault mounts over the data directory:\n{mounts}"
    );

    // SIGTERM: unmounted (in the app too), pidfile gone, data in the original.
    let exit = stop_sidecar(pod, "chaosfs")?;
    ensure!(
        exit == 0,
        "chaosfs exited with {exit}:\n{}",
        pod.log("chaosfs")
    );
    let mounts = app("cat /proc/self/mountinfo")?.stdout;
    ensure!(
        !mounts.contains("fuse.faultline"),
        "still mounted in the app:\n{mounts}"
    );
    ensure!(
        !fuse_dir.join("pid").exists(),
        "the pidfile outlived the mount"
    );
    ensure!(faultline_mounts_under(tikv).is_empty());
    let names = app(&format!("ls -A {DATA}"))?.stdout;
    ensure!(
        names.is_empty(),
        "the bare data directory is not empty: {names:?}"
    );
    Ok(())
}

/// TCP connect times (SYN → SYN-ACK: the pod's answer leaves through its eth0), sorted.
/// The median shows a delay (every sample carries it); the fastest shows its absence (a
/// busy host slows some samples, never all of them).
fn connect_rtts(addr: SocketAddr) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::new();
    for _ in 0..11 {
        let start = Instant::now();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        samples.push(start.elapsed());
        drop(stream);
        std::thread::sleep(Duration::from_millis(20));
    }
    samples.sort();
    Ok(samples)
}

fn median(samples: &[Duration]) -> Duration {
    samples[samples.len() / 2]
}

fn latency_agent(tb: &Testbed) -> anyhow::Result<()> {
    let run = tb.host_dir("agent-run")?;
    let mut agent = ContainerSpec::new("latency-agent")
        .command([
            "/usr/local/bin/faultline-agent",
            "sidecar",
            "--listen",
            ":2332",
        ])
        .env("PATH", PATH)
        .capability("NET_ADMIN")
        .volume(binary("faultline-agent")?)
        // iptables for the NFQUEUE path (its xtables lock lives in /run).
        .volume(Volume::host_dir("/usr/sbin", "/usr/sbin").readonly())
        .volume(Volume::host_dir(&run, "/run"));
    for v in glibc() {
        agent = agent.volume(v);
    }
    let pod = tb.run_pod(PodSpec::new("latency").sidecar(agent))?;
    let result = latency_story(&pod);
    let stopped = if pod
        .sidecar_state("latency-agent")
        .is_ok_and(|(s, _)| s == "CONTAINER_RUNNING")
    {
        stop_sidecar(&pod, "latency-agent").map(drop)
    } else {
        Ok(())
    };
    tb.remove_pod(&pod)?;
    result.and(stopped)
}

fn latency_story(pod: &Pod) -> anyhow::Result<()> {
    let addr = pod_addr(pod, 2332)?;
    let get = |path: &str| -> anyhow::Result<Value> {
        let (status, body) = http(addr, "GET", path, None)?;
        ensure!(status == 200, "GET {path}: HTTP {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    };
    let up = eventually(Duration::from_secs(20), || {
        http(addr, "GET", "/healthz", None).is_ok()
    });
    ensure!(
        up,
        "the agent never answered; its log:\n{}",
        pod.log("latency-agent")
    );
    let baseline = median(&connect_rtts(addr)?);

    let set = get("/latency/20ms")?;
    ensure!(
        set["action"] == json!("set") && set["delayUs"] == json!(20_000),
        "{set}"
    );
    let path = set["path"].as_str().unwrap_or_default().to_owned();
    ensure!(
        path == "kernel netem" || path == "userspace NFQUEUE",
        "{set}"
    );
    let delayed = median(&connect_rtts(addr)?);
    eprintln!("latency agent: baseline {baseline:?}, 20ms via {path}: {delayed:?}");
    ensure!(
        delayed >= baseline + Duration::from_millis(15),
        "20ms set ({path}), but the round trip went from {baseline:?} to {delayed:?}"
    );

    // Replaced, not refused ("file exists" in the original agent).
    let replaced = get("/latency/40ms")?;
    ensure!(
        replaced["action"] == json!("replaced") && replaced["previous"] == json!("20ms"),
        "{replaced}"
    );
    let longer = median(&connect_rtts(addr)?);
    eprintln!("latency agent: 40ms: {longer:?}");
    ensure!(
        longer >= baseline + Duration::from_millis(35),
        "40ms: {longer:?}"
    );
    let status = get("/status")?;
    ensure!(status["delay"] == json!("40ms"), "{status}");

    let removed = get("/latency/0")?;
    ensure!(removed["action"] == json!("removed"), "{removed}");
    let samples = connect_rtts(addr)?;
    let (after, fastest) = (median(&samples), samples[0]);
    eprintln!("latency agent: removed: {after:?} (fastest {fastest:?})");
    ensure!(
        fastest < baseline + Duration::from_millis(10),
        "after removal: fastest {fastest:?}, median {after:?} (baseline {baseline:?})"
    );
    let (status, body) = http(addr, "DELETE", "/latency", None)?;
    ensure!(
        status == 200 && body.contains("nothing to remove"),
        "{status} {body}"
    );
    let (status, body) = http(addr, "GET", "/latency/soon", None)?;
    ensure!(status == 400 && body.contains("delay"), "{status} {body}");

    // A delay still set when the agent stops is removed with it.
    get("/latency/20ms")?;
    let exit = stop_sidecar(pod, "latency-agent")?;
    ensure!(
        exit == 0,
        "the agent exited with {exit}:\n{}",
        pod.log("latency-agent")
    );
    // The pod's answers leave at once again: a refused connection (its RST leaves through
    // eth0 too) comes back as fast as before the delay.
    let mut fastest = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let refused = TcpStream::connect_timeout(&pod_addr(pod, 2333)?, Duration::from_secs(5));
        fastest = fastest.min(start.elapsed());
        ensure!(refused.is_err(), "something listens on 2333");
    }
    ensure!(
        fastest < baseline + Duration::from_millis(10),
        "after SIGTERM the pod still answers late: {fastest:?}"
    );
    let rules = std::process::Command::new("nsenter")
        .args(["-t", &pod.sandbox_pid.to_string(), "-n", "sh", "-c"])
        .arg("iptables-nft-save -t mangle 2>/dev/null; iptables-legacy-save -t mangle 2>/dev/null; tc qdisc show dev eth0")
        .output()?;
    let rules = String::from_utf8_lossy(&rules.stdout);
    ensure!(
        !rules.contains("CHAOS") && !rules.contains("netem"),
        "left in the pod after SIGTERM:\n{rules}"
    );
    Ok(())
}
