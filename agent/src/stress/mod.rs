//! Stress chaos: CPU and memory stressors charged to a container (or its pod), as Chaos Mesh's
//! ExecStressors/CancelStressors do it, but with stressors built into the agent binary (no
//! stress-ng in the image).
//!
//! Each stressor is one process (`faultline-agent stressor …`, threads for workers) and one
//! experiment, identified by a uid. It is journaled before anything is made, spawned held,
//! moved into the target's cgroups in every hierarchy ([`cgroup`]), given its oom_score_adj
//! and only then released, so every cycle and byte it uses is charged to the target. Cancel
//! kills and reaps it and removes any cgroup made for it; a stressor that exits on its own
//! (the OOM killer, usually) is cleaned up after at once; the stressors die with the agent, and
//! on start the agent kills whatever the journal says a crashed run left behind.
//!
//! `enterNS` is accepted and ignored: a stressor needs no namespace of the target, only its
//! cgroups (it stays visible on the host, not in the container's `ps`).

mod error;
pub mod methods;
pub mod options;
pub mod process;
mod record;
mod request;
pub mod worker;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use self::error::StressError;
pub use self::record::{StressRecord, StressScope, StressorKind};
pub use self::request::{InstanceRef, Outcome, Started, StressRequest};

use self::options::{CpuSpec, MemorySpec, OptionsError};
use self::process::{ProcessError, Stressor, StressorProcess};
use self::request::{matches, validate};
use self::worker::StressorCommand;
use crate::cgroup::{self, CgroupError, HostFs, Placement, RealFs, Scope};
use crate::clock::now_ms;
use crate::container_runtime::{Resolver, RuntimeError};
use crate::error::AgentError;
use crate::fault_kinds::{self, ExperimentView, FaultKind};
use crate::journal::{FaultRecord, Journal, ProcessIdentity, Record, StoredRecord};
use crate::metrics::Metrics;

/// How many ended instances are remembered, so that cancelling one that ended on its own (OOM
/// killed) succeeds instead of failing as unknown.
const REMEMBER_ENDED: usize = 1024;
/// How long a stressor left by a previous run may take to die.
const ORPHAN_KILL_WITHIN: Duration = Duration::from_secs(2);
/// How long a released stressor may take to say it runs (reserving its memory is instant;
/// this is for a node too busy to schedule it).
const START_WITHIN: Duration = Duration::from_secs(10);
/// The metrics and journal kind.
const KIND: &str = StressRecord::KIND;

/// The stressor processes: spawning one (held), and killing one a previous run left (no longer
/// our child). Behind a trait so a stressor's lifecycle is tested without root; its cgroups go
/// through [`HostFs`].
#[tonic::async_trait]
pub trait StressProcesses: Send + Sync + std::fmt::Debug {
    /// Spawns `binary stressor <command>`, held until released.
    fn spawn(
        &self,
        binary: &std::path::Path,
        command: &StressorCommand,
    ) -> Result<Box<dyn Stressor>, ProcessError>;
    /// SIGKILLs `identity` if it is still that very process; true once it is gone.
    async fn kill_orphan(&self, identity: ProcessIdentity, within: Duration) -> bool;
}

/// The real [`StressProcesses`]: child processes, signals and /proc.
#[derive(Debug, Default)]
pub struct RealProcesses;

#[tonic::async_trait]
impl StressProcesses for RealProcesses {
    fn spawn(
        &self,
        binary: &std::path::Path,
        command: &StressorCommand,
    ) -> Result<Box<dyn Stressor>, ProcessError> {
        Ok(Box::new(StressorProcess::spawn(binary, command)?))
    }

    async fn kill_orphan(&self, identity: ProcessIdentity, within: Duration) -> bool {
        process::kill_orphan(identity, within).await
    }
}

/// Settings of stress chaos.
#[derive(Clone, Debug)]
pub struct StressConfig {
    /// The binary whose hidden `stressor` subcommand runs a stressor (the agent's own).
    pub stressor_binary: PathBuf,
}

#[derive(Debug)]
struct Instance {
    record: Record<StressRecord>,
    process: Box<dyn Stressor>,
    placement: Placement,
    summary: String,
    oom_kills_before: Option<u64>,
}

#[derive(Clone, Debug)]
struct Ended {
    id: String,
    pid: u32,
    started_at_ms: u64,
}

/// A stressor ready to be started: what runs and where.
struct Prepared {
    kind: StressorKind,
    options: String,
    command: StressorCommand,
    placement: Placement,
    summary: String,
    /// `--timeout`: the stressor is recovered after this long.
    timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct StressChaos {
    config: StressConfig,
    resolver: Resolver,
    journal: Journal,
    metrics: Arc<Metrics>,
    fs: Arc<dyn HostFs>,
    processes: Arc<dyn StressProcesses>,
    active: Mutex<HashMap<String, Arc<Instance>>>,
    ended: Mutex<VecDeque<Ended>>,
}

impl StressChaos {
    pub fn new(
        config: StressConfig,
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::with_host(
            config,
            resolver,
            journal,
            metrics,
            Arc::new(RealFs),
            Arc::new(RealProcesses),
        )
    }

    /// [`Self::new`] on another host (recording doubles in tests).
    pub fn with_host(
        config: StressConfig,
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
        fs: Arc<dyn HostFs>,
        processes: Arc<dyn StressProcesses>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            resolver,
            journal,
            metrics,
            fs,
            processes,
            active: Mutex::default(),
            ended: Mutex::default(),
        })
    }

    /// ExecStressors: starts the CPU and/or memory stressor; both or neither.
    pub async fn exec(
        self: &Arc<Self>,
        request: &StressRequest<'_>,
    ) -> Result<Outcome, AgentError> {
        let result = self.exec_inner(request).await;
        if let Err(err) = &result {
            self.metrics.failure(KIND, err.reason());
        }
        result
    }

    async fn exec_inner(
        self: &Arc<Self>,
        request: &StressRequest<'_>,
    ) -> Result<Outcome, AgentError> {
        let (cpu, memory) = validate(request)?;
        self.resolver.parse(request.container_id)?;
        let target_pid = self.resolver.container_pid(request.container_id).await?;
        let target = ProcessIdentity::of(target_pid).map_err(|_| RuntimeError::NotRunning {
            id: request.container_id.to_owned(),
            runtime: "host".into(),
        })?;
        let mut outcome = Outcome {
            target_pid,
            ..Outcome::default()
        };
        if let Some(spec) = cpu {
            let id = new_instance_id("cpu");
            let prepared = self.prepare_cpu(request, target_pid, &id, spec)?;
            outcome.cpu = Some(self.start(request, target, id, prepared).await?);
        }
        if let Some(spec) = memory {
            let id = new_instance_id("memory");
            let started = match self.prepare_memory(request, target_pid, &id, spec) {
                Ok(prepared) => self.start(request, target, id, prepared).await,
                Err(err) => Err(err.into()),
            };
            match started {
                Ok(started) => outcome.memory = Some(started),
                Err(err) => {
                    // Both or neither: undo the CPU stressor.
                    if let Some(cpu) = &outcome.cpu {
                        let _ = self.stop(&cpu.id).await;
                    }
                    return Err(err);
                }
            }
        }
        Ok(outcome)
    }

    /// What ExecStressors would do, without doing it.
    pub async fn plan(&self, request: &StressRequest<'_>) -> Result<(u32, String), AgentError> {
        let (cpu, memory) = validate(request)?;
        let target_pid = self.resolver.container_pid(request.container_id).await?;
        let mut parts = Vec::new();
        if let Some(spec) = cpu {
            let p = self.prepare_cpu(request, target_pid, "dry-run", spec)?;
            parts.push(format!("{} in {}", p.summary, describe(&p.placement)));
        }
        if let Some(spec) = memory {
            let p = self.prepare_memory(request, target_pid, "dry-run", spec)?;
            parts.push(format!("{} in {}", p.summary, describe(&p.placement)));
        }
        Ok((
            target_pid,
            format!(
                "would start {} (process {target_pid} of {}), oom_score_adj {}",
                parts.join(", and "),
                request.container_id,
                request.oom_score_adj
            ),
        ))
    }

    fn placement(
        &self,
        request: &StressRequest<'_>,
        target_pid: u32,
        id: &str,
    ) -> Result<Placement, StressError> {
        let scope = match request.scope {
            StressScope::Container => Scope::Container,
            StressScope::Pod => Scope::Pod,
        };
        Ok(cgroup::plan(
            self.fs.as_ref(),
            target_pid,
            scope,
            &format!("faultline-{id}"),
        )?)
    }

    fn prepare_cpu(
        &self,
        request: &StressRequest<'_>,
        target_pid: u32,
        id: &str,
        spec: CpuSpec,
    ) -> Result<Prepared, StressError> {
        Ok(Prepared {
            kind: StressorKind::Cpu,
            options: request.cpu.trim().to_owned(),
            command: StressorCommand::Cpu {
                workers: spec.workers,
                load: spec.load,
                slice_ms: spec.slice_ms,
                method: spec.method,
            },
            placement: self.placement(request, target_pid, id)?,
            summary: format!(
                "{} CPU worker{} at {}% load ({}, busy at most {} ms at a time){}",
                spec.workers,
                plural(spec.workers),
                spec.load,
                spec.method,
                spec.slice_ms,
                ending(spec.timeout)
            ),
            timeout: spec.timeout,
        })
    }

    fn prepare_memory(
        &self,
        request: &StressRequest<'_>,
        target_pid: u32,
        id: &str,
        spec: MemorySpec,
    ) -> Result<Prepared, StressError> {
        let placement = self.placement(request, target_pid, id)?;
        let limit = placement
            .memory_limit(self.fs.as_ref())
            .or_else(|| cgroup::node_memory(self.fs.as_ref()))
            .unwrap_or(0);
        let bytes = spec.bytes(limit);
        if bytes == 0 {
            return Err(OptionsError::Incomplete {
                field: "memoryStressors",
                reason: "the size comes to 0 bytes".into(),
            }
            .into());
        }
        Ok(Prepared {
            kind: StressorKind::Memory,
            options: request.memory.trim().to_owned(),
            command: StressorCommand::Memory {
                workers: spec.workers,
                bytes,
                growth_ms: spec.growth.as_millis().try_into().unwrap_or(u64::MAX),
                hang_ms: spec
                    .hang
                    .map_or(0, |h| h.as_millis().try_into().unwrap_or(u64::MAX)),
                keep: spec.keep,
                method: spec.method,
            },
            placement,
            summary: format!(
                "memory stressor holding {} ({} worker{}, {} pattern{}){}",
                human_bytes(bytes),
                spec.workers,
                plural(spec.workers),
                spec.method,
                match (spec.hang, spec.keep) {
                    (None, _) => String::new(),
                    (Some(h), true) =>
                        format!(", rewritten every {}", humantime::format_duration(h)),
                    (Some(h), false) => {
                        format!(
                            ", freed and allocated again every {}",
                            humantime::format_duration(h)
                        )
                    }
                },
                ending(spec.timeout)
            ),
            timeout: spec.timeout,
        })
    }

    /// Journal, make cgroups, spawn held, join, oom_score_adj, release; undoes everything it
    /// did on failure.
    async fn start(
        self: &Arc<Self>,
        request: &StressRequest<'_>,
        target: ProcessIdentity,
        id: String,
        prepared: Prepared,
    ) -> Result<Started, AgentError> {
        let started_at_ms = now_ms();
        // The request's duration or the stressor's --timeout, whichever ends first.
        let lifetime = match (request.duration, prepared.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut record = Record {
            id: id.clone(),
            started_at_ms,
            deadline_ms: lifetime.map(|d| started_at_ms + d.as_millis() as u64),
            container_id: request.container_id.to_owned(),
            target,
            namespace_inode: cgroup_namespace_inode(target.pid).map_err(|_| {
                RuntimeError::NotRunning {
                    id: request.container_id.to_owned(),
                    runtime: "host".into(),
                }
            })?,
            fault: StressRecord {
                stressor: prepared.kind,
                scope: request.scope,
                options: prepared.options.clone(),
                cgroups: prepared.placement.dirs(),
                // Recorded before they are made: a crash in between leaves nothing unknown.
                created_cgroups: prepared.placement.created(),
                process: None,
            },
        };
        self.journal.write(&record)?;
        let fs = self.fs.as_ref();
        if let Err(err) = prepared.placement.create(fs) {
            let _ = self.journal.remove(&id);
            return Err(StressError::from(err).into());
        }
        let process = match self
            .processes
            .spawn(&self.config.stressor_binary, &prepared.command)
        {
            Ok(process) => process,
            Err(err) => {
                self.abandon(&id, None, &prepared.placement).await;
                return Err(StressError::from(err).into());
            }
        };
        let pid = process.identity().pid;
        record.fault.process = Some(process.identity());
        let released = self
            .place_and_release(
                &record,
                process.as_ref(),
                &prepared.placement,
                request.oom_score_adj,
            )
            .await;
        if let Err(err) = released {
            self.abandon(&id, Some(process.as_ref()), &prepared.placement)
                .await;
            return Err(err);
        }
        let oom_kills_before = prepared.placement.oom_kills(fs);
        let instance = Arc::new(Instance {
            record,
            process,
            placement: prepared.placement,
            summary: prepared.summary,
            oom_kills_before,
        });
        self.active
            .lock()
            .map_err(|_| poisoned())?
            .insert(id.clone(), Arc::clone(&instance));
        self.metrics.injected(KIND);
        self.watch(Arc::clone(&instance));
        if let Some(duration) = lifetime {
            self.recover_after(&id, duration);
        }
        tracing::info!(
            %id,
            container = %request.container_id,
            target_pid = target.pid,
            stressor_pid = pid,
            cgroups = %describe(&instance.placement),
            "{}",
            instance.summary
        );
        Ok(Started {
            id,
            kind: prepared.kind,
            pid,
            started_at_ms,
            cgroups: instance.placement.dirs(),
            summary: instance.summary.clone(),
        })
    }

    /// Journals the spawned (held) stressor, moves it into its cgroups, sets its
    /// oom_score_adj and only then lets it work, so all it uses is charged to the target.
    async fn place_and_release(
        &self,
        record: &Record<StressRecord>,
        process: &dyn Stressor,
        placement: &Placement,
        oom_score_adj: i32,
    ) -> Result<(), AgentError> {
        let (fs, pid) = (self.fs.as_ref(), process.identity().pid);
        self.journal.write(record)?;
        placement.join(fs, pid).map_err(StressError::from)?;
        set_oom_score_adj(fs, pid, oom_score_adj)?;
        if let Some(status) = process.exited() {
            return Err(StressError::ExitedEarly {
                status: status.to_string(),
                stderr: process.stderr_tail().await,
            }
            .into());
        }
        process.release().map_err(StressError::from)?;
        if let Err(reason) = process.started(START_WITHIN).await {
            return Err(StressError::CouldNotStart {
                reason,
                stderr: process.stderr_tail().await,
            }
            .into());
        }
        Ok(())
    }

    /// Undoes a start that failed part way.
    async fn abandon(&self, id: &str, process: Option<&dyn Stressor>, placement: &Placement) {
        if let Some(process) = process {
            process.kill().await;
        }
        match self.remove_cgroups(placement.created()).await {
            Ok(()) => {
                let _ = self.journal.remove(id);
            }
            Err(err) => {
                tracing::error!(%id, %err, "a cgroup made for the stressor stays; the journal keeps the record")
            }
        }
    }

    async fn remove_cgroups(&self, dirs: Vec<PathBuf>) -> Result<(), CgroupError> {
        if dirs.is_empty() {
            return Ok(());
        }
        let fs = Arc::clone(&self.fs);
        tokio::task::spawn_blocking(move || cgroup::remove_created(fs.as_ref(), &dirs))
            .await
            .unwrap_or(Ok(()))
    }

    /// CancelStressors: kills the stressor. Cancelling one that already ended is not an error.
    pub async fn cancel(&self, instance: &InstanceRef) -> Result<(), AgentError> {
        let found = self
            .active
            .lock()
            .map_err(|_| poisoned())?
            .values()
            .find(|i| {
                matches(
                    instance,
                    &i.record.id,
                    i.process.identity().pid,
                    i.record.started_at_ms,
                )
            })
            .map(|i| i.record.id.clone());
        if let Some(id) = found {
            return self.stop(&id).await;
        }
        let ended = self
            .ended
            .lock()
            .map_err(|_| poisoned())?
            .iter()
            .any(|e| matches(instance, &e.id, e.pid, e.started_at_ms));
        if ended {
            return Ok(());
        }
        let name = match instance {
            InstanceRef::Uid(uid) => uid.clone(),
            InstanceRef::Pid { pid, started_at_ms } => {
                format!("with pid {pid} started at {started_at_ms}")
            }
        };
        Err(StressError::UnknownInstance(name).into())
    }

    /// Kills, reaps and cleans up after one instance by id, as its journal record says; a no-op
    /// if someone else already did.
    async fn stop(&self, id: &str) -> Result<(), AgentError> {
        match self.journal.get_as::<StressRecord>(id)? {
            Some(record) => self.recover_record(&record).await,
            None => Ok(()),
        }
    }

    /// Undoes a stressor as its record says: kills it (through the handle this agent holds, or
    /// by identity when a previous run left it), removes the cgroups made for it, forgets it.
    async fn recover_record(&self, record: &Record<StressRecord>) -> Result<(), AgentError> {
        let id = record.id.as_str();
        // Remembered as ended before it leaves the active set: a CancelStressors that arrives
        // meanwhile (the controller cancelling a stressor its --timeout just ended) finds it
        // in one or the other, never in neither.
        let live = self.active.lock().map_err(|_| poisoned())?.get(id).cloned();
        if let Some(instance) = &live {
            self.remember(instance);
            self.active.lock().map_err(|_| poisoned())?.remove(id);
        }
        match (&live, record.fault.process) {
            (Some(instance), _) => {
                let status = instance.process.kill().await;
                tracing::info!(%id, %status, "stressor cancelled");
            }
            (None, Some(process)) => {
                if !self
                    .processes
                    .kill_orphan(process, ORPHAN_KILL_WITHIN)
                    .await
                {
                    return Err(StressError::ExitedEarly {
                        status: "still running after SIGKILL".into(),
                        stderr: format!("stressor {} did not die", process.pid),
                    }
                    .into());
                }
            }
            (None, None) => {} // journaled before it was spawned
        }
        self.remove_cgroups(record.fault.created_cgroups.clone())
            .await
            .map_err(StressError::from)?;
        self.journal.remove(id)?;
        self.metrics.recovered(KIND);
        Ok(())
    }

    fn remember(&self, instance: &Instance) {
        match self.ended.lock() {
            Ok(mut ended) => {
                if ended.len() == REMEMBER_ENDED {
                    ended.pop_front();
                }
                ended.push_back(Ended {
                    id: instance.record.id.clone(),
                    pid: instance.process.identity().pid,
                    started_at_ms: instance.record.started_at_ms,
                });
            }
            Err(_) => {
                tracing::error!(id = %instance.record.id, "state lock poisoned: a cancel of this ended stressor will find nothing")
            }
        }
    }

    /// Cleans up at once after a stressor that exits while still active (OOM-killed, usually).
    fn watch(self: &Arc<Self>, instance: Arc<Instance>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let status = instance.process.wait().await;
            let id = instance.record.id.clone();
            let still_active = match this.active.lock() {
                Ok(active) => active.get(&id).is_some_and(|i| Arc::ptr_eq(i, &instance)),
                Err(_) => {
                    tracing::error!(%id, "state lock poisoned: the journal keeps the record for the next start");
                    return;
                }
            };
            if !still_active {
                return; // stopped on purpose
            }
            use std::os::unix::process::ExitStatusExt;
            let oom_killed = status.signal() == Some(nix::libc::SIGKILL)
                && instance
                    .placement
                    .oom_kills(this.fs.as_ref())
                    .zip(instance.oom_kills_before)
                    .is_some_and(|(now, before)| now > before);
            if oom_killed {
                tracing::warn!(%id, memory_cgroup = %instance.placement.memory_dir.display(), "the stressor was OOM-killed in its cgroup");
                this.metrics.failure(KIND, "oom_killed");
            } else {
                let stderr = instance.process.stderr_tail().await;
                tracing::warn!(%id, %status, %stderr, "the stressor exited on its own");
                this.metrics.failure(KIND, "stressor_exited");
            }
            if let Err(err) = this.stop(&id).await {
                tracing::error!(%id, %err, "a cgroup made for the stressor stays; the journal keeps the record")
            }
        });
    }

    fn recover_after(self: &Arc<Self>, id: &str, duration: Duration) {
        let kind: Arc<dyn FaultKind> = Arc::clone(self) as Arc<dyn FaultKind>;
        fault_kinds::recover_at_deadline(kind, self.journal.clone(), id.to_owned(), duration);
    }

    /// Every running stressor.
    fn views(&self) -> Vec<ExperimentView> {
        let Ok(active) = self.active.lock() else {
            tracing::error!("state lock poisoned: stressors not listed");
            return Vec::new();
        };
        active
            .values()
            .map(|i| {
                let fault = &i.record.fault;
                ExperimentView {
                    record: i.record.with_fault(()),
                    kind: KIND,
                    rules: format!(
                        "{} ({} stressor, {} scope: {})",
                        i.summary,
                        fault.stressor.name(),
                        fault.scope.name(),
                        fault.options
                    ),
                    volume: String::new(),
                    status: match i.process.exited() {
                        Some(status) => format!("exited ({status})"),
                        None => format!(
                            "running (pid {}) in {}",
                            i.process.identity().pid,
                            describe(&i.placement)
                        ),
                    },
                    handover: None,
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl FaultKind for StressChaos {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn noun(&self) -> &'static str {
        "a stressor"
    }

    async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
        self.recover_record(&record.decode()?).await
    }

    async fn list(&self) -> Vec<ExperimentView> {
        self.views()
    }
}

/// Without CAP_SYS_RESOURCE a process may raise its oom_score_adj but not lower it below what
/// it inherited.
fn set_oom_score_adj(fs: &dyn HostFs, pid: u32, value: i32) -> Result<(), StressError> {
    fs.write(
        std::path::Path::new(&format!("/proc/{pid}/oom_score_adj")),
        &value.to_string(),
    )
    .map_err(|source| StressError::OomScoreAdj {
        value,
        pid,
        hint: if source.kind() == std::io::ErrorKind::PermissionDenied {
            " (lowering it below the agent's own needs CAP_SYS_RESOURCE)"
        } else {
            ""
        },
        source,
    })
}

fn describe(placement: &Placement) -> String {
    placement
        .destinations
        .iter()
        .map(|d| {
            format!(
                "{}{}",
                d.dir.display(),
                if d.create { " (made for it)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// ", ending after 10m" for a --timeout.
fn ending(timeout: Option<Duration>) -> String {
    timeout
        .map(|t| format!(", ending after {}", humantime::format_duration(t)))
        .unwrap_or_default()
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn new_instance_id(kind: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("stress-{kind}-{:x}-{:x}-{n}", now_ms(), std::process::id())
}

fn cgroup_namespace_inode(pid: u32) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/cgroup")).map(|m| m.ino())
}

fn poisoned() -> AgentError {
    AgentError::Internal("internal state lock poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fake_fs::FakeFs;
    use crate::fault_kinds::Registry;

    /// Stressors that live in memory: spawned held, released, killed, orphaned; and orphans
    /// that die when told (or refuse to). Records who was told what.
    #[derive(Debug, Default)]
    struct FakeProcesses {
        spawned: Mutex<Vec<Arc<FakeStressor>>>,
        killed: Mutex<Vec<ProcessIdentity>>,
        immortal: bool,
        /// Its stressors exit right after release (a size the node cannot give).
        cannot_start: bool,
    }

    #[derive(Debug)]
    struct FakeStressor {
        identity: ProcessIdentity,
        released: std::sync::atomic::AtomicBool,
        exit: tokio::sync::watch::Sender<Option<std::process::ExitStatus>>,
        cannot_start: bool,
    }

    #[tonic::async_trait]
    impl Stressor for Arc<FakeStressor> {
        fn identity(&self) -> ProcessIdentity {
            self.identity
        }
        fn release(&self) -> Result<(), ProcessError> {
            self.released
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        async fn started(&self, _within: Duration) -> Result<(), String> {
            match self.cannot_start {
                true => Err("exited (exit status: 4)".into()),
                false => Ok(()),
            }
        }
        fn exited(&self) -> Option<std::process::ExitStatus> {
            *self.exit.borrow()
        }
        async fn wait(&self) -> std::process::ExitStatus {
            let mut exit = self.exit.subscribe();
            loop {
                if let Some(status) = *exit.borrow_and_update() {
                    return status;
                }
                if exit.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
        async fn kill(&self) -> std::process::ExitStatus {
            use std::os::unix::process::ExitStatusExt;
            let status = std::process::ExitStatus::from_raw(9);
            self.exit.send_replace(Some(status));
            status
        }
        async fn stderr_tail(&self) -> String {
            String::new()
        }
    }

    #[tonic::async_trait]
    impl StressProcesses for FakeProcesses {
        fn spawn(
            &self,
            _: &std::path::Path,
            _: &StressorCommand,
        ) -> Result<Box<dyn Stressor>, ProcessError> {
            let mut spawned = self.spawned.lock().unwrap();
            let stressor = Arc::new(FakeStressor {
                identity: ProcessIdentity {
                    pid: 7000 + spawned.len() as u32,
                    start_time: 11,
                },
                released: Default::default(),
                exit: tokio::sync::watch::channel(None).0,
                cannot_start: self.cannot_start,
            });
            spawned.push(Arc::clone(&stressor));
            Ok(Box::new(stressor))
        }
        async fn kill_orphan(&self, identity: ProcessIdentity, _: Duration) -> bool {
            self.killed.lock().unwrap().push(identity);
            !self.immortal
        }
    }

    const STRESSOR: ProcessIdentity = ProcessIdentity {
        pid: 5151,
        start_time: 9,
    };

    /// The record a memory stressor's start leaves once it runs, in a cgroup made for it.
    fn injected(id: &str) -> Record<StressRecord> {
        Record {
            id: id.into(),
            started_at_ms: 1,
            deadline_ms: None,
            container_id: "containerd://abc".into(),
            target: ProcessIdentity {
                pid: 4242,
                start_time: 7,
            },
            namespace_inode: 4026531835,
            fault: StressRecord {
                stressor: StressorKind::Memory,
                scope: StressScope::Pod,
                options: "--size 64MB".into(),
                cgroups: vec!["/sys/fs/cgroup/pod/faultline-x".into()],
                created_cgroups: vec![
                    "/sys/fs/cgroup/pod/faultline-x".into(),
                    "/sys/fs/cgroup/pod/faultline-x/leaf".into(),
                ],
                process: Some(STRESSOR),
            },
        }
    }

    fn restarted(
        dir: &std::path::Path,
        fs: Arc<FakeFs>,
        processes: Arc<FakeProcesses>,
    ) -> (Registry, Journal) {
        let journal = Journal::open(dir).unwrap();
        let stress = StressChaos::with_host(
            StressConfig {
                stressor_binary: "/nonexistent/faultline-agent".into(),
            },
            Resolver::new(crate::container_runtime::RuntimeConfig::for_runtime(
                crate::container_runtime::RuntimeKind::Containerd,
            )),
            journal.clone(),
            Arc::new(Metrics::new()),
            fs,
            processes,
        );
        let registry = Registry::new(journal.clone()).register(stress as Arc<dyn FaultKind>);
        (registry, journal)
    }

    const V2_MOUNTINFO: &str = "28 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
    const POD: &str = "/kubepods.slice/kubepods-pod1234.slice";

    /// A v2 host where process 42 runs in a container of a pod.
    fn v2_host() -> Arc<FakeFs> {
        let fs = Arc::new(FakeFs::default());
        let container = format!("{POD}/cri-containerd-c0ffee.scope");
        fs.file("/proc/self/mountinfo", V2_MOUNTINFO)
            .file("/proc/42/cgroup", &format!("0::{container}\n"))
            .file(
                &format!("/sys/fs/cgroup{container}/cgroup.controllers"),
                "cpu memory pids\n",
            )
            .file(
                &format!("/sys/fs/cgroup{POD}/cgroup.subtree_control"),
                "cpu memory pids\n",
            )
            .dir(&format!("/sys/fs/cgroup{container}"))
            .dir(&format!("/sys/fs/cgroup{POD}"));
        fs
    }

    fn stress_on(
        dir: &std::path::Path,
        fs: Arc<FakeFs>,
        processes: Arc<FakeProcesses>,
    ) -> Arc<StressChaos> {
        StressChaos::with_host(
            StressConfig {
                stressor_binary: "/nonexistent/faultline-agent".into(),
            },
            Resolver::new(crate::container_runtime::RuntimeConfig::for_runtime(
                crate::container_runtime::RuntimeKind::Containerd,
            )),
            Journal::open(dir).unwrap(),
            Arc::new(Metrics::new()),
            fs,
            processes,
        )
    }

    #[tokio::test]
    async fn inject_then_crash_then_the_next_start_recovers_from_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let fs = v2_host();
        let processes = Arc::new(FakeProcesses::default());
        let stress = stress_on(dir.path(), Arc::clone(&fs), Arc::clone(&processes));
        let request = StressRequest {
            container_id: "containerd://c0ffee",
            scope: StressScope::Pod,
            cpu: "--cpu 1 --cpu-load 10",
            memory: "",
            oom_score_adj: 500,
            duration: None,
        };
        let (cpu, _) = validate(&request).unwrap();
        let id = new_instance_id("cpu");
        let prepared = stress.prepare_cpu(&request, 42, &id, cpu.unwrap()).unwrap();
        // The target's identity is only journaled; this test process stands in for it.
        let target = ProcessIdentity::of(std::process::id()).unwrap();
        let started = stress
            .start(&request, target, id.clone(), prepared)
            .await
            .unwrap();

        let leaf = PathBuf::from(format!("/sys/fs/cgroup{POD}/faultline-{id}"));
        let stressor = Arc::clone(&processes.spawned.lock().unwrap()[0]);
        assert_eq!(started.pid, stressor.identity.pid);
        assert!(stressor.released.load(std::sync::atomic::Ordering::SeqCst));
        assert!(fs.is_dir(&leaf), "the leaf was not made");
        let writes = fs.writes.lock().unwrap().clone();
        // Placed (in its leaf) and given its oom_score_adj before it was released.
        assert!(
            writes.contains(&(leaf.join("cgroup.procs"), started.pid.to_string())),
            "{writes:?}"
        );
        assert!(
            writes.contains(&(
                PathBuf::from(format!("/proc/{}/oom_score_adj", started.pid)),
                "500".into()
            )),
            "{writes:?}"
        );
        let journal = Journal::open(dir.path()).unwrap();
        let record: Record<StressRecord> = journal.get_as(&id).unwrap().expect("journaled");
        assert_eq!(record.fault.process, Some(stressor.identity));
        assert_eq!(record.fault.created_cgroups, std::slice::from_ref(&leaf));

        // The agent dies (its stressor with it, as an orphan here); the next start has only the
        // journal.
        drop(stress);
        let orphans = Arc::new(FakeProcesses::default());
        let restarted = stress_on(dir.path(), Arc::clone(&fs), Arc::clone(&orphans));
        let registry = Registry::new(journal.clone()).register(restarted as Arc<dyn FaultKind>);
        let outcomes = registry.recover_left_over().await;
        assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
        assert_eq!(*orphans.killed.lock().unwrap(), [stressor.identity]);
        assert!(!fs.is_dir(&leaf), "the leaf made for it stays");
        assert!(journal.list().unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_stressor_that_cannot_start_fails_the_request_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fs = v2_host();
        let processes = Arc::new(FakeProcesses {
            cannot_start: true,
            ..Default::default()
        });
        let stress = stress_on(dir.path(), Arc::clone(&fs), Arc::clone(&processes));
        let request = StressRequest {
            container_id: "containerd://c0ffee",
            scope: StressScope::Pod,
            cpu: "--cpu 1 --cpu-load 10",
            memory: "",
            oom_score_adj: 0,
            duration: None,
        };
        let (cpu, _) = validate(&request).unwrap();
        let id = new_instance_id("cpu");
        let prepared = stress.prepare_cpu(&request, 42, &id, cpu.unwrap()).unwrap();
        let target = ProcessIdentity::of(std::process::id()).unwrap();
        let err = stress
            .start(&request, target, id.clone(), prepared)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
        assert!(err.to_string().contains("could not start"), "{err}");
        let stressor = Arc::clone(&processes.spawned.lock().unwrap()[0]);
        assert!(stressor.exited().is_some(), "the stressor was not killed");
        let leaf = PathBuf::from(format!("/sys/fs/cgroup{POD}/faultline-{id}"));
        assert!(!fs.is_dir(&leaf), "the leaf made for it stays");
        assert!(
            Journal::open(dir.path())
                .unwrap()
                .list()
                .unwrap()
                .0
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_crash_is_recovered_from_the_record_alone() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path())
            .unwrap()
            .write(&injected("stress-memory-1"))
            .unwrap();
        let fs = Arc::new(FakeFs::default());
        fs.dir("/sys/fs/cgroup/pod/faultline-x")
            .dir("/sys/fs/cgroup/pod/faultline-x/leaf");
        let orphans = Arc::new(FakeProcesses::default());
        let (registry, journal) = restarted(dir.path(), Arc::clone(&fs), Arc::clone(&orphans));
        let outcomes = registry.recover_left_over().await;
        assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
        assert_eq!(*orphans.killed.lock().unwrap(), [STRESSOR]);
        // Innermost first; only what was made for it.
        assert_eq!(
            *fs.removed.lock().unwrap(),
            [
                PathBuf::from("/sys/fs/cgroup/pod/faultline-x/leaf"),
                PathBuf::from("/sys/fs/cgroup/pod/faultline-x"),
            ]
        );
        assert!(journal.list().unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_stressor_that_will_not_die_keeps_its_cgroups_and_record() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path())
            .unwrap()
            .write(&injected("stress-memory-2"))
            .unwrap();
        let fs = Arc::new(FakeFs::default());
        let orphans = Arc::new(FakeProcesses {
            immortal: true,
            ..Default::default()
        });
        let (registry, journal) = restarted(dir.path(), Arc::clone(&fs), orphans);
        let outcomes = registry.recover_all().await;
        assert!(outcomes[0].1.is_err(), "{outcomes:?}");
        assert!(fs.removed.lock().unwrap().is_empty());
        assert_eq!(journal.list().unwrap().0.len(), 1);
    }

    #[tokio::test]
    async fn a_record_journaled_before_the_spawn_only_has_cgroups_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = injected("stress-cpu-3");
        record.fault.process = None;
        Journal::open(dir.path()).unwrap().write(&record).unwrap();
        let fs = Arc::new(FakeFs::default());
        let orphans = Arc::new(FakeProcesses::default());
        let (registry, journal) = restarted(dir.path(), Arc::clone(&fs), Arc::clone(&orphans));
        registry.recover("stress-cpu-3").await.unwrap();
        assert!(orphans.killed.lock().unwrap().is_empty());
        assert_eq!(fs.removed.lock().unwrap().len(), 2);
        assert!(journal.list().unwrap().0.is_empty());
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10), "10 B");
    }

    #[test]
    fn ids_are_journal_safe_and_distinct() {
        let (a, b) = (new_instance_id("cpu"), new_instance_id("cpu"));
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
