//! TimeChaos: every process of a container reads its clocks shifted (pb.SetTimeOffset /
//! RecoverTimeOffset, faultline.agent.v1 StartTimeExperiment, `faultline attack time`).
//!
//! One pipeline, self-contained: request → [`spec::TimeSpec`] (parsed once) → plan (the
//! container's scope and this kernel's original vDSO bytes) → journal the [`record::TimeRecord`]
//! → apply ([`engine::shift_new`], one process stopped at a time) → journal again → a watcher
//! shifts processes that appear in the scope (or exec) while it runs. Recovery is
//! [`engine::recover`] of the journaled record alone ([`FaultKind::recover`]): explicit
//! recovery, the deadline, shutdown and start-up all reach it through the registry
//! (`crate::faults`). The host (cgroupfs, /proc, ptrace) is behind [`host::TimeHost`].

pub mod engine;
pub mod host;
pub mod record;
pub mod spec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::now_ms;
use crate::container_runtime::Resolver;
use crate::error::AgentError;
use crate::fault_kinds::{self, ExperimentView, FaultKind};
use crate::journal::{FaultRecord, Journal, ProcessIdentity, Record, StoredRecord};
use crate::metrics::Metrics;
use host::TimeHost;
use record::TimeRecord;
use spec::TimeSpec;

#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    Host(String),
    #[error(
        "process {pid} is in the host's pid namespace and no container cgroup was found: refusing to shift the node"
    )]
    HostNamespace { pid: u32 },
    #[error("container {container} is already shifted by experiment {id}; recover it first")]
    AlreadyShifted { container: String, id: String },
    #[error("{0}")]
    NotRecovered(String),
}

impl TimeError {
    pub fn code(&self) -> tonic::Code {
        match self {
            TimeError::InvalidArgument { .. } => tonic::Code::InvalidArgument,
            TimeError::HostNamespace { .. } | TimeError::AlreadyShifted { .. } => {
                tonic::Code::FailedPrecondition
            }
            TimeError::Host(_) | TimeError::NotRecovered(_) => tonic::Code::Internal,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            TimeError::InvalidArgument { .. } => "invalid_argument",
            TimeError::HostNamespace { .. } | TimeError::AlreadyShifted { .. } => "refused",
            TimeError::Host(_) => "host",
            TimeError::NotRecovered(_) => "not_recovered",
        }
    }
}

/// The metrics and journal kind.
const KIND: &str = TimeRecord::KIND;

/// What an apply did (or, dry, would do).
#[derive(Debug, Clone)]
pub struct TimeApplied {
    pub id: String,
    pub target_pid: u32,
    pub plan: String,
}

/// One running experiment.
#[derive(Debug)]
struct Running {
    record: Mutex<Record<TimeRecord>>,
    stop: AtomicBool,
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Running {
    /// Stops the watcher and waits for it: nothing shifts or journals for it afterwards.
    fn stop_watching(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.watcher.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }
}

#[derive(Debug)]
pub struct TimeChaos {
    resolver: Resolver,
    journal: Journal,
    metrics: Arc<Metrics>,
    host: Arc<dyn TimeHost>,
    /// How often the watcher looks for new processes.
    watch_every: Duration,
    running: Mutex<HashMap<String, Arc<Running>>>,
}

fn poisoned() -> AgentError {
    AgentError::Internal("time chaos state lock poisoned".into())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Internal(format!("time chaos worker: {e}")))?
}

/// The target's pid namespace: the fault lives in its processes, so once no process of the node
/// is in it (and the target is gone) the registry's sweep clears the record.
fn pid_namespace_inode(pid: u32) -> Result<u64, AgentError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .map(|m| m.ino())
        .map_err(|e| TimeError::Host(format!("pid namespace of process {pid}: {e}")).into())
}

fn describe(t: &TimeRecord) -> String {
    format!(
        "{} {} on {}",
        t.shift.offset,
        t.shift.mask.names().join(","),
        match &t.scope {
            record::Scope::Cgroup(dir) => dir.display().to_string(),
            record::Scope::PidNamespace(ns) => format!("pid namespace {ns}"),
        }
    )
}

impl TimeChaos {
    pub fn new(
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
        host: Arc<dyn TimeHost>,
        watch_every: Duration,
    ) -> Arc<Self> {
        Arc::new(TimeChaos {
            resolver,
            journal,
            metrics,
            host,
            watch_every,
            running: Mutex::default(),
        })
    }

    fn running(&self, id: &str) -> Result<Option<Arc<Running>>, AgentError> {
        Ok(self
            .running
            .lock()
            .map_err(|_| poisoned())?
            .get(id)
            .cloned())
    }

    /// Every running experiment.
    fn views(&self) -> Vec<ExperimentView> {
        let running: Vec<Arc<Running>> = match self.running.lock() {
            Ok(r) => r.values().cloned().collect(),
            Err(_) => {
                tracing::error!("time chaos state lock poisoned: time experiments not listed");
                return Vec::new();
            }
        };
        running
            .iter()
            .filter_map(|r| {
                let record = r.record.lock().ok()?;
                let t = &record.fault;
                Some(ExperimentView {
                    record: record.with_fault(()),
                    kind: KIND,
                    rules: describe(t),
                    volume: String::new(),
                    status: format!(
                        "{} processes shifted, {} skipped; longest stop {} µs",
                        t.processes.len(),
                        t.skipped.len(),
                        t.longest_stop_us
                    ),
                    handover: None,
                })
            })
            .collect()
    }

    /// Applies a spec: a new experiment, or an update of the offset of a running one.
    pub async fn apply(self: &Arc<Self>, spec: TimeSpec) -> Result<TimeApplied, AgentError> {
        let result = self.apply_inner(spec).await;
        if let Err(err) = &result {
            self.metrics.failure(KIND, err.reason());
        }
        result
    }

    async fn apply_inner(self: &Arc<Self>, spec: TimeSpec) -> Result<TimeApplied, AgentError> {
        if let Some(running) = self.running(&spec.id)? {
            return self.update(running, spec).await;
        }
        let busy = self
            .views()
            .into_iter()
            .find(|v| v.record.container_id == spec.container_id);
        if let Some(view) = busy {
            return Err(AgentError::Time(TimeError::AlreadyShifted {
                container: spec.container_id,
                id: view.record.id,
            }));
        }
        let pid = self.resolver.container_pid(&spec.container_id).await?;
        let duration = spec.duration.filter(|_| !spec.dry_run);
        let this = Arc::clone(self);
        let applied = blocking(move || this.start(spec, pid)).await?;
        if let Some(duration) = duration {
            let kind: Arc<dyn FaultKind> = Arc::clone(self) as Arc<dyn FaultKind>;
            fault_kinds::recover_at_deadline(
                kind,
                self.journal.clone(),
                applied.id.clone(),
                duration,
            );
        }
        Ok(applied)
    }

    fn start(self: &Arc<Self>, spec: TimeSpec, pid: u32) -> Result<TimeApplied, AgentError> {
        let host = &*self.host;
        let scope = host.scope_of(pid)?;
        let originals = host.originals()?;
        let target = ProcessIdentity::of(pid).map_err(|e| {
            AgentError::Time(TimeError::Host(format!("container process {pid}: {e}")))
        })?;
        if spec.dry_run {
            let processes = host.processes(&scope)?;
            return Ok(TimeApplied {
                id: spec.id,
                target_pid: pid,
                plan: format!(
                    "would shift {} by {} ({}) in {} processes of {scope:?}, one stopped at a time",
                    spec.container_id,
                    spec.shift.offset,
                    spec.shift.mask.names().join(","),
                    processes.len()
                ),
            });
        }
        let started_at_ms = now_ms();
        let mut record = Record {
            id: spec.id.clone(),
            started_at_ms,
            deadline_ms: spec.duration.map(|d| started_at_ms + d.as_millis() as u64),
            container_id: spec.container_id.clone(),
            target,
            namespace_inode: pid_namespace_inode(pid)?,
            fault: TimeRecord {
                pod_container_name: spec.pod_container_name.clone(),
                shift: spec.shift,
                scope,
                originals,
                processes: vec![],
                skipped: vec![],
                longest_stop_us: 0,
            },
        };
        // Journaled before any process is touched.
        self.journal.write(&record)?;
        let pass = match engine::shift_new(host, &mut record.fault) {
            Ok(pass) => pass,
            Err(e) => {
                // Nothing may stay half-done: put back whatever was shifted.
                self.undo_start(&record);
                return Err(e.into());
            }
        };
        if let Err(err) = self.journal.write(&record) {
            // A shift the journal does not fully know is undone at once.
            self.undo_start(&record);
            return Err(err.into());
        }
        let running = Arc::new(Running {
            record: Mutex::new(record),
            stop: AtomicBool::new(false),
            watcher: Mutex::new(None),
        });
        self.running
            .lock()
            .map_err(|_| poisoned())?
            .insert(spec.id.clone(), Arc::clone(&running));
        self.watch(&spec.id, &running);
        self.metrics.injected(KIND);
        tracing::info!(id = %spec.id, container = %spec.container_id, summary = %pass.summary(), "time shifted");
        Ok(TimeApplied {
            id: spec.id,
            target_pid: pid,
            plan: pass.summary(),
        })
    }

    /// Undoes a start that failed part way; the record stays if a process could not be put back.
    fn undo_start(&self, record: &Record<TimeRecord>) {
        let recovered = engine::recover(&*self.host, &record.fault);
        if recovered.problems.is_empty() {
            let _ = self.journal.remove(&record.id);
        } else {
            tracing::error!(id = %record.id, problems = ?recovered.problems, "time: a failed start could not be fully undone; the journal keeps the record");
        }
    }

    async fn update(
        self: &Arc<Self>,
        running: Arc<Running>,
        spec: TimeSpec,
    ) -> Result<TimeApplied, AgentError> {
        let this = Arc::clone(self);
        blocking(move || {
            let mut record = running.record.lock().map_err(|_| poisoned())?;
            if spec.dry_run {
                return Ok(TimeApplied {
                    id: spec.id,
                    target_pid: record.target.pid,
                    plan: format!("would update the offset to {}", spec.shift.offset),
                });
            }
            let pass = engine::update(&*this.host, &mut record.fault, spec.shift)?;
            this.journal.write(&*record)?;
            Ok(TimeApplied {
                id: spec.id,
                target_pid: record.target.pid,
                plan: pass.summary(),
            })
        })
        .await
    }

    /// Starts the thread that shifts processes appearing in the scope.
    fn watch(self: &Arc<Self>, id: &str, running: &Arc<Running>) {
        let this = Arc::clone(self);
        let r = Arc::clone(running);
        let name = format!("time-watch-{}", &id[..id.len().min(20)]);
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            let tick = Duration::from_millis(10);
            let mut waited = Duration::ZERO;
            while !r.stop.load(Ordering::Acquire) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < this.watch_every {
                    continue;
                }
                waited = Duration::ZERO;
                let Ok(mut record) = r.record.lock() else {
                    return;
                };
                if r.stop.load(Ordering::Acquire) {
                    return;
                }
                match engine::shift_new(&*this.host, &mut record.fault) {
                    Ok(pass) if pass.changed() => {
                        tracing::info!(id = %record.id, summary = %pass.summary(), "time: new processes");
                        if let Err(err) = this.journal.write(&*record) {
                            tracing::error!(id = %record.id, %err, "time: journaling new processes");
                        }
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(id = %record.id, %err, "time: watching the container"),
                }
            }
        });
        match handle {
            Ok(handle) => {
                if let Ok(mut w) = running.watcher.lock() {
                    *w = Some(handle);
                }
            }
            Err(err) => {
                tracing::error!(%id, %err, "time: no watcher thread; new processes will not be shifted")
            }
        }
    }

    /// Recovers one time experiment by id, as its journal record says; an id the journal does
    /// not hold is UnknownExperiment.
    pub async fn recover(&self, id: &str) -> Result<(), AgentError> {
        let record = self
            .journal
            .get_as::<TimeRecord>(id)
            .map_err(|err| match err {
                crate::journal::JournalError::BadId(_) => {
                    AgentError::UnknownExperiment(id.to_owned())
                }
                other => other.into(),
            })?
            .ok_or_else(|| AgentError::UnknownExperiment(id.to_owned()))?;
        self.recover_record(&record).await
    }

    /// Undoes a time experiment as its record says: stops its watcher if this run has one, puts
    /// every process of the scope back from the journaled original bytes, and removes the
    /// record once every process is back.
    async fn recover_record(&self, record: &Record<TimeRecord>) -> Result<(), AgentError> {
        let live = self
            .running
            .lock()
            .map_err(|_| poisoned())?
            .remove(&record.id);
        let host = Arc::clone(&self.host);
        let journal = self.journal.clone();
        let given = record.clone();
        let recovered = blocking(move || {
            let record = match live {
                Some(running) => {
                    running.stop_watching();
                    // The watcher journals what it shifts: the journal now knows as much as
                    // memory did.
                    journal.get_as::<TimeRecord>(&given.id)?.unwrap_or(given)
                }
                None => given,
            };
            Ok(engine::recover(&*host, &record.fault))
        })
        .await?;
        tracing::info!(
            id = %record.id,
            restored = recovered.restored.len(),
            page_left = ?recovered.page_left,
            "time recovered"
        );
        if !recovered.problems.is_empty() {
            self.metrics.failure(KIND, "not_recovered");
            return Err(TimeError::NotRecovered(format!(
                "{}: {}; the journal keeps the record",
                record.id,
                recovered.problems.join("; ")
            ))
            .into());
        }
        self.journal.remove(&record.id)?;
        self.metrics.recovered(KIND);
        Ok(())
    }
}

#[tonic::async_trait]
impl FaultKind for TimeChaos {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn noun(&self) -> &'static str {
        "a time shift"
    }

    async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
        self.recover_record(&record.decode()?).await
    }

    async fn list(&self) -> Vec<ExperimentView> {
        self.views()
    }
}

#[cfg(test)]
mod tests;
