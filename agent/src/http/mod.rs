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
    #[error(
        "the pod of {container} already has HTTP chaos {id} with other rules; recover it first"
    )]
    AlreadyActive { container: String, id: String },
    #[error("tls: HTTPS interception is not supported yet; nothing was changed")]
    TlsUnsupported,
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
            HttpError::TlsUnsupported => Code::Unimplemented,
            HttpError::AlreadyActive { .. } => Code::AlreadyExists,
            HttpError::Runtime(e) => e.code(),
            HttpError::Network(e) => e.code(),
            HttpError::Proxy(_) | HttpError::Journal(_) => Code::Internal,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::Spec(_) | HttpError::InvalidArgument { .. } => "invalid_argument",
            HttpError::HostNetwork { .. } => "host_network",
            HttpError::TlsUnsupported => "unimplemented",
            HttpError::AlreadyActive { .. } => "busy",
            HttpError::Proxy(_) => "proxy",
            HttpError::Runtime(_) => "runtime",
            HttpError::Network(e) => e.reason(),
            HttpError::Journal(_) => "journal",
        }
    }
}

/// What an HTTP fault holds in a pod, with all its recovery needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRecord {
    /// The rules JSON in force (as Chaos Mesh sent it; validated).
    pub rules: String,
    pub proxy_ports: Vec<u16>,
    pub backend: Backend,
    pub proxy: Option<ProcessIdentity>,
    pub port: Option<u16>,
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

    /// ApplyHttpChaos: the pod of `container_id` gets exactly `spec` (rules and ports), live
    /// if a proxy serves it already; no rules and no ports removes. `exclusive` (our own API):
    /// an experiment with other rules in the pod is not replaced but refused, and the same one
    /// again is answered as it is.
    pub async fn apply(
        self: &Arc<Self>,
        container_id: &str,
        rules_json: &str,
        spec: &HttpChaosSpec,
        exclusive: bool,
    ) -> Result<Applied, HttpError> {
        if spec.tls.is_some() {
            return Err(HttpError::TlsUnsupported);
        }
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
        let existing = self
            .records()?
            .into_iter()
            .find(|r| r.namespace_inode == inode);
        if spec.removes() {
            if let Some(record) = existing {
                self.recover_record(&record).await?;
            }
            return Ok(Applied::Removed);
        }
        if self.host.is_host_netns(inode) {
            return Err(HttpError::HostNetwork {
                target: format!("{container_id} (process {pid})"),
            });
        }
        let rules_json = if spec.rules.is_empty() {
            "[]".to_owned()
        } else {
            rules_json.to_owned()
        };
        if let Some(mut record) = existing {
            if exclusive {
                let http = &record.fault;
                if http.rules == rules_json && http.proxy_ports == spec.proxy_ports {
                    return Ok(Applied::InForce {
                        id: record.id.clone(),
                        proxy_pid: http.proxy.map(|p| p.pid).unwrap_or_default(),
                        started_at_ms: record.started_at_ms,
                    });
                }
                return Err(HttpError::AlreadyActive {
                    container: container_id.into(),
                    id: record.id,
                });
            }
            return self.update(&mut record, pid, &rules_json, spec).await;
        }
        let backend = iptables::detect_backend(&*self.runner, pid).await?;
        let now = now_ms();
        let mut record = Record {
            id: format!("http-{inode:x}-{now:x}"),
            started_at_ms: now,
            deadline_ms: None,
            container_id: container_id.to_owned(),
            target: self.host.identity(pid)?,
            namespace_inode: inode,
            fault: HttpRecord {
                rules: rules_json.clone(),
                proxy_ports: spec.proxy_ports.clone(),
                backend,
                proxy: None,
                port: None,
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
            self.host.set_rules(&started.identity, &rules_json).await?;
            redirect::install(
                &*self.runner,
                pid,
                backend,
                &spec.proxy_ports,
                started.port,
                true,
            )
            .await?;
            Ok::<_, HttpError>(())
        };
        if let Err(err) = in_force.await {
            if let Err(undo) = self.recover_record(&record).await {
                tracing::error!(id = %record.id, %undo, "undoing a failed HTTPChaos failed; the journal keeps the record");
            }
            return Err(err);
        }
        self.metrics.injected(HttpRecord::KIND);
        tracing::info!(id = %record.id, container = container_id, proxy = started.identity.pid, port = started.port, "HTTP chaos in force");
        self.watch(record.id.clone(), started.exited);
        Ok(Applied::InForce {
            id: record.id,
            proxy_pid: started.identity.pid,
            started_at_ms: now,
        })
    }

    async fn update(
        &self,
        record: &mut Record<HttpRecord>,
        pid: u32,
        rules_json: &str,
        spec: &HttpChaosSpec,
    ) -> Result<Applied, HttpError> {
        let http = &mut record.fault;
        let (Some(proxy), Some(port)) = (http.proxy, http.port) else {
            return Err(HttpError::Proxy("the proxy never started".into()));
        };
        self.host.set_rules(&proxy, rules_json).await?;
        if http.proxy_ports != spec.proxy_ports {
            redirect::install(
                &*self.runner,
                pid,
                http.backend,
                &spec.proxy_ports,
                port,
                false,
            )
            .await?;
        }
        http.rules = rules_json.to_owned();
        http.proxy_ports = spec.proxy_ports.clone();
        // Journaled after it is in force: the record already covers the redirect and the
        // proxy, which is all recovery undoes.
        self.journal.write(record)?;
        Ok(Applied::InForce {
            id: record.id.clone(),
            proxy_pid: proxy.pid,
            started_at_ms: record.started_at_ms,
        })
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

    /// A proxy that dies takes its redirect with it at once: traffic flows directly again.
    fn watch(self: &Arc<Self>, id: String, exited: tokio::sync::oneshot::Receiver<String>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let said = exited.await.unwrap_or_else(|_| "gone".into());
            match this.recover(&id).await {
                Ok(()) => {
                    tracing::warn!(%id, %said, "the HTTP proxy exited; its redirect was removed and the experiment ended")
                }
                Err(HttpError::InvalidArgument { .. }) => {}
                Err(err) => {
                    tracing::error!(%id, %err, "the HTTP proxy exited and removing its redirect failed")
                }
            }
        });
    }

    pub async fn recover(&self, id: &str) -> Result<(), HttpError> {
        let _one_at_a_time = self.ops.lock().await;
        let record =
            self.journal
                .get_as::<HttpRecord>(id)?
                .ok_or_else(|| HttpError::InvalidArgument {
                    field: "id",
                    reason: format!("no HTTP experiment {id}"),
                })?;
        self.recover_record(&record).await
    }

    async fn recover_record(&self, record: &Record<HttpRecord>) -> Result<(), HttpError> {
        let http = &record.fault;
        if let Some(pid) = self
            .host
            .process_in_netns(record.namespace_inode, record.target.pid)
        {
            redirect::remove(&*self.runner, pid, http.backend).await?;
        }
        if let Some(proxy) = &http.proxy {
            self.host.stop_proxy(proxy).await;
        }
        self.journal.remove(&record.id)?;
        self.metrics.recovered(HttpRecord::KIND);
        tracing::info!(id = %record.id, container = %record.container_id, "HTTP fault recovered");
        Ok(())
    }
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
        let record = record.decode::<HttpRecord>()?;
        let _one_at_a_time = self.ops.lock().await;
        Ok(self.recover_record(&record).await?)
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
