//! The fault kinds of the agent and the one place they meet: a kind (IO, network, stress, …)
//! implements [`FaultKind`] (its recovery as a function of its journal record, and its listing)
//! and is registered in a [`Registry`]; the registry alone reads the journal at start, walks it
//! at shutdown, recovers by id and lists. A kind never reads another kind's records.
//!
//! ```text
//! start-up ─┐                                   ┌─ explicit Recover / empty ApplyIOChaos …
//! shutdown ─┼─ Registry ── journal record ──► FaultKind::recover(record) ◄─┼─ end of a duration
//!           └─ (by the record's "kind")         └─ a helper that died
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::error::AgentError;
use crate::journal::{Journal, Record, StoredRecord};

/// One fault kind's lifecycle as the rest of the agent sees it.
#[tonic::async_trait]
pub trait FaultKind: Send + Sync + std::fmt::Debug {
    /// The journal kind it owns: its record type's `FaultRecord::KIND`.
    fn kind(&self) -> &'static str;

    /// What one record is called in the log ("an IO fault", "a stressor").
    fn noun(&self) -> &'static str;

    /// Undoes everything `record` says may be in force, then removes the record: the one
    /// recovery of the kind, used alike by an explicit recover, the end of a duration, a helper
    /// that died, shutdown and start-up. A helper the kind still holds in memory may be asked
    /// to stop gracefully, but what is undone comes from the record. Recovering what is already
    /// gone (the target exited, the record was removed meanwhile) is not an error.
    async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError>;

    /// The experiments of this kind in force, for listing.
    async fn list(&self) -> Vec<ExperimentView>;

    /// Recovers again the records of this kind whose recovery failed (kept in the journal,
    /// no longer in force in memory); a kind whose recoveries cannot half-fail has none.
    async fn retry_unrecovered(&self) -> Vec<(String, Result<(), AgentError>)> {
        Vec::new()
    }

    /// At start, takes over a record a previous run left in force whose helper outlived that
    /// run (it keeps the fault in force; the record stays). A kind whose helpers die with the
    /// agent adopts nothing: its records are recovered.
    async fn adopt(self: Arc<Self>, _record: &StoredRecord) -> Adoption {
        Adoption::NotAdoptable
    }
}

/// What became of a record left by a previous run that its kind was asked to take over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// In force, held by this run now.
    Adopted,
    /// The kind's helpers do not outlive the agent.
    NotAdoptable,
    /// Its helper is gone, not answering, or not the journaled process: recovered instead.
    Failed(String),
}

/// One experiment as listed, whatever its kind (converted to the API in one place, `grpc`).
#[derive(Clone, Debug)]
pub struct ExperimentView {
    /// The envelope of its journal record.
    pub record: Record<()>,
    pub kind: &'static str,
    /// Its rules, in the kind's own words.
    pub rules: String,
    /// The volume of an IO experiment; empty for other kinds.
    pub volume: String,
    /// The live state of its helper, if any.
    pub status: String,
    /// What an IO experiment's handover did (`None`: off, or not an IO experiment).
    pub handover: Option<handover::Report>,
}

/// Every fault kind of this agent, by journal kind.
#[derive(Clone, Debug)]
pub struct Registry {
    journal: Journal,
    kinds: Vec<Arc<dyn FaultKind>>,
}

impl Registry {
    pub fn new(journal: Journal) -> Self {
        Self {
            journal,
            kinds: Vec::new(),
        }
    }

    /// Adds a kind; its records are recovered by it from now on.
    pub fn register(mut self, kind: Arc<dyn FaultKind>) -> Self {
        assert!(
            self.of(kind.kind()).is_none(),
            "fault kind {:?} registered twice",
            kind.kind()
        );
        self.kinds.push(kind);
        self
    }

    fn of(&self, kind: &str) -> Option<&Arc<dyn FaultKind>> {
        self.kinds.iter().find(|k| k.kind() == kind)
    }

    async fn dispatch(&self, record: &StoredRecord) -> Result<(), AgentError> {
        match self.of(record.kind()) {
            Some(kind) => kind.recover(record).await,
            None => Err(AgentError::UnknownKind {
                id: record.id.clone(),
                kind: record.kind().to_owned(),
            }),
        }
    }

    /// After a (re)start: takes over what a previous run left in force whose helper outlived it
    /// (an injector), and undoes everything else the journal holds. The only read of the
    /// journal at start; an unreadable record, or one of a kind this agent does not know, is
    /// reported and left in place, never dropped. The outcomes are those of the records recovered
    /// (an adopted one is logged, not listed).
    pub async fn recover_left_over(&self) -> Vec<(String, Result<(), AgentError>)> {
        let mut outcomes = Vec::new();
        for (record, result) in self.adopt_or_recover_every_record().await {
            let noun = self.of(record.kind()).map_or("a fault", |k| k.noun());
            match &result {
                Ok(()) => {
                    tracing::info!(id = %record.id, container = %record.container_id, kind = record.kind(), "recovered {noun} left by a previous run")
                }
                Err(err) => {
                    tracing::error!(id = %record.id, %err, "could not recover {noun} left by a previous run; the journal keeps the record")
                }
            }
            outcomes.push((record.id, result));
        }
        outcomes
    }

    /// A clean stop: recovers every record of the journal (not whatever memory holds).
    pub async fn recover_all(&self) -> Vec<(String, Result<(), AgentError>)> {
        let mut outcomes = Vec::new();
        for (record, result) in self.recover_every_record().await {
            if let Err(err) = &result {
                tracing::error!(id = %record.id, %err, "recovery at shutdown failed; the journal keeps the record");
            }
            outcomes.push((record.id, result));
        }
        outcomes
    }

    async fn adopt_or_recover_every_record(&self) -> Vec<(StoredRecord, Result<(), AgentError>)> {
        let (records, broken) = match self.journal.list() {
            Ok(listing) => listing,
            Err(err) => {
                tracing::error!(%err, "the journal cannot be read: nothing recovered");
                return Vec::new();
            }
        };
        for err in broken {
            tracing::error!(%err, "unreadable journal record left in place");
        }
        let mut outcomes = Vec::new();
        for record in records {
            if let Some(kind) = self.of(record.kind()) {
                match Arc::clone(kind).adopt(&record).await {
                    Adoption::Adopted => {
                        tracing::info!(id = %record.id, container = %record.container_id, kind = record.kind(), "adopted {} left by a previous run", kind.noun());
                        continue;
                    }
                    Adoption::NotAdoptable => {}
                    Adoption::Failed(reason) => {
                        tracing::warn!(id = %record.id, %reason, "cannot adopt {} left by a previous run; recovering it from its record", kind.noun());
                    }
                }
            }
            let result = self.dispatch(&record).await;
            outcomes.push((record, result));
        }
        outcomes
    }

    async fn recover_every_record(&self) -> Vec<(StoredRecord, Result<(), AgentError>)> {
        let (records, broken) = match self.journal.list() {
            Ok(listing) => listing,
            Err(err) => {
                tracing::error!(%err, "the journal cannot be read: nothing recovered");
                return Vec::new();
            }
        };
        for err in broken {
            tracing::error!(%err, "unreadable journal record left in place");
        }
        let mut outcomes = Vec::new();
        for record in records {
            let result = self.dispatch(&record).await;
            outcomes.push((record, result));
        }
        outcomes
    }

    /// Clears the records of faults that have nothing left to act on: the target process is
    /// gone and no process of the node is in the namespace the fault lives in (a container
    /// SIGKILLed for good, a pod deleted). Each is recovered — which undoes what may remain
    /// (a helper, a cgroup, a rule) — and so removed. A target that restarted in the same
    /// namespace (a container restart in a pod that holds its network) keeps its fault.
    pub async fn clear_vanished(&self) -> Vec<(String, Result<(), AgentError>)> {
        self.clear_where(|record| {
            !record.target.is_alive() && !namespace_in_use(record.namespace_inode)
        })
        .await
    }

    async fn clear_where(
        &self,
        vanished: impl Fn(&StoredRecord) -> bool,
    ) -> Vec<(String, Result<(), AgentError>)> {
        let Ok((records, _)) = self.journal.list() else {
            return Vec::new();
        };
        let mut outcomes = Vec::new();
        for record in records.into_iter().filter(|r| vanished(r)) {
            let result = self.dispatch(&record).await;
            match &result {
                Ok(()) => {
                    tracing::info!(id = %record.id, container = %record.container_id, kind = record.kind(), "cleared: its container and namespace are gone")
                }
                Err(err) => {
                    tracing::warn!(id = %record.id, %err, "its container is gone but clearing failed; the journal keeps the record")
                }
            }
            outcomes.push((record.id, result));
        }
        outcomes
    }

    /// Tries again every recovery that failed and kept its record (see
    /// [`FaultKind::retry_unrecovered`]); run every [`RETRY_RECOVERY_EVERY`].
    pub async fn retry_unrecovered(&self) -> Vec<(String, Result<(), AgentError>)> {
        let mut outcomes = Vec::new();
        for kind in &self.kinds {
            for (id, result) in kind.retry_unrecovered().await {
                match &result {
                    Ok(()) => tracing::info!(%id, "recovered {} on a retry", kind.noun()),
                    Err(err) => {
                        tracing::warn!(%id, %err, "recovery failed again; the journal keeps the record")
                    }
                }
                outcomes.push((id, result));
            }
        }
        outcomes
    }

    /// Recovers one experiment, found by id in the journal.
    pub async fn recover(&self, id: &str) -> Result<(), AgentError> {
        let record = self
            .journal
            .get(id)
            .map_err(|err| match err {
                crate::journal::JournalError::BadId(_) => {
                    AgentError::UnknownExperiment(id.to_owned())
                }
                other => other.into(),
            })?
            .ok_or_else(|| AgentError::UnknownExperiment(id.to_owned()))?;
        self.dispatch(&record).await
    }

    /// The ids of every experiment in the journal, oldest first.
    pub fn ids(&self) -> Result<Vec<String>, AgentError> {
        let (records, _) = self.journal.list()?;
        Ok(records.into_iter().map(|r| r.id).collect())
    }

    /// Every experiment in force, of every kind, oldest first.
    pub async fn list(&self) -> Vec<ExperimentView> {
        let mut views = Vec::new();
        for kind in &self.kinds {
            views.extend(kind.list().await);
        }
        views.sort_by(|a, b| {
            (a.record.started_at_ms, &a.record.id).cmp(&(b.record.started_at_ms, &b.record.id))
        });
        views
    }
}

/// How often the daemon tries again the recoveries that failed.
pub const RETRY_RECOVERY_EVERY: Duration = Duration::from_secs(5);

/// How often the daemon looks for records of vanished containers.
pub const VANISHED_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Whether any process of the node is in the namespace with this inode (namespace inodes are
/// unique across types). An unknown namespace (0) counts as in use: nothing is cleared on a
/// guess.
pub fn namespace_in_use(inode: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    if inode == 0 {
        return true;
    }
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return true;
    };
    proc.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            std::fs::read_dir(e.path().join("ns")).is_ok_and(|ns| {
                ns.filter_map(|n| n.ok())
                    .any(|n| std::fs::metadata(n.path()).is_ok_and(|m| m.ino() == inode))
            })
        })
}

/// Recovers `id` once its deadline has come, as the journal then says (an update may have moved
/// the deadline, a recovery may have removed the record meanwhile).
pub fn recover_at_deadline(
    kind: Arc<dyn FaultKind>,
    journal: Journal,
    id: String,
    after: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let record = match journal.get(&id) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(%id, %err, "the journal cannot be read at the end of the duration");
                return;
            }
        };
        let due = |record: &StoredRecord| record.deadline_ms.is_some_and(|d| d <= now_ms() + 5);
        if !due(&record) {
            return;
        }
        // A failure is tried again until the record is gone or its deadline moved (an update
        // set a new one, with its own timer): giving up would leave the fault in force past
        // its duration, with nothing else to end it (a request busy on the same target at
        // that moment was enough).
        let mut record = record;
        let mut wait = DEADLINE_RETRY_FIRST;
        loop {
            match kind.recover(&record).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(%id, %err, retry_in = ?wait, "recovery at the end of the duration failed")
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(DEADLINE_RETRY_MAX);
            record = match journal.get(&id) {
                Ok(Some(record)) if due(&record) => record,
                Ok(_) => return,
                Err(err) => {
                    tracing::error!(%id, %err, "the journal cannot be read to retry the end of the duration");
                    return;
                }
            };
        }
    });
}

/// How soon a failed recovery at the end of a duration is tried again, and the longest wait
/// between tries.
const DEADLINE_RETRY_FIRST: Duration = Duration::from_millis(200);
const DEADLINE_RETRY_MAX: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;

    use super::*;
    use crate::process_identity::ProcessIdentity;

    /// A kind that only records what it was asked to recover, and removes the record.
    #[derive(Debug)]
    struct Recording {
        journal: Journal,
        recovered: Mutex<Vec<String>>,
    }

    /// Refuses (busy) its first `refusals` recoveries, then recovers.
    #[derive(Debug)]
    struct BusyAtFirst {
        inner: Recording,
        refusals: Mutex<u32>,
    }

    #[tonic::async_trait]
    impl FaultKind for BusyAtFirst {
        fn kind(&self) -> &'static str {
            "probe"
        }
        fn noun(&self) -> &'static str {
            "a probe"
        }
        async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
            {
                let mut refusals = self.refusals.lock().unwrap();
                if *refusals > 0 {
                    *refusals -= 1;
                    return Err(AgentError::Busy {
                        target: record.container_id.clone(),
                    });
                }
            }
            self.inner.recover(record).await
        }
        async fn list(&self) -> Vec<ExperimentView> {
            Vec::new()
        }
    }

    #[tokio::test]
    async fn a_deadline_whose_recovery_fails_is_tried_again_until_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        let mut due = record("due", me, 1);
        due.deadline_ms = Some(now_ms());
        journal.write_stored(&due).unwrap();
        let kind = Arc::new(BusyAtFirst {
            inner: Recording {
                journal: journal.clone(),
                recovered: Mutex::default(),
            },
            refusals: Mutex::new(2),
        });
        recover_at_deadline(
            Arc::clone(&kind) as Arc<dyn FaultKind>,
            journal.clone(),
            "due".into(),
            Duration::ZERO,
        );
        // Two refusals: tried again after 200 and then 400 ms.
        for _ in 0..100 {
            if journal.get("due").unwrap().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(*kind.inner.recovered.lock().unwrap(), ["due"]);
        assert_eq!(*kind.refusals.lock().unwrap(), 0);
        assert!(journal.get("due").unwrap().is_none());
    }

    #[tonic::async_trait]
    impl FaultKind for Recording {
        fn kind(&self) -> &'static str {
            "probe"
        }
        fn noun(&self) -> &'static str {
            "a probe"
        }
        async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
            self.recovered.lock().unwrap().push(record.id.clone());
            self.journal.remove(&record.id)?;
            Ok(())
        }
        async fn list(&self) -> Vec<ExperimentView> {
            Vec::new()
        }
    }

    fn record(id: &str, target: ProcessIdentity, namespace_inode: u64) -> StoredRecord {
        Record {
            id: id.into(),
            started_at_ms: 1,
            deadline_ms: None,
            container_id: "containerd://abc".into(),
            target,
            namespace_inode,
            fault: serde_json::json!({"kind": "probe"}),
        }
    }

    #[tokio::test]
    async fn only_faults_whose_target_and_namespace_are_both_gone_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        let gone = ProcessIdentity {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        let our_netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        // No process is in a namespace with inode 1.
        for r in [
            record("alive-target", me, 1),
            record("restarted-in-its-pod", gone, our_netns),
            record("vanished", gone, 1),
            record("namespace-unknown", gone, 0),
        ] {
            journal.write_stored(&r).unwrap();
        }
        let kind = Arc::new(Recording {
            journal: journal.clone(),
            recovered: Mutex::default(),
        });
        let registry =
            Registry::new(journal.clone()).register(Arc::clone(&kind) as Arc<dyn FaultKind>);
        let outcomes = registry.clear_vanished().await;
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        assert_eq!(*kind.recovered.lock().unwrap(), ["vanished"]);
        let mut left = registry.ids().unwrap();
        left.sort();
        assert_eq!(
            left,
            ["alive-target", "namespace-unknown", "restarted-in-its-pod"]
        );
    }
}
