use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pid_cache::PidCache;
use super::{
    ContainerRef, ContainerdClient, CriClient, HostPid, PodContainer, RuntimeError, RuntimeKind,
};

/// Where the node's container runtimes listen, and how to read bare container IDs.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The containerd API socket (for `containerd://` IDs).
    pub containerd_socket: PathBuf,
    /// The containerd namespace Kubernetes pods live in.
    pub containerd_namespace: String,
    /// The CRI socket (for `cri-o://` and `docker://` IDs, pod sandboxes and pod listings).
    pub cri_socket: PathBuf,
    /// The runtime of IDs given without a scheme.
    pub default_runtime: RuntimeKind,
    /// Bound on connecting and on each call.
    pub timeout: Duration,
}

impl RuntimeConfig {
    /// The usual socket paths for a node whose runtime is `runtime`.
    pub fn for_runtime(runtime: RuntimeKind) -> Self {
        let containerd_socket = PathBuf::from("/run/containerd/containerd.sock");
        let cri_socket = match runtime {
            RuntimeKind::Containerd => containerd_socket.clone(),
            RuntimeKind::CriO => PathBuf::from("/var/run/crio/crio.sock"),
            RuntimeKind::Docker => PathBuf::from("/var/run/cri-dockerd.sock"),
        };
        Self {
            containerd_socket,
            containerd_namespace: "k8s.io".into(),
            cri_socket,
            default_runtime: runtime,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Resolves containers and pods to host PIDs through the configured runtime.
#[derive(Clone, Debug)]
pub struct Resolver {
    config: RuntimeConfig,
    /// One containerd connection for every lookup (HTTP/2 multiplexes them): a connection per
    /// lookup cost a connect and a handshake on both sides, 50 at once when 50 pods get a
    /// fault together. Forgotten when a call through it finds containerd unavailable.
    containerd: Arc<Mutex<Option<ContainerdClient>>>,
    /// The runtime's answers, while their processes run.
    pids: Arc<PidCache>,
}

impl Resolver {
    pub fn new(config: RuntimeConfig) -> Self {
        Self {
            config,
            containerd: Arc::default(),
            pids: Arc::default(),
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Parses a Kubernetes container ID against the configured default runtime.
    pub fn parse(&self, container_id: &str) -> Result<ContainerRef, RuntimeError> {
        let container = ContainerRef::parse(container_id, self.config.default_runtime)?;
        // A node runs one runtime, and Chaos Mesh's daemon refuses an ID of another one
        // ("expected containerd:// but got docker://"). Resolving it anyway (the CRI socket
        // answers for its own containers whatever the scheme says) would act on a container
        // the caller did not describe.
        if container.runtime != self.config.default_runtime {
            return Err(RuntimeError::InvalidArgument {
                input: container_id.to_owned(),
                reason: format!(
                    "the container id names the {} runtime, but this node runs {} (agent --runtime)",
                    container.runtime, self.config.default_runtime
                ),
            });
        }
        Ok(container)
    }

    /// The host PID of a container: containerd IDs through the containerd API, others via CRI.
    /// A container resolved before is not asked for again while its process runs (see
    /// [`PidCache`]).
    pub async fn container_pid(&self, container_id: &str) -> Result<HostPid, RuntimeError> {
        let container = self.parse(container_id)?;
        if let Some(pid) = self.pids.get(&container.id) {
            return Ok(pid);
        }
        let pid = self.container_pid_from_runtime(&container).await?;
        self.pids.remember(&container.id, pid);
        Ok(pid)
    }

    async fn container_pid_from_runtime(
        &self,
        container: &ContainerRef,
    ) -> Result<HostPid, RuntimeError> {
        match container.runtime {
            RuntimeKind::Containerd => {
                let client = self.containerd().await?;
                match client.task_pid(&container.id).await {
                    // containerd restarted since the connection was made: once more, anew.
                    Err(RuntimeError::Unavailable { .. }) if self.forget_containerd(&client) => {
                        self.containerd().await?.task_pid(&container.id).await
                    }
                    other => other,
                }
            }
            RuntimeKind::CriO | RuntimeKind::Docker => {
                self.cri().await?.container_pid(&container.id).await
            }
        }
    }

    /// The host PID of a container through CRI, whatever its runtime.
    pub async fn container_pid_via_cri(&self, container_id: &str) -> Result<HostPid, RuntimeError> {
        let container = self.parse(container_id)?;
        self.cri().await?.container_pid(&container.id).await
    }

    /// The host PID of the pod's sandbox (pause) process.
    pub async fn sandbox_pid(&self, pod_uid: &str) -> Result<HostPid, RuntimeError> {
        validate_pod_uid(pod_uid)?;
        self.cri().await?.sandbox_pid(pod_uid).await
    }

    /// The container's PID, or the pod sandbox's when the container has no running process (a
    /// crash-looping container must not keep a network fault from being set or recovered).
    pub async fn container_or_sandbox_pid(
        &self,
        container_id: &str,
        pod_uid: &str,
    ) -> Result<HostPid, RuntimeError> {
        match self.container_pid(container_id).await {
            Err(RuntimeError::NotRunning { .. } | RuntimeError::NotFound { .. })
                if !pod_uid.is_empty() =>
            {
                self.sandbox_pid(pod_uid).await
            }
            other => other,
        }
    }

    /// Every container of a pod.
    pub async fn pod_containers(&self, pod_uid: &str) -> Result<Vec<PodContainer>, RuntimeError> {
        validate_pod_uid(pod_uid)?;
        self.cri().await?.pod_containers(pod_uid).await
    }

    /// The containerd client, connected on first use and shared after.
    pub async fn containerd(&self) -> Result<ContainerdClient, RuntimeError> {
        if let Some(client) = self.containerd.lock().ok().and_then(|c| c.clone()) {
            return Ok(client);
        }
        let client = ContainerdClient::connect(
            &self.config.containerd_socket,
            &self.config.containerd_namespace,
            self.config.timeout,
        )
        .await?;
        if let Ok(mut cached) = self.containerd.lock() {
            *cached = Some(client.clone());
        }
        Ok(client)
    }

    /// Drops the shared containerd connection if it is still `failed` (another caller may
    /// have replaced it already); whether there was one to drop.
    fn forget_containerd(&self, failed: &ContainerdClient) -> bool {
        let Ok(mut cached) = self.containerd.lock() else {
            return false;
        };
        match cached.as_ref() {
            Some(current) if current.same_connection(failed) => {
                *cached = None;
                true
            }
            _ => false,
        }
    }

    pub async fn cri(&self) -> Result<CriClient, RuntimeError> {
        let name = format!("{} (CRI)", self.config.default_runtime);
        CriClient::connect(&self.config.cri_socket, &name, self.config.timeout).await
    }
}

fn validate_pod_uid(pod_uid: &str) -> Result<(), RuntimeError> {
    let valid = !pod_uid.is_empty()
        && pod_uid.len() <= 128
        && pod_uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::InvalidArgument {
            input: pod_uid.to_owned(),
            reason: "a pod UID is letters, digits and '-'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_and_named() {
        let mut config = RuntimeConfig::for_runtime(RuntimeKind::Containerd);
        config.containerd_socket = "/nonexistent/containerd.sock".into();
        config.cri_socket = "/nonexistent/cri.sock".into();
        let resolver = Resolver::new(config);
        let err = resolver
            .container_pid("containerd://abc")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(
            err.to_string().contains("/nonexistent/containerd.sock"),
            "{err}"
        );
        let err = resolver.sandbox_pid("1234-abcd").await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cri.sock"), "{err}");
    }

    #[tokio::test]
    async fn a_refusing_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.sock");
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let mut config = RuntimeConfig::for_runtime(RuntimeKind::CriO);
        config.cri_socket = path.clone();
        let err = Resolver::new(config)
            .container_pid("cri-o://abc")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        assert!(err.to_string().contains("dead.sock"), "{err}");
    }

    #[tokio::test]
    async fn an_id_of_another_runtime_is_refused_before_connecting() {
        let resolver = Resolver::new(RuntimeConfig::for_runtime(RuntimeKind::Containerd));
        for id in ["docker://abc", "cri-o://abc"] {
            let err = resolver.container_pid(id).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{id}: {err}");
            assert!(
                err.to_string().contains("this node runs containerd"),
                "{err}"
            );
        }
        // The node's own scheme, and a bare ID, are the node's runtime.
        assert!(resolver.parse("containerd://abc").is_ok());
        assert_eq!(
            resolver.parse("abc").unwrap().runtime,
            RuntimeKind::Containerd
        );
        let crio = Resolver::new(RuntimeConfig::for_runtime(RuntimeKind::CriO));
        assert!(crio.parse("cri-o://abc").is_ok());
        assert!(crio.parse("containerd://abc").is_err());
    }

    #[tokio::test]
    async fn malformed_input_is_rejected_before_connecting() {
        let resolver = Resolver::new(RuntimeConfig::for_runtime(RuntimeKind::Containerd));
        let err = resolver
            .container_pid("containerd://a/b")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = resolver.sandbox_pid("x;y").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
