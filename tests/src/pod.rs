//! Pods the way kubelet asks CRI for them: the spec a test writes, its translation into CRI
//! sandbox and container configs, and the running pod handed back.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;

use crate::error::{Error, Result};
use crate::image::WORKLOAD_IMAGE;
use crate::session::Session;

/// What a container runs when the spec says nothing: the image's `sh` would exit at once
/// without a terminal. PID 1 ignores SIGTERM, which is fine: CRI stops sandboxes with SIGKILL.
pub const DEFAULT_COMMAND: &[&str] = &["sleep", "2147483647"];
/// ExecSync's timeout when the caller gives none.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// Mount propagation of a host-directory volume (Kubernetes' `mountPropagation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Kubernetes' `None`: rprivate.
    #[default]
    Private,
    /// rslave: host mounts below the directory appear in the container.
    HostToContainer,
    /// rshared: mounts go both ways. Needs a privileged container to mount anything.
    Bidirectional,
}

impl Propagation {
    /// Needs the host directory to be a shared mount (containerd refuses otherwise).
    pub fn needs_shared_host_mount(self) -> bool {
        self != Propagation::Private
    }

    fn cri(self) -> cri::MountPropagation {
        match self {
            Propagation::Private => cri::MountPropagation::PropagationPrivate,
            Propagation::HostToContainer => cri::MountPropagation::PropagationHostToContainer,
            Propagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
        }
    }

    /// The `ctr run --mount` option for the same propagation.
    pub(crate) fn mount_option(self) -> &'static str {
        match self {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        }
    }
}

/// A host directory mounted into the container (a `hostPath` volume plus its volumeMount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
}

impl Volume {
    /// Read-write, private propagation.
    pub fn host_dir(host_path: impl Into<PathBuf>, container_path: impl Into<String>) -> Volume {
        Volume {
            host_path: host_path.into(),
            container_path: container_path.into(),
            readonly: false,
            propagation: Propagation::Private,
        }
    }

    pub fn readonly(mut self) -> Volume {
        self.readonly = true;
        self
    }

    pub fn propagation(mut self, propagation: Propagation) -> Volume {
        self.propagation = propagation;
        self
    }

    fn validate(&self) -> Result<()> {
        if !self.host_path.is_absolute() {
            return Err(Error::InvalidSpec {
                field: "volume host path",
                reason: format!("{} is not absolute", self.host_path.display()),
            });
        }
        if !self.container_path.starts_with('/') {
            return Err(Error::InvalidSpec {
                field: "volume container path",
                reason: format!("{} is not absolute", self.container_path),
            });
        }
        Ok(())
    }
}

/// Pod network: CNI (the pod gets its own namespace on the testbed bridge) or the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodNetwork {
    #[default]
    Cni,
    Host,
}

/// Another container of the pod: an init container (run to completion, in order, before the
/// others start) or a sidecar (started after the pod's main container, as a webhook appends
/// it). Same defaults as the main container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) command: Vec<String>,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) volumes: Vec<Volume>,
    pub(crate) privileged: bool,
    pub(crate) capabilities: Vec<String>,
    pub(crate) drop_capabilities: Vec<String>,
    pub(crate) run_as_user: Option<i64>,
    pub(crate) run_as_group: Option<i64>,
    pub(crate) readonly_rootfs: bool,
    pub(crate) no_new_privs: bool,
}

impl ContainerSpec {
    pub fn new(name: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: WORKLOAD_IMAGE.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            volumes: Vec::new(),
            privileged: false,
            capabilities: Vec::new(),
            drop_capabilities: Vec::new(),
            run_as_user: None,
            run_as_group: None,
            readonly_rootfs: false,
            no_new_privs: false,
        }
    }

    pub fn image(mut self, image: impl Into<String>) -> ContainerSpec {
        self.image = image.into();
        self
    }

    /// The container's `command`. Default: [`DEFAULT_COMMAND`].
    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        command: I,
    ) -> ContainerSpec {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> ContainerSpec {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Shorthand for `command(["sh", "-c"]).args([script])`.
    pub fn shell(self, script: impl Into<String>) -> ContainerSpec {
        self.command(["sh", "-c"]).args([script.into()])
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> ContainerSpec {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn volume(mut self, volume: Volume) -> ContainerSpec {
        self.volumes.push(volume);
        self
    }

    /// `securityContext.privileged: true` (every device, every capability; the pod sandbox
    /// is made privileged too, as CRI requires).
    pub fn privileged(mut self) -> ContainerSpec {
        self.privileged = true;
        self
    }

    /// `securityContext.capabilities.add` (e.g. `NET_ADMIN`), on top of the runtime's
    /// default set.
    pub fn capability(mut self, capability: impl Into<String>) -> ContainerSpec {
        self.capabilities.push(capability.into());
        self
    }

    /// `securityContext.capabilities.drop` (`ALL` drops every one).
    pub fn drop_capability(mut self, capability: impl Into<String>) -> ContainerSpec {
        self.drop_capabilities.push(capability.into());
        self
    }

    /// `securityContext.runAsUser` / `runAsGroup`.
    pub fn run_as(mut self, user: Option<i64>, group: Option<i64>) -> ContainerSpec {
        self.run_as_user = user;
        self.run_as_group = group;
        self
    }

    /// `securityContext.readOnlyRootFilesystem: true`.
    pub fn readonly_rootfs(mut self) -> ContainerSpec {
        self.readonly_rootfs = true;
        self
    }

    /// `securityContext.allowPrivilegeEscalation: false` (no_new_privs).
    pub fn no_new_privs(mut self) -> ContainerSpec {
        self.no_new_privs = true;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A one-container pod. The name is a prefix: the testbed appends a sequence number so that
/// tests can reuse names freely.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) uid: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) network: PodNetwork,
    /// The main container (named "main" unless [`PodSpec::container_name`] says otherwise).
    pub(crate) main: ContainerSpec,
    pub(crate) init_containers: Vec<ContainerSpec>,
    pub(crate) sidecars: Vec<ContainerSpec>,
    pub(crate) pod_cgroup: bool,
    pub(crate) resources: crate::pod_cgroup::PodResources,
    pub(crate) host_pid: bool,
    /// CRI DNSConfig servers (kubelet's from the pod's dnsPolicy); empty: the node's resolv.conf.
    pub(crate) dns_servers: Vec<String>,
}

impl PodSpec {
    pub fn new(name: impl Into<String>) -> PodSpec {
        PodSpec {
            name: name.into(),
            namespace: "default".into(),
            uid: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            network: PodNetwork::Cni,
            main: ContainerSpec::new("main"),
            init_containers: Vec::new(),
            sidecars: Vec::new(),
            pod_cgroup: false,
            resources: Default::default(),
            host_pid: false,
            dns_servers: Vec::new(),
        }
    }

    /// The pod's resolv.conf names these nameservers (as kubelet's DNSConfig does).
    pub fn dns_server(mut self, server: impl Into<String>) -> PodSpec {
        self.dns_servers.push(server.into());
        self
    }

    /// `hostPID: true`: the sandbox and every container in the node's PID namespace.
    pub fn host_pid(mut self) -> PodSpec {
        self.host_pid = true;
        self
    }

    /// Replaces the main container (its name included).
    pub fn main_container(mut self, container: ContainerSpec) -> PodSpec {
        self.main = container;
        self
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> PodSpec {
        self.namespace = namespace.into();
        self
    }

    /// A fixed pod UID instead of a random one.
    pub fn uid(mut self, uid: impl Into<String>) -> PodSpec {
        self.uid = Some(uid.into());
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> PodSpec {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> PodSpec {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// `hostNetwork: true`.
    pub fn host_network(mut self) -> PodSpec {
        self.network = PodNetwork::Host;
        self
    }

    pub fn container_name(mut self, name: impl Into<String>) -> PodSpec {
        self.main.name = name.into();
        self
    }

    pub fn image(mut self, image: impl Into<String>) -> PodSpec {
        self.main = self.main.image(image);
        self
    }

    /// The main container's `command` (replaces the image entrypoint). Default:
    /// [`DEFAULT_COMMAND`].
    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> PodSpec {
        self.main = self.main.command(command);
        self
    }

    /// The main container's `args`.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> PodSpec {
        self.main = self.main.args(args);
        self
    }

    /// Shorthand for `command(["sh", "-c"]).args([script])`.
    pub fn shell(mut self, script: impl Into<String>) -> PodSpec {
        self.main = self.main.shell(script);
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> PodSpec {
        self.main = self.main.env(key, value);
        self
    }

    pub fn volume(mut self, volume: Volume) -> PodSpec {
        self.main = self.main.volume(volume);
        self
    }

    /// `securityContext.privileged: true` (needed to mount anything inside the container).
    pub fn privileged(mut self) -> PodSpec {
        self.main = self.main.privileged();
        self
    }

    /// `securityContext.capabilities.add` of the main container (e.g. `NET_ADMIN`).
    pub fn capability(mut self, capability: impl Into<String>) -> PodSpec {
        self.main = self.main.capability(capability);
        self
    }

    /// An init container: run to completion, in the order added, before any other
    /// container starts; a non-zero exit fails [`crate::Testbed::run_pod`] with its log.
    pub fn init_container(mut self, container: ContainerSpec) -> PodSpec {
        self.init_containers.push(container);
        self
    }

    /// Another container, started after the main one (in the order added).
    pub fn sidecar(mut self, container: ContainerSpec) -> PodSpec {
        self.sidecars.push(container);
        self
    }

    fn any_privileged(&self) -> bool {
        self.main.privileged
            || self
                .init_containers
                .iter()
                .chain(&self.sidecars)
                .any(|c| c.privileged)
    }

    /// A pod cgroup as kubelet makes one (`/<testbed>/pod<UID>`, the sandbox and container
    /// below it), instead of containerd's flat `/k8s.io/<id>`.
    pub fn pod_cgroup(mut self) -> PodSpec {
        self.pod_cgroup = true;
        self
    }

    /// A pod-level memory limit, set on the pod cgroup before the sandbox starts, as kubelet
    /// does (implies [`PodSpec::pod_cgroup`]).
    pub fn memory_limit(mut self, bytes: u64) -> PodSpec {
        self.resources.memory_limit = Some(bytes);
        self.pod_cgroup = true;
        self
    }

    /// A pod CPU request in millicores: CPU shares on the pod cgroup (weight on v2), as kubelet
    /// sets them, so the pod keeps that much CPU on a busy host (implies
    /// [`PodSpec::pod_cgroup`]).
    pub fn cpu_request(mut self, millicores: u64) -> PodSpec {
        self.resources.cpu_request = Some(millicores);
        self.pod_cgroup = true;
        self
    }

    pub fn volumes(&self) -> &[Volume] {
        &self.main.volumes
    }

    /// The volumes of every container of the pod.
    pub fn all_volumes(&self) -> impl Iterator<Item = &Volume> {
        self.main.volumes.iter().chain(
            self.init_containers
                .iter()
                .chain(&self.sidecars)
                .flat_map(|c| &c.volumes),
        )
    }

    pub(crate) fn validate(&self) -> Result<()> {
        // The pod name becomes the hostname and part of the sandbox name: a DNS label.
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 50
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
        };
        if !dns_label(&self.name) {
            return Err(Error::InvalidSpec {
                field: "pod name",
                reason: format!(
                    "{:?} is not a DNS label of at most 50 characters",
                    self.name
                ),
            });
        }
        if !dns_label(&self.main.name) {
            return Err(Error::InvalidSpec {
                field: "container name",
                reason: format!("{:?} is not a DNS label", self.main.name),
            });
        }
        let mut names = vec![self.main.name.as_str()];
        for c in self.init_containers.iter().chain(&self.sidecars) {
            if !dns_label(&c.name) || names.contains(&c.name.as_str()) {
                return Err(Error::InvalidSpec {
                    field: "container name",
                    reason: format!("{:?} is not a DNS label, or not unique in the pod", c.name),
                });
            }
            names.push(&c.name);
        }
        self.all_volumes().try_for_each(Volume::validate)
    }

    fn namespace_options(&self, pid: cri::NamespaceMode) -> cri::NamespaceOption {
        let network = match self.network {
            PodNetwork::Cni => cri::NamespaceMode::Pod,
            PodNetwork::Host => cri::NamespaceMode::Node,
        };
        let pid = if self.host_pid {
            cri::NamespaceMode::Node
        } else {
            pid
        };
        cri::NamespaceOption {
            network: network as i32,
            pid: pid as i32,
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    /// The user's labels plus the ones kubelet puts on every sandbox and container, which
    /// runtimes and the agent select by (`io.kubernetes.pod.uid` above all).
    fn kubelet_labels(
        &self,
        pod_name: &str,
        uid: &str,
        container: Option<&str>,
    ) -> std::collections::HashMap<String, String> {
        let mut labels: std::collections::HashMap<String, String> =
            self.labels.clone().into_iter().collect();
        labels.insert("io.kubernetes.pod.name".into(), pod_name.to_owned());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), uid.to_owned());
        if let Some(container) = container {
            labels.insert("io.kubernetes.container.name".into(), container.to_owned());
        }
        labels
    }

    /// The sandbox config, as kubelet builds it for this pod.
    pub(crate) fn sandbox_config(
        &self,
        name: &str,
        uid: &str,
        log_dir: &str,
        cgroup_parent: Option<&str>,
    ) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // runc refuses a hostname without a private UTS namespace, and host-network pods
            // share the host's.
            hostname: match self.network {
                PodNetwork::Cni => name.to_owned(),
                PodNetwork::Host => String::new(),
            },
            log_directory: log_dir.to_owned(),
            labels: self.kubelet_labels(name, uid, None),
            annotations: self.annotations.clone().into_iter().collect(),
            dns_config: (!self.dns_servers.is_empty()).then(|| cri::DnsConfig {
                servers: self.dns_servers.clone(),
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:1".into()],
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.unwrap_or_default().to_owned(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespace_options(cri::NamespaceMode::Pod)),
                    privileged: self.any_privileged(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The container config, with kubelet's `pid: CONTAINER` (CRI's default, POD, would share
    /// the pause process's PID namespace).
    pub(crate) fn container_config(&self, pod_name: &str, uid: &str) -> cri::ContainerConfig {
        self.config_of(&self.main, pod_name, uid)
    }

    /// The config of any container of the pod.
    pub(crate) fn config_of(
        &self,
        c: &ContainerSpec,
        pod_name: &str,
        uid: &str,
    ) -> cri::ContainerConfig {
        self.config_of_attempt(c, pod_name, uid, 0)
    }

    /// The config of a container's `attempt`-th start (kubelet's restart count).
    pub(crate) fn config_of_attempt(
        &self,
        c: &ContainerSpec,
        pod_name: &str,
        uid: &str,
        attempt: u32,
    ) -> cri::ContainerConfig {
        let command = if c.command.is_empty() && c.args.is_empty() {
            DEFAULT_COMMAND.iter().map(|s| (*s).to_owned()).collect()
        } else {
            c.command.clone()
        };
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            command,
            args: c.args.clone(),
            envs: c
                .env
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: c
                .volumes
                .iter()
                .map(|v| cri::Mount {
                    container_path: v.container_path.clone(),
                    host_path: v.host_path.to_string_lossy().into_owned(),
                    readonly: v.readonly,
                    propagation: v.propagation.cri() as i32,
                    ..Default::default()
                })
                .collect(),
            labels: self.kubelet_labels(pod_name, uid, Some(&c.name)),
            log_path: format!("{}_{attempt}.log", c.name),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(self.namespace_options(cri::NamespaceMode::Container)),
                    privileged: c.privileged,
                    capabilities: (!c.capabilities.is_empty() || !c.drop_capabilities.is_empty())
                        .then(|| cri::Capability {
                            add_capabilities: c.capabilities.clone(),
                            drop_capabilities: c.drop_capabilities.clone(),
                            ..Default::default()
                        }),
                    run_as_user: c.run_as_user.map(|value| cri::Int64Value { value }),
                    run_as_group: c.run_as_group.map(|value| cri::Int64Value { value }),
                    readonly_rootfs: c.readonly_rootfs,
                    no_new_privs: c.no_new_privs,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// What ExecSync returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// A running pod with its one container.
#[derive(Clone)]
pub struct Pod {
    /// The pod name as sent to CRI (the spec's name plus a sequence number).
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox_id: String,
    pub container_id: String,
    pub container_name: String,
    /// Host PID of the container's init process.
    pub pid: u32,
    /// Host PID of the sandbox (pause) process.
    pub sandbox_pid: u32,
    /// The pod IP from PodSandboxStatus; `None` for host-network pods.
    pub ip: Option<String>,
    pub network: PodNetwork,
    /// The pod cgroup, if the spec asked for one.
    pub cgroup: Option<crate::PodCgroup>,
    /// The pod's other running containers (sidecars), in the order they were started.
    pub sidecars: Vec<PodContainer>,
    /// Where CRI writes the containers' logs (`<name>_<attempt>.log`).
    pub log_dir: PathBuf,
    /// What the pod was made from (to restart a container as kubelet does).
    pub(crate) spec: PodSpec,
    pub(crate) sandbox_config: cri::PodSandboxConfig,
    pub(crate) session: Arc<Session>,
}

/// One more container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    pub name: String,
    pub id: String,
    /// Host PID of its init process.
    pub pid: u32,
    /// 0, then one more for each restart.
    pub attempt: u32,
}

impl fmt::Debug for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pod")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("uid", &self.uid)
            .field("sandbox_id", &self.sandbox_id)
            .field("container_id", &self.container_id)
            .field("pid", &self.pid)
            .field("sandbox_pid", &self.sandbox_pid)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl Pod {
    /// The pod sandbox ID.
    pub fn id(&self) -> &str {
        &self.sandbox_id
    }

    /// The container ID as Kubernetes reports it in the pod status (`containerd://ID`).
    pub fn container_uri(&self) -> String {
        format!("containerd://{}", self.container_id)
    }

    /// The pod IP parsed, if it has one.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ip.as_deref().and_then(|ip| ip.parse().ok())
    }

    /// Runs `cmd` in the container through CRI ExecSync (like `kubectl exec`).
    pub fn exec_sync(&self, cmd: &[&str]) -> Result<ExecOutput> {
        self.exec_sync_timeout(cmd, DEFAULT_EXEC_TIMEOUT)
    }

    pub fn exec_sync_timeout(&self, cmd: &[&str], timeout: Duration) -> Result<ExecOutput> {
        let cmd: Vec<String> = cmd.iter().map(|s| (*s).to_owned()).collect();
        self.session
            .block_on(self.session.cri.exec_sync(&self.container_id, cmd, timeout))
    }

    /// The container's state as CRI reports it (`CONTAINER_RUNNING`, `CONTAINER_EXITED`, …) and
    /// its exit code.
    pub fn container_state(&self) -> Result<(String, i32)> {
        self.session
            .block_on(self.session.cri.container_state(&self.container_id))
    }

    /// The container's task as containerd's task API reports it.
    pub fn task_state(&self) -> Result<crate::TaskState> {
        self.session.block_on(crate::ctr::task_state(
            self.session.channel.clone(),
            &self.container_id,
        ))
    }

    /// A sidecar by name.
    pub fn sidecar(&self, name: &str) -> Result<&PodContainer> {
        self.sidecars
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::InvalidSpec {
                field: "container name",
                reason: format!("pod {} has no sidecar {name:?}", self.name),
            })
    }

    /// Runs `cmd` in the named sidecar through CRI ExecSync.
    pub fn exec_in(&self, container: &str, cmd: &[&str], timeout: Duration) -> Result<ExecOutput> {
        let id = self.sidecar(container)?.id.clone();
        let cmd: Vec<String> = cmd.iter().map(|s| (*s).to_owned()).collect();
        self.session
            .block_on(self.session.cri.exec_sync(&id, cmd, timeout))
    }

    /// A sidecar's state as CRI reports it, and its exit code.
    pub fn sidecar_state(&self, container: &str) -> Result<(String, i32)> {
        let id = self.sidecar(container)?.id.clone();
        self.session.block_on(self.session.cri.container_state(&id))
    }

    /// What a container of the pod wrote to stdout/stderr so far (CRI's log file, one
    /// `TIME STREAM TAG text` line per line written; a restarted sidecar's current attempt),
    /// empty if nothing yet.
    pub fn log(&self, container: &str) -> String {
        let attempt = self.sidecar(container).map_or(0, |c| c.attempt);
        std::fs::read_to_string(self.log_dir.join(format!("{container}_{attempt}.log")))
            .unwrap_or_default()
    }

    /// Like [`Pod::exec_sync`], but a non-zero exit is an error; returns stdout.
    pub fn exec_ok(&self, cmd: &[&str]) -> Result<String> {
        let out = self.exec_sync(cmd)?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(Error::ExecFailed {
                cmd: cmd.join(" "),
                container: self.container_id.clone(),
                exit_code: out.exit_code,
                stderr: out.stderr,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_pods_send_no_hostname() {
        let spec = PodSpec::new("h").host_network();
        let cfg = spec.sandbox_config("h-1", "u", "/l", None);
        assert_eq!(cfg.hostname, "");
        let ns = cfg
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    }

    #[test]
    fn containers_get_their_own_pid_namespace_and_default_command() {
        let cfg = PodSpec::new("p").container_config("p", "u");
        assert_eq!(cfg.command, DEFAULT_COMMAND);
        let ns = cfg
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
    }

    #[test]
    fn volumes_carry_propagation() {
        let cfg = PodSpec::new("p")
            .volume(
                Volume::host_dir("/h", "/c")
                    .readonly()
                    .propagation(Propagation::Bidirectional),
            )
            .container_config("p", "u");
        assert_eq!(cfg.mounts.len(), 1);
        assert!(cfg.mounts[0].readonly);
        assert_eq!(
            cfg.mounts[0].propagation,
            cri::MountPropagation::PropagationBidirectional as i32
        );
    }

    #[test]
    fn sidecars_carry_their_privileges_and_make_the_sandbox_privileged() {
        let spec = PodSpec::new("p")
            .capability("NET_ADMIN")
            .sidecar(ContainerSpec::new("fs").privileged())
            .init_container(ContainerSpec::new("init").shell("true"));
        let security = |cfg: cri::ContainerConfig| {
            cfg.linux
                .and_then(|l| l.security_context)
                .expect("security context")
        };
        let main = security(spec.container_config("p", "u"));
        assert!(!main.privileged);
        assert_eq!(
            main.capabilities.expect("capabilities").add_capabilities,
            ["NET_ADMIN"]
        );
        let fs = security(spec.config_of(&spec.sidecars[0], "p", "u"));
        assert!(fs.privileged && fs.capabilities.is_none());
        let init = spec.config_of(&spec.init_containers[0], "p", "u");
        assert_eq!(init.command, ["sh", "-c"]);
        assert_eq!(init.log_path, "init_0.log");
        let sandbox = spec.sandbox_config("p", "u", "/l", None);
        assert!(
            sandbox
                .linux
                .and_then(|l| l.security_context)
                .expect("sandbox")
                .privileged
        );
        let err = PodSpec::new("p")
            .sidecar(ContainerSpec::new("main"))
            .validate()
            .expect_err("duplicate name");
        assert!(err.to_string().contains("not unique"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let err = PodSpec::new("Bad_Name").validate().expect_err("invalid");
        assert!(err.to_string().contains("pod name"), "{err}");
        let err = PodSpec::new("ok")
            .volume(Volume::host_dir("rel", "/c"))
            .validate()
            .expect_err("invalid");
        assert!(err.to_string().contains("host path"), "{err}");
    }
}
