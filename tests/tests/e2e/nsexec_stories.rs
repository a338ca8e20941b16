//! nsexec enters a pod's namespaces: files of its volume through its mount namespace, its own
//! process tree through its pid namespace, its IP through its network namespace.

use std::process::Command;

use anyhow::{Context, ensure};
use testbed::{PodSpec, Testbed, Volume};

use crate::Story;

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "nsexec::mount_and_pid_namespaces_of_a_pod",
            mount_and_pid_namespaces,
        ),
        ("nsexec::network_namespace_of_a_pod", network_namespace),
        ("nsexec::errors_are_named_with_exit_codes", errors),
    ]
}

fn nsexec(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(crate::binaries::path("nsexec")?)
        .args(args)
        .output()?)
}

fn mount_and_pid_namespaces(tb: &Testbed) -> anyhow::Result<()> {
    let dir = tb.host_dir("nsexec-vol")?;
    std::fs::write(dir.join("note"), "inside the volume\n")?;
    let pod = tb.run_pod(PodSpec::new("entered").volume(Volume::host_dir(&dir, "/data")))?;
    let pid = pod.pid.to_string();

    // busybox `cat` from the container's image reads the volume at its container path.
    let out = nsexec(&["-m", &pid, "-p", &pid, "--", "cat", "/data/note"])?;
    ensure!(
        out.status.success(),
        "nsexec cat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.stdout == b"inside the volume\n",
        "read {:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    // In the pod's pid namespace, PID 1 is the pod's own process (`sleep`), and ps itself got
    // a small PID there.
    let out = nsexec(&["-m", &pid, "-p", &pid, "--", "ps", "-o", "pid,args"])?;
    ensure!(
        out.status.success(),
        "nsexec ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ps = String::from_utf8_lossy(&out.stdout);
    let pid1 = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .with_context(|| format!("no PID 1 in:\n{ps}"))?;
    ensure!(
        pid1.contains("sleep"),
        "PID 1 is {pid1:?}, expected the pod's sleep\n{ps}"
    );
    ensure!(
        ps.lines().count() <= 4,
        "ps sees more than the pod's processes:\n{ps}"
    );

    // The exit status comes through.
    let out = nsexec(&["-m", &pid, "--", "sh", "-c", "exit 7"])?;
    ensure!(out.status.code() == Some(7), "exit status {:?}", out.status);
    tb.remove_pod(&pod)?;
    Ok(())
}

fn network_namespace(tb: &Testbed) -> anyhow::Result<()> {
    let pod = tb.run_pod(PodSpec::new("netns"))?;
    let ip = pod.ipv4().context("a CNI pod has an IP")?;
    // Only the network namespace: the host's `ip` binary runs, seeing the pod's eth0.
    let out = nsexec(&[
        "-n",
        &pod.pid.to_string(),
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ])?;
    ensure!(
        out.status.success(),
        "ip addr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains(&format!("inet {ip}/")),
        "eth0 in the pod: {text}"
    );
    tb.remove_pod(&pod)?;
    Ok(())
}

fn errors(tb: &Testbed) -> anyhow::Result<()> {
    // A process that is gone.
    let pod = tb.run_pod(PodSpec::new("short-lived"))?;
    let pid = pod.pid.to_string();
    // A command the container image does not have.
    let out = nsexec(&["-m", &pid, "--", "bash", "-c", "true"])?;
    ensure!(
        out.status.code() == Some(127),
        "missing command: {:?}",
        out.status
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("bash: command not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tb.remove_pod(&pod)?;
    let out = nsexec(&["-n", &pid, "--", "true"])?;
    ensure!(out.status.code() == Some(125), "dead PID: {:?}", out.status);
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("process {pid} does not exist")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A namespace file that does not exist.
    let missing = tb.base_dir().join("no-such-netns");
    let out = nsexec(&["-n", &missing.to_string_lossy(), "--", "true"])?;
    ensure!(
        out.status.code() == Some(125),
        "missing file: {:?}",
        out.status
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
