//! A thin CRI (`runtime.v1.RuntimeService`) client: one method per call the testbed makes, each
//! with its own deadline, returning plain values.

use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::grpc::call;
use crate::pod::ExecOutput;

/// RunPodSandbox runs CNI and starts the pause container; with two cores and tests in parallel
/// it can take seconds.
const SANDBOX_LIMIT: Duration = Duration::from_secs(60);
const CONTAINER_LIMIT: Duration = Duration::from_secs(30);
const STATUS_LIMIT: Duration = Duration::from_secs(10);
/// Added to an ExecSync's own timeout for the round trip.
const EXEC_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct Cri {
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    pub fn new(channel: Channel) -> Cri {
        Cri {
            client: RuntimeServiceClient::new(channel),
        }
    }

    /// The NetworkReady condition (false until CRI has loaded the CNI config) and its reason.
    pub async fn network_ready(&self) -> Result<(bool, String)> {
        let status = call(
            "CRI Status",
            STATUS_LIMIT,
            self.client
                .clone()
                .status(cri::StatusRequest { verbose: false }),
        )
        .await?;
        let condition = status
            .status
            .into_iter()
            .flat_map(|s| s.conditions)
            .find(|c| c.r#type == "NetworkReady");
        Ok(match condition {
            Some(c) => (c.status, format!("{}: {}", c.reason, c.message)),
            None => (false, "no NetworkReady condition".into()),
        })
    }

    pub async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String> {
        let response = call(
            "CRI RunPodSandbox",
            SANDBOX_LIMIT,
            self.client
                .clone()
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                }),
        )
        .await?;
        Ok(response.pod_sandbox_id)
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String> {
        let response = call(
            "CRI CreateContainer",
            CONTAINER_LIMIT,
            self.client
                .clone()
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.to_owned(),
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                }),
        )
        .await?;
        Ok(response.container_id)
    }

    pub async fn start_container(&self, container_id: &str) -> Result<()> {
        call(
            "CRI StartContainer",
            CONTAINER_LIMIT,
            self.client
                .clone()
                .start_container(cri::StartContainerRequest {
                    container_id: container_id.to_owned(),
                }),
        )
        .await
        .map(drop)
    }

    /// The container's host PID from ContainerStatus(verbose): `info["info"]` is JSON with `pid`.
    pub async fn container_pid(&self, container_id: &str) -> Result<u32> {
        const CALL: &str = "CRI ContainerStatus";
        let response = call(
            CALL,
            STATUS_LIMIT,
            self.client
                .clone()
                .container_status(cri::ContainerStatusRequest {
                    container_id: container_id.to_owned(),
                    verbose: true,
                }),
        )
        .await?;
        pid_from_info(CALL, &response.info)
    }

    /// The container's state (`CONTAINER_RUNNING`, `CONTAINER_EXITED`, …) and exit code.
    pub async fn container_state(&self, container_id: &str) -> Result<(String, i32)> {
        const CALL: &str = "CRI ContainerStatus";
        let response = call(
            CALL,
            STATUS_LIMIT,
            self.client
                .clone()
                .container_status(cri::ContainerStatusRequest {
                    container_id: container_id.to_owned(),
                    verbose: false,
                }),
        )
        .await?;
        let status = response.status.ok_or_else(|| Error::BadResponse {
            call: CALL,
            detail: format!("no status for container {container_id}"),
        })?;
        let state = cri::ContainerState::try_from(status.state)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_else(|_| status.state.to_string());
        Ok((state, status.exit_code))
    }

    /// The sandbox (pause) PID and the pod IP (empty for host-network pods).
    pub async fn sandbox_pid_and_ip(&self, sandbox_id: &str) -> Result<(u32, Option<String>)> {
        const CALL: &str = "CRI PodSandboxStatus";
        let response = call(
            CALL,
            STATUS_LIMIT,
            self.client
                .clone()
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: sandbox_id.to_owned(),
                    verbose: true,
                }),
        )
        .await?;
        let pid = pid_from_info(CALL, &response.info)?;
        let ip = response
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty());
        Ok((pid, ip))
    }

    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let response = call(
            "CRI ExecSync",
            timeout + EXEC_MARGIN,
            self.client.clone().exec_sync(cri::ExecSyncRequest {
                container_id: container_id.to_owned(),
                cmd,
                // Whole seconds, at least one: zero would mean "no timeout".
                timeout: i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX),
            }),
        )
        .await?;
        Ok(ExecOutput {
            stdout: String::from_utf8_lossy(&response.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&response.stderr).into_owned(),
            exit_code: response.exit_code,
        })
    }

    pub async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        call(
            "CRI StopPodSandbox",
            SANDBOX_LIMIT,
            self.client
                .clone()
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sandbox_id.to_owned(),
                }),
        )
        .await
        .map(drop)
    }

    pub async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<()> {
        call(
            "CRI RemovePodSandbox",
            SANDBOX_LIMIT,
            self.client
                .clone()
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: sandbox_id.to_owned(),
                }),
        )
        .await
        .map(drop)
    }

    /// StopPodSandbox (kills its containers) then RemovePodSandbox (removes them too). A
    /// sandbox that is already gone counts as removed.
    pub async fn remove_pod(&self, sandbox_id: &str) -> Result<()> {
        let gone = |e: &Error| {
            matches!(
                e,
                Error::Rpc {
                    code: tonic::Code::NotFound,
                    ..
                }
            )
        };
        match self.stop_pod_sandbox(sandbox_id).await {
            Err(e) if gone(&e) => return Ok(()),
            other => other?,
        }
        match self.remove_pod_sandbox(sandbox_id).await {
            Err(e) if gone(&e) => Ok(()),
            other => other,
        }
    }

    /// IDs of every sandbox this containerd knows (all of them are the testbed's).
    pub async fn list_pod_sandboxes(&self) -> Result<Vec<String>> {
        let response = call(
            "CRI ListPodSandbox",
            STATUS_LIMIT,
            self.client
                .clone()
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
        )
        .await?;
        Ok(response.items.into_iter().map(|s| s.id).collect())
    }
}

fn pid_from_info(
    call: &'static str,
    info: &std::collections::HashMap<String, String>,
) -> Result<u32> {
    let bad = |detail: String| Error::BadResponse { call, detail };
    let raw = info
        .get("info")
        .ok_or_else(|| bad("verbose info has no \"info\" key".into()))?;
    let json: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| bad(format!("info[\"info\"] is not JSON: {e}")))?;
    json.get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
        .ok_or_else(|| bad(format!("no positive integer \"pid\" in {raw:.200}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn pid_is_read_from_info_json() {
        let info = HashMap::from([(
            "info".to_owned(),
            r#"{"sandboxID":"x","pid":4242}"#.to_owned(),
        )]);
        assert_eq!(pid_from_info("t", &info).expect("pid"), 4242);
    }

    #[test]
    fn missing_or_zero_pid_is_an_error() {
        for raw in [r#"{"pid":0}"#, r#"{"pid":"7"}"#, "not json", "{}"] {
            let info = HashMap::from([("info".to_owned(), raw.to_owned())]);
            assert!(pid_from_info("t", &info).is_err(), "{raw}");
        }
        assert!(pid_from_info("t", &HashMap::new()).is_err());
    }
}
