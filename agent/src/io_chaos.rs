//! IO chaos: one fault mount (an injector process) per container and volume. A new rule set for
//! the same container and volume is applied live, without remounting; an empty rule set
//! recovers. Every experiment is journaled before it is applied and forgotten only once it is
//! recovered; an injector that dies unexpectedly is cleaned up after at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::container_fs;
use crate::container_runtime::Resolver;
use crate::error::AgentError;
use crate::injector_process::{InjectorProcess, MountRequest, cleanup_mount};
use crate::io_handover::{self, HandedOver};
use crate::journal::{Fault, Journal, ProcessIdentity, Record};
use crate::metrics::Metrics;

/// How long an injector may take to mount.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long an injector may take to unmount and exit when asked to recover.
const RECOVER_WITHIN: Duration = Duration::from_secs(5);

/// Identifies one fault mount.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MountKey {
    container: String,
    volume: String,
}

/// A running IO experiment.
#[derive(Debug)]
struct IoExperiment {
    key: MountKey,
    record: Mutex<Record>,
    injector: InjectorProcess,
    /// What was handed over to the fault mount at the start (`None`: handover was off).
    handover: Option<HandedOver>,
    /// Serializes journal writes of this experiment; `true` once it is recovered, after which
    /// nothing may write its record again.
    journal_state: tokio::sync::Mutex<bool>,
}

/// The public view of one experiment.
#[derive(Clone, Debug)]
pub struct ExperimentView {
    pub record: Record,
    pub injector_status: String,
    /// What was handed over at the start (`None`: handover was off).
    pub handover: Option<handover::Report>,
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
    },
    Updated {
        id: String,
        target_pid: u32,
        injector_pid: u32,
        started_at_ms: u64,
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
}

#[derive(Debug)]
pub struct IoChaos {
    config: IoChaosConfig,
    resolver: Resolver,
    journal: Journal,
    metrics: Arc<Metrics>,
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
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key);
        }
    }
}

/// An injector's warnings after an update: open files the rules in force do not reach.
fn warn_unreachable(id: &str, warnings: &[String]) {
    for warning in warnings {
        tracing::warn!(%id, "{warning}");
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Parses and validates IOChaos actions; `None` when they ask for no fault at all.
pub fn validate_actions(
    actions: &str,
    volume: &str,
) -> Result<Option<serde_json::Value>, AgentError> {
    let trimmed = actions.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(None);
    }
    let rules = io_rules::RuleSet::parse(trimmed, Path::new(volume))
        .map_err(|err| AgentError::InvalidActions(err.to_string()))?;
    if rules.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(trimmed)
        .map(Some)
        .map_err(|err| AgentError::InvalidActions(err.to_string()))
}

impl IoChaos {
    pub fn new(
        config: IoChaosConfig,
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            resolver,
            journal,
            metrics,
            active: Mutex::default(),
            in_progress: Mutex::default(),
        })
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

    fn get(&self, key: &MountKey) -> Option<Arc<IoExperiment>> {
        self.active.lock().ok()?.get(key).cloned()
    }

    /// ApplyIOChaos: start, update or (with no actions) recover the fault mount of a container's
    /// volume. `duration` makes the experiment recover by itself. `handover`: when starting,
    /// move what the container's processes already hold under the volume onto the fault mount
    /// (and back at recovery).
    pub async fn apply(
        self: &Arc<Self>,
        container_id: &str,
        volume: &str,
        actions: &str,
        duration: Option<Duration>,
        handover: bool,
    ) -> Result<Applied, AgentError> {
        let container = self.resolver.parse(container_id)?;
        container_fs::validate_volume_path(volume)?;
        let actions = validate_actions(actions, volume)?;
        let key = MountKey {
            container: container.to_string(),
            volume: volume.to_owned(),
        };
        let _busy = self.busy(&key)?;

        if let Some(existing) = self.get(&key) {
            return match actions {
                None => {
                    let id = existing.record.lock().map_err(|_| poisoned())?.id.clone();
                    self.recover_experiment(&existing).await?;
                    Ok(Applied::Recovered { id })
                }
                Some(actions) => self.update(&existing, &actions, duration).await,
            };
        }
        let Some(actions) = actions else {
            return Ok(Applied::NothingToRecover);
        };
        self.start(key, &actions, duration, handover).await
    }

    async fn start(
        self: &Arc<Self>,
        key: MountKey,
        actions: &serde_json::Value,
        duration: Option<Duration>,
        handover: bool,
    ) -> Result<Applied, AgentError> {
        let target_pid = self.resolver.container_pid(&key.container).await?;
        // Fails with a clear error (missing, not a directory) before anything is spawned.
        drop(container_fs::open_volume(target_pid, &key.volume)?);
        let target = ProcessIdentity::of(target_pid).map_err(|_| {
            AgentError::Runtime(crate::container_runtime::RuntimeError::NotRunning {
                id: key.container.clone(),
                runtime: "host".into(),
            })
        })?;
        let started_at_ms = now_ms();
        let actions_text = actions.to_string();
        let mut record = Record {
            id: new_experiment_id(),
            started_at_ms,
            deadline_ms: duration.map(|d| started_at_ms + d.as_millis() as u64),
            container_id: key.container.clone(),
            target,
            namespace_inode: namespace_inode(target_pid, "mnt").unwrap_or_default(),
            fault: Fault::Io {
                volume: key.volume.clone(),
                actions: actions_text.clone(),
                injector: None,
                fault_mount: None,
            },
        };
        self.journal.write(&record)?;

        // While handing over, the rules spare the handover's own calls; the real ones follow.
        let mount_actions = if handover {
            io_handover::rules_while_handing_over(actions).to_string()
        } else {
            actions_text.clone()
        };
        let injector = match InjectorProcess::start(
            MountRequest {
                binary: &self.config.injector_binary,
                target_pid,
                volume: &key.volume,
                actions: &mount_actions,
            },
            READY_WITHIN,
        )
        .await
        {
            Ok(injector) => injector,
            Err(err) => {
                // Leave nothing behind: a mount the injector may have made, and the record.
                let _ = cleanup_mount(&self.config.injector_binary, target_pid, &key.volume).await;
                let _ = self.journal.remove(&record.id);
                self.metrics.failure("io", "injector");
                return Err(err.into());
            }
        };
        let injector_pid = injector.identity.pid;
        #[allow(irrefutable_let_patterns)] // more fault kinds share the journal
        if let Fault::Io { injector: slot, .. } = &mut record.fault {
            *slot = Some(injector.identity);
        }
        if let Err(err) = self.journal.write(&record) {
            let _ = injector.recover(RECOVER_WITHIN).await;
            let _ = self.journal.remove(&record.id);
            return Err(err.into());
        }
        let id = record.id.clone();
        let handover = if handover {
            let done = io_handover::onto_fault_mount(target_pid, &key.volume).await;
            tracing::info!(%id, report = %done.report.summary(), "handed over to the fault mount");
            if let (Some(fault), Fault::Io { fault_mount, .. }) = (done.fault, &mut record.fault) {
                // Recovery after a crash must move back what was moved here.
                *fault_mount = Some(fault);
                if let Err(err) = self.journal.write(&record) {
                    tracing::error!(%id, %err, "could not journal the fault mount of the handover");
                }
            }
            match injector.update(&actions_text).await {
                Ok(warnings) => warn_unreachable(&id, &warnings),
                Err(err) => {
                    self.metrics.failure("io", "injector");
                    hand_back_and_stop(&injector, target_pid, &key.volume, done.fault, &id).await;
                    let _ = self.journal.remove(&id);
                    return Err(err.into());
                }
            }
            Some(done)
        } else {
            None
        };
        let experiment = Arc::new(IoExperiment {
            key: key.clone(),
            record: Mutex::new(record),
            injector,
            handover,
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
        tracing::info!(%id, container = %experiment.key.container, volume = %experiment.key.volume, target_pid, injector_pid, "IO fault injected");
        Ok(Applied::Started {
            id,
            target_pid,
            injector_pid,
            started_at_ms,
            handover: experiment.handover.as_ref().map(|h| h.report.summary()),
        })
    }

    async fn update(
        self: &Arc<Self>,
        experiment: &Arc<IoExperiment>,
        actions: &serde_json::Value,
        duration: Option<Duration>,
    ) -> Result<Applied, AgentError> {
        let actions_text = actions.to_string();
        let mut record = experiment.record.lock().map_err(|_| poisoned())?.clone();
        #[allow(irrefutable_let_patterns)] // more fault kinds share the journal
        if let Fault::Io { actions: slot, .. } = &mut record.fault {
            *slot = actions_text.clone();
        }
        if let Some(duration) = duration {
            record.deadline_ms = Some(now_ms() + duration.as_millis() as u64);
        }
        // The record on disk already covers the mount, which is all recovery undoes; the new
        // rules are written after they are in force, off the caller's path.
        let warnings = experiment.injector.update(&actions_text).await?;
        warn_unreachable(&record.id, &warnings);
        let applied = Applied::Updated {
            id: record.id.clone(),
            target_pid: record.target.pid,
            injector_pid: experiment.injector.identity.pid,
            started_at_ms: record.started_at_ms,
        };
        if let Some(duration) = duration {
            self.recover_after(&record.id, duration);
        }
        *experiment.record.lock().map_err(|_| poisoned())? = record;
        self.journal_in_background(Arc::clone(experiment));
        Ok(applied)
    }

    /// Writes the experiment's current record, unless it has been recovered meanwhile.
    fn journal_in_background(&self, experiment: Arc<IoExperiment>) {
        let journal = self.journal.clone();
        tokio::spawn(async move {
            let recovered = experiment.journal_state.lock().await;
            if *recovered {
                return;
            }
            let Ok(record) = experiment.record.lock().map(|r| r.clone()) else {
                return;
            };
            if let Err(err) = journal.write(&record) {
                tracing::error!(id = %record.id, %err, "could not journal the updated rules");
            }
        });
    }

    /// Recovers one experiment by id.
    pub async fn recover(self: &Arc<Self>, id: &str) -> Result<(), AgentError> {
        let experiment = self
            .active
            .lock()
            .map_err(|_| poisoned())?
            .values()
            .find(|e| e.record.lock().is_ok_and(|r| r.id == id))
            .cloned()
            .ok_or_else(|| AgentError::UnknownExperiment(id.to_owned()))?;
        let _busy = self.busy(&experiment.key)?;
        self.recover_experiment(&experiment).await
    }

    /// Ids of every active experiment.
    pub fn ids(&self) -> Vec<String> {
        self.active
            .lock()
            .map(|m| {
                m.values()
                    .filter_map(|e| e.record.lock().ok().map(|r| r.id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn recover_experiment(&self, experiment: &Arc<IoExperiment>) -> Result<(), AgentError> {
        // Forget it first, so the injector watcher knows this exit is expected.
        let removed = self
            .active
            .lock()
            .map_err(|_| poisoned())?
            .remove(&experiment.key);
        if removed.is_none() {
            return Ok(()); // already recovered (e.g. the injector died and was cleaned up)
        }
        let record = experiment.record.lock().map_err(|_| poisoned())?.clone();
        let fault = experiment.handover.as_ref().and_then(|h| h.fault);
        let result = match fault {
            Some(fault) => {
                let (pid, volume) = (record.target.pid, experiment.key.volume.as_str());
                let back = async {
                    let report = io_handover::back_to_original(pid, volume, fault).await;
                    tracing::info!(id = %record.id, report = %report.summary(), "handed back to the original directory");
                };
                experiment.injector.recover_then(RECOVER_WITHIN, back).await
            }
            None => experiment.injector.recover(RECOVER_WITHIN).await,
        };
        if let Err(err) = &result {
            tracing::warn!(id = %record.id, %err, "the injector did not recover cleanly; unmounting from the agent");
            cleanup_mount(
                &self.config.injector_binary,
                record.target.pid,
                &experiment.key.volume,
            )
            .await?;
            if let Some(fault) = fault {
                hand_back(record.target.pid, &experiment.key.volume, fault, &record.id).await;
            }
        }
        let mut recovered = experiment.journal_state.lock().await;
        *recovered = true;
        self.journal.remove(&record.id)?;
        drop(recovered);
        self.metrics.recovered("io");
        tracing::info!(id = %record.id, "IO fault recovered");
        Ok(())
    }

    /// Cleans up at once after an injector that exits while its experiment is still active.
    fn watch_injector(self: &Arc<Self>, experiment: Arc<IoExperiment>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let status = experiment.injector.wait().await;
            let still_active = this
                .active
                .lock()
                .ok()
                .and_then(|mut m| {
                    let same = m
                        .get(&experiment.key)
                        .is_some_and(|e| Arc::ptr_eq(e, &experiment));
                    same.then(|| m.remove(&experiment.key))
                })
                .flatten()
                .is_some();
            if !still_active {
                return;
            }
            let record = match experiment.record.lock() {
                Ok(r) => r.clone(),
                Err(_) => return,
            };
            tracing::warn!(id = %record.id, %status, stderr = %experiment.injector.stderr_tail(), "the injector exited unexpectedly; removing its mount");
            this.metrics.failure("io", "injector_died");
            match cleanup_mount(
                &this.config.injector_binary,
                record.target.pid,
                &experiment.key.volume,
            )
            .await
            {
                Ok(()) => {
                    if let Some(fault) = experiment.handover.as_ref().and_then(|h| h.fault) {
                        hand_back(record.target.pid, &experiment.key.volume, fault, &record.id)
                            .await;
                    }
                    let mut recovered = experiment.journal_state.lock().await;
                    *recovered = true;
                    let _ = this.journal.remove(&record.id);
                }
                Err(err) => {
                    tracing::error!(id = %record.id, %err, "cleanup after the injector failed; the journal keeps the record")
                }
            }
        });
    }

    fn recover_after(self: &Arc<Self>, id: &str, duration: Duration) {
        let this = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            // The experiment may have been updated with a later deadline: honour the record.
            let deadline = this.active.lock().ok().and_then(|m| {
                m.values().find_map(|e| {
                    e.record
                        .lock()
                        .ok()
                        .filter(|r| r.id == id)
                        .map(|r| r.deadline_ms)
                })
            });
            match deadline {
                Some(Some(deadline)) if deadline <= now_ms() + 5 => {
                    if let Err(err) = this.recover(&id).await {
                        tracing::warn!(%id, %err, "recovery at the end of the duration failed");
                    }
                }
                _ => {}
            }
        });
    }

    /// Every active experiment with its injector's state.
    pub async fn list(&self) -> Vec<ExperimentView> {
        let experiments: Vec<_> = self
            .active
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let mut views = Vec::with_capacity(experiments.len());
        for experiment in experiments {
            let Ok(record) = experiment.record.lock().map(|r| r.clone()) else {
                continue;
            };
            let injector_status =
                match tokio::time::timeout(Duration::from_secs(1), experiment.injector.status())
                    .await
                {
                    Ok(Ok(status)) => loudly(
                        &crate::injector_process::warnings_of(&status),
                        format!(
                            "running (pid {}): {status}",
                            experiment.injector.identity.pid
                        ),
                    ),
                    Ok(Err(err)) => format!(
                        "unreachable (pid {}): {err}",
                        experiment.injector.identity.pid
                    ),
                    Err(_) => format!("not answering (pid {})", experiment.injector.identity.pid),
                };
            views.push(ExperimentView {
                record,
                injector_status,
                handover: experiment.handover.as_ref().map(|h| h.report.clone()),
            });
        }
        views.sort_by_key(|v| v.record.started_at_ms);
        views
    }

    /// After a restart: undoes every IO fault the journal holds (records of other kinds are left
    /// to their own modules) (a crashed agent's injectors
    /// died with it, leaving mounts behind). Returns what was done, per record.
    // Irrefutable while IO is the only kind of fault the journal holds.
    #[allow(irrefutable_let_patterns)]
    pub async fn recover_journal(&self) -> Vec<(String, Result<(), AgentError>)> {
        let (records, broken) = match self.journal.list() {
            Ok(listing) => listing,
            Err(err) => return vec![("journal".into(), Err(err.into()))],
        };
        for err in broken {
            tracing::error!(%err, "unreadable journal record left in place");
        }
        let mut outcomes = Vec::new();
        for record in records {
            let Fault::Io {
                volume,
                injector,
                fault_mount,
                ..
            } = &record.fault
            else {
                continue; // another kind's module recovers it
            };
            if let Some(injector) = injector.filter(ProcessIdentity::is_alive) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(injector.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let result = if record.target.is_alive() {
                let cleaned =
                    cleanup_mount(&self.config.injector_binary, record.target.pid, volume)
                        .await
                        .map_err(AgentError::from);
                // Files handed over to the dead mount answer ENOTCONN until moved back.
                if let (Ok(()), Some(fault)) = (&cleaned, fault_mount) {
                    hand_back(record.target.pid, volume, *fault, &record.id).await;
                }
                cleaned
            } else {
                Ok(()) // the container is gone, and its mount namespace with it
            };
            let result =
                result.and_then(|()| self.journal.remove(&record.id).map_err(AgentError::from));
            match &result {
                Ok(()) => {
                    self.metrics.recovered("io");
                    tracing::info!(id = %record.id, container = %record.container_id, %volume, "recovered an IO fault left by a previous run")
                }
                Err(err) => {
                    tracing::error!(id = %record.id, %err, "could not recover an IO fault left by a previous run")
                }
            }
            outcomes.push((record.id.clone(), result));
        }
        outcomes
    }
}

/// Undoes a start that failed after the handover: recovers the injector, moving back what was
/// handed over meanwhile.
async fn hand_back_and_stop(
    injector: &InjectorProcess,
    target_pid: u32,
    volume: &str,
    fault: Option<handover::FaultMount>,
    id: &str,
) {
    let back = async {
        if let Some(fault) = fault {
            hand_back(target_pid, volume, fault, id).await;
        }
    };
    let _ = injector.recover_then(RECOVER_WITHIN, back).await;
}

/// Moves what is on a detached (or dead) fault mount back onto the original directory, and logs
/// what it did.
async fn hand_back(target_pid: u32, volume: &str, fault: handover::FaultMount, id: &str) {
    let report = io_handover::back_to_original(target_pid, volume, fault).await;
    tracing::info!(%id, report = %report.summary(), "handed back to the original directory");
}

fn poisoned() -> AgentError {
    AgentError::InvalidArgument {
        field: "state",
        reason: "internal state lock poisoned".into(),
    }
}

fn new_experiment_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("io-{:x}-{:x}-{n}", now_ms(), std::process::id())
}

fn namespace_inode(pid: u32, kind: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injector_process::warnings_of;

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
