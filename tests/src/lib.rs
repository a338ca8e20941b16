//! Real-runtime testbed for faultline's end-to-end tests: a private containerd (Debian package)
//! with the CRI plugin on a CNI bridge of its own, registry-free busybox images, pods created
//! through CRI the way kubelet creates them, and plain `ctr` containers.
//!
//! Boundaries: everything lives under `/tmp/faultline-testbed-<pid>-<seq>` plus one bridge and
//! one /24; several testbeds (several test processes) run side by side. The testbed does not
//! resolve containers for the agent (the agent does that), it only reports what CRI and
//! containerd say. Needs root. The API is blocking (an owned tokio runtime inside) and every
//! method takes `&self`: share one `Testbed` between test threads.
//!
//! ```no_run
//! use testbed::{PodSpec, Propagation, Testbed, Volume};
//! let tb = Testbed::start()?;
//! let dir = tb.host_dir("data")?;
//! let pod = tb.run_pod(PodSpec::new("reader").volume(Volume::host_dir(&dir, "/data")))?;
//! let out = pod.exec_sync(&["ls", "/data"])?;
//! tb.shutdown()?;
//! # Ok::<(), testbed::Error>(())
//! ```

mod cgroups;
mod containerd;
mod cri;
mod ctr;
pub mod dockerfile;
mod error;
mod forwarding;
mod grpc;
pub mod http_fixture;
mod image;
mod layout;
pub mod manifest_pod;
mod mounts;
mod network;
pub mod oci_archive;
mod pod;
mod pod_cgroup;
mod process;
mod session;
mod stale;
mod teardown;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use containerd::{NAMESPACE, SANDBOX_IMAGE};
pub use ctr::{PlainContainer, TaskState};
pub use error::{Error, Result};
pub use image::WORKLOAD_IMAGE;
pub use network::Subnet;
pub use pod::{
    ContainerSpec, DEFAULT_COMMAND, DEFAULT_EXEC_TIMEOUT, ExecOutput, Pod, PodContainer,
    PodNetwork, PodSpec, Propagation, Volume,
};
pub use pod_cgroup::PodCgroup;

use containerd::Containerd;
use ctr::Ctr;
use layout::Layout;
use session::Session;

/// CRI loads the CNI config about a second after start.
const NETWORK_READY_LIMIT: Duration = Duration::from_secs(20);

/// Distinguishes testbeds started by one process.
static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A private containerd with CRI, ready for pods. Dropping it tears everything down; call
/// [`Testbed::shutdown`] to see what teardown could not undo.
pub struct Testbed {
    layout: Layout,
    socket: PathBuf,
    subnet: Subnet,
    bridge: String,
    session: Arc<Session>,
    ctr: Ctr,
    /// `k8s.io` cgroups that existed before: teardown removes only the others.
    cgroups_before: Vec<PathBuf>,
    next_name: AtomicU64,
    state: Mutex<State>,
}

/// What teardown must undo; recorded before each step that creates it.
#[derive(Debug, Default)]
struct State {
    containerd: Option<Containerd>,
    pods: BTreeSet<String>,
    plain: BTreeSet<String>,
    /// Every sandbox and container ID ever made, to check that their cgroups are gone.
    ids: Vec<String>,
    shared_binds: Vec<PathBuf>,
    shut_down: bool,
}

impl Testbed {
    /// Reaps stale testbeds of crashed runs, then starts containerd, waits for CRI to report
    /// the network ready, and imports the workload and sandbox images.
    pub fn start() -> Result<Testbed> {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            return Err(Error::NotRoot {
                euid: euid.as_raw(),
            });
        }
        for line in Testbed::reap_stale() {
            eprintln!("testbed: {line}");
        }
        let layout = Layout::new(std::process::id(), NEXT_SEQ.fetch_add(1, Ordering::Relaxed));
        prepare_base_dir(&layout)?;
        forwarding::record(&layout);
        let testbed = match Testbed::configure(layout.clone()) {
            Ok(testbed) => testbed,
            Err(e) => {
                let _ = teardown::remove_base_dir(&layout);
                return Err(e);
            }
        };
        // From here on a failure drops the testbed, whose teardown undoes what was done.
        testbed.boot()?;
        Ok(testbed)
    }

    /// Tears down what crashed runs left behind (base directories whose owner PID is dead).
    /// Returns one line per stale testbed. Called by [`Testbed::start`].
    pub fn reap_stale() -> Vec<String> {
        stale::reap()
    }

    /// Writes the configs and builds the images; starts nothing.
    fn configure(layout: Layout) -> Result<Testbed> {
        let subnet = network::choose_subnet(&layout)?;
        let bridge = layout.bridge();
        write(&layout.subnet_file(), subnet.to_string())?;
        write(
            &layout.cni_conf_dir().join("10-faultline-testbed.conflist"),
            network::conflist(&bridge, subnet, &layout.ipam_dir()),
        )?;
        write(&layout.config(), containerd::config_toml(&layout))?;
        image::build(&image::WORKLOAD, &layout.images().join("workload.tar"))?;
        image::build(&image::SANDBOX, &layout.images().join("sandbox.tar"))?;
        let socket = layout.socket();
        Ok(Testbed {
            session: Arc::new(Session::new(&socket)?),
            ctr: Ctr::new(&layout),
            cgroups_before: cgroups::namespace_cgroups(),
            next_name: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            socket,
            subnet,
            bridge,
            layout,
        })
    }

    fn boot(&self) -> Result<()> {
        let containerd = Containerd::start(&self.layout)?;
        self.state().containerd = Some(containerd);
        self.session.block_on(self.wait_network_ready())?;
        for tar in ["workload.tar", "sandbox.tar"] {
            image::import(&self.ctr, &self.layout.images().join(tar))?;
        }
        Ok(())
    }

    async fn wait_network_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let detail = match self.session.cri.network_ready().await {
                Ok((true, _)) => return Ok(()),
                Ok((false, reason)) => reason,
                Err(e) => e.to_string(),
            };
            if started.elapsed() > NETWORK_READY_LIMIT {
                return Err(Error::ContainerdNotReady {
                    waited: NETWORK_READY_LIMIT,
                    detail: format!("CRI NetworkReady: {detail}"),
                    log: self.layout.containerd_log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// containerd's gRPC socket (CRI and the containerd API).
    pub fn containerd_socket(&self) -> &Path {
        &self.socket
    }

    /// The containerd namespace of CRI pods and plain containers: `k8s.io`.
    pub fn namespace(&self) -> &'static str {
        NAMESPACE
    }

    /// Everything of this testbed lives below this directory.
    pub fn base_dir(&self) -> &Path {
        &self.layout.base
    }

    /// The /24 that CNI pods get their IPs from.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The CNI bridge (exists once the first CNI pod runs).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// containerd's own log, for failure messages.
    pub fn containerd_log(&self) -> PathBuf {
        self.layout.containerd_log()
    }

    /// `prefix-N`, unique within this testbed.
    pub fn unique_name(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            self.next_name.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A new empty directory under the base directory, for host-dir volumes.
    pub fn host_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.layout.volumes().join(self.unique_name(name));
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        Ok(dir)
    }

    /// RunPodSandbox → CreateContainer → StartContainer, then reads the PIDs and the pod IP.
    /// The pod is removed again if any later step fails.
    pub fn run_pod(&self, spec: PodSpec) -> Result<Pod> {
        self.check_running()?;
        spec.validate()?;
        for volume in spec
            .all_volumes()
            .filter(|v| v.propagation.needs_shared_host_mount())
        {
            self.ensure_shared_bind(&volume.host_path)?;
        }
        let name = self.unique_name(&spec.name);
        let uid = match &spec.uid {
            Some(uid) => uid.clone(),
            None => random_uuid()?,
        };
        let log_dir = self
            .layout
            .logs()
            .join("pods")
            .join(format!("{}_{name}_{uid}", spec.namespace));
        std::fs::create_dir_all(&log_dir).map_err(Error::io("creating", &log_dir))?;
        let cgroup = spec.pod_cgroup.then(|| PodCgroup {
            path: format!("/{}/pod{uid}", self.layout.cgroup_name()),
        });
        if let Some(cgroup) = &cgroup {
            pod_cgroup::prepare(&cgroup.path, spec.resources)?;
        }
        let sandbox_config = spec.sandbox_config(
            &name,
            &uid,
            &log_dir.to_string_lossy(),
            cgroup.as_ref().map(|c| c.path.as_str()),
        );
        let cri = &self.session.cri;

        self.session.block_on(async {
            let sandbox_id = cri.run_pod_sandbox(sandbox_config.clone()).await?;
            {
                let mut state = self.state();
                state.pods.insert(sandbox_id.clone());
                state.ids.push(sandbox_id.clone());
            }
            let started = async {
                for init in &spec.init_containers {
                    let id = cri
                        .create_container(
                            &sandbox_id,
                            spec.config_of(init, &name, &uid),
                            sandbox_config.clone(),
                        )
                        .await?;
                    self.state().ids.push(id.clone());
                    cri.start_container(&id).await?;
                    let (state, exit_code) = wait_exited(cri, &id).await?;
                    if state != "CONTAINER_EXITED" || exit_code != 0 {
                        let log =
                            std::fs::read_to_string(log_dir.join(format!("{}_0.log", init.name)))
                                .unwrap_or_default();
                        return Err(Error::InitContainerFailed {
                            name: init.name.clone(),
                            state,
                            exit_code,
                            log,
                        });
                    }
                }
                let container_id = cri
                    .create_container(
                        &sandbox_id,
                        spec.container_config(&name, &uid),
                        sandbox_config.clone(),
                    )
                    .await?;
                self.state().ids.push(container_id.clone());
                cri.start_container(&container_id).await?;
                let pid = cri.container_pid(&container_id).await?;
                let mut sidecars = Vec::new();
                for sidecar in &spec.sidecars {
                    let id = cri
                        .create_container(
                            &sandbox_id,
                            spec.config_of(sidecar, &name, &uid),
                            sandbox_config.clone(),
                        )
                        .await?;
                    self.state().ids.push(id.clone());
                    cri.start_container(&id).await?;
                    let pid = cri.container_pid(&id).await?;
                    sidecars.push(PodContainer {
                        name: sidecar.name.clone(),
                        id,
                        pid,
                        attempt: 0,
                    });
                }
                let (sandbox_pid, ip) = cri.sandbox_pid_and_ip(&sandbox_id).await?;
                Ok::<_, Error>((container_id, pid, sandbox_pid, ip, sidecars))
            }
            .await;
            match started {
                Ok((container_id, pid, sandbox_pid, ip, sidecars)) => Ok(Pod {
                    name,
                    namespace: spec.namespace.clone(),
                    uid,
                    sandbox_id,
                    container_id,
                    container_name: spec.main.name.clone(),
                    pid,
                    sandbox_pid,
                    ip,
                    network: spec.network,
                    cgroup,
                    sidecars,
                    log_dir: log_dir.clone(),
                    spec: spec.clone(),
                    sandbox_config: sandbox_config.clone(),
                    session: Arc::clone(&self.session),
                }),
                Err(e) => {
                    if cri.remove_pod(&sandbox_id).await.is_ok() {
                        self.state().pods.remove(&sandbox_id);
                    }
                    Err(e)
                }
            }
        })
    }

    /// Starts a sidecar that exited again, as kubelet does for `restartPolicy: Always`: a
    /// new container of the next attempt in the same sandbox (the exited one stays until the
    /// pod goes). `pod` then names the new one.
    pub fn restart_sidecar(&self, pod: &mut Pod, name: &str) -> Result<PodContainer> {
        self.check_running()?;
        let attempt = pod.sidecar(name)?.attempt + 1;
        let container = pod
            .spec
            .sidecars
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| Error::InvalidSpec {
                field: "container name",
                reason: format!("pod {} has no sidecar {name:?}", pod.name),
            })?;
        let config = pod
            .spec
            .config_of_attempt(&container, &pod.name, &pod.uid, attempt);
        let cri = &self.session.cri;
        let started = self.session.block_on(async {
            let id = cri
                .create_container(&pod.sandbox_id, config, pod.sandbox_config.clone())
                .await?;
            self.state().ids.push(id.clone());
            cri.start_container(&id).await?;
            let pid = cri.container_pid(&id).await?;
            Ok::<_, Error>(PodContainer {
                name: name.to_owned(),
                id,
                pid,
                attempt,
            })
        })?;
        if let Some(slot) = pod.sidecars.iter_mut().find(|c| c.name == name) {
            *slot = started.clone();
        }
        Ok(started)
    }

    /// Imports an OCI image archive (`ctr images import`, unpacked for CRI), as a node that
    /// pre-loads images does.
    pub fn import_image(&self, archive: &Path) -> Result<()> {
        self.check_running()?;
        image::import(&self.ctr, archive)
    }

    /// Starts the pod's main container again after it exited, as kubelet does for
    /// `restartPolicy: Always`: a new container of attempt `attempt` (1 for the first restart)
    /// in the same sandbox. `pod` then names the new one.
    pub fn restart_main(&self, pod: &mut Pod, attempt: u32) -> Result<()> {
        self.check_running()?;
        let config = pod
            .spec
            .config_of_attempt(&pod.spec.main, &pod.name, &pod.uid, attempt);
        let cri = &self.session.cri;
        let (id, pid) = self.session.block_on(async {
            let id = cri
                .create_container(&pod.sandbox_id, config, pod.sandbox_config.clone())
                .await?;
            self.state().ids.push(id.clone());
            cri.start_container(&id).await?;
            let pid = cri.container_pid(&id).await?;
            Ok::<_, Error>((id, pid))
        })?;
        pod.container_id = id;
        pod.pid = pid;
        Ok(())
    }

    /// StopPodSandbox + RemovePodSandbox.
    pub fn remove_pod(&self, pod: &Pod) -> Result<()> {
        self.check_running()?;
        self.session
            .block_on(self.session.cri.remove_pod(&pod.sandbox_id))?;
        self.state().pods.remove(&pod.sandbox_id);
        Ok(())
    }

    /// `ctr run -d IMAGE NAME-N ARGS...` with each volume as an rbind mount; the PID comes from
    /// containerd's Tasks.Get. An empty `args` runs [`DEFAULT_COMMAND`].
    pub fn run_plain_container(
        &self,
        name: &str,
        image: &str,
        args: &[&str],
        mounts: &[Volume],
    ) -> Result<PlainContainer> {
        self.check_running()?;
        for volume in mounts {
            if !volume.host_path.is_absolute() || !volume.container_path.starts_with('/') {
                return Err(Error::InvalidSpec {
                    field: "plain container mount",
                    reason: format!("{volume:?} needs absolute paths"),
                });
            }
            if volume.propagation.needs_shared_host_mount() {
                self.ensure_shared_bind(&volume.host_path)?;
            }
        }
        let id = self.unique_name(name);
        let args = if args.is_empty() {
            DEFAULT_COMMAND
        } else {
            args
        };
        {
            let mut state = self.state();
            state.plain.insert(id.clone());
            state.ids.push(id.clone());
        }
        let log = self.layout.logs().join(format!("{id}.log"));
        let pid = self
            .ctr
            .start(&id, image, args, mounts, &log)
            .and_then(|()| {
                self.session
                    .block_on(ctr::task_pid(self.session.channel.clone(), &id))
            });
        match pid {
            Ok(pid) => Ok(PlainContainer {
                id,
                pid,
                image: image.to_owned(),
            }),
            Err(e) => {
                if self.ctr.remove(&id).is_ok() {
                    self.state().plain.remove(&id);
                }
                Err(e)
            }
        }
    }

    /// Kills the task (SIGKILL), deletes it and the container.
    pub fn remove_plain_container(&self, container: &PlainContainer) -> Result<()> {
        self.check_running()?;
        self.ctr.remove(&container.id)?;
        self.state().plain.remove(&container.id);
        Ok(())
    }

    /// Tears everything down, in this order: pods, plain containers, containerd (SIGTERM, then
    /// SIGKILL), containers runc still knows (if containerd failed us), stray processes naming
    /// the base dir, mounts under the base dir (deepest first, lazily), rshared bind mounts, the
    /// bridge, the `k8s.io` cgroups it created, empty /run/containerd and /var/lib/cni leftovers,
    /// `ip_forward` as it was, the base directory. Every step runs even if an earlier one
    /// failed. Idempotent; later calls on the testbed fail with [`Error::ShutDown`].
    pub fn shutdown(&self) -> Result<()> {
        let (containerd, pods, plain, shared_binds) = {
            let mut state = self.state();
            if state.shut_down {
                return Ok(());
            }
            state.shut_down = true;
            (
                state.containerd.take(),
                std::mem::take(&mut state.pods),
                std::mem::take(&mut state.plain),
                state.shared_binds.clone(),
            )
        };
        let mut problems = Vec::new();
        if let Some(mut containerd) = containerd {
            problems.extend(self.remove_workloads(&pods, &plain));
            problems.extend(containerd.stop());
        }
        problems.extend(
            teardown::force_delete_containers(&self.layout)
                .into_iter()
                .map(|id| {
                    format!(
                        "container {id} outlived its removal through containerd; deleted with runc"
                    )
                }),
        );
        problems.extend(teardown::end_stray_processes(&self.layout));
        problems.extend(mounts::detach_all_under(&self.layout.base));
        problems.extend(teardown::undo_shared_binds(&shared_binds));
        if let Err(e) = network::delete_bridge(&self.bridge) {
            problems.push(e.to_string());
        }
        problems.extend(cgroups::remove_created(&self.cgroups_before));
        problems.extend(pod_cgroup::remove_tree(&self.layout.cgroup_name()));
        teardown::remove_shared_runtime_dirs();
        problems.extend(forwarding::restore(&self.layout));
        problems.extend(teardown::remove_base_dir(&self.layout));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown(problems))
        }
    }

    /// Removes the pods and plain containers we know of, and whatever else containerd lists
    /// (everything in this containerd is ours: a test may have lost track of something).
    fn remove_workloads(&self, pods: &BTreeSet<String>, plain: &BTreeSet<String>) -> Vec<String> {
        let mut problems = Vec::new();
        let cri = &self.session.cri;
        let mut sandboxes = pods.clone();
        match self.session.block_on(cri.list_pod_sandboxes()) {
            Ok(listed) => sandboxes.extend(listed),
            Err(e) => problems.push(e.to_string()),
        }
        for id in &sandboxes {
            if let Err(e) = self.session.block_on(cri.remove_pod(id)) {
                problems.push(format!("removing pod sandbox {id}: {e}"));
            }
        }
        let mut containers = plain.clone();
        match self.ctr.list() {
            Ok(listed) => containers.extend(listed),
            Err(e) => problems.push(e.to_string()),
        }
        for id in &containers {
            if let Err(e) = self.ctr.remove(id) {
                problems.push(format!("removing container {id}: {e}"));
            }
        }
        problems
    }

    /// What of this testbed is still on the host (mounts, processes, bridge, cgroups, files).
    /// Empty after a clean [`Testbed::shutdown`].
    pub fn leftovers(&self) -> Vec<String> {
        let state = self.state();
        teardown::leftovers(&self.layout, &state.ids, &state.shared_binds)
    }

    fn check_running(&self) -> Result<()> {
        if self.state().shut_down {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Makes `dir` an rshared bind mount of itself once, recording it on disk first so that a
    /// crashed run's binds can be undone by the next one.
    fn ensure_shared_bind(&self, dir: &Path) -> Result<()> {
        let dir = dir
            .canonicalize()
            .map_err(Error::io("resolving volume", dir))?;
        let mut state = self.state();
        if state.shared_binds.contains(&dir) {
            return Ok(());
        }
        let record = self.layout.shared_binds_file();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&record)
            .and_then(|mut f| writeln!(f, "{}", dir.display()))
            .map_err(Error::io("recording in", &record))?;
        mounts::make_rshared_bind(&dir)?;
        state.shared_binds.push(dir);
        Ok(())
    }

    /// A test that panicked while holding the lock must not stop teardown.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("testbed {}: {e}", self.layout.base.display());
        }
    }
}

fn prepare_base_dir(layout: &Layout) -> Result<()> {
    if layout.base.exists() {
        // Same PID and sequence as a dead run's directory that reaping could not remove.
        return Err(Error::Io {
            what: "refusing to reuse",
            path: layout.base.clone(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    for dir in [
        layout.root(),
        layout.state(),
        layout.opt(),
        layout.cni_conf_dir(),
        layout.ipam_dir(),
        layout.logs(),
        layout.images(),
        layout.volumes(),
    ] {
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    }
    Ok(())
}

fn write(path: &Path, contents: String) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io("writing", path))
}

/// A random (v4) UUID from the kernel, as a pod UID.
fn random_uuid() -> Result<String> {
    const SOURCE: &str = "/proc/sys/kernel/random/uuid";
    std::fs::read_to_string(SOURCE)
        .map(|s| s.trim().to_owned())
        .map_err(Error::io("reading", SOURCE))
}

/// How long an init container may run.
const INIT_CONTAINER_LIMIT: Duration = Duration::from_secs(120);

/// Polls CRI until the container is no longer created or running.
async fn wait_exited(cri: &cri::Cri, id: &str) -> Result<(String, i32)> {
    let deadline = Instant::now() + INIT_CONTAINER_LIMIT;
    loop {
        let (state, exit_code) = cri.container_state(id).await?;
        if state != "CONTAINER_RUNNING" && state != "CONTAINER_CREATED" {
            return Ok((state, exit_code));
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                call: "waiting for an init container to exit",
                after: INIT_CONTAINER_LIMIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
