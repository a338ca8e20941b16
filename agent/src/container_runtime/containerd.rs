use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{GetRequest, KillRequest};
use containerd_client::types::v1::Status as TaskStatus;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::error::from_status;
use super::{HostPid, RuntimeError};
use crate::unix_channel;

const RUNTIME: &str = "containerd";

/// A thin client of the containerd API, bound to one namespace (`k8s.io` for Kubernetes pods).
#[derive(Clone, Debug)]
pub struct ContainerdClient {
    channel: Channel,
    /// Tells clones of one connection from another connection.
    connection: std::sync::Arc<()>,
    socket: PathBuf,
    namespace: MetadataValue<tonic::metadata::Ascii>,
}

impl ContainerdClient {
    pub async fn connect(
        socket: &Path,
        namespace: &str,
        timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        let namespace = namespace
            .parse()
            .map_err(|_| RuntimeError::InvalidArgument {
                input: namespace.to_owned(),
                reason: "not a valid containerd namespace".into(),
            })?;
        Ok(Self {
            channel: unix_channel::connect(socket, timeout)
                .await
                .map_err(|reason| RuntimeError::Unavailable {
                    socket: socket.to_owned(),
                    reason,
                })?,
            socket: socket.to_owned(),
            namespace,
            connection: std::sync::Arc::new(()),
        })
    }

    /// Whether `other` is a clone of this client (the same connection).
    pub fn same_connection(&self, other: &ContainerdClient) -> bool {
        std::sync::Arc::ptr_eq(&self.connection, &other.connection)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        // containerd reads the namespace from this header (pkg/namespaces/grpc.go).
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }

    /// The host PID of the container's init process (Tasks.Get).
    pub async fn task_pid(&self, container_id: &str) -> Result<HostPid, RuntimeError> {
        let response = TasksClient::new(self.channel.clone())
            .get(self.request(GetRequest {
                container_id: container_id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|status| {
                from_status(status, RUNTIME, &self.socket, "Tasks.Get", container_id)
            })?
            .into_inner();
        let process = response.process.ok_or_else(|| RuntimeError::BadResponse {
            runtime: RUNTIME.into(),
            what: "process",
            id: container_id.to_owned(),
            reason: "Tasks.Get returned no process".into(),
        })?;
        let running = matches!(
            TaskStatus::try_from(process.status),
            Ok(TaskStatus::Running | TaskStatus::Paused | TaskStatus::Pausing)
        );
        if !running || process.pid == 0 {
            return Err(RuntimeError::NotRunning {
                id: container_id.to_owned(),
                runtime: RUNTIME.into(),
            });
        }
        Ok(process.pid)
    }

    /// Sends `signal` to the container's task (Tasks.Kill); with `all`, to every process of the
    /// container, not only its init.
    pub async fn kill_task(
        &self,
        container_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), RuntimeError> {
        TasksClient::new(self.channel.clone())
            .kill(self.request(KillRequest {
                container_id: container_id.to_owned(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
            .map_err(|status| {
                from_status(status, RUNTIME, &self.socket, "Tasks.Kill", container_id)
            })?;
        Ok(())
    }
}
