//! IO chaos: one fault mount (an injector process) per container and volume. A new rule set for
//! the same container and volume is applied live, without remounting; an empty rule set
//! recovers. Every experiment is journaled before it is applied and forgotten only once it is
//! recovered; an injector that dies unexpectedly is cleaned up after at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handover::FaultMount;
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::container_fs;
use crate::container_runtime::Resolver;
use crate::error::AgentError;
use crate::fault_kinds::{self, Adoption, ExperimentView, FaultKind};
use crate::injector_process::{
    Injector, InjectorError, InjectorProcess, MountRequest, Starting, UpdateReport, cleanup_mount,
};
use crate::injector_spare::SpareInjector;
use crate::io_handover;
use crate::io_spec::{IoActions, IoSpec, VolumePath};
use crate::journal::{FaultRecord, Journal, ProcessIdentity, Record, StoredRecord};
use crate::metrics::Metrics;

/// What an IO experiment injected, as journaled: all its recovery needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoRecord {
    /// The volume path inside the container.
    pub volume: String,
    /// The IOChaos actions JSON currently applied.
    pub actions: String,
    /// The injector serving the mount, once it was started.
    pub injector: Option<ProcessIdentity>,
    /// The fault mount, once files were handed over to it: recovery moves back what is on it
    /// (absent in records written before handover existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_mount: Option<FaultMount>,
    /// The injector's control socket, through which the next agent adopts it (absent in
    /// records written before injectors outlived the agent: those are recovered at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
}

impl FaultRecord for IoRecord {
    const KIND: &'static str = "io";
}

/// What IO recovery does to the host, behind a trait so recovery from a record is tested
/// without root (the live injector's own `recover` is its control channel, not the host).
#[tonic::async_trait]
pub trait IoHost: Send + Sync + std::fmt::Debug {
    /// The target process `pid` of `container` as it is now: its identity and the inode of its
    /// mount namespace, once `volume` is checked to be a directory in it (so that a bad volume
    /// fails with a clear error before anything is spawned).
    fn target(
        &self,
        container: &str,
        pid: u32,
        volume: &str,
    ) -> Result<(ProcessIdentity, u64), AgentError>;
    /// Starts an injector whose fault mount covers `volume` in `target_pid`'s mount namespace,
    /// with `actions` in force from the mount on; returns once the mount is in place.
    async fn spawn_injector(
        &self,
        target_pid: u32,
        volume: &str,
        actions: &str,
        control_socket: &Path,
    ) -> Result<Box<dyn Injector>, InjectorError>;
    /// Takes over the injector a previous agent left, through its control socket, if it is
    /// the journaled process and still serving.
    async fn adopt_injector(
        &self,
        injector: ProcessIdentity,
        control_socket: &Path,
    ) -> Result<Box<dyn Injector>, InjectorError>;
    /// Moves what the target's processes hold under `volume` onto the fault mount over it.
    /// `known`: the fault mount as its injector reported it (else it is read from the target's
    /// mount table).
    async fn hand_over(
        &self,
        target_pid: u32,
        volume: &str,
        known: Option<FaultMount>,
    ) -> io_handover::HandedOver;
    /// The process that serves `control_socket`, if one does (its peer credentials).
    async fn socket_server(&self, control_socket: &Path) -> Option<ProcessIdentity>;
    /// Whether this very process still runs.
    fn is_alive(&self, process: ProcessIdentity) -> bool;
    /// SIGKILLs a left-over injector (already checked alive).
    fn kill(&self, process: ProcessIdentity);
    /// Unmounts the fault mount over `volume` in `target_pid`'s mount namespace.
    async fn cleanup_mount(&self, target_pid: u32, volume: &str) -> Result<(), InjectorError>;
    /// Moves what is on a detached (or dead) fault mount back onto the original directory.
    async fn hand_back(&self, target_pid: u32, volume: &str, fault: FaultMount)
    -> handover::Report;
    /// The mount table (`/proc/PID/mountinfo`) of `target_pid`; `None` once the process is
    /// gone (and its mount namespace, if it was the last one in it).
    fn mount_table(&self, target_pid: u32) -> std::io::Result<Option<String>>;
    /// Once a fault of `target_pid` is recovered: removes the cgroup its injector lived in
    /// (see [`crate::cgroup::helpers`]) if no other helper of the pod is in it.
    fn release_helper_cgroup(&self, target_pid: u32);
    /// Gets ready for the first injection (a spare injector); nothing by default.
    fn warm_up(&self) {}
}

/// The real host: `faultline-injector cleanup`, signals, the handover crate.
#[derive(Debug)]
pub struct RealIoHost {
    pub injector_binary: PathBuf,
    /// The injector the next injection is given, started ahead.
    pub spare: Arc<SpareInjector>,
}

#[tonic::async_trait]
impl IoHost for RealIoHost {
    fn target(
        &self,
        container: &str,
        pid: u32,
        volume: &str,
    ) -> Result<(ProcessIdentity, u64), AgentError> {
        drop(container_fs::open_volume(pid, volume)?);
        let not_running = || {
            AgentError::Runtime(crate::container_runtime::RuntimeError::NotRunning {
                id: container.to_owned(),
                runtime: "host".into(),
            })
        };
        let target = ProcessIdentity::of(pid).map_err(|_| not_running())?;
        let namespace_inode = namespace_inode(pid, "mnt").map_err(|_| not_running())?;
        Ok((target, namespace_inode))
    }

    async fn spawn_injector(
        &self,
        target_pid: u32,
        volume: &str,
        actions: &str,
        control_socket: &Path,
    ) -> Result<Box<dyn Injector>, InjectorError> {
        let request = MountRequest {
            binary: &self.injector_binary,
            target_pid,
            volume,
            actions,
            control_socket,
        };
        let starting = self.start_injector(&request).await?;
        // Out of the agent's cgroup, so that it outlives the agent's container; while it mounts
        // (a first migration into a cgroup waits for an RCU grace period: 10 ms here).
        let injector_pid = starting.identity().pid;
        let spawned = std::time::Instant::now();
        let placing = tokio::task::spawn_blocking(move || {
            crate::cgroup::helpers::place_or_warn(target_pid, injector_pid, "injector");
            spawned.elapsed()
        });
        let ready = starting.ready(READY_WITHIN).await;
        let ready_us = spawned.elapsed().as_micros() as u64;
        let placed_us = placing
            .await
            .map(|t| t.as_micros() as u64)
            .unwrap_or_default();
        tracing::debug!(injector_pid, ready_us, placed_us, "injector spawned");
        // The next injection's, off this one's path.
        let spare = Arc::clone(&self.spare);
        tokio::spawn(async move { spare.refill() });
        match ready {
            Ok(injector) => Ok(Box::new(injector)),
            Err(err) => {
                // A leaf made for it alone goes again.
                self.release_helper_cgroup(target_pid);
                Err(err)
            }
        }
    }

    async fn adopt_injector(
        &self,
        injector: ProcessIdentity,
        control_socket: &Path,
    ) -> Result<Box<dyn Injector>, InjectorError> {
        let injector = InjectorProcess::adopt(injector, control_socket, ADOPT_WITHIN).await?;
        Ok(Box::new(injector))
    }

    async fn hand_over(
        &self,
        target_pid: u32,
        volume: &str,
        known: Option<FaultMount>,
    ) -> io_handover::HandedOver {
        io_handover::onto_fault_mount(target_pid, volume, known).await
    }

    async fn socket_server(&self, control_socket: &Path) -> Option<ProcessIdentity> {
        let connect = tokio::net::UnixStream::connect(control_socket);
        let stream = tokio::time::timeout(ADOPT_WITHIN, connect)
            .await
            .ok()?
            .ok()?;
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .ok()?;
        ProcessIdentity::of(u32::try_from(peer.pid()).ok()?).ok()
    }

    fn is_alive(&self, process: ProcessIdentity) -> bool {
        process.is_alive()
    }

    fn kill(&self, process: ProcessIdentity) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(process.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    async fn cleanup_mount(&self, target_pid: u32, volume: &str) -> Result<(), InjectorError> {
        cleanup_mount(&self.injector_binary, target_pid, volume).await
    }

    async fn hand_back(
        &self,
        target_pid: u32,
        volume: &str,
        fault: FaultMount,
    ) -> handover::Report {
        io_handover::back_to_original(target_pid, volume, fault).await
    }

    fn mount_table(&self, target_pid: u32) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(format!("/proc/{target_pid}/mountinfo")) {
            Ok(table) => Ok(Some(table)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn release_helper_cgroup(&self, target_pid: u32) {
        use crate::cgroup::{RealFs, helpers};
        helpers::release_in_background(helpers::leaves_of_target(&RealFs, target_pid));
    }

    fn warm_up(&self) {
        self.spare.clear_left_over();
        self.spare.refill();
    }
}

impl RealIoHost {
    /// The spare injector given `request`'s mount, or a new injector where there is no spare
    /// (or it failed).
    async fn start_injector(&self, request: &MountRequest<'_>) -> Result<Starting, InjectorError> {
        if let Some(spare) = self.spare.take() {
            match spare.assign(request).await {
                Ok(starting) => return Ok(starting),
                Err(err) => tracing::warn!(%err, "the spare injector failed; starting one"),
            }
        }
        InjectorProcess::spawn(request.clone())
    }
}

/// How long an injector may take to mount.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long a left-over injector may take to answer the agent that adopts it.
const ADOPT_WITHIN: Duration = Duration::from_secs(2);
/// How long an injector may take to unmount and exit when asked to recover.
const RECOVER_WITHIN: Duration = Duration::from_secs(5);

/// Identifies one fault mount.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MountKey {
    container: String,
    volume: String,
}

/// A running IO experiment: its live injector and the record last written for it. Recovery
/// does not read this record; it reads the journal.
#[derive(Debug)]
struct IoExperiment {
    key: MountKey,
    id: String,
    record: Mutex<Record<IoRecord>>,
    injector: Box<dyn Injector>,
    /// What the handover at the start did, for listing (`None`: handover was off).
    handover: Option<handover::Report>,
    /// Serializes journal writes of this experiment; `true` once it is recovered, after which
    /// nothing may write its record again.
    journal_state: tokio::sync::Mutex<bool>,
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Started {
        id: String,
        target_pid: u32,
        injector_pid: u32,
        started_at_ms: u64,
        /// What the handover did, in words (`None`: it was off).
        handover: Option<String>,
        /// The injector's answer to the real rules after the handover (`None`: no handover,
        /// the rules were in force from the mount on).
        report: Option<UpdateReport>,
    },
    Updated {
        id: String,
        target_pid: u32,
        injector_pid: u32,
        started_at_ms: u64,
        /// The injector's answer: what the new rules cannot reach.
        report: UpdateReport,
    },
    Recovered {
        id: String,
    },
    NothingToRecover,
}

/// Settings of IO chaos.
#[derive(Clone, Debug)]
pub struct IoChaosConfig {
    pub injector_binary: PathBuf,
    /// Where injectors' control sockets are bound (under the state directory: the next agent
    /// adopts the injectors through them).
    pub control_sockets: PathBuf,
}

#[derive(Debug)]
pub struct IoChaos {
    resolver: Resolver,
    journal: Journal,
    metrics: Arc<Metrics>,
    host: Arc<dyn IoHost>,
    /// The directory of the injectors' control sockets.
    control_sockets: PathBuf,
    active: Mutex<HashMap<MountKey, Arc<IoExperiment>>>,
    in_progress: Mutex<HashSet<MountKey>>,
}

/// Marks a mount key busy for the life of one request; concurrent requests for the same key are
/// refused rather than interleaved.
struct BusyGuard<'a> {
    set: &'a Mutex<HashSet<MountKey>>,
    key: MountKey,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        // A poisoned set cannot be cleaned; the next `busy` reports it as an internal error.
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

/// An injector's warnings after an update: open files the rules in force do not reach.
fn warn_unreachable(id: &str, report: &UpdateReport) {
    for warning in &report.warnings {
        tracing::warn!(%id, unreachable = ?report.unreachable_open_files, "{warning}");
    }
}

/// An injector's status with its warnings in front, so that a report never shows an open
/// file the rules in force cannot reach without saying so first.
fn loudly(warnings: &[String], status: String) -> String {
    if warnings.is_empty() {
        return status;
    }
    format!("WARNING: {} | {status}", warnings.join(" | "))
}

/// Parses and validates IOChaos actions for a volume; `None` when they ask for no fault at all
/// (the volume is checked first). See [`IoActions::parse`].
pub fn validate_actions(actions: &str, volume: &str) -> Result<Option<IoActions>, AgentError> {
    IoActions::parse(actions, &VolumePath::parse(volume)?)
}

/// Undoes an IO fault as its record says: asks a live injector to recover (moving back what
/// the handover moved meanwhile), else kills a left-over injector and, if the target still
/// runs, unmounts from the agent and moves back what is on the fault mount. The record's fault
/// mount is the only one used. Succeeds only once the fault mount is gone from the target's
/// mount table (see [`mount_is_gone`]); whatever the injector or the cleanup said.
pub async fn undo(
    host: &dyn IoHost,
    record: &Record<IoRecord>,
    live: Option<&dyn Injector>,
) -> Result<(), AgentError> {
    let (id, pid, volume) = (&record.id, record.target.pid, record.fault.volume.as_str());
    let fault = record.fault.fault_mount;
    let back = |fault: Option<FaultMount>| async move {
        if let Some(fault) = fault {
            let report = host.hand_back(pid, volume, fault).await;
            tracing::info!(%id, report = %report.summary(), "handed back to the original directory");
        }
    };
    if let Some(injector) = live {
        match injector
            .recover_then(RECOVER_WITHIN, Box::pin(back(fault)))
            .await
        {
            Ok(_) => match mount_is_gone(host, record) {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(%id, %err, "the injector recovered but its mount stays; unmounting from the agent")
                }
            },
            Err(err) => {
                tracing::warn!(%id, %err, "the injector did not recover cleanly; unmounting from the agent")
            }
        }
    } else if let Some(injector) = record.fault.injector.filter(|i| host.is_alive(*i)) {
        host.kill(injector);
    } else if record.fault.injector.is_none()
        && let Some(socket) = &record.fault.control_socket
        && let Some(server) = host.socket_server(socket).await
    {
        // The agent died after spawning the injector and before journaling who it is: the
        // process serving the experiment's own socket (in our state directory) is that
        // injector. Left alive it would keep the fault in force and its mount busy for good.
        tracing::warn!(%id, pid = server.pid, "killing the injector the record did not name yet");
        host.kill(server);
    }
    if !host.is_alive(record.target) {
        return Ok(()); // the container is gone, and its mount namespace with it
    }
    host.cleanup_mount(pid, volume).await?;
    // Files handed over to a dead mount answer ENOTCONN until moved back.
    back(fault).await;
    mount_is_gone(host, record)
}

/// Checks the target's mount table: no `fuse.faultline` mount with the journaled mount ID or
/// at the volume is left (a target that is gone took its namespace with it).
fn mount_is_gone(host: &dyn IoHost, record: &Record<IoRecord>) -> Result<(), AgentError> {
    let (pid, volume) = (record.target.pid, record.fault.volume.as_str());
    let table = match host.mount_table(pid) {
        Ok(Some(table)) => table,
        Ok(None) => return Ok(()),
        Err(err) => {
            return Err(AgentError::FaultMountUnverified {
                volume: volume.to_owned(),
                pid,
                reason: err.to_string(),
            });
        }
    };
    match crate::io_mount_table::fault_mount_line(&table, volume, record.fault.fault_mount) {
        None => Ok(()),
        Some(entry) => Err(AgentError::FaultMountRemains {
            volume: volume.to_owned(),
            pid,
            entry: entry.to_owned(),
        }),
    }
}

impl IoChaos {
    pub fn new(
        config: IoChaosConfig,
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let host = Arc::new(RealIoHost {
            injector_binary: config.injector_binary.clone(),
            spare: Arc::new(SpareInjector::new(
                config.injector_binary.clone(),
                config.control_sockets.clone(),
            )),
        });
        Self::with_host(resolver, journal, metrics, host, config.control_sockets)
    }

    /// [`Self::new`] on another host (a recording double in tests).
    pub fn with_host(
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
        host: Arc<dyn IoHost>,
        control_sockets: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            resolver,
            journal,
            metrics,
            host,
            control_sockets,
            active: Mutex::default(),
            in_progress: Mutex::default(),
        })
    }

    /// Gets ready for the first injection (see [`IoHost::warm_up`]); once left-over faults
    /// are recovered.
    pub fn warm_up(&self) {
        self.host.warm_up();
    }

    fn busy(&self, key: &MountKey) -> Result<BusyGuard<'_>, AgentError> {
        let mut set = self.in_progress.lock().map_err(|_| poisoned())?;
        if !set.insert(key.clone()) {
            return Err(AgentError::Busy {
                target: format!("{} volume {}", key.container, key.volume),
            });
        }
        Ok(BusyGuard {
            set: &self.in_progress,
            key: key.clone(),
        })
    }

    fn get(&self, key: &MountKey) -> Result<Option<Arc<IoExperiment>>, AgentError> {
        Ok(self
            .active
            .lock()
            .map_err(|_| poisoned())?
            .get(key)
            .cloned())
    }

    /// ApplyIOChaos: start, update or (with no actions) recover the fault mount of a container's
    /// volume. `duration` makes the experiment recover by itself. `handover`: when starting,
    /// move what the container's processes already hold under the volume onto the fault mount
    /// (and back at recovery).
    pub async fn apply(
        self: &Arc<Self>,
        spec: IoSpec,
        duration: Option<Duration>,
        handover: bool,
    ) -> Result<Applied, AgentError> {
        let IoSpec {
            container,
            volume,
            actions,
        } = spec;
        let key = MountKey {
            container: container.to_string(),
            volume: volume.as_str().to_owned(),
        };
        let _busy = self.busy(&key)?;

        if let Some(existing) = self.get(&key)? {
            return match actions {
                None => {
                    let record = self.journaled(&existing.id)?;
                    self.recover_record(&record).await?;
                    Ok(Applied::Recovered {
                        id: existing.id.clone(),
                    })
                }
                Some(actions) => self.update(&existing, &actions, duration).await,
            };
        }
        let Some(actions) = actions else {
            return Ok(Applied::NothingToRecover);
        };
        self.start(key, &actions, duration, handover).await
    }

    /// The journal's record of an experiment this agent runs.
    fn journaled(&self, id: &str) -> Result<Record<IoRecord>, AgentError> {
        self.journal
            .get_as::<IoRecord>(id)?
            .ok_or_else(|| AgentError::Internal(format!("experiment {id} has no journal record")))
    }

    async fn start(
        self: &Arc<Self>,
        key: MountKey,
        actions: &IoActions,
        duration: Option<Duration>,
        handover: bool,
    ) -> Result<Applied, AgentError> {
        let resolving = std::time::Instant::now();
        let target_pid = self.resolver.container_pid(&key.container).await?;
        tracing::debug!(container = %key.container, target_pid, resolve_us = resolving.elapsed().as_micros() as u64, "container resolved");
        self.start_in(key, target_pid, actions, duration, handover)
            .await
    }

    /// [`Self::start`] once the container is resolved to its process `target_pid`: from here
    /// on everything goes through the host.
    async fn start_in(
        self: &Arc<Self>,
        key: MountKey,
        target_pid: u32,
        actions: &IoActions,
        duration: Option<Duration>,
        handover: bool,
    ) -> Result<Applied, AgentError> {
        // Where an injection's time goes, in the log line that ends it.
        let phases = std::time::Instant::now();
        let (target, namespace_inode) =
            self.host.target(&key.container, target_pid, &key.volume)?;
        let actions_text = actions.wire().to_string();
        let mut record = new_record(&key, target, namespace_inode, &actions_text, duration);
        record.fault.control_socket =
            Some(self.control_sockets.join(format!("{}.sock", record.id)));
        let started_at_ms = record.started_at_ms;
        self.journal.write(&record)?;
        let journaled_us = phases.elapsed().as_micros() as u64;
        let injector = match self.spawn_injector(&record, actions, handover).await {
            Ok(injector) => injector,
            Err(err) => {
                // Leave nothing behind: a mount the injector may have made, and the record.
                let _ = self.host.cleanup_mount(target_pid, &key.volume).await;
                let _ = self.journal.remove(&record.id);
                self.metrics.failure("io", "injector");
                return Err(err.into());
            }
        };
        let mounted_us = phases.elapsed().as_micros() as u64;
        let injector_pid = injector.identity().pid;
        record.fault.injector = Some(injector.identity());
        if let Err(err) = self.journal.write(&record) {
            let _ = injector
                .recover_then(RECOVER_WITHIN, Box::pin(async {}))
                .await;
            let _ = self.journal.remove(&record.id);
            return Err(err.into());
        }
        let id = record.id.clone();
        let (report, update) = if handover {
            let (report, update) = self.hand_over(&mut record, &*injector, actions).await?;
            (Some(report), Some(update))
        } else {
            (None, None)
        };
        let experiment = Arc::new(IoExperiment {
            key: key.clone(),
            id: id.clone(),
            record: Mutex::new(record),
            injector,
            handover: report,
            journal_state: tokio::sync::Mutex::new(false),
        });
        self.active
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, Arc::clone(&experiment));
        self.metrics.injected("io");
        self.watch_injector(Arc::clone(&experiment));
        if let Some(duration) = duration {
            self.recover_after(&id, duration);
        }
        tracing::info!(%id, container = %experiment.key.container, volume = %experiment.key.volume, target_pid, injector_pid, journaled_us, mounted_us, in_force_us = phases.elapsed().as_micros() as u64, "IO fault injected");
        Ok(Applied::Started {
            id,
            target_pid,
            injector_pid,
            started_at_ms,
            handover: experiment.handover.as_ref().map(|h| h.summary()),
            report: update,
        })
    }

    async fn spawn_injector(
        &self,
        record: &Record<IoRecord>,
        actions: &IoActions,
        handover: bool,
    ) -> Result<Box<dyn Injector>, InjectorError> {
        // While handing over, the rules spare the handover's own calls; the real ones follow.
        let mount_actions = if handover {
            io_handover::rules_while_handing_over(actions).to_string()
        } else {
            record.fault.actions.clone()
        };
        let socket =
            record.fault.control_socket.as_deref().ok_or_else(|| {
                InjectorError::Control("the record names no control socket".into())
            })?;
        self.host
            .spawn_injector(
                record.target.pid,
                &record.fault.volume,
                &mount_actions,
                socket,
            )
            .await
    }

    /// Moves what the container holds under the volume onto the fault mount, journals the
    /// fault mount (recovery after a crash moves back what was moved here; failing to journal
    /// it fails the start) and puts the real rules in force.
    async fn hand_over(
        &self,
        record: &mut Record<IoRecord>,
        injector: &dyn Injector,
        actions: &IoActions,
    ) -> Result<(handover::Report, UpdateReport), AgentError> {
        let (id, target_pid) = (record.id.clone(), record.target.pid);
        let volume = record.fault.volume.clone();
        let began = std::time::Instant::now();
        let done = self
            .host
            .hand_over(target_pid, &volume, injector.fault_mount())
            .await;
        tracing::info!(%id, report = %done.report.summary(), scan_us = began.elapsed().as_micros() as u64, "handed over to the fault mount");
        let journaled = match done.fault {
            Some(fault) => {
                record.fault.fault_mount = Some(fault);
                self.journal.write(record).map_err(AgentError::from)
            }
            None => Ok(()),
        };
        let in_force = match journaled {
            Ok(()) => injector.update(actions.wire()).await.map_err(|err| {
                self.metrics.failure("io", "injector");
                AgentError::from(err)
            }),
            Err(err) => Err(err),
        };
        match in_force {
            Ok(update) => {
                warn_unreachable(&id, &update);
                Ok((done.report, update))
            }
            Err(err) => {
                let _ = undo(&*self.host, record, Some(injector)).await;
                let _ = self.journal.remove(&id);
                Err(err)
            }
        }
    }

    async fn update(
        self: &Arc<Self>,
        experiment: &Arc<IoExperiment>,
        actions: &IoActions,
        duration: Option<Duration>,
    ) -> Result<Applied, AgentError> {
        let actions_text = actions.wire().to_string();
        let mut record = experiment.record.lock().map_err(|_| poisoned())?.clone();
        record.fault.actions = actions_text.clone();
        if let Some(duration) = duration {
            record.deadline_ms = Some(now_ms() + duration.as_millis() as u64);
        }
        // The record on disk already covers the mount, which is all recovery undoes; the new
        // rules are written after they are in force, off the caller's path. A new deadline is
        // written before the call returns: the timer that ends the experiment reads it.
        let report = experiment.injector.update(actions.wire()).await?;
        warn_unreachable(&record.id, &report);
        let applied = Applied::Updated {
            id: record.id.clone(),
            target_pid: record.target.pid,
            injector_pid: experiment.injector.identity().pid,
            started_at_ms: record.started_at_ms,
            report,
        };
        *experiment.record.lock().map_err(|_| poisoned())? = record;
        match duration {
            Some(duration) => {
                self.write_record(experiment).await?;
                self.recover_after(&experiment.id, duration);
            }
            None => self.journal_in_background(Arc::clone(experiment)),
        }
        Ok(applied)
    }

    /// Writes the experiment's current record, unless it has been recovered meanwhile.
    async fn write_record(&self, experiment: &IoExperiment) -> Result<(), AgentError> {
        let recovered = experiment.journal_state.lock().await;
        if *recovered {
            return Ok(());
        }
        let record = experiment.record.lock().map_err(|_| poisoned())?.clone();
        self.journal.write(&record)?;
        Ok(())
    }

    fn journal_in_background(self: &Arc<Self>, experiment: Arc<IoExperiment>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(err) = this.write_record(&experiment).await {
                tracing::error!(id = %experiment.id, %err, "could not journal the updated rules");
            }
        });
    }

    /// Undoes the record's fault (see [`undo`]) and forgets it; the caller holds the mount key
    /// busy, or is the watcher of a dead injector.
    async fn recover_record(&self, record: &Record<IoRecord>) -> Result<(), AgentError> {
        let key = MountKey {
            container: record.container_id.clone(),
            volume: record.fault.volume.clone(),
        };
        // Forget it first, so the injector watcher knows this exit is expected.
        let live = {
            let mut active = self.active.lock().map_err(|_| poisoned())?;
            match active.get(&key) {
                Some(e) if e.id == record.id => active.remove(&key),
                _ => None,
            }
        };
        let result = undo(&*self.host, record, live.as_ref().map(|e| &*e.injector)).await;
        let recovered = match &live {
            Some(experiment) => {
                let mut recovered = experiment.journal_state.lock().await;
                *recovered = true;
                Some(recovered)
            }
            None => None,
        };
        result?;
        if let Some(socket) = &record.fault.control_socket {
            // Its injector is gone: nothing listens there any more.
            let _ = std::fs::remove_file(socket);
        }
        self.journal.remove(&record.id)?;
        drop(recovered);
        self.host.release_helper_cgroup(record.target.pid);
        self.metrics.recovered("io");
        tracing::info!(id = %record.id, "IO fault recovered");
        Ok(())
    }

    /// Takes over the experiment a previous run left in force, if its injector is the journaled
    /// process and answers on its control socket: it becomes an experiment of this run (listed,
    /// updated, recovered, watched, ended at its deadline) as if started here.
    async fn adopt(self: &Arc<Self>, record: &Record<IoRecord>) -> Adoption {
        let (Some(identity), Some(socket)) = (record.fault.injector, &record.fault.control_socket)
        else {
            return Adoption::Failed(
                "its record names no injector control socket (started before injectors outlived the agent, or before its injector was up)".into(),
            );
        };
        if !self.host.is_alive(record.target) {
            return Adoption::Failed("its target process is gone".into());
        }
        let key = MountKey {
            container: record.container_id.clone(),
            volume: record.fault.volume.clone(),
        };
        let _busy = match self.busy(&key) {
            Ok(busy) => busy,
            Err(err) => return Adoption::Failed(err.to_string()),
        };
        let injector = match self.host.adopt_injector(identity, socket).await {
            Ok(injector) => injector,
            Err(err) => return Adoption::Failed(err.to_string()),
        };
        let experiment = Arc::new(IoExperiment {
            key: key.clone(),
            id: record.id.clone(),
            record: Mutex::new(record.clone()),
            injector,
            handover: None,
            journal_state: tokio::sync::Mutex::new(false),
        });
        match self.active.lock() {
            Ok(mut active) => active.insert(key, Arc::clone(&experiment)),
            Err(_) => return Adoption::Failed("internal state lock poisoned".into()),
        };
        self.metrics.adopted("io");
        self.watch_injector(Arc::clone(&experiment));
        if let Some(deadline) = record.deadline_ms {
            // Past due: at once, through the adopted injector (which hands back gracefully).
            self.recover_after(
                &record.id,
                Duration::from_millis(deadline.saturating_sub(now_ms())),
            );
        }
        tracing::info!(id = %record.id, container = %record.container_id, volume = %record.fault.volume, injector_pid = identity.pid, "IO fault adopted: its injector kept serving while no agent ran");
        Adoption::Adopted
    }

    /// Tries again to recover the IO records no experiment of this run holds: a recovery that
    /// failed (the fault mount stayed, the cleanup was refused) kept its record; nothing else
    /// would come back to it before the next start.
    async fn retry_unrecovered(&self) -> Vec<(String, Result<(), AgentError>)> {
        let records = match self.journal.list_of::<IoRecord>() {
            Ok(records) => records,
            Err(err) => {
                tracing::error!(%err, "the journal cannot be read: no IO recovery retried");
                return Vec::new();
            }
        };
        let mut outcomes = Vec::new();
        for record in records {
            let key = MountKey {
                container: record.container_id.clone(),
                volume: record.fault.volume.clone(),
            };
            // A request on this mount is in progress (a start journals before it mounts).
            let Ok(_busy) = self.busy(&key) else {
                continue;
            };
            if !matches!(self.get(&key), Ok(None)) {
                continue; // in force, held by this run
            }
            let result = self.recover_record(&record).await;
            outcomes.push((record.id.clone(), result));
        }
        outcomes
    }

    /// Recovers at once after an injector that exits while its experiment is still active.
    fn watch_injector(self: &Arc<Self>, experiment: Arc<IoExperiment>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let status = experiment.injector.wait().await;
            let still_active = match this.active.lock() {
                Ok(active) => active
                    .get(&experiment.key)
                    .is_some_and(|e| Arc::ptr_eq(e, &experiment)),
                Err(_) => {
                    tracing::error!(id = %experiment.id, "state lock poisoned: the journal keeps the record for the next start");
                    return;
                }
            };
            if !still_active {
                return; // recovered on purpose
            }
            tracing::warn!(id = %experiment.id, %status, "the injector exited unexpectedly; removing its mount");
            this.metrics.failure("io", "injector_died");
            // Its last words after the mount is dealt with, not before: reading them may wait
            // for its stderr to drain.
            let experiment_for_log = Arc::clone(&experiment);
            tokio::spawn(async move {
                let stderr = experiment_for_log.injector.stderr_tail().await;
                tracing::warn!(id = %experiment_for_log.id, %stderr, "what the injector said before it exited");
            });
            // Whoever holds the key (a recovery under way) finishes the job; if it fails, the
            // retry pass comes back to the record.
            let Ok(_busy) = this.busy(&experiment.key) else {
                return;
            };
            let recovered = match this.journaled(&experiment.id) {
                Ok(record) => this.recover_record(&record).await,
                Err(err) => Err(err),
            };
            if let Err(err) = recovered {
                tracing::error!(id = %experiment.id, %err, "cleanup after the injector failed; the journal keeps the record");
            }
        });
    }

    fn recover_after(self: &Arc<Self>, id: &str, duration: Duration) {
        let kind: Arc<dyn FaultKind> = Arc::clone(self) as Arc<dyn FaultKind>;
        fault_kinds::recover_at_deadline(kind, self.journal.clone(), id.to_owned(), duration);
    }

    /// Every active experiment with its injector's state.
    async fn views(&self) -> Vec<ExperimentView> {
        let experiments: Vec<_> = match self.active.lock() {
            Ok(active) => active.values().cloned().collect(),
            Err(_) => {
                tracing::error!("state lock poisoned: IO experiments not listed");
                Vec::new()
            }
        };
        let mut views = Vec::with_capacity(experiments.len());
        for experiment in experiments {
            let Ok(record) = experiment.record.lock().map(|r| r.clone()) else {
                continue;
            };
            let pid = experiment.injector.identity().pid;
            let status =
                match tokio::time::timeout(Duration::from_secs(1), experiment.injector.status())
                    .await
                {
                    Ok(Ok(status)) => loudly(
                        &crate::injector_process::warnings_of(&status),
                        format!("running (pid {pid}): {status}"),
                    ),
                    Ok(Err(err)) => format!("unreachable (pid {pid}): {err}"),
                    Err(_) => format!("not answering (pid {pid})"),
                };
            views.push(ExperimentView {
                record: record.with_fault(()),
                kind: IoRecord::KIND,
                rules: record.fault.actions.clone(),
                volume: record.fault.volume.clone(),
                status,
                handover: experiment.handover.clone(),
            });
        }
        views.extend(self.unrecovered_views(&views));
        views
    }

    /// The journal's IO records that no live experiment holds: their recovery failed (the
    /// retry pass comes back to them). Listed, so that a listing never shows less than the
    /// journal says may be in force.
    fn unrecovered_views(&self, live: &[ExperimentView]) -> Vec<ExperimentView> {
        let records = match self.journal.list_of::<IoRecord>() {
            Ok(records) => records,
            Err(err) => {
                tracing::error!(%err, "the journal cannot be read: unrecovered IO records not listed");
                return Vec::new();
            }
        };
        // A mount with a request under way (a start journals before it mounts) is not listed.
        let busy = match self.in_progress.lock() {
            Ok(busy) => busy.clone(),
            Err(_) => HashSet::new(),
        };
        records
            .into_iter()
            .filter(|r| !live.iter().any(|v| v.record.id == r.id))
            .filter(|r| {
                !busy.contains(&MountKey {
                    container: r.container_id.clone(),
                    volume: r.fault.volume.clone(),
                })
            })
            .map(|record| ExperimentView {
                record: record.with_fault(()),
                kind: IoRecord::KIND,
                rules: record.fault.actions.clone(),
                volume: record.fault.volume.clone(),
                status: format!(
                    "NOT RECOVERED: a recovery failed and is retried every {RETRY:?}; the fault mount may still be in force",
                    RETRY = fault_kinds::RETRY_RECOVERY_EVERY
                ),
                handover: None,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl FaultKind for IoChaos {
    fn kind(&self) -> &'static str {
        IoRecord::KIND
    }

    fn noun(&self) -> &'static str {
        "an IO fault"
    }

    async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
        let record: Record<IoRecord> = record.decode()?;
        let _busy = self.busy(&MountKey {
            container: record.container_id.clone(),
            volume: record.fault.volume.clone(),
        })?;
        self.recover_record(&record).await
    }

    async fn list(&self) -> Vec<ExperimentView> {
        self.views().await
    }

    async fn retry_unrecovered(&self) -> Vec<(String, Result<(), AgentError>)> {
        IoChaos::retry_unrecovered(self).await
    }

    async fn adopt(self: Arc<Self>, record: &StoredRecord) -> Adoption {
        match record.decode::<IoRecord>() {
            Ok(record) => IoChaos::adopt(&self, &record).await,
            Err(err) => Adoption::Failed(err.to_string()),
        }
    }
}

/// The record of an experiment about to start: nothing is in force yet.
fn new_record(
    key: &MountKey,
    target: ProcessIdentity,
    namespace_inode: u64,
    actions: &str,
    duration: Option<Duration>,
) -> Record<IoRecord> {
    let started_at_ms = now_ms();
    Record {
        id: new_experiment_id(),
        started_at_ms,
        deadline_ms: duration.map(|d| started_at_ms + d.as_millis() as u64),
        container_id: key.container.clone(),
        target,
        namespace_inode,
        fault: IoRecord {
            volume: key.volume.clone(),
            actions: actions.to_owned(),
            injector: None,
            fault_mount: None,
            control_socket: None,
        },
    }
}

fn poisoned() -> AgentError {
    AgentError::Internal("internal state lock poisoned".into())
}

fn new_experiment_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("io-{:x}-{:x}-{n}", now_ms(), std::process::id())
}

fn namespace_inode(pid: u32, kind: &str) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault_kinds::Registry;
    use crate::injector_process::warnings_of;

    use crate::injector_process::Exit;
    use serde_json::Value;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    /// What the pipeline asked of the host and of its injectors, in order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Call {
        /// An injector spawned for (target pid, volume) with these rules from the mount on.
        Spawn(u32, String, Value),
        HandOver(u32, String),
        /// New rules sent to the live injector.
        Update(Value),
        /// The live injector asked to recover.
        Recover,
        /// A left-over injector taken over through this control socket.
        Adopt(u32, PathBuf),
        Kill(u32),
        Cleanup(u32, String),
        HandBack(u32, String, u64),
        /// The helpers' cgroup of the target's pod released after a recovery.
        ReleaseCgroup(u32),
    }

    /// A host whose processes live as told and that records what the pipeline does.
    #[derive(Debug, Default)]
    struct RecordingHost {
        alive: Mutex<Vec<ProcessIdentity>>,
        calls: Arc<Mutex<Vec<Call>>>,
        refuse_cleanup: bool,
        refuse_spawn: bool,
        /// A left-over injector does not answer on its control socket.
        refuse_adopt: bool,
        /// The fault mount stays in the target's mount table whatever recovery does (an
        /// injector that exits without unmounting, a cleanup that says done).
        mount_stays: Mutex<bool>,
        /// The injectors spawned, to make one die.
        injectors: Mutex<Vec<Arc<FakeInjector>>>,
        /// Who serves which control socket.
        socket_servers: Mutex<Vec<(PathBuf, ProcessIdentity)>>,
    }

    /// An injector double: answers as a healthy one would, until it is told to die.
    #[derive(Debug)]
    struct FakeInjector {
        identity: ProcessIdentity,
        calls: Arc<Mutex<Vec<Call>>>,
        exited: tokio::sync::watch::Sender<bool>,
    }

    impl FakeInjector {
        fn die(&self) {
            self.exited.send_replace(true);
        }
        fn is_dead(&self) -> bool {
            *self.exited.borrow()
        }
    }

    #[tonic::async_trait]
    impl Injector for Arc<FakeInjector> {
        fn identity(&self) -> ProcessIdentity {
            self.identity
        }
        async fn update(&self, actions: &Value) -> Result<UpdateReport, InjectorError> {
            if self.is_dead() {
                return Err(InjectorError::Control("closed".into()));
            }
            self.calls
                .lock()
                .unwrap()
                .push(Call::Update(actions.clone()));
            Ok(UpdateReport::default())
        }
        async fn status(&self) -> Result<Value, InjectorError> {
            Ok(serde_json::json!({"ready": !self.is_dead()}))
        }
        async fn recover_then(
            &self,
            _within: Duration,
            meanwhile: futures::future::BoxFuture<'_, ()>,
        ) -> Result<Exit, InjectorError> {
            if self.is_dead() {
                return Err(InjectorError::Control(
                    "the injector closed its control channel".into(),
                ));
            }
            self.calls.lock().unwrap().push(Call::Recover);
            meanwhile.await;
            self.die();
            Ok(Exit::Status(ExitStatus::from_raw(0)))
        }
        async fn wait(&self) -> Exit {
            let mut exited = self.exited.subscribe();
            let _ = exited.wait_for(|dead| *dead).await;
            Exit::Status(ExitStatus::from_raw(0))
        }
        async fn stderr_tail(&self) -> String {
            String::new()
        }
    }

    impl RecordingHost {
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[tonic::async_trait]
    impl IoHost for RecordingHost {
        fn target(
            &self,
            _container: &str,
            pid: u32,
            _volume: &str,
        ) -> Result<(ProcessIdentity, u64), AgentError> {
            assert_eq!(pid, TARGET.pid, "the pipeline looked up another process");
            Ok((TARGET, 4026532000))
        }
        async fn spawn_injector(
            &self,
            target_pid: u32,
            volume: &str,
            actions: &str,
            control_socket: &Path,
        ) -> Result<Box<dyn Injector>, InjectorError> {
            assert!(
                control_socket.starts_with(SOCKETS),
                "socket {control_socket:?} outside the sockets directory"
            );
            let rules = serde_json::from_str(actions).expect("the injector gets JSON rules");
            self.calls
                .lock()
                .unwrap()
                .push(Call::Spawn(target_pid, volume.into(), rules));
            if self.refuse_spawn {
                return Err(InjectorError::ExitedEarly {
                    status: "exit status: 1".into(),
                    stderr: "mount: permission denied".into(),
                });
            }
            let injector = Arc::new(FakeInjector {
                identity: INJECTOR,
                calls: Arc::clone(&self.calls),
                exited: tokio::sync::watch::Sender::new(false),
            });
            self.alive.lock().unwrap().push(INJECTOR);
            self.injectors.lock().unwrap().push(Arc::clone(&injector));
            Ok(Box::new(injector))
        }
        async fn adopt_injector(
            &self,
            injector: ProcessIdentity,
            control_socket: &Path,
        ) -> Result<Box<dyn Injector>, InjectorError> {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Adopt(injector.pid, control_socket.to_owned()));
            // Only the very process that still runs answers on its socket, as the journaled one.
            if !self.alive.lock().unwrap().contains(&injector) || self.refuse_adopt {
                return Err(InjectorError::ControlSocket {
                    path: control_socket.to_owned(),
                    reason: "connecting: Connection refused (os error 111)".into(),
                });
            }
            let injector = Arc::new(FakeInjector {
                identity: injector,
                calls: Arc::clone(&self.calls),
                exited: tokio::sync::watch::Sender::new(false),
            });
            self.injectors.lock().unwrap().push(Arc::clone(&injector));
            Ok(Box::new(injector))
        }
        async fn hand_over(
            &self,
            target_pid: u32,
            volume: &str,
            _known: Option<FaultMount>,
        ) -> io_handover::HandedOver {
            self.calls
                .lock()
                .unwrap()
                .push(Call::HandOver(target_pid, volume.into()));
            io_handover::HandedOver {
                report: handover::Report::default(),
                fault: Some(FAULT_MOUNT),
            }
        }
        async fn socket_server(&self, control_socket: &Path) -> Option<ProcessIdentity> {
            self.socket_servers
                .lock()
                .unwrap()
                .iter()
                .find(|(path, server)| path == control_socket && self.is_alive(*server))
                .map(|(_, server)| *server)
        }
        fn is_alive(&self, process: ProcessIdentity) -> bool {
            self.alive.lock().unwrap().contains(&process)
        }
        fn kill(&self, process: ProcessIdentity) {
            self.alive.lock().unwrap().retain(|p| *p != process);
            self.calls.lock().unwrap().push(Call::Kill(process.pid));
        }
        async fn cleanup_mount(&self, target_pid: u32, volume: &str) -> Result<(), InjectorError> {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Cleanup(target_pid, volume.into()));
            if self.refuse_cleanup {
                return Err(InjectorError::Refused {
                    method: "cleanup",
                    message: "device busy".into(),
                });
            }
            Ok(())
        }
        async fn hand_back(
            &self,
            target_pid: u32,
            volume: &str,
            fault: FaultMount,
        ) -> handover::Report {
            self.calls.lock().unwrap().push(Call::HandBack(
                target_pid,
                volume.into(),
                fault.mount_id,
            ));
            handover::Report::default()
        }
        fn release_helper_cgroup(&self, target_pid: u32) {
            self.calls
                .lock()
                .unwrap()
                .push(Call::ReleaseCgroup(target_pid));
        }
        fn mount_table(&self, target_pid: u32) -> std::io::Result<Option<String>> {
            assert_eq!(target_pid, TARGET.pid);
            if !self.alive.lock().unwrap().contains(&TARGET) {
                return Ok(None);
            }
            let mut table = String::from("1300 1200 0:120 / / rw - overlay overlay rw\n");
            if *self.mount_stays.lock().unwrap() {
                table.push_str("1302 1300 0:78 / /data rw - fuse.faultline faultline rw\n");
            }
            Ok(Some(table))
        }
    }

    /// The control sockets' directory (never bound: the host is a double).
    const SOCKETS: &str = "/run/faultline-test/injectors";
    const TARGET: ProcessIdentity = ProcessIdentity {
        pid: 4242,
        start_time: 77,
    };
    const INJECTOR: ProcessIdentity = ProcessIdentity {
        pid: 4343,
        start_time: 78,
    };
    const FAULT_MOUNT: FaultMount = FaultMount {
        mount_id: 901,
        dev: handover::Dev {
            major: 0,
            minor: 78,
        },
    };
    const EIO_EVERYWHERE: &str =
        r#"[{"type":"fault","path":"/data/**","percent":100,"faults":[{"errno":5,"weight":1}]}]"#;

    fn mount_key() -> MountKey {
        MountKey {
            container: "containerd://abc".into(),
            volume: "/data".into(),
        }
    }

    fn eio_everywhere() -> IoActions {
        IoActions::parse(EIO_EVERYWHERE, &VolumePath::parse("/data").unwrap())
            .unwrap()
            .unwrap()
    }

    /// Inject with the handover on: the injector mounts with rules that spare the handover,
    /// the handover runs, its fault mount is journaled, then the real rules are put in force.
    async fn inject(io: &Arc<IoChaos>) -> String {
        let applied = io
            .start_in(mount_key(), TARGET.pid, &eio_everywhere(), None, true)
            .await
            .unwrap();
        let Applied::Started {
            id, injector_pid, ..
        } = applied
        else {
            panic!("not started: {applied:?}");
        };
        assert_eq!(injector_pid, INJECTOR.pid);
        id
    }

    #[tokio::test]
    async fn inject_then_crash_then_the_next_start_adopts_the_live_injector() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![TARGET];
        let (io, _registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let id = inject(&io).await;
        let real = eio_everywhere().wire().clone();
        assert_eq!(
            host.calls(),
            [
                Call::Spawn(
                    TARGET.pid,
                    "/data".into(),
                    io_handover::rules_while_handing_over(&eio_everywhere())
                ),
                Call::HandOver(TARGET.pid, "/data".into()),
                Call::Update(real),
            ]
        );
        let record: Record<IoRecord> = journal.get_as(&id).unwrap().expect("journaled");
        assert_eq!(record.target, TARGET);
        assert_eq!(record.fault.injector, Some(INJECTOR));
        assert_eq!(record.fault.fault_mount, Some(FAULT_MOUNT));
        assert_eq!(record.fault.actions, eio_everywhere().wire().to_string());
        let socket = PathBuf::from(format!("{SOCKETS}/{id}.sock"));
        assert_eq!(record.fault.control_socket.as_ref(), Some(&socket));

        // The agent is SIGKILLed: nothing of its memory survives, its injector does (it has no
        // parent-death signal) and keeps the rules in force. The next start has the journal.
        drop(io);
        let after = Arc::new(RecordingHost::default());
        *after.alive.lock().unwrap() = vec![TARGET, INJECTOR];
        let (io, registry, journal) = restarted(dir.path(), Arc::clone(&after));
        let outcomes = registry.recover_left_over().await;
        assert!(outcomes.is_empty(), "adopted, not recovered: {outcomes:?}");
        // Taken over through the journaled socket: no kill, no unmount, nothing handed back.
        assert_eq!(after.calls(), [Call::Adopt(INJECTOR.pid, socket)]);
        assert_eq!(journal.list().unwrap().0.len(), 1);
        let listed = registry.list().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].record.id, id);
        assert!(
            listed[0].status.starts_with("running (pid 4343)"),
            "{listed:?}"
        );

        // It is this run's experiment now: updated live, then recovered as Chaos Mesh does.
        after.calls.lock().unwrap().clear();
        let volume = VolumePath::parse("/data").unwrap();
        let latency = r#"[{"type":"latency","path":"/data/**","latency":"5ms"}]"#;
        let spec = |actions: &str| IoSpec {
            container: crate::container_runtime::ContainerRef::parse(
                "containerd://abc",
                crate::container_runtime::RuntimeKind::Containerd,
            )
            .unwrap(),
            volume: volume.clone(),
            actions: IoActions::parse(actions, &volume).unwrap(),
        };
        let updated = io.apply(spec(latency), None, true).await.unwrap();
        assert!(
            matches!(&updated, Applied::Updated { id: i, injector_pid, .. } if *i == id && *injector_pid == INJECTOR.pid),
            "{updated:?}"
        );
        let recovered = io.apply(spec("[]"), None, true).await.unwrap();
        assert_eq!(recovered, Applied::Recovered { id: id.clone() });
        assert_eq!(
            after.calls(),
            [
                Call::Update(serde_json::from_str(latency).unwrap()),
                Call::Recover,
                Call::HandBack(TARGET.pid, "/data".into(), FAULT_MOUNT.mount_id),
                Call::ReleaseCgroup(TARGET.pid),
            ]
        );
        assert!(journal.list().unwrap().0.is_empty());
        assert!(registry.list().await.is_empty());
    }

    #[tokio::test]
    async fn an_adopted_injector_that_dies_is_cleaned_up_and_a_due_one_ends_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.write(&injected("io-5")).unwrap();
        let mut due = injected("io-6");
        due.container_id = "containerd://def".into();
        due.deadline_ms = Some(1);
        journal.write(&due).unwrap();
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![TARGET, INJECTOR];
        let (_io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        assert!(registry.recover_left_over().await.is_empty());
        // The one past its deadline is recovered at once, through its adopted injector.
        let ended = || !journal.list().unwrap().0.iter().any(|r| r.id == "io-6");
        for _ in 0..200 {
            if ended() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(ended(), "the deadline of an adopted experiment was missed");
        assert!(host.calls().contains(&Call::Recover), "{:?}", host.calls());

        // The other's injector dies while adopted: the agent follows it without being its
        // parent, and cleans up at once.
        host.calls.lock().unwrap().clear();
        let injector = Arc::clone(&host.injectors.lock().unwrap()[0]);
        assert!(!injector.is_dead());
        host.alive.lock().unwrap().retain(|p| *p != INJECTOR);
        injector.die();
        for _ in 0..200 {
            if journal.list().unwrap().0.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(journal.list().unwrap().0.is_empty(), "the record stays");
        assert_eq!(
            host.calls(),
            [
                Call::Cleanup(TARGET.pid, "/data".into()),
                Call::HandBack(TARGET.pid, "/data".into(), FAULT_MOUNT.mount_id),
                Call::ReleaseCgroup(TARGET.pid),
            ]
        );
    }

    #[tokio::test]
    async fn recovery_asks_the_live_injector_and_hands_back_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![TARGET];
        let (io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let id = inject(&io).await;
        host.calls.lock().unwrap().clear();
        registry.recover(&id).await.unwrap();
        // No unmount from the agent: the injector detached its own mount.
        assert_eq!(
            host.calls(),
            [
                Call::Recover,
                Call::HandBack(TARGET.pid, "/data".into(), FAULT_MOUNT.mount_id),
                Call::ReleaseCgroup(TARGET.pid),
            ]
        );
        assert!(journal.list().unwrap().0.is_empty());
        assert!(io.views().await.is_empty());
    }

    /// Issue 23: an injector once exited "recovered" with its mount still over the volume, the
    /// record was removed, and the pod answered ENOTCONN for good. Success is now what the
    /// target's mount table says.
    #[tokio::test]
    async fn a_fault_mount_left_in_the_target_keeps_the_record_until_a_retry_sees_it_gone() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![TARGET];
        let (io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let id = inject(&io).await;
        host.calls.lock().unwrap().clear();
        *host.mount_stays.lock().unwrap() = true;

        let err = registry.recover(&id).await.unwrap_err();
        assert!(
            matches!(&err, AgentError::FaultMountRemains { volume, pid, entry }
                if volume == "/data" && *pid == TARGET.pid && entry.contains("fuse.faultline")),
            "{err}"
        );
        assert!(err.to_string().contains("recovery is retried"), "{err}");
        // The injector said it recovered; the agent then unmounted itself, and checked again.
        assert_eq!(
            host.calls(),
            [
                Call::Recover,
                Call::HandBack(TARGET.pid, "/data".into(), FAULT_MOUNT.mount_id),
                Call::Cleanup(TARGET.pid, "/data".into()),
                Call::HandBack(TARGET.pid, "/data".into(), FAULT_MOUNT.mount_id),
            ]
        );
        assert_eq!(journal.list().unwrap().0.len(), 1, "the record was dropped");
        let listed = registry.list().await;
        assert_eq!(listed.len(), 1, "the listing hides what the journal holds");
        assert!(listed[0].status.starts_with("NOT RECOVERED"), "{listed:?}");

        // A retry while the mount stays fails again and keeps the record.
        let outcomes = registry.retry_unrecovered().await;
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        assert!(outcomes[0].1.is_err(), "{outcomes:?}");
        assert_eq!(journal.list().unwrap().0.len(), 1);

        // Once the mount is gone, the next retry forgets the record.
        *host.mount_stays.lock().unwrap() = false;
        let outcomes = registry.retry_unrecovered().await;
        assert!(
            matches!(outcomes.as_slice(), [(i, Ok(()))] if *i == id),
            "{outcomes:?}"
        );
        assert!(journal.list().unwrap().0.is_empty());
        assert!(registry.retry_unrecovered().await.is_empty());
    }

    #[tokio::test]
    async fn a_cleanup_that_says_done_is_checked_against_the_mount_table() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path())
            .unwrap()
            .write(&injected("io-4"))
            .unwrap();
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![TARGET];
        *host.mount_stays.lock().unwrap() = true;
        let (_io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let outcomes = registry.recover_left_over().await;
        let err = outcomes[0].1.as_ref().unwrap_err();
        assert!(matches!(err, AgentError::FaultMountRemains { .. }), "{err}");
        assert_eq!(journal.list().unwrap().0.len(), 1);
        // A target that is gone took the mount with it: nothing is left to check.
        host.alive.lock().unwrap().clear();
        let outcomes = registry.retry_unrecovered().await;
        assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
        assert!(journal.list().unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn an_injector_dying_mid_experiment_is_cleaned_up_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![TARGET];
        let (io, _registry, journal) = restarted(dir.path(), Arc::clone(&host));
        inject(&io).await;
        host.calls.lock().unwrap().clear();
        let injector = Arc::clone(&host.injectors.lock().unwrap()[0]);
        host.alive.lock().unwrap().retain(|p| *p != INJECTOR);
        injector.die();
        for _ in 0..200 {
            if journal.list().unwrap().0.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(journal.list().unwrap().0.is_empty(), "the record stays");
        assert_eq!(
            host.calls(),
            [
                Call::Cleanup(TARGET.pid, "/data".into()),
                Call::HandBack(TARGET.pid, "/data".into(), FAULT_MOUNT.mount_id),
                Call::ReleaseCgroup(TARGET.pid),
            ]
        );
        assert!(io.views().await.is_empty());
    }

    #[tokio::test]
    async fn an_injector_that_cannot_mount_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(RecordingHost {
            refuse_spawn: true,
            ..Default::default()
        });
        *host.alive.lock().unwrap() = vec![TARGET];
        let (io, _registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let err = io
            .start_in(mount_key(), TARGET.pid, &eio_everywhere(), None, false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
        assert_eq!(
            host.calls(),
            [
                Call::Spawn(TARGET.pid, "/data".into(), eio_everywhere().wire().clone()),
                Call::Cleanup(TARGET.pid, "/data".into()),
            ]
        );
        assert!(journal.list().unwrap().0.is_empty());
    }

    /// The record an inject leaves in the journal once the handover is done.
    fn injected(id: &str) -> Record<IoRecord> {
        Record {
            id: id.into(),
            started_at_ms: 1,
            deadline_ms: None,
            container_id: "containerd://abc".into(),
            target: TARGET,
            namespace_inode: 4026532000,
            fault: IoRecord {
                volume: "/data".into(),
                actions: r#"[{"type":"fault","faults":[{"errno":5,"weight":1}]}]"#.into(),
                injector: Some(INJECTOR),
                fault_mount: Some(FaultMount {
                    mount_id: 901,
                    dev: handover::Dev {
                        major: 0,
                        minor: 78,
                    },
                }),
                control_socket: Some(PathBuf::from(format!("{SOCKETS}/{id}.sock"))),
            },
        }
    }

    /// A fresh agent on `dir` after a crash: a new IoChaos, only the journal carried over.
    fn restarted(
        dir: &std::path::Path,
        host: Arc<RecordingHost>,
    ) -> (Arc<IoChaos>, Registry, Journal) {
        let journal = Journal::open(dir).unwrap();
        let io = IoChaos::with_host(
            Resolver::new(crate::container_runtime::RuntimeConfig::for_runtime(
                crate::container_runtime::RuntimeKind::Containerd,
            )),
            journal.clone(),
            Arc::new(Metrics::new()),
            host,
            PathBuf::from(SOCKETS),
        );
        let registry =
            Registry::new(journal.clone()).register(Arc::clone(&io) as Arc<dyn FaultKind>);
        (io, registry, journal)
    }

    #[tokio::test]
    async fn an_injector_that_cannot_be_adopted_is_recovered_from_the_record_alone() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path())
            .unwrap()
            .write(&injected("io-1"))
            .unwrap();
        // The agent died; its injector did not, nor the target, but the injector does not
        // answer on its control socket (wedged, or its socket file was removed).
        let host = Arc::new(RecordingHost {
            refuse_adopt: true,
            ..Default::default()
        });
        *host.alive.lock().unwrap() = vec![TARGET, INJECTOR];
        let (_io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let outcomes = registry.recover_left_over().await;
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
        // The fault mount handed back is the journaled one: nothing else knows it.
        assert_eq!(
            host.calls(),
            [
                Call::Adopt(INJECTOR.pid, format!("{SOCKETS}/io-1.sock").into()),
                Call::Kill(INJECTOR.pid),
                Call::Cleanup(TARGET.pid, "/data".into()),
                Call::HandBack(TARGET.pid, "/data".into(), 901),
                Call::ReleaseCgroup(TARGET.pid),
            ]
        );
        assert!(journal.list().unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn an_injector_spawned_but_not_yet_journaled_is_found_by_its_socket_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        // The agent died between spawning the injector and journaling who it is.
        let mut record = injected("io-9");
        record.fault.injector = None;
        record.fault.fault_mount = None;
        Journal::open(dir.path()).unwrap().write(&record).unwrap();
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![TARGET, INJECTOR];
        *host.socket_servers.lock().unwrap() =
            vec![(format!("{SOCKETS}/io-9.sock").into(), INJECTOR)];
        let (_io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let outcomes = registry.recover_left_over().await;
        assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
        // Left alive, it would keep the fault in force and its mount busy for good.
        assert_eq!(
            host.calls(),
            [
                Call::Kill(INJECTOR.pid),
                Call::Cleanup(TARGET.pid, "/data".into()),
                Call::ReleaseCgroup(TARGET.pid),
            ]
        );
        assert!(journal.list().unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_target_that_is_gone_took_its_mount_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let mut record = injected("io-2");
        record.fault.fault_mount = None;
        journal.write(&record).unwrap();
        // Same PID, another process: not ours to enter or signal.
        let host = Arc::new(RecordingHost::default());
        *host.alive.lock().unwrap() = vec![ProcessIdentity {
            start_time: 1,
            ..TARGET
        }];
        let (_io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let outcomes = registry.recover_left_over().await;
        assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
        assert_eq!(host.calls(), [Call::ReleaseCgroup(TARGET.pid)]);
        assert!(journal.list().unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_failed_recovery_keeps_the_record_for_the_next_try() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path())
            .unwrap()
            .write(&injected("io-3"))
            .unwrap();
        let host = Arc::new(RecordingHost {
            alive: Mutex::new(vec![TARGET]),
            refuse_cleanup: true,
            ..Default::default()
        });
        let (_io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let outcomes = registry.recover_left_over().await;
        let err = outcomes[0].1.as_ref().unwrap_err();
        assert!(err.to_string().contains("device busy"), "{err}");
        // Not handed back onto a directory the fault mount may still cover. (Its injector is
        // gone: adoption was tried and failed.)
        assert_eq!(
            host.calls(),
            [
                Call::Adopt(INJECTOR.pid, format!("{SOCKETS}/io-3.sock").into()),
                Call::Cleanup(TARGET.pid, "/data".into())
            ]
        );
        assert_eq!(journal.list().unwrap().0.len(), 1);
        // Shutdown walks the journal, so it tries again, and explicit recovery by id finds it.
        let err = registry.recover("io-3").await.unwrap_err();
        assert!(err.to_string().contains("device busy"), "{err}");
        assert!(matches!(
            registry.recover("io-nope").await,
            Err(AgentError::UnknownExperiment(_))
        ));
    }

    #[tokio::test]
    async fn records_of_unknown_kinds_are_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let mut stored = injected("time-1").to_stored().unwrap();
        stored.fault["kind"] = "time".into();
        journal.write_stored(&stored).unwrap();
        let host = Arc::new(RecordingHost::default());
        let (_io, registry, journal) = restarted(dir.path(), Arc::clone(&host));
        let outcomes = registry.recover_left_over().await;
        assert!(
            matches!(&outcomes[0].1, Err(AgentError::UnknownKind { kind, .. }) if kind == "time"),
            "{outcomes:?}"
        );
        assert_eq!(host.calls(), []);
        assert_eq!(journal.list().unwrap().0.len(), 1);
    }

    /// Records written before the journal became generic read as IO records.
    #[test]
    fn records_of_earlier_agents_still_read() {
        let text = r#"{"id":"io-1","started_at_ms":1,"deadline_ms":null,
            "container_id":"containerd://abc","target":{"pid":42,"start_time":7},
            "namespace_inode":4026532000,"fault":{"kind":"io","volume":"/data",
            "actions":"[]","injector":{"pid":43,"start_time":8}}}"#;
        let stored: StoredRecord = serde_json::from_str(text).unwrap();
        let record: Record<IoRecord> = stored.decode().unwrap();
        assert_eq!(record.fault.fault_mount, None);
        assert_eq!(record.fault.injector.map(|i| i.pid), Some(43));
        assert_eq!(record.to_stored().unwrap().fault, stored.fault);
    }
    #[test]
    fn an_unreachable_open_file_is_reported_first_and_loudly() {
        let status = serde_json::json!({
            "ready": true, "fileIo": "passthrough",
            "unreachableOpenFiles": ["/data/wal"],
            "warnings": ["NOT FAULTED: 1 open file(s) ...: /data/wal"],
        });
        let line = loudly(&warnings_of(&status), format!("running (pid 7): {status}"));
        assert!(
            line.starts_with(
                "WARNING: NOT FAULTED: 1 open file(s) ...: /data/wal | running (pid 7): "
            ),
            "{line}"
        );
        let quiet = serde_json::json!({"ready": true, "warnings": []});
        assert_eq!(
            loudly(&warnings_of(&quiet), "running (pid 7)".into()),
            "running (pid 7)"
        );
        // An injector from before warnings existed answers without the field.
        assert!(warnings_of(&serde_json::json!({"ready": true})).is_empty());
    }
}
