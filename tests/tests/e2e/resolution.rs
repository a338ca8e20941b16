//! Container resolution: the agent finds a container's host PID through the containerd API and
//! through CRI, and a pod's sandbox by its UID; bad input gets a named error.

use std::time::Duration;

use agent::container_runtime::{Resolver, RuntimeConfig, RuntimeKind};
use anyhow::{Context, ensure};
use testbed::{PodSpec, Testbed, Volume, WORKLOAD_IMAGE};

use crate::Story;

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "resolution::containerd_api_and_cri_agree_on_a_pods_pid",
            containerd_and_cri_agree,
        ),
        (
            "resolution::plain_containerd_container_resolves_through_the_api",
            plain_container_resolves,
        ),
        (
            "resolution::bad_input_gets_named_errors",
            bad_input_gets_named_errors,
        ),
    ]
}

pub fn resolver(tb: &Testbed) -> Resolver {
    let mut config = RuntimeConfig::for_runtime(RuntimeKind::Containerd);
    config.containerd_socket = tb.containerd_socket().to_owned();
    config.cri_socket = tb.containerd_socket().to_owned();
    config.containerd_namespace = tb.namespace().to_owned();
    config.timeout = Duration::from_secs(10);
    Resolver::new(config)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn ns(pid: u32, kind: &str) -> anyhow::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .with_context(|| format!("/proc/{pid}/ns/{kind}"))
}

/// A CRI pod's container PID is the same through the containerd API (Tasks.Get) and through CRI
/// (ContainerStatus verbose), its sandbox is found by pod UID, and it lives in a mount namespace
/// of its own.
fn containerd_and_cri_agree(tb: &Testbed) -> anyhow::Result<()> {
    let pod = tb.run_pod(PodSpec::new("resolved").container_name("app"))?;
    let resolver = resolver(tb);
    let rt = runtime()?;
    let via_api = rt.block_on(resolver.container_pid(&pod.container_uri()))?;
    let via_cri = rt.block_on(resolver.container_pid_via_cri(&pod.container_uri()))?;
    ensure!(
        via_api == via_cri,
        "containerd says {via_api}, CRI says {via_cri}"
    );
    ensure!(
        via_api == pod.pid,
        "resolved {via_api}, the testbed started {}",
        pod.pid
    );
    // A bare ID takes the default runtime (containerd).
    ensure!(rt.block_on(resolver.container_pid(&pod.container_id))? == pod.pid);
    ensure!(
        ns(via_api, "mnt")? != ns(std::process::id(), "mnt")?,
        "the container shares our mount namespace"
    );

    let sandbox = rt.block_on(resolver.sandbox_pid(&pod.uid))?;
    ensure!(
        sandbox == pod.sandbox_pid,
        "sandbox PID {sandbox}, expected {}",
        pod.sandbox_pid
    );
    ensure!(
        ns(sandbox, "net")? == ns(via_api, "net")?,
        "sandbox and container differ in network namespace"
    );

    let containers = rt.block_on(resolver.pod_containers(&pod.uid))?;
    ensure!(
        containers.len() == 1 && containers[0].id == pod.container_id && containers[0].running,
        "the pod's containers: {containers:?}"
    );
    ensure!(
        containers[0].name.starts_with("app"),
        "container name {:?}",
        containers[0].name
    );

    // The CLI says the same.
    let out = std::process::Command::new(crate::binaries::path("faultline-agent")?)
        .arg("--containerd-socket")
        .arg(tb.containerd_socket())
        .args(["pid", &pod.container_uri()])
        .output()?;
    ensure!(
        out.status.success(),
        "faultline-agent pid failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == pod.pid.to_string(),
        "the CLI printed {:?}",
        out.stdout
    );

    // A stopped container falls back to the sandbox for network faults.
    tb.remove_pod(&pod)?;
    let err = rt
        .block_on(resolver.container_or_sandbox_pid(&pod.container_uri(), &pod.uid))
        .unwrap_err();
    ensure!(err.code() == tonic::Code::NotFound, "after removal: {err}");
    Ok(())
}

/// A container made with `ctr run` (no CRI metadata) resolves through the containerd API; CRI
/// does not know it.
fn plain_container_resolves(tb: &Testbed) -> anyhow::Result<()> {
    let dir = tb.host_dir("plain-resolve")?;
    let c = tb.run_plain_container(
        "plainres",
        WORKLOAD_IMAGE,
        &[],
        &[Volume::host_dir(&dir, "/data")],
    )?;
    let resolver = resolver(tb);
    let rt = runtime()?;
    let pid = rt.block_on(resolver.container_pid(&format!("containerd://{}", c.id)))?;
    ensure!(pid == c.pid, "resolved {pid}, expected {}", c.pid);
    let err = rt
        .block_on(resolver.container_pid_via_cri(&c.id))
        .unwrap_err();
    ensure!(err.code() == tonic::Code::NotFound, "CRI answered {err}");
    tb.remove_plain_container(&c)?;
    Ok(())
}

/// Unknown IDs are NotFound naming the ID and the runtime; malformed IDs are InvalidArgument; a
/// missing runtime socket is Unavailable naming the socket.
fn bad_input_gets_named_errors(tb: &Testbed) -> anyhow::Result<()> {
    let resolver = resolver(tb);
    let rt = runtime()?;
    let unknown = "0123456789abcdef0123456789abcdef";
    for err in [
        rt.block_on(resolver.container_pid(&format!("containerd://{unknown}")))
            .unwrap_err(),
        rt.block_on(resolver.container_pid_via_cri(unknown))
            .unwrap_err(),
    ] {
        ensure!(err.code() == tonic::Code::NotFound, "{err}");
        let text = err.to_string();
        ensure!(
            text.contains(unknown) && text.contains("containerd"),
            "{text}"
        );
    }
    let err = rt
        .block_on(resolver.sandbox_pid("no-such-pod-uid"))
        .unwrap_err();
    ensure!(
        err.code() == tonic::Code::NotFound && err.to_string().contains("no-such-pod-uid"),
        "{err}"
    );

    for malformed in ["containerd://", "rkt://abc", "containerd://a/../b"] {
        let err = rt.block_on(resolver.container_pid(malformed)).unwrap_err();
        ensure!(
            err.code() == tonic::Code::InvalidArgument,
            "{malformed}: {err}"
        );
    }

    let mut config = resolver.config().clone();
    config.containerd_socket = tb.base_dir().join("missing.sock");
    config.cri_socket = tb.base_dir().join("missing.sock");
    let offline = Resolver::new(config);
    for err in [
        rt.block_on(offline.container_pid("containerd://abc"))
            .unwrap_err(),
        rt.block_on(offline.sandbox_pid("abc")).unwrap_err(),
    ] {
        ensure!(err.code() == tonic::Code::Unavailable, "{err}");
        ensure!(err.to_string().contains("missing.sock"), "{err}");
    }
    Ok(())
}
