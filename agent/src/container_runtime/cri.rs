use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStatusRequest, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest, StopContainerRequest,
};
use tonic::transport::Channel;

use super::error::from_status;
use super::{HostPid, RuntimeError};
use crate::unix_channel;

/// The label every CRI runtime puts on a pod's sandbox and containers (set by kubelet).
const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// A client of any CRI runtime (containerd, CRI-O, cri-dockerd).
#[derive(Clone, Debug)]
pub struct CriClient {
    channel: Channel,
    socket: PathBuf,
    runtime: String,
}

/// One container of a pod, as the runtime lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContainer {
    pub id: String,
    pub name: String,
    pub running: bool,
}

impl CriClient {
    /// `runtime` names the runtime in errors (e.g. "containerd (CRI)").
    pub async fn connect(
        socket: &Path,
        runtime: &str,
        timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        Ok(Self {
            channel: unix_channel::connect(socket, timeout)
                .await
                .map_err(|reason| RuntimeError::Unavailable {
                    socket: socket.to_owned(),
                    reason,
                })?,
            socket: socket.to_owned(),
            runtime: runtime.to_owned(),
        })
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn status_error(
        &self,
        operation: &'static str,
        id: &str,
    ) -> impl FnOnce(tonic::Status) -> RuntimeError {
        let (runtime, socket) = (self.runtime.clone(), self.socket.clone());
        let id = id.to_owned();
        move |status| from_status(status, &runtime, &socket, operation, &id)
    }

    /// The host PID of a container: ContainerStatus(verbose) → `info["info"]` JSON → `pid`.
    pub async fn container_pid(&self, container_id: &str) -> Result<HostPid, RuntimeError> {
        let response = self
            .client()
            .container_status(ContainerStatusRequest {
                container_id: container_id.to_owned(),
                verbose: true,
            })
            .await
            .map_err(self.status_error("ContainerStatus", container_id))?
            .into_inner();
        let running = response
            .status
            .as_ref()
            .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32);
        if !running {
            return Err(RuntimeError::NotRunning {
                id: container_id.to_owned(),
                runtime: self.runtime.clone(),
            });
        }
        self.pid_from_info(&response.info, container_id)
    }

    /// The host PID of the pod's ready sandbox (its pause process), found by pod UID.
    pub async fn sandbox_pid(&self, pod_uid: &str) -> Result<HostPid, RuntimeError> {
        let sandbox_id = self.ready_sandbox_id(pod_uid).await?;
        let response = self
            .client()
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: true,
            })
            .await
            .map_err(self.status_error("PodSandboxStatus", &sandbox_id))?
            .into_inner();
        self.pid_from_info(&response.info, &sandbox_id)
    }

    /// The ID of the pod's ready sandbox.
    pub async fn ready_sandbox_id(&self, pod_uid: &str) -> Result<String, RuntimeError> {
        let sandboxes = self
            .client()
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    state: Some(PodSandboxStateValue {
                        state: PodSandboxState::SandboxReady as i32,
                    }),
                    label_selector: HashMap::from([(POD_UID_LABEL.to_owned(), pod_uid.to_owned())]),
                    ..Default::default()
                }),
            })
            .await
            .map_err(self.status_error("ListPodSandbox", pod_uid))?
            .into_inner()
            .items;
        // Newest first: a restarted sandbox leaves the old one NOTREADY, filtered out above.
        sandboxes
            .into_iter()
            .max_by_key(|s| s.created_at)
            .map(|s| s.id)
            .ok_or_else(|| RuntimeError::PodNotFound {
                uid: pod_uid.to_owned(),
                runtime: self.runtime.clone(),
            })
    }

    /// Every container of the pod (any state), by pod UID.
    pub async fn pod_containers(&self, pod_uid: &str) -> Result<Vec<PodContainer>, RuntimeError> {
        let containers = self
            .client()
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    label_selector: HashMap::from([(POD_UID_LABEL.to_owned(), pod_uid.to_owned())]),
                    ..Default::default()
                }),
            })
            .await
            .map_err(self.status_error("ListContainers", pod_uid))?
            .into_inner()
            .containers;
        Ok(containers
            .into_iter()
            .map(|c| PodContainer {
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                running: c.state == ContainerState::ContainerRunning as i32,
                id: c.id,
            })
            .collect())
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout_seconds` (0: SIGKILL at once).
    pub async fn stop_container(
        &self,
        container_id: &str,
        timeout_seconds: i64,
    ) -> Result<(), RuntimeError> {
        self.client()
            .stop_container(StopContainerRequest {
                container_id: container_id.to_owned(),
                timeout: timeout_seconds,
            })
            .await
            .map_err(self.status_error("StopContainer", container_id))?;
        Ok(())
    }

    fn pid_from_info(
        &self,
        info: &HashMap<String, String>,
        id: &str,
    ) -> Result<HostPid, RuntimeError> {
        let bad = |reason: String| RuntimeError::BadResponse {
            runtime: self.runtime.clone(),
            what: "pid",
            id: id.to_owned(),
            reason,
        };
        let json = info
            .get("info")
            .ok_or_else(|| bad("the verbose status has no \"info\" entry".into()))?;
        pid_from_info_json(json).map_err(bad)
    }
}

/// Reads the integer `pid` from a CRI verbose `info` JSON document.
fn pid_from_info_json(json: &str) -> Result<HostPid, String> {
    #[derive(serde::Deserialize)]
    struct Info {
        pid: Option<u64>,
    }
    let info: Info =
        serde_json::from_str(json).map_err(|e| format!("the \"info\" entry is not JSON: {e}"))?;
    match info.pid {
        None => Err("the \"info\" entry has no pid".into()),
        Some(0) => Err("the pid is 0 (the process is not running)".into()),
        Some(pid) => HostPid::try_from(pid).map_err(|_| format!("pid {pid} is out of range")),
    }
}

#[cfg(test)]
mod tests {
    use super::pid_from_info_json;

    #[test]
    fn reads_the_pid_from_verbose_info() {
        assert_eq!(
            pid_from_info_json(r#"{"sandboxID":"x","pid":4242,"runtimeSpec":{}}"#),
            Ok(4242)
        );
        assert!(
            pid_from_info_json(r#"{"pid":0}"#)
                .unwrap_err()
                .contains("not running")
        );
        assert!(
            pid_from_info_json(r#"{"sandboxID":"x"}"#)
                .unwrap_err()
                .contains("no pid")
        );
        assert!(pid_from_info_json("nope").unwrap_err().contains("not JSON"));
    }
}
