//! Network chaos (SetTcs, FlushIPSets, SetIptablesChains): per pod, keyed by the pod's network
//! namespace (its sandbox's), a declarative state: each request replaces its part of what
//! faultline has in force in the pod, an empty request removes it, and recovery puts back
//! exactly what was there (other qdiscs and iptables rules untouched), also from the journal
//! after a crash.
//!
//! netem goes to the kernel when it has sch_netem; otherwise (selected automatically when the
//! kernel refuses it, or forced) to the userspace NFQUEUE path. tbf and prio always go to the
//! kernel, over netlink.

pub mod error;
pub mod ipset;
pub mod iptables;
pub mod netns;
pub mod pod_netns;
pub mod qdisc;
pub mod runner;
pub mod spec;
pub mod userspace;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::NetworkError;
use iptables::{Backend, CHAOS_NETEM, CHAOS_TC, OWN_PACKET_MARK, TableRules};
use pod_netns::{HostNetns, PodNetns, in_tc};
use qdisc::{BuildError, Classful, DeviceRecord, TrafficControl};
use runner::Runner;
use spec::{ChainSpec, IpSetSpec, NetemSpec, NetworkSpec, TcAction, TcFilter, TcRule};
use userspace::{QueueServer, QueueSet};

use crate::clock::now_ms;
use crate::container_runtime::Resolver;
use crate::error::AgentError;
use crate::fault_kinds::{self, ExperimentView, FaultKind};
use crate::journal::{FaultRecord, Journal, ProcessIdentity, Record, StoredRecord};
use crate::metrics::Metrics;

/// The first NFQUEUE number we use (queues are per network namespace).
const QUEUE_BASE: u16 = 31_700;

/// Where netem runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetemPath {
    /// The kernel's netem when it has it, else userspace (decided on the first refusal).
    #[default]
    Auto,
    Kernel,
    Userspace,
}

impl std::str::FromStr for NetemPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" | "" => Ok(NetemPath::Auto),
            "kernel" => Ok(NetemPath::Kernel),
            "userspace" | "nfqueue" => Ok(NetemPath::Userspace),
            other => Err(format!("{other:?}: auto, kernel or userspace")),
        }
    }
}

/// What faultline has in force in one pod, as journaled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub pod_uid: String,
    pub spec: NetworkSpec,
    pub backend: Option<Backend>,
    /// netem runs in userspace (NFQUEUE) for this pod.
    pub userspace_netem: bool,
    /// Why, for the status.
    pub netem_note: String,
    /// Devices whose root we replaced, with what was there before.
    pub devices: Vec<DeviceRecord>,
    /// iptables tables holding chains of ours.
    pub tables: BTreeSet<String>,
    /// Our named chains (filter table).
    pub chains: BTreeSet<String>,
    /// Our ipsets (including ones still waiting to be destroyed).
    pub ipsets: BTreeSet<String>,
}

impl FaultRecord for NetworkRecord {
    const KIND: &'static str = "network";
}

/// The part of the state a request replaces.
#[derive(Clone, Debug)]
pub enum Part {
    Tcs(Vec<TcRule>),
    IpSets(Vec<IpSetSpec>),
    Chains(Vec<ChainSpec>),
    All(NetworkSpec),
}

/// Whom a request is for.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: String,
    pub pod_uid: String,
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The experiment id, empty when nothing remains in force.
    pub id: String,
    pub target_pid: u32,
    pub summary: String,
    pub status: String,
}

#[derive(Debug, Default)]
struct Pod {
    record: Option<Record<NetworkRecord>>,
    server: Option<QueueServer>,
}

#[derive(Debug)]
pub struct NetworkChaos {
    resolver: Resolver,
    journal: Journal,
    metrics: Arc<Metrics>,
    runner: Arc<dyn Runner>,
    netns: Arc<dyn PodNetns>,
    netem_path: NetemPath,
    pods: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<Pod>>>>,
    /// Set once the kernel refused netem: the reason.
    kernel_refused_netem: Mutex<Option<String>>,
    /// Set once the kernel refused prio: filtered rules then hang under htb.
    kernel_lacks_prio: std::sync::atomic::AtomicBool,
}

fn poisoned() -> NetworkError {
    NetworkError::Internal("internal state lock poisoned".into())
}

impl NetworkChaos {
    pub fn new(
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
        runner: Arc<dyn Runner>,
        netem_path: NetemPath,
    ) -> Arc<Self> {
        Self::with_host(
            resolver,
            journal,
            metrics,
            runner,
            Arc::new(HostNetns),
            netem_path,
        )
    }

    /// [`Self::new`] on other namespaces (a fake kernel in tests).
    pub fn with_host(
        resolver: Resolver,
        journal: Journal,
        metrics: Arc<Metrics>,
        runner: Arc<dyn Runner>,
        netns: Arc<dyn PodNetns>,
        netem_path: NetemPath,
    ) -> Arc<Self> {
        Arc::new(Self {
            resolver,
            journal,
            metrics,
            runner,
            netns,
            netem_path,
            pods: Mutex::default(),
            kernel_refused_netem: Mutex::default(),
            kernel_lacks_prio: Default::default(),
        })
    }

    fn pod(&self, inode: u64) -> Result<Arc<tokio::sync::Mutex<Pod>>, NetworkError> {
        Ok(Arc::clone(
            self.pods
                .lock()
                .map_err(|_| poisoned())?
                .entry(inode)
                .or_default(),
        ))
    }

    /// Resolves the pod's namespace: the container's process, or the sandbox's when the
    /// container is not running; refuses the node's own namespace.
    async fn locate(&self, target: &Target) -> Result<(u32, u64), AgentError> {
        let pid = self
            .resolver
            .container_or_sandbox_pid(&target.container_id, &target.pod_uid)
            .await?;
        let inode = self.netns.inode_of(pid)?;
        if self.netns.is_host(inode) {
            return Err(NetworkError::HostNetwork {
                target: format!("{} (process {pid})", target.container_id),
            }
            .into());
        }
        Ok((pid, inode))
    }

    /// Replaces one part of a pod's network state. `path` overrides the agent's netem path.
    pub async fn apply(
        self: &Arc<Self>,
        target: &Target,
        part: Part,
        path: Option<NetemPath>,
        duration: Option<Duration>,
    ) -> Result<Applied, AgentError> {
        let (pid, inode) = self.locate(target).await?;
        self.apply_at(target, pid, inode, part, path, duration)
            .await
    }

    /// [`Self::apply`] in the located namespace.
    async fn apply_at(
        self: &Arc<Self>,
        target: &Target,
        pid: u32,
        inode: u64,
        part: Part,
        path: Option<NetemPath>,
        duration: Option<Duration>,
    ) -> Result<Applied, AgentError> {
        let pod = self.pod(inode)?;
        let mut pod = pod.lock().await;
        let mut desired = pod
            .record
            .as_ref()
            .map(|r| r.fault.spec.clone())
            .unwrap_or_default();
        match part {
            Part::Tcs(t) => desired.tcs = t,
            Part::IpSets(s) => desired.ipsets = s,
            Part::Chains(c) => desired.chains = c,
            Part::All(spec) => desired = spec,
        }
        let ours: BTreeSet<String> = pod
            .record
            .as_ref()
            .map(|r| r.fault.ipsets.clone())
            .unwrap_or_default();
        let checked = desired.check_set_references(&ours);
        let result = match checked {
            Err(e) => Err(e),
            Ok(()) => {
                self.reconcile(
                    &mut pod,
                    target,
                    pid,
                    inode,
                    desired,
                    path.unwrap_or(self.netem_path),
                    duration,
                )
                .await
            }
        };
        if let Err(err) = &result {
            self.metrics.failure("network", err.reason());
        }
        let applied = result?;
        if !applied.id.is_empty()
            && let Some(duration) = duration
        {
            self.recover_after(&applied.id, duration);
        }
        Ok(applied)
    }

    /// Validates and resolves without changing anything: the plan a request would carry out.
    pub async fn plan(
        &self,
        target: &Target,
        spec: &NetworkSpec,
        path: Option<NetemPath>,
    ) -> Result<Applied, AgentError> {
        let (pid, inode) = self.locate(target).await?;
        let ours: BTreeSet<String> = {
            let pod = self.pod(inode)?;
            let pod = pod.lock().await;
            pod.record
                .as_ref()
                .map(|r| r.fault.ipsets.clone())
                .unwrap_or_default()
        };
        spec.check_set_references(&ours)?;
        let devices: Vec<String> = spec
            .devices()
            .into_iter()
            .chain(spec.chains.iter().map(|c| c.device.clone()))
            .collect();
        in_tc(&*self.netns, pid, inode, move |tc| {
            for device in devices {
                if tc.ifindex(&device).is_none() {
                    return Err(NetworkError::UnknownDevice {
                        device,
                        available: tc.devices()?,
                    });
                }
            }
            Ok(())
        })
        .await?;
        let userspace = self.userspace(path.unwrap_or(self.netem_path))?;
        Ok(Applied {
            id: String::new(),
            target_pid: pid,
            summary: spec.summary(),
            status: format!(
                "would apply in the network namespace of process {pid}; netem path: {}",
                if userspace {
                    "userspace (NFQUEUE)"
                } else {
                    "kernel (netem qdisc, falling back to userspace if refused)"
                }
            ),
        })
    }

    fn userspace(&self, path: NetemPath) -> Result<bool, NetworkError> {
        Ok(match path {
            NetemPath::Kernel => false,
            NetemPath::Userspace => true,
            NetemPath::Auto => self
                .kernel_refused_netem
                .lock()
                .map_err(|_| poisoned())?
                .is_some(),
        })
    }

    /// Makes the pod's state `desired`: pre-flight (changing nothing), journal first, apply,
    /// and on failure roll back to what was there.
    #[allow(clippy::too_many_arguments)]
    async fn reconcile(
        &self,
        pod: &mut Pod,
        target: &Target,
        pid: u32,
        inode: u64,
        desired: NetworkSpec,
        path: NetemPath,
        duration: Option<Duration>,
    ) -> Result<Applied, NetworkError> {
        let old_record = pod.record.clone();
        let old = old_record
            .as_ref()
            .map(|r| r.fault.clone())
            .unwrap_or_default();
        let baselines = self.preflight(pid, inode, &old, &desired).await?;
        let mut userspace = self.userspace(path)?;
        let mut record = self
            .plan_record(target, pid, &old, &desired, userspace, baselines)
            .await?;

        // Journal first: the record covers everything that may be in force while we work.
        let mut journal_record = self.journal_first(pod, target, pid, inode, &record, duration)?;
        let outcome = self
            .apply_state(pod, pid, inode, &old, &mut record, &mut userspace, path)
            .await;
        if let Err(err) = outcome {
            journal_record.fault = record;
            pod.record = Some(journal_record);
            self.roll_back(pod, target, pid, inode, &old, path, &err)
                .await;
            return Err(err);
        }
        journal_record.fault = record;
        self.settle(pod, pid, journal_record, old_record.is_none())
    }

    /// Changes nothing: the devices exist, and the trees we would replace can be put back
    /// (their baselines, recorded); a set we did not make is not ours to fill, swap or destroy
    /// (a rollback would destroy it).
    async fn preflight(
        &self,
        pid: u32,
        inode: u64,
        old: &NetworkRecord,
        desired: &NetworkSpec,
    ) -> Result<Vec<DeviceRecord>, NetworkError> {
        let known: BTreeSet<String> = old.devices.iter().map(|d| d.device.clone()).collect();
        let chain_devices: Vec<String> = desired.chains.iter().map(|c| c.device.clone()).collect();
        let new_devices: Vec<String> = desired
            .devices()
            .into_iter()
            .filter(|d| !known.contains(d))
            .collect();
        let baselines = in_tc(&*self.netns, pid, inode, move |tc| {
            for device in &chain_devices {
                if tc.ifindex(device).is_none() {
                    return Err(NetworkError::UnknownDevice {
                        device: device.clone(),
                        available: tc.devices()?,
                    });
                }
            }
            new_devices
                .iter()
                .map(|d| {
                    qdisc::baseline(&mut *tc, d).map(|baseline| DeviceRecord {
                        device: d.clone(),
                        baseline,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        let new_sets: Vec<&str> = desired
            .ipsets
            .iter()
            .map(|s| s.name.as_str())
            .filter(|name| !old.ipsets.contains(*name))
            .collect();
        if !new_sets.is_empty() {
            let present = ipset::names(&*self.runner, pid).await?;
            if let Some(name) = new_sets.iter().find(|n| present.contains(**n)) {
                return Err(NetworkError::ForeignSet {
                    name: (*name).to_owned(),
                });
            }
        }
        Ok(baselines)
    }

    /// What will be in force (and must be undone) once `desired` is applied: the old record
    /// widened by the new devices, chains, sets and tables, with the iptables backend.
    async fn plan_record(
        &self,
        target: &Target,
        pid: u32,
        old: &NetworkRecord,
        desired: &NetworkSpec,
        userspace: bool,
        baselines: Vec<DeviceRecord>,
    ) -> Result<NetworkRecord, NetworkError> {
        let has_netem = desired
            .tcs
            .iter()
            .any(|t| matches!(t.action, TcAction::Netem(_)));
        if userspace {
            check_userspace_can(desired, self.refusal())?;
        }
        let needs_iptables = !desired.chains.is_empty()
            || desired.tcs.iter().any(|t| !t.filter.is_global())
            || (userspace && has_netem)
            || !old.tables.is_empty();
        let backend = match old.backend {
            Some(b) => Some(b),
            None if needs_iptables => Some(iptables::detect_backend(&*self.runner, pid).await?),
            None => None,
        };
        let mut record = NetworkRecord {
            pod_uid: target.pod_uid.clone(),
            spec: desired.clone(),
            backend,
            userspace_netem: userspace && has_netem,
            netem_note: old.netem_note.clone(),
            devices: old.devices.clone(),
            tables: old.tables.clone(),
            chains: old.chains.clone(),
            ipsets: old.ipsets.clone(),
        };
        record.devices.extend(baselines);
        record
            .chains
            .extend(desired.chains.iter().map(|c| c.name.clone()));
        record
            .ipsets
            .extend(desired.ipsets.iter().map(|s| s.name.clone()));
        if needs_iptables {
            record.tables.insert("filter".into());
            record.tables.insert("mangle".into());
        }
        Ok(record)
    }

    /// Writes the pod's record (a new experiment's, or the current one's updated) before
    /// anything changes.
    fn journal_first(
        &self,
        pod: &mut Pod,
        target: &Target,
        pid: u32,
        inode: u64,
        record: &NetworkRecord,
        duration: Option<Duration>,
    ) -> Result<Record<NetworkRecord>, NetworkError> {
        let now = now_ms();
        let mut journal_record = match &pod.record {
            Some(r) => r.clone(),
            None => Record {
                id: format!("net-{inode:x}-{now:x}"),
                started_at_ms: now,
                deadline_ms: None,
                container_id: target.container_id.clone(),
                target: ProcessIdentity::of(pid).map_err(|e| NetworkError::Namespace {
                    pid,
                    reason: e.to_string(),
                })?,
                namespace_inode: inode,
                fault: NetworkRecord::default(),
            },
        };
        if let Some(d) = duration {
            journal_record.deadline_ms = Some(now + d.as_millis() as u64);
        }
        journal_record.fault = record.clone();
        self.journal
            .write(&journal_record)
            .map_err(|e| NetworkError::Internal(e.to_string()))?;
        pod.record = Some(journal_record.clone());
        Ok(journal_record)
    }

    /// After a failed apply: undoes what the record says may be in force, then puts the
    /// previous state back (best effort; it was valid a moment ago).
    #[allow(clippy::too_many_arguments)]
    async fn roll_back(
        &self,
        pod: &mut Pod,
        target: &Target,
        pid: u32,
        inode: u64,
        old: &NetworkRecord,
        path: NetemPath,
        err: &NetworkError,
    ) {
        let id = pod
            .record
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        tracing::warn!(%id, %err, "network fault not applied; rolling back");
        if let Err(undo) = self.undo(pod, pid, inode).await {
            tracing::error!(%undo, "rollback incomplete; the journal keeps the record");
            return;
        }
        if !old.spec.is_empty() {
            let previous =
                Box::pin(self.reconcile(pod, target, pid, inode, old.spec.clone(), path, None))
                    .await;
            if let Err(again) = previous {
                tracing::error!(%again, "the previous network state could not be restored");
            }
        }
    }

    /// Trims the record to what is left in force and journals it (or forgets the experiment
    /// when nothing is).
    fn settle(
        &self,
        pod: &mut Pod,
        pid: u32,
        mut journal_record: Record<NetworkRecord>,
        new: bool,
    ) -> Result<Applied, NetworkError> {
        let record = &mut journal_record.fault;
        let desired = record.spec.clone();
        let in_use: BTreeSet<String> = desired.devices().into_iter().collect();
        record.devices.retain(|d| in_use.contains(&d.device));
        record.chains = desired.chains.iter().map(|c| c.name.clone()).collect();
        if desired.chains.is_empty() {
            record.tables.remove("filter");
        }
        if !mangle_needed(&desired, record.userspace_netem) {
            record.tables.remove("mangle");
        }
        if record.tables.is_empty() && record.ipsets.is_empty() {
            record.backend = None;
        }
        let status = self.status_of(record, pod.server.as_ref());
        if desired.is_empty() && record.ipsets.is_empty() {
            self.journal
                .remove(&journal_record.id)
                .map_err(|e| NetworkError::Internal(e.to_string()))?;
            pod.record = None;
            if !new {
                self.metrics.recovered("network");
                tracing::info!(id = %journal_record.id, "network fault recovered");
            }
            return Ok(Applied {
                id: String::new(),
                target_pid: pid,
                summary: String::new(),
                status: "nothing in force".into(),
            });
        }
        let summary = desired.summary();
        self.journal
            .write(&journal_record)
            .map_err(|e| NetworkError::Internal(e.to_string()))?;
        if new {
            self.metrics.injected("network");
        }
        tracing::info!(id = %journal_record.id, pid, %summary, %status, "network fault in force");
        pod.record = Some(journal_record.clone());
        Ok(Applied {
            id: journal_record.id,
            target_pid: pid,
            summary,
            status,
        })
    }

    fn classful(&self) -> Classful {
        if self
            .kernel_lacks_prio
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Classful::Htb
        } else {
            Classful::Prio
        }
    }

    fn refusal(&self) -> Option<String> {
        self.kernel_refused_netem
            .lock()
            .ok()
            .and_then(|r| r.clone())
    }

    fn status_of(&self, record: &NetworkRecord, server: Option<&QueueServer>) -> String {
        let mut parts = Vec::new();
        let has_netem = record
            .spec
            .tcs
            .iter()
            .any(|t| matches!(t.action, TcAction::Netem(_)));
        if has_netem {
            if record.userspace_netem {
                let why = if record.netem_note.is_empty() {
                    "forced".to_owned()
                } else {
                    record.netem_note.clone()
                };
                parts.push(format!("netem: userspace NFQUEUE ({why})"));
                if let Some(server) = server {
                    parts.push(server.stats.describe());
                }
            } else {
                parts.push("netem: kernel qdisc".into());
            }
        }
        if let Some(b) = record.backend {
            parts.push(format!("iptables: {}", b.name()));
        }
        parts.join("; ")
    }

    /// The qdisc trees of every device, falling back to userspace netem if the kernel refuses
    /// netem (and to htb if it has no prio).
    async fn build_qdiscs(
        &self,
        pid: u32,
        inode: u64,
        record: &mut NetworkRecord,
        userspace: &mut bool,
        path: NetemPath,
    ) -> Result<(), NetworkError> {
        let desired = record.spec.clone();
        let runner = &*self.runner;
        loop {
            let devices = record.devices.clone();
            let rules = desired.tcs.clone();
            let kernel_netem = !*userspace;
            let classful = self.classful();
            let built = in_tc(&*self.netns, pid, inode, move |tc| {
                Ok(build_trees(tc, &devices, &rules, kernel_netem, classful))
            })
            .await?;
            match built {
                Ok(()) => break,
                Err(BuildError::PrioRefused) if classful == Classful::Prio => {
                    tracing::info!(
                        "the kernel has no prio qdisc; filtered rules hang under htb classes"
                    );
                    self.kernel_lacks_prio
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(BuildError::PrioRefused) => {
                    return Err(NetworkError::Internal(
                        "the kernel refused prio with htb planned".into(),
                    ));
                }
                Err(BuildError::NetemRefused(reason)) if path == NetemPath::Auto => {
                    tracing::warn!(%reason, "the kernel refused netem; using the userspace NFQUEUE path");
                    if let Ok(mut refused) = self.kernel_refused_netem.lock() {
                        *refused = Some(reason.clone());
                    }
                    check_userspace_can(&desired, Some(reason.clone()))?;
                    *userspace = true;
                    record.userspace_netem = true;
                    record.netem_note = format!("kernel refused netem: {reason}");
                    if record.backend.is_none() {
                        record.backend = Some(iptables::detect_backend(runner, pid).await?);
                    }
                    record.tables.insert("filter".into());
                    record.tables.insert("mangle".into());
                }
                Err(BuildError::NetemRefused(reason)) => {
                    return Err(NetworkError::NetemUnavailable { reason });
                }
                Err(BuildError::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_state(
        &self,
        pod: &mut Pod,
        pid: u32,
        inode: u64,
        old: &NetworkRecord,
        record: &mut NetworkRecord,
        userspace: &mut bool,
        path: NetemPath,
    ) -> Result<(), NetworkError> {
        let desired = record.spec.clone();
        let runner = &*self.runner;
        if !desired.ipsets.is_empty() {
            ipset::apply(runner, pid, &desired.ipsets).await?;
        }
        if let Some(backend) = record.backend
            && (!desired.chains.is_empty() || old.tables.contains("filter"))
        {
            let rules = iptables::filter_rules(&desired.chains);
            let retired: Vec<String> = old.chains.iter().cloned().collect();
            iptables::apply_table(runner, pid, backend, "filter", &rules, &retired).await?;
        }

        let has_netem = desired
            .tcs
            .iter()
            .any(|t| matches!(t.action, TcAction::Netem(_)));
        self.build_qdiscs(pid, inode, record, userspace, path)
            .await?;
        if *userspace && has_netem && record.netem_note.is_empty() {
            record.netem_note = match self.refusal() {
                Some(reason) => format!("kernel refused netem: {reason}"),
                None => "forced".into(),
            };
        }
        record.userspace_netem = *userspace && has_netem;

        // Userspace netem: queues, then the rules that feed them.
        let (queues, queue_rules) = if record.userspace_netem {
            userspace_queues(&desired.tcs)
        } else {
            (QueueSet::new(), Vec::new())
        };
        if queues.is_empty() {
            if let Some(server) = pod.server.take() {
                server.stop();
            }
        } else if let Some(server) = pod.server.as_ref().filter(|s| s.is_running()) {
            server.update(queues).await?;
        } else {
            pod.server = Some(QueueServer::start(pid, inode, queues).await?);
        }
        if let Some(backend) = record.backend
            && (mangle_needed(&desired, record.userspace_netem)
                || old.tables.contains("mangle")
                || record.tables.contains("mangle"))
        {
            let rules = mangle_rules(&desired.tcs, !record.userspace_netem, &queue_rules);
            iptables::apply_table(runner, pid, backend, "mangle", &rules, &[]).await?;
        }

        // Sets no longer wanted, once nothing refers to them.
        let wanted: BTreeSet<String> = desired.ipsets.iter().map(|s| s.name.clone()).collect();
        let stale: Vec<String> = record.ipsets.difference(&wanted).cloned().collect();
        if !stale.is_empty() {
            let kept = ipset::destroy(runner, pid, &stale).await?;
            record.ipsets = wanted.into_iter().chain(kept).collect();
        }
        Ok(())
    }

    /// Removes everything the pod's record says may be in force.
    async fn undo(&self, pod: &mut Pod, pid: u32, inode: u64) -> Result<(), NetworkError> {
        if let Some(server) = pod.server.take() {
            server.stop();
        }
        let Some(record) = pod.record.clone() else {
            return Ok(());
        };
        undo_record(&*self.runner, &*self.netns, pid, inode, &record.fault).await?;
        self.journal
            .remove(&record.id)
            .map_err(|e| NetworkError::Internal(e.to_string()))?;
        pod.record = None;
        Ok(())
    }

    /// Undoes what a pod's journal record says may be in force and forgets it: the one
    /// recovery of network faults (explicit, end of a duration, shutdown, start-up).
    async fn recover_record(&self, record: &Record<NetworkRecord>) -> Result<(), NetworkError> {
        let inode = record.namespace_inode;
        let pod = self.pod(inode)?;
        let mut pod = pod.lock().await;
        let ours = pod.record.as_ref().is_some_and(|r| r.id == record.id);
        if ours && let Some(server) = pod.server.take() {
            server.stop();
        }
        // The namespace gone, everything we put in it went with it.
        if let Some(pid) = self.netns.find_process(inode, Some(record.target.pid)) {
            undo_record(&*self.runner, &*self.netns, pid, inode, &record.fault).await?;
        }
        self.journal
            .remove(&record.id)
            .map_err(|e| NetworkError::Internal(e.to_string()))?;
        if ours {
            pod.record = None;
        }
        self.metrics.recovered("network");
        tracing::info!(id = %record.id, "network fault recovered");
        Ok(())
    }

    fn recover_after(self: &Arc<Self>, id: &str, duration: Duration) {
        let kind: Arc<dyn FaultKind> = Arc::clone(self) as Arc<dyn FaultKind>;
        fault_kinds::recover_at_deadline(kind, self.journal.clone(), id.to_owned(), duration);
    }

    async fn views(&self) -> Vec<ExperimentView> {
        let pods: Vec<_> = match self.pods.lock() {
            Ok(pods) => pods.values().cloned().collect(),
            Err(_) => {
                tracing::error!("state lock poisoned: network experiments not listed");
                Vec::new()
            }
        };
        let mut views = Vec::new();
        for pod in pods {
            let pod = pod.lock().await;
            if let Some(record) = &pod.record {
                views.push(ExperimentView {
                    record: record.with_fault(()),
                    kind: NetworkRecord::KIND,
                    rules: record.fault.spec.summary(),
                    volume: String::new(),
                    status: self.status_of(&record.fault, pod.server.as_ref()),
                    handover: None,
                });
            }
        }
        views
    }
}

#[tonic::async_trait]
impl FaultKind for NetworkChaos {
    fn kind(&self) -> &'static str {
        NetworkRecord::KIND
    }

    fn noun(&self) -> &'static str {
        "a network fault"
    }

    async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
        Ok(self.recover_record(&record.decode()?).await?)
    }

    async fn list(&self) -> Vec<ExperimentView> {
        self.views().await
    }
}

/// Refuses what the userspace path cannot do.
fn check_userspace_can(spec: &NetworkSpec, reason: Option<String>) -> Result<(), NetworkError> {
    if let Some(rule) = spec
        .tcs
        .iter()
        .find(|t| matches!(&t.action, TcAction::Netem(n) if n.needs_kernel()))
    {
        return Err(NetworkError::NeedsKernelNetem {
            what: format!(
                "{} (netem rate; use a bandwidth fault instead)",
                rule.describe()
            ),
            reason: reason.unwrap_or_else(|| "userspace path forced".into()),
        });
    }
    Ok(())
}

/// Builds every device's tree (devices with no rules left go back to their baseline).
fn build_trees(
    tc: &mut dyn TrafficControl,
    devices: &[DeviceRecord],
    rules: &[TcRule],
    kernel_netem: bool,
    classful: Classful,
) -> Result<(), BuildError> {
    for device in devices {
        let mine: Vec<&TcRule> = rules.iter().filter(|r| r.device == device.device).collect();
        let plan = qdisc::plan_device(
            &device.device,
            &mine,
            |r| kernel_netem || matches!(r.action, TcAction::Bandwidth(_)),
            classful,
        );
        qdisc::build(tc, &device.device, &plan, &device.baseline)?;
    }
    Ok(())
}

/// The userspace queues: one per device for its global netem rules, one per filter; and the
/// NFQUEUE rule of each (chain, arguments).
fn userspace_queues(tcs: &[TcRule]) -> (QueueSet, Vec<(bool, String)>) {
    let mut groups: BTreeMap<(String, TcFilter), Vec<NetemSpec>> = BTreeMap::new();
    let mut order: Vec<(String, TcFilter)> = Vec::new();
    for rule in tcs {
        if let TcAction::Netem(n) = &rule.action {
            let key = (rule.device.clone(), rule.filter.clone());
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(n.clone());
        }
    }
    let mut queues = QueueSet::new();
    let mut rules = Vec::new();
    for (i, key) in order.iter().enumerate() {
        let queue = QUEUE_BASE + i as u16;
        queues.insert(queue, groups.remove(key).unwrap_or_default());
        let (device, filter) = key;
        let matcher = filter.iptables_match().join(" ");
        let spacer = if matcher.is_empty() { "" } else { " " };
        rules.push((
            filter.is_global(),
            format!("-o {device}{spacer}{matcher} -j NFQUEUE --queue-num {queue} --queue-bypass"),
        ));
    }
    (queues, rules)
}

fn mangle_needed(spec: &NetworkSpec, userspace_netem: bool) -> bool {
    spec.tcs.iter().any(|t| !t.filter.is_global())
        || (userspace_netem
            && spec
                .tcs
                .iter()
                .any(|t| matches!(t.action, TcAction::Netem(_))))
}

/// The mangle rules: CLASSIFY for the kernel trees' filtered bands, NFQUEUE for userspace netem
/// (global rules after routing in CHAOS-TC, filtered ones in CHAOS-NETEM), and our own
/// duplicates let through first.
fn mangle_rules(tcs: &[TcRule], kernel_netem: bool, queue_rules: &[(bool, String)]) -> TableRules {
    let skip_own = format!("-m mark --mark {OWN_PACKET_MARK:#x}/{OWN_PACKET_MARK:#x} -j RETURN");
    let mut tc_rules = Vec::new();
    let mut netem_rules = Vec::new();
    for device in tcs
        .iter()
        .map(|t| t.device.clone())
        .collect::<BTreeSet<_>>()
    {
        let mine: Vec<&TcRule> = tcs.iter().filter(|r| r.device == device).collect();
        // The class numbers are the same under prio and htb.
        let plan = qdisc::plan_device(
            &device,
            &mine,
            |r| kernel_netem || matches!(r.action, TcAction::Bandwidth(_)),
            Classful::Prio,
        );
        for c in plan.classify {
            let matcher = c.filter.iptables_match().join(" ");
            tc_rules.push(format!(
                "-o {} {matcher} -j CLASSIFY --set-class {:x}:{:x}",
                c.device,
                c.class >> 16,
                c.class & 0xffff
            ));
        }
    }
    for (global, rule) in queue_rules {
        if *global {
            tc_rules.push(rule.clone());
        } else {
            netem_rules.push(rule.clone());
        }
    }
    if !queue_rules.is_empty() {
        tc_rules.insert(0, skip_own.clone());
        if !netem_rules.is_empty() {
            netem_rules.insert(0, skip_own);
        }
    }
    TableRules {
        base: vec![(CHAOS_TC, tc_rules), (CHAOS_NETEM, netem_rules)],
        named: Vec::new(),
    }
}

/// Removes everything a record says may be in force, in the inverse order of applying.
async fn undo_record(
    runner: &dyn Runner,
    netns: &dyn PodNetns,
    pid: u32,
    inode: u64,
    state: &NetworkRecord,
) -> Result<(), NetworkError> {
    if let Some(backend) = state.backend
        && state.tables.contains("mangle")
    {
        iptables::clear_table(runner, pid, backend, "mangle", &[]).await?;
    }
    let devices = state.devices.clone();
    in_tc(netns, pid, inode, move |tc| {
        for d in &devices {
            qdisc::restore(&mut *tc, &d.device, &d.baseline)?;
        }
        Ok(())
    })
    .await?;
    if let Some(backend) = state.backend
        && state.tables.contains("filter")
    {
        let chains: Vec<String> = state.chains.iter().cloned().collect();
        iptables::clear_table(runner, pid, backend, "filter", &chains).await?;
    }
    let sets: Vec<String> = state.ipsets.iter().cloned().collect();
    let kept = ipset::destroy(runner, pid, &sets).await?;
    if !kept.is_empty() {
        return Err(NetworkError::Internal(format!(
            "ipsets still in use by rules that are not ours: {}",
            kept.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdisc::Baseline;
    use spec::TbfSpec;

    fn rule(device: &str, ipset: &str, action: TcAction) -> TcRule {
        TcRule {
            device: device.into(),
            filter: TcFilter {
                ipset: ipset.into(),
                ..Default::default()
            },
            action,
        }
    }

    fn delay() -> TcAction {
        TcAction::Netem(NetemSpec {
            latency_us: 100_000,
            limit: 1000,
            ..Default::default()
        })
    }

    /// Inject → crash → recover from the record, on a fake kernel and a fake iptables.
    mod lifecycle {
        use super::*;
        use crate::container_runtime::{RuntimeConfig, RuntimeKind};
        use crate::fault_kinds::Registry;
        use crate::network::pod_netns::fake::FakeNetns;
        use crate::network::qdisc::fake::FakeTc;
        use crate::network::runner::fake::{FakeRunner, ok};
        use netlink::tc::{QdiscInfo, TC_H_ROOT};

        const POD: u64 = 4026532999;

        /// A pod whose eth0 has the kernel's default root; its process is this test (a real
        /// process, so the journal can record its identity).
        fn pod() -> Arc<FakeNetns> {
            let tc = FakeTc {
                qdiscs: vec![QdiscInfo {
                    ifindex: 2,
                    handle: 0,
                    parent: TC_H_ROOT,
                    kind: "noqueue".into(),
                    options: Vec::new(),
                }],
                ..Default::default()
            };
            Arc::new(FakeNetns {
                inode: POD,
                pid: std::sync::Mutex::new(Some(std::process::id())),
                tc: Arc::new(std::sync::Mutex::new(tc)),
            })
        }

        fn agent(
            netns: Arc<FakeNetns>,
            dir: &std::path::Path,
        ) -> (Arc<NetworkChaos>, Registry, Arc<FakeRunner>) {
            let runner = Arc::new(FakeRunner::new(|_, _, _| ok("")));
            let journal = Journal::open(dir).unwrap();
            let network = NetworkChaos::with_host(
                Resolver::new(RuntimeConfig::for_runtime(RuntimeKind::Containerd)),
                journal.clone(),
                Arc::new(Metrics::new()),
                Arc::clone(&runner) as Arc<dyn Runner>,
                netns,
                NetemPath::Kernel,
            );
            let registry =
                Registry::new(journal).register(Arc::clone(&network) as Arc<dyn FaultKind>);
            (network, registry, runner)
        }

        fn target() -> Target {
            Target {
                container_id: "containerd://abc".into(),
                pod_uid: "uid-1".into(),
            }
        }

        fn log(netns: &FakeNetns) -> Vec<String> {
            netns.tc.lock().unwrap().log.clone()
        }

        #[tokio::test]
        async fn a_delay_survives_a_crash_only_until_the_next_start() {
            let dir = tempfile::tempdir().unwrap();
            let netns = pod();
            let (network, _, runner) = agent(Arc::clone(&netns), dir.path());
            let applied = network
                .apply_at(
                    &target(),
                    std::process::id(),
                    POD,
                    Part::Tcs(vec![rule("eth0", "", delay())]),
                    None,
                    None,
                )
                .await
                .unwrap();
            assert!(!applied.id.is_empty());
            // Whatever root there was goes first (the kernel's default comes back by itself).
            assert_eq!(log(&netns), ["delete root", "add netem 10000"]);
            // A global delay on the kernel path needs no iptables and no ipset.
            assert_eq!(runner.calls(), Vec::<String>::new());
            let journal = Journal::open(dir.path()).unwrap();
            let record: Record<NetworkRecord> =
                journal.get_as(&applied.id).unwrap().expect("journaled");
            assert_eq!(record.namespace_inode, POD);
            assert_eq!(
                record.fault.devices,
                [DeviceRecord {
                    device: "eth0".into(),
                    baseline: Baseline::Default {
                        kind: "noqueue".into()
                    }
                }]
            );

            // The agent dies; the kernel keeps the qdisc. The next start recovers from the
            // journal alone.
            drop(network);
            let (_restarted, registry, _) = agent(Arc::clone(&netns), dir.path());
            let outcomes = registry.recover_left_over().await;
            assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
            assert_eq!(
                log(&netns),
                ["delete root", "add netem 10000", "delete root"]
            );
            assert!(journal.list().unwrap().0.is_empty());
        }

        #[tokio::test]
        async fn a_pod_that_is_gone_took_its_faults_with_it() {
            let dir = tempfile::tempdir().unwrap();
            let netns = pod();
            let (network, _, _) = agent(Arc::clone(&netns), dir.path());
            let applied = network
                .apply_at(
                    &target(),
                    std::process::id(),
                    POD,
                    Part::Tcs(vec![rule("eth0", "", delay())]),
                    None,
                    None,
                )
                .await
                .unwrap();
            *netns.pid.lock().unwrap() = None;
            // Explicit recovery by id, through the registry, from the record.
            let (_restarted, registry, runner) = agent(Arc::clone(&netns), dir.path());
            registry.recover(&applied.id).await.unwrap();
            assert_eq!(log(&netns), ["delete root", "add netem 10000"]);
            assert_eq!(runner.calls(), Vec::<String>::new());
            assert!(registry.ids().unwrap().is_empty());
        }

        #[tokio::test]
        async fn an_unknown_device_is_refused_before_anything_is_journaled() {
            let dir = tempfile::tempdir().unwrap();
            let netns = pod();
            let (network, registry, _) = agent(Arc::clone(&netns), dir.path());
            let err = network
                .apply_at(
                    &target(),
                    std::process::id(),
                    POD,
                    Part::Tcs(vec![rule("eth9", "", delay())]),
                    None,
                    None,
                )
                .await
                .unwrap_err();
            assert!(err.to_string().contains("eth9"), "{err}");
            assert_eq!(
                tonic::Status::from(err).code(),
                tonic::Code::InvalidArgument
            );
            assert!(log(&netns).is_empty());
            assert!(registry.ids().unwrap().is_empty());
        }
    }

    #[test]
    fn userspace_netem_becomes_queues_and_rules() {
        let tcs = [
            rule("eth0", "", delay()),
            rule("eth0", "peers", delay()),
            rule(
                "eth0",
                "",
                TcAction::Bandwidth(TbfSpec {
                    rate: 125_000,
                    burst: 10_000,
                    limit: 10_000,
                    ..Default::default()
                }),
            ),
        ];
        let (queues, queue_rules) = userspace_queues(&tcs);
        assert_eq!(queues.keys().copied().collect::<Vec<_>>(), [31_700, 31_701]);
        let mangle = mangle_rules(&tcs, false, &queue_rules);
        let text = iptables::restore_input("mangle", &mangle, &[]);
        assert_eq!(
            text,
            "*mangle\n:CHAOS-TC - [0:0]\n:CHAOS-NETEM - [0:0]\n\
             -A CHAOS-TC -m mark --mark 0xfa17000/0xfa17000 -j RETURN\n\
             -A CHAOS-TC -o eth0 -j NFQUEUE --queue-num 31700 --queue-bypass\n\
             -A CHAOS-NETEM -m mark --mark 0xfa17000/0xfa17000 -j RETURN\n\
             -A CHAOS-NETEM -o eth0 -m set --match-set peers dst -j NFQUEUE --queue-num 31701 --queue-bypass\n\
             COMMIT\n"
        );
        // In the kernel, the filtered netem hangs under prio and is classified instead.
        let mangle = mangle_rules(&tcs, true, &[]);
        assert_eq!(
            mangle.base[0].1,
            ["-o eth0 -m set --match-set peers dst -j CLASSIFY --set-class 3:4"]
        );
    }

    #[test]
    fn netem_rates_need_the_kernel() {
        let spec = NetworkSpec {
            tcs: vec![rule(
                "eth0",
                "",
                TcAction::Netem(NetemSpec {
                    rate: Some(1000),
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        let err = check_userspace_can(&spec, Some("unknown qdisc".into())).unwrap_err();
        assert!(err.to_string().contains("netem rate"), "{err}");
        assert!(check_userspace_can(&NetworkSpec::default(), None).is_ok());
    }

    #[test]
    fn records_round_trip_through_the_journal_format() {
        let record = NetworkRecord {
            pod_uid: "uid".into(),
            spec: NetworkSpec {
                tcs: vec![rule("eth0", "", delay())],
                ..Default::default()
            },
            backend: Some(Backend::Nft),
            devices: vec![DeviceRecord {
                device: "eth0".into(),
                baseline: Baseline::Default {
                    kind: "noqueue".into(),
                },
            }],
            ..Default::default()
        };
        let stored = crate::journal::Record {
            id: "net-1".into(),
            started_at_ms: 1,
            deadline_ms: None,
            container_id: "containerd://abc".into(),
            target: ProcessIdentity {
                pid: 1,
                start_time: 2,
            },
            namespace_inode: 3,
            fault: record.clone(),
        }
        .to_stored()
        .unwrap();
        let text = serde_json::to_string(&stored.fault).unwrap();
        assert!(text.contains(r#""kind":"network""#), "{text}");
        assert_eq!(stored.decode::<NetworkRecord>().unwrap().fault, record);
        assert_eq!("userspace".parse::<NetemPath>(), Ok(NetemPath::Userspace));
        assert!("sometimes".parse::<NetemPath>().is_err());
    }
}
