//! TimeChaos: every process of a container reads its clocks shifted (pb.SetTimeOffset /
//! RecoverTimeOffset, faultline.agent.v1 StartTimeExperiment, `faultline attack time`).
//!
//! One pipeline, self-contained: request → [`spec::TimeSpec`] (parsed once) → plan (the
//! container's scope and this kernel's original vDSO bytes) → journal the [`record::TimeRecord`]
//! → apply ([`engine::shift_new`], one process stopped at a time) → journal again → a watcher
//! shifts processes that appear in the scope (or exec) while it runs. Recovery is
//! [`engine::recover`] of the record alone: explicit recovery, the deadline, shutdown and
//! start-up all use it. The host (cgroupfs, /proc, ptrace) is behind [`host::TimeHost`].

pub mod engine;
pub mod host;
pub mod record;
pub mod spec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::container_runtime::Resolver;
use crate::error::AgentError;
use crate::journal::{Fault, Journal, ProcessIdentity, Record};
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
    record: Mutex<Record>,
    stop: AtomicBool,
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
pub struct TimeChaos {
    resolver: Resolver,
    journal: Journal,
    host: Arc<dyn TimeHost>,
    /// How often the watcher looks for new processes.
    watch_every: Duration,
    running: Mutex<HashMap<String, Arc<Running>>>,
}

fn time_record(record: &Record) -> Option<&TimeRecord> {
    match &record.fault {
        Fault::Time(t) => Some(t),
        _ => None,
    }
}

fn time_record_mut(record: &mut Record) -> Option<&mut TimeRecord> {
    match &mut record.fault {
        Fault::Time(t) => Some(t),
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn internal(what: &str) -> AgentError {
    AgentError::Time(TimeError::Host(format!("{what}: internal lock poisoned")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Time(TimeError::Host(format!("worker: {e}"))))?
}

impl TimeChaos {
    pub fn new(
        resolver: Resolver,
        journal: Journal,
        host: Arc<dyn TimeHost>,
        watch_every: Duration,
    ) -> Arc<Self> {
        Arc::new(TimeChaos {
            resolver,
            journal,
            host,
            watch_every,
            running: Mutex::default(),
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every running experiment's record and a status line.
    pub fn list(&self) -> Vec<(Record, String)> {
        let running: Vec<Arc<Running>> = self
            .running
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        running
            .iter()
            .filter_map(|r| {
                let record = r.record.lock().ok()?.clone();
                let t = time_record(&record)?;
                let status = format!(
                    "{} {} on {}: {} processes shifted, {} skipped; longest stop {} µs",
                    t.shift.offset,
                    t.shift.mask.names().join(","),
                    match &t.scope {
                        record::Scope::Cgroup(dir) => dir.display().to_string(),
                        record::Scope::PidNamespace(ns) => format!("pid namespace {ns}"),
                    },
                    t.processes.len(),
                    t.skipped.len(),
                    t.longest_stop_us
                );
                Some((record, status))
            })
            .collect()
    }

    /// Applies a spec: a new experiment, or an update of the offset of a running one.
    pub async fn apply(self: &Arc<Self>, spec: TimeSpec) -> Result<TimeApplied, AgentError> {
        let existing = self
            .running
            .lock()
            .map_err(|_| internal("apply"))?
            .get(&spec.id)
            .cloned();
        if let Some(running) = existing {
            return self.update(running, spec).await;
        }
        let busy = self
            .list()
            .into_iter()
            .find(|(r, _)| r.container_id == spec.container_id);
        if let Some((r, _)) = busy {
            return Err(AgentError::Time(TimeError::AlreadyShifted {
                container: spec.container_id,
                id: r.id,
            }));
        }
        let pid = self.resolver.container_pid(&spec.container_id).await?;
        let this = Arc::clone(self);
        blocking(move || this.start(spec, pid)).await
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
            namespace_inode: 0,
            fault: Fault::Time(Box::new(TimeRecord {
                pod_container_name: spec.pod_container_name.clone(),
                shift: spec.shift,
                scope,
                originals,
                processes: vec![],
                skipped: vec![],
                longest_stop_us: 0,
            })),
        };
        // Journaled before any process is touched.
        self.journal.write(&record)?;
        let pass = match time_record_mut(&mut record) {
            Some(t) => engine::shift_new(host, t),
            None => Err(TimeError::Host("not a time record".into())),
        };
        let pass = match pass {
            Ok(pass) => pass,
            Err(e) => {
                // Nothing may stay half-done: put back whatever was shifted.
                if let Some(t) = time_record(&record)
                    && engine::recover(host, t).problems.is_empty()
                {
                    let _ = self.journal.remove(&record.id);
                }
                return Err(e.into());
            }
        };
        self.journal.write(&record)?;
        let running = Arc::new(Running {
            record: Mutex::new(record),
            stop: AtomicBool::new(false),
            watcher: Mutex::new(None),
        });
        self.running
            .lock()
            .map_err(|_| internal("start"))?
            .insert(spec.id.clone(), Arc::clone(&running));
        self.watch(&spec.id, &running);
        if let Some(duration) = spec.duration {
            let this = Arc::clone(self);
            let id = spec.id.clone();
            tokio::runtime::Handle::current().spawn(async move {
                tokio::time::sleep(duration).await;
                if let Err(err) = this.recover(&id).await
                    && !matches!(err, AgentError::UnknownExperiment(_))
                {
                    tracing::error!(%id, %err, "time experiment: recovery at its deadline failed");
                }
            });
        }
        tracing::info!(id = %spec.id, container = %spec.container_id, summary = %pass.summary(), "time shifted");
        Ok(TimeApplied {
            id: spec.id,
            target_pid: pid,
            plan: pass.summary(),
        })
    }

    async fn update(
        self: &Arc<Self>,
        running: Arc<Running>,
        spec: TimeSpec,
    ) -> Result<TimeApplied, AgentError> {
        let this = Arc::clone(self);
        blocking(move || {
            let mut record = running.record.lock().map_err(|_| internal("update"))?;
            if spec.dry_run {
                return Ok(TimeApplied {
                    id: spec.id,
                    target_pid: record.target.pid,
                    plan: format!("would update the offset to {}", spec.shift.offset),
                });
            }
            let pass = match time_record_mut(&mut record) {
                Some(t) => engine::update(&*this.host, t, spec.shift)?,
                None => return Err(TimeError::Host("not a time record".into()).into()),
            };
            this.journal.write(&record)?;
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
                let Some(t) = time_record_mut(&mut record) else {
                    return;
                };
                match engine::shift_new(&*this.host, t) {
                    Ok(pass) if pass.changed() => {
                        tracing::info!(id = %record.id, summary = %pass.summary(), "time: new processes");
                        if let Err(err) = this.journal.write(&record) {
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

    /// Recovers one experiment; an id this agent does not know is UnknownExperiment.
    pub async fn recover(self: &Arc<Self>, id: &str) -> Result<(), AgentError> {
        let running = self
            .running
            .lock()
            .map_err(|_| internal("recover"))?
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::UnknownExperiment(id.to_owned()))?;
        let this = Arc::clone(self);
        let id = id.to_owned();
        blocking(move || {
            running.stop.store(true, Ordering::Release);
            if let Some(handle) = running.watcher.lock().ok().and_then(|mut w| w.take()) {
                let _ = handle.join();
            }
            let record = running
                .record
                .lock()
                .map_err(|_| internal("recover"))?
                .clone();
            this.recover_record(&record)?;
            if let Ok(mut all) = this.running.lock() {
                all.remove(&id);
            }
            Ok(())
        })
        .await
    }

    /// Recovery from a record alone; the record leaves the journal once every process is back.
    fn recover_record(&self, record: &Record) -> Result<(), AgentError> {
        let Some(t) = time_record(record) else {
            return Ok(());
        };
        let recovered = engine::recover(&*self.host, t);
        tracing::info!(
            id = %record.id,
            restored = recovered.restored.len(),
            page_left = ?recovered.page_left,
            "time recovered"
        );
        if !recovered.problems.is_empty() {
            return Err(TimeError::NotRecovered(format!(
                "{}: {}; the journal keeps the record",
                record.id,
                recovered.problems.join("; ")
            ))
            .into());
        }
        self.journal.remove(&record.id)?;
        Ok(())
    }

    /// At start-up: every time record in the journal is recovered (a shift never outlives the
    /// agent that can undo it).
    pub async fn recover_journal(self: &Arc<Self>) -> Vec<(String, Result<(), AgentError>)> {
        let this = Arc::clone(self);
        blocking(move || {
            let (records, _) = this.journal.list()?;
            Ok(records
                .into_iter()
                .filter(|r| time_record(r).is_some())
                .map(|r| (r.id.clone(), this.recover_record(&r)))
                .collect())
        })
        .await
        .unwrap_or_else(|e| vec![("time".into(), Err(e))])
    }
}
