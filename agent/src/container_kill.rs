//! Pod chaos' container kill (`ContainerKill`): every process of a container gets SIGKILL
//! through its runtime, so the runtime records a real container death (exit code 137) and
//! kubelet restarts the container according to the pod's restartPolicy. containerd:// IDs go
//! through containerd's Tasks.Kill (SIGKILL to all processes), the others through CRI
//! StopContainer with a zero timeout (SIGKILL at once), the CRI way of saying the same.
//!
//! pod-kill and pod-failure need nothing here: the controller deletes the pod, or swaps its
//! containers' images for a pause image, through the Kubernetes API.

use crate::container_runtime::{ContainerRef, Resolver, RuntimeKind};
use crate::error::AgentError;

/// How a container is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMethod {
    /// containerd Tasks.Kill, SIGKILL, all processes.
    ContainerdTaskKill,
    /// CRI StopContainer with timeout 0.
    CriStopNow,
}

impl KillMethod {
    pub fn for_container(container: &ContainerRef) -> KillMethod {
        match container.runtime {
            RuntimeKind::Containerd => KillMethod::ContainerdTaskKill,
            RuntimeKind::CriO | RuntimeKind::Docker => KillMethod::CriStopNow,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            KillMethod::ContainerdTaskKill => {
                "SIGKILL to every process of the container (containerd Tasks.Kill)"
            }
            KillMethod::CriStopNow => "SIGKILL at once (CRI StopContainer, timeout 0)",
        }
    }
}

/// What a kill did (or, planned, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub container: ContainerRef,
    /// The container's init process when it was killed.
    pub pid: u32,
    pub method: KillMethod,
}

/// Resolves the container (it must be running) and says how it would be killed.
pub async fn plan(resolver: &Resolver, container_id: &str) -> Result<Kill, AgentError> {
    let container = resolver.parse(container_id)?;
    let pid = resolver.container_pid(container_id).await?;
    Ok(Kill {
        method: KillMethod::for_container(&container),
        container,
        pid,
    })
}

/// Kills the container's processes through its runtime.
pub async fn kill(resolver: &Resolver, container_id: &str) -> Result<Kill, AgentError> {
    let kill = plan(resolver, container_id).await?;
    match kill.method {
        KillMethod::ContainerdTaskKill => {
            resolver
                .containerd()
                .await?
                .kill_task(&kill.container.id, nix::libc::SIGKILL as u32, true)
                .await?
        }
        KillMethod::CriStopNow => {
            resolver
                .cri()
                .await?
                .stop_container(&kill.container.id, 0)
                .await?
        }
    }
    tracing::info!(container = %kill.container, pid = kill.pid, method = kill.method.describe(), "container killed");
    Ok(kill)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_ids_go_through_the_task_api_others_through_cri() {
        let method = |id: &str| {
            KillMethod::for_container(&ContainerRef::parse(id, RuntimeKind::Containerd).unwrap())
        };
        assert_eq!(method("containerd://abc"), KillMethod::ContainerdTaskKill);
        assert_eq!(method("abc"), KillMethod::ContainerdTaskKill);
        assert_eq!(method("cri-o://abc"), KillMethod::CriStopNow);
        assert_eq!(method("docker://abc"), KillMethod::CriStopNow);
    }
}
