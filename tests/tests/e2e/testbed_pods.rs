//! The testbed itself, as the other stories rely on it: pods on the CNI bridge with host
//! volumes, host-network pods, plain containerd containers, and Bidirectional propagation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use testbed::{PodSpec, Propagation, Testbed, Volume, WORKLOAD_IMAGE};

use crate::Story;

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "testbed::cni_pod_reads_a_file_the_host_wrote_in_its_volume",
            cni_pod_reads_host_volume,
        ),
        (
            "testbed::host_network_pod_shares_the_host_network_namespace",
            host_network_pod,
        ),
        (
            "testbed::plain_ctr_container_runs_with_a_bind_mount",
            plain_container,
        ),
        (
            "testbed::bidirectional_volume_shows_container_mounts_on_the_host",
            bidirectional_mount,
        ),
    ]
}

/// A pod on the testbed bridge reads, through CRI exec, a file the host wrote in its volume;
/// its container runs in its own mount namespace and got an IP from the testbed's subnet.
fn cni_pod_reads_host_volume(tb: &Testbed) -> anyhow::Result<()> {
    let dir = tb.host_dir("greeting")?;
    std::fs::write(dir.join("hello"), "hello from the host\n")?;
    let pod = tb.run_pod(
        PodSpec::new("reader")
            .label("app", "reader")
            .volume(Volume::host_dir(&dir, "/data")),
    )?;

    let out = pod.exec_ok(&["cat", "/data/hello"])?;
    ensure!(out == "hello from the host\n", "the pod read {out:?}");
    let failing = pod.exec_sync(&["sh", "-c", "echo oops >&2; exit 3"])?;
    ensure!(
        failing.exit_code == 3 && failing.stderr == "oops\n",
        "exec reported {failing:?}"
    );

    ensure!(alive(pod.pid), "container PID {} is not running", pod.pid);
    ensure!(
        alive(pod.sandbox_pid),
        "sandbox PID {} is not running",
        pod.sandbox_pid
    );
    ensure!(
        ns(pod.pid, "mnt")? != ns_self("mnt")?,
        "the container shares our mount namespace"
    );
    ensure!(
        ns(pod.pid, "net")? == ns(pod.sandbox_pid, "net")?,
        "container and sandbox are in different network namespaces"
    );
    let ip = pod.ipv4().context("a CNI pod has an IP")?;
    ensure!(
        tb.subnet().contains(ip),
        "pod IP {ip} is outside {}",
        tb.subnet()
    );

    tb.remove_pod(&pod)?;
    ensure!(
        gone_soon(pod.pid),
        "container PID {} survived pod removal",
        pod.pid
    );
    Ok(())
}

/// A host-network pod is in the host's network namespace (and nothing else of the host's).
fn host_network_pod(tb: &Testbed) -> anyhow::Result<()> {
    let pod = tb.run_pod(PodSpec::new("hostnet").host_network())?;
    ensure!(
        ns(pod.pid, "net")? == ns_self("net")?,
        "not in the host network namespace"
    );
    ensure!(
        ns(pod.pid, "mnt")? != ns_self("mnt")?,
        "shares our mount namespace"
    );
    ensure!(
        ns(pod.pid, "pid")? != ns_self("pid")?,
        "shares our PID namespace"
    );
    tb.remove_pod(&pod)?;
    Ok(())
}

/// A container made with `ctr run` (invisible to CRI) runs, and containerd's Tasks API gives a
/// PID whose root shows the bind-mounted host directory.
fn plain_container(tb: &Testbed) -> anyhow::Result<()> {
    let dir = tb.host_dir("plain")?;
    std::fs::write(dir.join("f"), "plain\n")?;
    let c = tb.run_plain_container(
        "plain",
        WORKLOAD_IMAGE,
        &[],
        &[Volume::host_dir(&dir, "/data")],
    )?;
    ensure!(alive(c.pid), "PID {} is not running", c.pid);
    let seen = std::fs::read_to_string(format!("/proc/{}/root/data/f", c.pid))?;
    ensure!(seen == "plain\n", "the container's /data/f holds {seen:?}");
    ensure!(
        ns(c.pid, "mnt")? != ns_self("mnt")?,
        "shares our mount namespace"
    );
    tb.remove_plain_container(&c)?;
    ensure!(gone_soon(c.pid), "PID {} survived removal", c.pid);
    Ok(())
}

/// With Bidirectional propagation, a tmpfs a privileged container mounts in its volume shows up
/// on the host (teardown removes it; the harness checks).
fn bidirectional_mount(tb: &Testbed) -> anyhow::Result<()> {
    let dir = tb.host_dir("bidi")?;
    std::fs::create_dir(dir.join("inner"))?;
    let pod = tb.run_pod(
        PodSpec::new("mounter")
            .privileged()
            .volume(Volume::host_dir(&dir, "/data").propagation(Propagation::Bidirectional)),
    )?;
    pod.exec_ok(&["mount", "-t", "tmpfs", "tmpfs", "/data/inner"])?;
    pod.exec_ok(&["sh", "-c", "echo from-the-pod > /data/inner/x"])?;

    let inner = dir.join("inner").canonicalize()?;
    ensure!(
        mounted(&inner),
        "{} is not a mount point on the host",
        inner.display()
    );
    let seen = std::fs::read_to_string(inner.join("x"))?;
    ensure!(seen == "from-the-pod\n", "the host read {seen:?}");
    tb.remove_pod(&pod)?;
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

fn ns(pid: u32, kind: &str) -> anyhow::Result<PathBuf> {
    let link = format!("/proc/{pid}/ns/{kind}");
    std::fs::read_link(&link).with_context(|| format!("reading {link}"))
}

fn ns_self(kind: &str) -> anyhow::Result<PathBuf> {
    ns(std::process::id(), kind)
}

fn mounted(path: &Path) -> bool {
    let target = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*target))
}
