//! DNS faults, two ways in:
//! - `SetDNSServer` (Chaos Mesh's chaos-daemon rpc): the container's /etc/resolv.conf points
//!   at another server (every `nameserver` line rewritten, the original kept in
//!   /etc/resolv.conf.chaos.bak and in our record) and is restored byte for byte.
//! - our DNSChaos: a `faultline-dns-responder` in the pod's network namespace answers the names
//!   the patterns cover as the action says and relays the rest to the pod's own nameservers; a
//!   nat redirect of UDP/TCP port 53 towards those nameservers brings it every query, whether
//!   or not the application re-reads resolv.conf (which stays untouched).
//!
//! Each is a pipeline: request → typed spec (parsed at the edge) → plan → journal → apply; the
//! record ([`DnsRecord`]) alone drives recovery, the same code for an explicit recover, a dying
//! responder, shutdown and start-up. The node is reached through [`host::DnsHost`] and the
//! network module's iptables [`Runner`].

pub mod error;
pub mod host;
pub mod redirect;
pub mod resolv_conf;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dns_responder::{DnsAction, ResponderSpec};
use serde::{Deserialize, Serialize};

pub use error::DnsError;
use host::{DnsHost, ResponderLaunch};

use crate::clock::now_ms;
use crate::error::AgentError;
use crate::fault_kinds::{self, ExperimentView, FaultKind};
use crate::journal::{FaultRecord, Journal, ProcessIdentity, Record, StoredRecord};
use crate::metrics::Metrics;
use crate::network::iptables::{self, Backend};
use crate::network::runner::Runner;

/// What a DNS fault changed, with all its recovery needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum DnsRecord {
    /// SetDNSServer: resolv.conf names `server` instead of its nameservers.
    ResolvConf {
        server: IpAddr,
        /// The file as it was, restored byte for byte.
        original: Vec<u8>,
    },
    /// Our responder and the redirect to it.
    Responder {
        action: DnsAction,
        patterns: Vec<String>,
        /// The pod's nameservers the redirect covers and the responder relays to (IPv4 and
        /// IPv6; records written before IPv6 read the same).
        upstreams: Vec<IpAddr>,
        backend: Backend,
        /// Once it is serving.
        responder: Option<ProcessIdentity>,
        port: Option<u16>,
    },
}

impl FaultRecord for DnsRecord {
    const KIND: &'static str = "dns";
}

impl DnsRecord {
    /// The live state, as listed.
    pub fn status(&self) -> String {
        match self {
            DnsRecord::Responder {
                responder: Some(p),
                port,
                ..
            } => format!(
                "responder pid {} on 127.0.0.1:{}",
                p.pid,
                port.unwrap_or_default()
            ),
            DnsRecord::Responder { .. } => "starting".into(),
            DnsRecord::ResolvConf { .. } => "resolv.conf rewritten".into(),
        }
    }

    pub fn summary(&self) -> String {
        match self {
            DnsRecord::ResolvConf { server, .. } => format!("resolv.conf → nameserver {server}"),
            DnsRecord::Responder {
                action,
                patterns,
                upstreams,
                ..
            } => format!(
                "{} on {} (relaying to {})",
                action.name(),
                if patterns.is_empty() {
                    "every name".to_owned()
                } else {
                    patterns.join(", ")
                },
                upstreams
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A DNSChaos request, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsChaosSpec {
    pub container_id: String,
    pub responder: ResponderSpec,
    pub duration: Option<Duration>,
}

/// What a started DNSChaos looks like to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    pub responder_pid: u32,
    pub started_at_ms: u64,
    pub upstreams: Vec<IpAddr>,
    pub backend: Backend,
}

#[derive(Debug)]
pub struct DnsChaos {
    journal: Journal,
    metrics: Arc<Metrics>,
    host: Arc<dyn DnsHost>,
    runner: Arc<dyn Runner>,
    /// DNS requests are rare: one at a time keeps backup and record consistent.
    ops: tokio::sync::Mutex<()>,
}

impl DnsChaos {
    pub fn new(
        journal: Journal,
        metrics: Arc<Metrics>,
        host: Arc<dyn DnsHost>,
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

    /// Every DNS record in the journal (another kind's records are not read).
    pub fn records(&self) -> Result<Vec<Record<DnsRecord>>, DnsError> {
        Ok(self.journal.list_of::<DnsRecord>()?)
    }

    /// `SetDNSServer` as chaos-daemon serves it. `enable`: back the file up unless a backup
    /// exists, then point every nameserver line at `dns_server` (an IP address). `!enable`:
    /// put the backup back, if there is one (else nothing, as chaos-daemon's `|| true`).
    pub async fn set_dns_server(
        &self,
        container_id: &str,
        dns_server: &str,
        enable: bool,
    ) -> Result<(), DnsError> {
        let server = if enable {
            Some(
                dns_server
                    .parse::<IpAddr>()
                    .map_err(|_| DnsError::InvalidArgument {
                        field: "dns_server",
                        reason: format!("{dns_server:?} is not an IP address"),
                    })?,
            )
        } else {
            None
        };
        let _one_at_a_time = self.ops.lock().await;
        let pid =
            self.host
                .locate(container_id)
                .await?
                .ok_or_else(|| DnsError::InvalidArgument {
                    field: "container_id",
                    reason: format!("{container_id} is not running"),
                })?;
        let existing = self.records()?.into_iter().find(|r| {
            r.container_id == container_id && matches!(r.fault, DnsRecord::ResolvConf { .. })
        });
        let Some(server) = server else {
            return match existing {
                Some(record) => self.recover_record(&record).await,
                None => restore_from_backup(&*self.host, pid, None),
            };
        };
        let current =
            self.host
                .read(pid, resolv_conf::PATH)?
                .ok_or_else(|| DnsError::MissingFile {
                    path: resolv_conf::PATH.into(),
                    container: container_id.into(),
                })?;
        // The first backup is the original (chaos-daemon: `ls BAK || cp FILE BAK`).
        let original = if self.host.create_new(pid, resolv_conf::BACKUP, &current)? {
            current.clone()
        } else {
            match &existing {
                Some(Record {
                    fault: DnsRecord::ResolvConf { original, .. },
                    ..
                }) => original.clone(),
                Some(_) => current.clone(),
                None => self
                    .host
                    .read(pid, resolv_conf::BACKUP)?
                    .unwrap_or_else(|| current.clone()),
            }
        };
        let now = now_ms();
        let record = Record {
            id: existing
                .as_ref()
                .map(|r| r.id.clone())
                .unwrap_or_else(|| format!("dns-conf-{pid:x}-{now:x}")),
            started_at_ms: existing.as_ref().map_or(now, |r| r.started_at_ms),
            deadline_ms: None,
            container_id: container_id.to_owned(),
            target: self.host.identity(pid)?,
            namespace_inode: self.host.netns_inode(pid)?,
            fault: DnsRecord::ResolvConf { server, original },
        };
        self.journal.write(&record)?;
        if let Err(err) = self.host.overwrite(
            pid,
            resolv_conf::PATH,
            &resolv_conf::point_at(&current, server),
        ) {
            if let Err(undo) = self.recover_record(&record).await {
                tracing::error!(id = %record.id, %undo, "undoing a failed SetDNSServer failed; the journal keeps the record");
            }
            return Err(err);
        }
        if existing.is_none() {
            self.metrics.injected(DnsRecord::KIND);
        }
        tracing::info!(id = %record.id, container = container_id, %server, "resolv.conf points at the chaos DNS server");
        Ok(())
    }

    /// Starts our DNSChaos on the pod of `spec.container_id`.
    pub async fn start(self: &Arc<Self>, spec: &DnsChaosSpec) -> Result<Started, DnsError> {
        let _one_at_a_time = self.ops.lock().await;
        let container = spec.container_id.as_str();
        let pid = self
            .host
            .locate(container)
            .await?
            .ok_or_else(|| DnsError::InvalidArgument {
                field: "container_id",
                reason: format!("{container} is not running"),
            })?;
        let inode = self.host.netns_inode(pid)?;
        if self.host.is_host_netns(inode) {
            return Err(DnsError::HostNetwork {
                target: format!("{container} (process {pid})"),
            });
        }
        if let Some(other) = self
            .records()?
            .into_iter()
            .find(|r| r.namespace_inode == inode && matches!(r.fault, DnsRecord::Responder { .. }))
        {
            // The same experiment again (a retried call, or a second container of the pod):
            // it is in force already.
            if let DnsRecord::Responder {
                action,
                patterns,
                upstreams,
                backend,
                responder: Some(responder),
                ..
            } = &other.fault
                && *action == spec.responder.action
                && *patterns == spec.responder.pattern_strings()
            {
                return Ok(Started {
                    id: other.id.clone(),
                    responder_pid: responder.pid,
                    started_at_ms: other.started_at_ms,
                    upstreams: upstreams.clone(),
                    backend: *backend,
                });
            }
            return Err(DnsError::AlreadyActive {
                container: container.into(),
                id: other.id,
            });
        }
        let conf =
            self.host
                .read(pid, resolv_conf::PATH)?
                .ok_or_else(|| DnsError::MissingFile {
                    path: resolv_conf::PATH.into(),
                    container: container.into(),
                })?;
        let all = resolv_conf::nameservers(&conf);
        // A loopback nameserver (a local stub resolver) is the pod's own business: not covered.
        let upstreams: Vec<IpAddr> = all.iter().copied().filter(|ip| !ip.is_loopback()).collect();
        if upstreams.is_empty() {
            return Err(DnsError::NoNameserver {
                container: container.into(),
                found: format!("{all:?}"),
            });
        }
        let backend = iptables::detect_backend(&*self.runner, pid).await?;
        let now = now_ms();
        let mut record = Record {
            id: format!("dns-{inode:x}-{now:x}"),
            started_at_ms: now,
            deadline_ms: spec.duration.map(|d| now + d.as_millis() as u64),
            container_id: container.to_owned(),
            target: self.host.identity(pid)?,
            namespace_inode: inode,
            fault: DnsRecord::Responder {
                action: spec.responder.action,
                patterns: spec.responder.pattern_strings(),
                upstreams: upstreams.clone(),
                backend,
                responder: None,
                port: None,
            },
        };
        self.journal.write(&record)?;
        let launch = ResponderLaunch {
            spec: spec.responder.clone(),
            upstreams: upstreams.clone(),
            mark: redirect::RELAY_MARK,
        };
        let started = match self.host.start_responder(pid, &launch).await {
            Ok(started) => started,
            Err(err) => {
                self.journal.remove(&record.id)?;
                return Err(err);
            }
        };
        if let DnsRecord::Responder {
            responder, port, ..
        } = &mut record.fault
        {
            *responder = Some(started.identity);
            *port = Some(started.port);
        }
        let installed = match self.journal.write(&record) {
            Ok(()) => redirect::install(&*self.runner, pid, backend, &upstreams, started.port)
                .await
                .map_err(DnsError::from),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = installed {
            if let Err(undo) = self.recover_record(&record).await {
                tracing::error!(id = %record.id, %undo, "undoing a failed DNSChaos failed; the journal keeps the record");
            }
            return Err(err);
        }
        self.metrics.injected(DnsRecord::KIND);
        tracing::info!(id = %record.id, container, responder = started.identity.pid, port = started.port, backend = backend.name(), "DNS chaos in force");
        self.watch(record.id.clone(), started.exited);
        if let Some(duration) = spec.duration {
            self.recover_after(record.id.clone(), duration);
        }
        Ok(Started {
            id: record.id,
            responder_pid: started.identity.pid,
            started_at_ms: now,
            upstreams,
            backend,
        })
    }

    /// A responder that dies takes its redirect with it at once: the pod's queries go to its
    /// nameservers directly again instead of into a closed port.
    fn watch(self: &Arc<Self>, id: String, exited: tokio::sync::oneshot::Receiver<String>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let said = exited.await.unwrap_or_else(|_| "gone".into());
            match this.recover(&id).await {
                Ok(()) => {
                    tracing::warn!(%id, %said, "the DNS responder exited; its redirect was removed and the experiment ended")
                }
                Err(DnsError::InvalidArgument { .. }) => {} // recovered already
                Err(err) => {
                    tracing::error!(%id, %err, "the DNS responder exited and removing its redirect failed")
                }
            }
        });
    }

    /// The end of a duration: recovered as the journal then says (its deadline).
    fn recover_after(self: &Arc<Self>, id: String, duration: Duration) {
        let kind: Arc<dyn FaultKind> = Arc::clone(self) as Arc<dyn FaultKind>;
        fault_kinds::recover_at_deadline(kind, self.journal.clone(), id, duration);
    }

    /// Recovers one experiment from its journal record. An id that is not (or no longer) in
    /// the journal is `InvalidArgument` naming it.
    pub async fn recover(&self, id: &str) -> Result<(), DnsError> {
        let _one_at_a_time = self.ops.lock().await;
        let record =
            self.journal
                .get_as::<DnsRecord>(id)?
                .ok_or_else(|| DnsError::InvalidArgument {
                    field: "id",
                    reason: format!("no DNS experiment {id}"),
                })?;
        self.recover_record(&record).await
    }

    /// Undoes what `record` says was done and forgets it. What is already gone (the
    /// container, the pod, the responder) needs no undoing.
    async fn recover_record(&self, record: &Record<DnsRecord>) -> Result<(), DnsError> {
        match &record.fault {
            DnsRecord::ResolvConf { original, .. } => {
                let pid = if self.host.is_alive(&record.target) {
                    Some(record.target.pid)
                } else {
                    // A restarted container keeps the pod's resolv.conf (a bind mount of the
                    // sandbox's file), so the rewrite outlives it: restore through the new one.
                    self.host.locate(&record.container_id).await?
                };
                if let Some(pid) = pid {
                    restore_from_backup(&*self.host, pid, Some(original))?;
                }
            }
            DnsRecord::Responder {
                backend,
                responder,
                upstreams,
                ..
            } => {
                // The redirect first: with the responder gone and the redirect in place, the
                // pod's queries would meet a closed port.
                if let Some(pid) = self
                    .host
                    .process_in_netns(record.namespace_inode, record.target.pid)
                {
                    let ipv6 = upstreams.iter().any(IpAddr::is_ipv6);
                    redirect::remove(&*self.runner, pid, *backend, ipv6).await?;
                }
                if let Some(responder) = responder {
                    self.host.stop_responder(responder).await;
                }
            }
        }
        self.journal.remove(&record.id)?;
        self.metrics.recovered(DnsRecord::KIND);
        tracing::info!(id = %record.id, container = %record.container_id, "DNS fault recovered");
        Ok(())
    }
}

#[tonic::async_trait]
impl FaultKind for DnsChaos {
    fn kind(&self) -> &'static str {
        DnsRecord::KIND
    }

    fn noun(&self) -> &'static str {
        "a DNS fault"
    }

    async fn recover(&self, record: &StoredRecord) -> Result<(), AgentError> {
        let record = record.decode::<DnsRecord>()?;
        let _one_at_a_time = self.ops.lock().await;
        Ok(self.recover_record(&record).await?)
    }

    async fn list(&self) -> Vec<ExperimentView> {
        match self.records() {
            Ok(records) => records
                .into_iter()
                .map(|record| ExperimentView {
                    record: record.with_fault(()),
                    kind: DnsRecord::KIND,
                    rules: record.fault.summary(),
                    volume: String::new(),
                    status: record.fault.status(),
                    handover: None,
                })
                .collect(),
            Err(err) => {
                tracing::error!(%err, "the journal cannot be read: DNS experiments not listed");
                Vec::new()
            }
        }
    }
}

/// Puts resolv.conf back: from the backup in the container if there is one (what chaos-daemon
/// does), else from the record; then removes the backup, so a later experiment backs up the
/// file as it is then.
fn restore_from_backup(
    host: &dyn DnsHost,
    pid: u32,
    recorded: Option<&Vec<u8>>,
) -> Result<(), DnsError> {
    let original = match host.read(pid, resolv_conf::BACKUP)? {
        Some(backup) => Some(backup),
        None => recorded.cloned(),
    };
    if let Some(original) = original {
        host.overwrite(pid, resolv_conf::PATH, &original)?;
    }
    host.remove(pid, resolv_conf::BACKUP)
}

#[cfg(test)]
mod tests;
