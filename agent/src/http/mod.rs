//! HTTP faults (`ApplyHttpChaos`, as Chaos Mesh's controller calls it): a `faultline-http-proxy`
//! in the pod's network namespace, a nat PREROUTING redirect of the pod's `proxy_ports` to it,
//! the rules changed live. One pipeline: request → [`HttpChaosSpec`] (parsed at the edge) →
//! journal → proxy → rules → redirect; recovery from the record alone ([`HttpRecord`]): the
//! redirect first, then the proxy.

pub mod host;
pub mod redirect;

use std::sync::Arc;

use http_chaos::HttpChaosSpec;
use serde::{Deserialize, Serialize};

use host::HttpHost;

use crate::clock::now_ms;
use crate::container_runtime::RuntimeError;
use crate::error::AgentError;
use crate::fault_kinds::{self, ExperimentView, FaultKind};
use crate::journal::{FaultRecord, Journal, ProcessIdentity, Record, StoredRecord};
use crate::metrics::Metrics;
use crate::network::NetworkError;
use crate::network::iptables::{self, Backend};
use crate::network::runner::Runner;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Spec(#[from] http_chaos::SpecError),
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error(
        "{target} shares the node's network namespace (hostNetwork): a redirect there would hit the node; refused"
    )]
    HostNetwork { target: String },
    #[error("the HTTP proxy: {0}")]
    Proxy(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

impl HttpError {
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            HttpError::Spec(_) | HttpError::InvalidArgument { .. } => Code::InvalidArgument,
            HttpError::HostNetwork { .. } => Code::FailedPrecondition,
            HttpError::Runtime(e) => e.code(),
            HttpError::Network(e) => e.code(),
            HttpError::Proxy(_) | HttpError::Journal(_) => Code::Internal,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::Spec(_) | HttpError::InvalidArgument { .. } => "invalid_argument",
            HttpError::HostNetwork { .. } => "host_network",
            HttpError::Proxy(_) => "proxy",
            HttpError::Runtime(_) => "runtime",
            HttpError::Network(e) => e.reason(),
            HttpError::Journal(_) => "journal",
        }
    }
}

/// The request's JSON as sent (kept in the record, and sent to the proxy), beside the spec
/// parsed from it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent<'a> {
    pub rules: &'a str,
    pub tls: &'a str,
}

/// What a record keeps of an apply: the rules JSON (`[]` for none) and the tls JSON (empty for
/// none).
struct Given {
    rules: String,
    tls: String,
}

/// What an apply means, by the API it came through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Chaos Mesh's ApplyHttpChaos: its controller merges every HTTPChaos of a pod itself
    /// (PodHttpChaos) and sends the whole set each time, so the pod gets exactly this set, in
    /// place of whatever it had.
    #[default]
    WholePod,
    /// Our own API: one experiment more in the pod, served beside the others.
    Beside,
}

/// One HTTP experiment in a pod: its rules and ports, and what the pod's proxy holds for every
/// experiment there (the same proxy, port and backend in each record of the pod), so that
/// recovery needs nothing but the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRecord {
    /// The rules JSON in force (as Chaos Mesh sent it; validated).
    pub rules: String,
    pub proxy_ports: Vec<u16>,
    pub backend: Backend,
    pub proxy: Option<ProcessIdentity>,
    pub port: Option<u16>,
    #[serde(default)]
    pub placement: Placement,
    /// Chaos Mesh's tls JSON (validated): its ports are intercepted as HTTPS. The journal file
    /// is the owner's only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tls: String,
}

impl FaultRecord for HttpRecord {
    const KIND: &'static str = "http";
}

impl HttpRecord {
    /// The live state, as listed.
    pub fn status(&self) -> String {
        match (self.proxy, self.port) {
            (Some(p), Some(port)) => format!(
                "proxy pid {} on port {port}, redirecting {:?}",
                p.pid, self.proxy_ports
            ),
            _ => "starting".into(),
        }
    }
}

/// The redirected ports of a pod: every port any of its experiments needs, once.
fn union_of_ports(records: &[Record<HttpRecord>]) -> Vec<u16> {
    let ports: std::collections::BTreeSet<u16> = records
        .iter()
        .flat_map(|r| r.fault.proxy_ports.iter().copied())
        .collect();
    ports.into_iter().collect()
}

/// What ApplyHttpChaos answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    InForce {
        id: String,
        proxy_pid: u32,
        started_at_ms: u64,
    },
    Removed,
}

impl Applied {
    fn of(record: &Record<HttpRecord>) -> Self {
        Applied::InForce {
            id: record.id.clone(),
            proxy_pid: record.fault.proxy.map(|p| p.pid).unwrap_or_default(),
            started_at_ms: record.started_at_ms,
        }
    }
}

#[derive(Debug)]
pub struct HttpChaos {
    journal: Journal,
    metrics: Arc<Metrics>,
    host: Arc<dyn HttpHost>,
    runner: Arc<dyn Runner>,
    ops: tokio::sync::Mutex<()>,
}

impl HttpChaos {
    pub fn new(
        journal: Journal,
        metrics: Arc<Metrics>,
        host: Arc<dyn HttpHost>,
        runner: Arc<dyn Runner>,
    ) -> Arc<Self> {
        Arc::new(Self {
            journal,
            metrics,
            host,
            runner,
            ops: tokio::sync::Mutex::new(()),
        })
    }

    /// Every HTTP record in the journal (another kind's records are not read).
    pub fn records(&self) -> Result<Vec<Record<HttpRecord>>, HttpError> {
        Ok(self.journal.list_of::<HttpRecord>()?)
    }

    /// The experiments of the pod whose network namespace is `inode`, in the order they came
    /// (which is the order their rules apply in).
    fn pod_records(&self, inode: u64) -> Result<Vec<Record<HttpRecord>>, HttpError> {
        let mut records: Vec<_> = self
            .records()?
            .into_iter()
            .filter(|r| r.namespace_inode == inode)
            .collect();
        records.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok(records)
    }

    /// An id no record has (two experiments may start in one pod within a millisecond).
    fn new_id(&self, inode: u64, now: u64) -> Result<String, HttpError> {
        let base = format!("http-{inode:x}-{now:x}");
        let mut id = base.clone();
        let mut n = 0;
        while self.journal.get(&id)?.is_some() {
            n += 1;
            id = format!("{base}-{n}");
        }
        Ok(id)
    }

    /// ApplyHttpChaos. [`Placement::WholePod`]: the pod of `container_id` gets exactly `spec`
    /// (rules and ports), live if a proxy serves it already; no rules and no ports removes
    /// every HTTP experiment of the pod. [`Placement::Beside`]: `spec` is one experiment more,
    /// served with those already there (each set of rules on its own ports; the redirect
    /// covers every port any of them needs); the same experiment again is answered as it is,
    /// and an empty one changes nothing.
    pub async fn apply(
        self: &Arc<Self>,
        container_id: &str,
        sent: Sent<'_>,
        spec: &HttpChaosSpec,
        placement: Placement,
    ) -> Result<Applied, HttpError> {
        let _one_at_a_time = self.ops.lock().await;
        let pid =
            self.host
                .locate(container_id)
                .await?
                .ok_or_else(|| HttpError::InvalidArgument {
                    field: "container_id",
                    reason: format!("{container_id} is not running"),
                })?;
        let inode = self.host.netns_inode(pid)?;
        let in_pod = self.pod_records(inode)?;
        if spec.removes() {
            if placement == Placement::WholePod && !in_pod.is_empty() {
                self.end_pod(&in_pod).await?;
            }
            return Ok(Applied::Removed);
        }
        if self.host.is_host_netns(inode) {
            return Err(HttpError::HostNetwork {
                target: format!("{container_id} (process {pid})"),
            });
        }
        let given = Given {
            rules: if spec.rules.is_empty() {
                "[]".to_owned()
            } else {
                sent.rules.to_owned()
            },
            tls: if spec.tls.is_some() {
                sent.tls.to_owned()
            } else {
                String::new()
            },
        };
        if in_pod.is_empty() {
            return self
                .start(container_id, pid, inode, given, spec, placement)
                .await;
        }
        match placement {
            Placement::Beside => {
                let same = in_pod.iter().find(|r| {
                    r.fault.placement == Placement::Beside
                        && r.fault.rules == given.rules
                        && r.fault.proxy_ports == spec.proxy_ports
                        && r.fault.tls == given.tls
                });
                if let Some(same) = same {
                    return Ok(Applied::of(same));
                }
                let mut sets: Vec<(&[u16], Option<&str>)> = in_pod
                    .iter()
                    .map(|r| (r.fault.proxy_ports.as_slice(), Some(r.fault.tls.as_str())))
                    .collect();
                sets.push((&spec.proxy_ports, Some(given.tls.as_str())));
                if let Some((i, _)) = http_chaos::control::tls_conflict(&sets) {
                    return Err(HttpError::InvalidArgument {
                        field: "tls",
                        reason: format!(
                            "experiment {} intercepts a port of this one {}; one port is served one way",
                            in_pod[i].id,
                            if in_pod[i].fault.tls.is_empty() {
                                "as plain HTTP"
                            } else {
                                "with another certificate"
                            }
                        ),
                    });
                }
                self.add(container_id, pid, inode, in_pod, given, spec)
                    .await
            }
            Placement::WholePod => {
                self.replace(container_id, pid, inode, in_pod, given, spec)
                    .await
            }
        }
    }

    /// The first experiment in a pod: a proxy, its rules, the redirect.
    async fn start(
        self: &Arc<Self>,
        container_id: &str,
        pid: u32,
        inode: u64,
        given: Given,
        spec: &HttpChaosSpec,
        placement: Placement,
    ) -> Result<Applied, HttpError> {
        let backend = iptables::detect_backend(&*self.runner, pid).await?;
        let now = now_ms();
        let mut record = Record {
            id: self.new_id(inode, now)?,
            started_at_ms: now,
            deadline_ms: None,
            container_id: container_id.to_owned(),
            target: self.host.identity(pid)?,
            namespace_inode: inode,
            fault: HttpRecord {
                rules: given.rules,
                proxy_ports: spec.proxy_ports.clone(),
                backend,
                proxy: None,
                port: None,
                placement,
                tls: given.tls,
            },
        };
        self.journal.write(&record)?;
        let started = match self.host.start_proxy(pid, redirect::RELAY_MARK).await {
            Ok(started) => started,
            Err(err) => {
                self.journal.remove(&record.id)?;
                return Err(err);
            }
        };
        record.fault.proxy = Some(started.identity);
        record.fault.port = Some(started.port);
        let in_force = async {
            self.journal.write(&record)?;
            self.host
                .set_in_force(
                    &started.identity,
                    &control_line(std::slice::from_ref(&record))?,
                )
                .await?;
            redirect::install(
                &*self.runner,
                pid,
                backend,
                &union_of_ports(std::slice::from_ref(&record)),
                started.port,
                true,
            )
            .await?;
            Ok::<_, HttpError>(())
        };
        if let Err(err) = in_force.await {
            if let Err(undo) = self.end_pod(std::slice::from_ref(&record)).await {
                tracing::error!(id = %record.id, %undo, "undoing a failed HTTPChaos failed; the journal keeps the record");
            }
            return Err(err);
        }
        self.metrics.injected(HttpRecord::KIND);
        tracing::info!(id = %record.id, container = container_id, proxy = started.identity.pid, port = started.port, "HTTP chaos in force");
        self.watch(started.identity, started.exited);
        Ok(Applied::of(&record))
    }

    /// Puts exactly `records` in force through the pod's proxy: their rule sets, in order,
    /// then the redirect of every port they need.
    async fn put_in_force(
        &self,
        pid: u32,
        records: &[Record<HttpRecord>],
    ) -> Result<(), HttpError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let (Some(proxy), Some(port)) = (first.fault.proxy, first.fault.port) else {
            return Err(HttpError::Proxy("the proxy never started".into()));
        };
        self.host
            .set_in_force(&proxy, &control_line(records)?)
            .await?;
        redirect::install(
            &*self.runner,
            pid,
            first.fault.backend,
            &union_of_ports(records),
            port,
            false,
        )
        .await?;
        Ok(())
    }

    /// One experiment more beside those of the pod. Journaled first: recovering it alone puts
    /// the pod back to the others.
    async fn add(
        &self,
        container_id: &str,
        pid: u32,
        inode: u64,
        in_pod: Vec<Record<HttpRecord>>,
        given: Given,
        spec: &HttpChaosSpec,
    ) -> Result<Applied, HttpError> {
        let shared = &in_pod[0].fault;
        let now = now_ms();
        let record = Record {
            id: self.new_id(inode, now)?,
            started_at_ms: now,
            deadline_ms: None,
            container_id: container_id.to_owned(),
            target: self.host.identity(pid)?,
            namespace_inode: inode,
            fault: HttpRecord {
                rules: given.rules,
                proxy_ports: spec.proxy_ports.clone(),
                backend: shared.backend,
                proxy: shared.proxy,
                port: shared.port,
                placement: Placement::Beside,
                tls: given.tls,
            },
        };
        self.journal.write(&record)?;
        let mut after = in_pod.clone();
        after.push(record.clone());
        if let Err(err) = self.put_in_force(pid, &after).await {
            match self.put_in_force(pid, &in_pod).await {
                Ok(()) => self.journal.remove(&record.id)?,
                Err(undo) => {
                    tracing::error!(id = %record.id, %undo, "the pod's other HTTP experiments could not be put back; ending them all");
                    self.end_pod(&after).await?;
                }
            }
            return Err(err);
        }
        self.metrics.injected(HttpRecord::KIND);
        tracing::info!(id = %record.id, container = container_id, beside = in_pod.len(), "HTTP chaos in force beside the pod's other experiments");
        Ok(Applied::of(&record))
    }

    /// Chaos Mesh's whole set for a pod that has experiments: its own record (Chaos Mesh's
    /// earlier set) changed live, every other one ended.
    async fn replace(
        &self,
        container_id: &str,
        pid: u32,
        inode: u64,
        in_pod: Vec<Record<HttpRecord>>,
        given: Given,
        spec: &HttpChaosSpec,
    ) -> Result<Applied, HttpError> {
        let mut record = match in_pod
            .iter()
            .find(|r| r.fault.placement == Placement::WholePod)
        {
            Some(own) => own.clone(),
            None => {
                let now = now_ms();
                Record {
                    id: self.new_id(inode, now)?,
                    started_at_ms: now,
                    deadline_ms: None,
                    container_id: container_id.to_owned(),
                    target: self.host.identity(pid)?,
                    namespace_inode: inode,
                    fault: HttpRecord {
                        placement: Placement::WholePod,
                        ..in_pod[0].fault.clone()
                    },
                }
            }
        };
        record.fault.rules = given.rules;
        record.fault.proxy_ports = spec.proxy_ports.clone();
        record.fault.tls = given.tls;
        self.put_in_force(pid, std::slice::from_ref(&record))
            .await?;
        // Journaled after it is in force: every record of the pod covers its redirect and its
        // proxy, which is all a recovery of the whole pod undoes.
        self.journal.write(&record)?;
        for other in in_pod.iter().filter(|r| r.id != record.id) {
            self.journal.remove(&other.id)?;
            self.metrics.recovered(HttpRecord::KIND);
        }
        if !in_pod.iter().any(|r| r.id == record.id) {
            self.metrics.injected(HttpRecord::KIND);
        }
        Ok(Applied::of(&record))
    }

    /// Ends experiment `id` by itself after `duration` (journaled as its deadline).
    pub fn recover_after(
        self: &Arc<Self>,
        id: &str,
        duration: std::time::Duration,
    ) -> Result<(), HttpError> {
        if let Some(mut record) = self.journal.get_as::<HttpRecord>(id)? {
            record.deadline_ms = Some(now_ms() + duration.as_millis() as u64);
            self.journal.write(&record)?;
        }
        let kind: Arc<dyn FaultKind> = Arc::clone(self) as Arc<dyn FaultKind>;
        fault_kinds::recover_at_deadline(kind, self.journal.clone(), id.to_owned(), duration);
        Ok(())
    }

    /// A proxy that dies takes its redirect with it at once, and every experiment it served:
    /// traffic flows directly again.
    fn watch(
        self: &Arc<Self>,
        proxy: ProcessIdentity,
        exited: tokio::sync::oneshot::Receiver<String>,
    ) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let said = exited.await.unwrap_or_else(|_| "gone".into());
            let _one_at_a_time = this.ops.lock().await;
            let served: Vec<_> = match this.records() {
                Ok(records) => records
                    .into_iter()
                    .filter(|r| r.fault.proxy == Some(proxy))
                    .collect(),
                Err(err) => {
                    tracing::error!(pid = proxy.pid, %err, "the HTTP proxy exited and the journal cannot be read");
                    return;
                }
            };
            if served.is_empty() {
                return;
            }
            match this.end_pod(&served).await {
                Ok(()) => {
                    tracing::warn!(pid = proxy.pid, %said, experiments = served.len(), "the HTTP proxy exited; its redirect was removed and its experiments ended")
                }
                Err(err) => {
                    tracing::error!(pid = proxy.pid, %err, "the HTTP proxy exited and removing its redirect failed")
                }
            }
        });
    }

    pub async fn recover(&self, id: &str) -> Result<(), HttpError> {
        let _one_at_a_time = self.ops.lock().await;
        if self.journal.get_as::<HttpRecord>(id)?.is_none() {
            return Err(HttpError::InvalidArgument {
                field: "id",
                reason: format!("no HTTP experiment {id}"),
            });
        }
        self.recover_id(id).await
    }

    /// Ends experiment `id` as the journal has it now (a recovery of its whole pod may have
    /// ended it already): the others of its pod stay in force, narrowed to their own rules and
    /// ports; the last one takes the redirect and the proxy with it. Where the others cannot
    /// be kept (the proxy is not this agent's, after a restart; iptables fails), every
    /// experiment of the pod ends: a pod is never left with a half-known redirect.
    async fn recover_id(&self, id: &str) -> Result<(), HttpError> {
        let Some(record) = self.journal.get_as::<HttpRecord>(id)? else {
            return Ok(());
        };
        let in_pod = self.pod_records(record.namespace_inode)?;
        let rest: Vec<_> = in_pod.iter().filter(|r| r.id != id).cloned().collect();
        if !rest.is_empty() {
            let narrowed = match self
                .host
                .process_in_netns(record.namespace_inode, record.target.pid)
            {
                Some(pid) => self.put_in_force(pid, &rest).await,
                None => Err(HttpError::Proxy("no process is left in the pod".into())),
            };
            match narrowed {
                Ok(()) => {
                    self.journal.remove(id)?;
                    self.metrics.recovered(HttpRecord::KIND);
                    tracing::info!(%id, container = %record.container_id, remaining = rest.len(), "HTTP fault recovered; the pod's other experiments stay");
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(%id, %err, others = rest.len(), "the pod's other HTTP experiments cannot be kept alone; ending them all");
                }
            }
        }
        self.end_pod(&in_pod).await
    }

    /// Ends every experiment in `records` (those of one pod): the redirect first, then the
    /// proxy, then the records.
    async fn end_pod(&self, records: &[Record<HttpRecord>]) -> Result<(), HttpError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        if let Some(pid) = self
            .host
            .process_in_netns(first.namespace_inode, first.target.pid)
        {
            redirect::remove(&*self.runner, pid, first.fault.backend).await?;
        }
        let mut stopped = Vec::new();
        for proxy in records.iter().filter_map(|r| r.fault.proxy) {
            if !stopped.contains(&proxy) {
                self.host.stop_proxy(&proxy).await;
                stopped.push(proxy);
            }
        }
        for record in records {
            self.journal.remove(&record.id)?;
            self.metrics.recovered(HttpRecord::KIND);
            tracing::info!(id = %record.id, container = %record.container_id, "HTTP fault recovered");
        }
        Ok(())
    }
}

/// The proxy's control line for `records`: each one's rule set on its own ports, in order.
fn control_line(records: &[Record<HttpRecord>]) -> Result<String, HttpError> {
    Ok(http_chaos::control::line(records.iter().map(|r| {
        (
            r.fault.proxy_ports.as_slice(),
            r.fault.rules.as_str(),
            r.fault.tls.as_str(),
        )
    }))?)
}

#[tonic::async_trait]
impl FaultKind for HttpChaos {
    fn kind(&self) -> &'static str {
        HttpRecord::KIND
    }

    fn noun(&self) -> &'static str {
        "an HTTP fault"
    }

    async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
        let _one_at_a_time = self.ops.lock().await;
        Ok(self.recover_id(&record.id).await?)
    }

    async fn list(&self) -> Vec<ExperimentView> {
        match self.records() {
            Ok(records) => records
                .into_iter()
                .map(|record| ExperimentView {
                    record: record.with_fault(()),
                    kind: HttpRecord::KIND,
                    rules: record.fault.rules.clone(),
                    volume: String::new(),
                    status: record.fault.status(),
                    handover: None,
                })
                .collect(),
            Err(err) => {
                tracing::error!(%err, "the journal cannot be read: HTTP experiments not listed");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests;
