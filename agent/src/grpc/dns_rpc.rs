//! The DNS rpcs, as thin as possible: parse the request into the DNS module's spec, call it,
//! shape the answer.

use std::time::Duration;

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;

use crate::dns::{DnsChaos, DnsChaosSpec, DnsRecord};
use crate::error::AgentError;
use crate::journal::Fault;

pub async fn set_dns_server(
    dns: &DnsChaos,
    request: pb::SetDnsServerRequest,
) -> Result<(), AgentError> {
    // enterNS is always true from Chaos Mesh's controller; the file is always the one in the
    // container's root (openat2 RESOLVE_IN_ROOT), never the node's.
    dns.set_dns_server(&request.container_id, &request.dns_server, request.enable)
        .await?;
    Ok(())
}

pub async fn start(
    dns: &std::sync::Arc<DnsChaos>,
    request: api::StartDnsExperimentRequest,
) -> Result<api::StartDnsExperimentResponse, AgentError> {
    let spec = DnsChaosSpec {
        responder: dns_responder::ResponderSpec::parse(&request.action, &request.patterns)
            .map_err(crate::dns::DnsError::from)?,
        container_id: request.container_id,
        duration: (request.duration_ms > 0).then(|| Duration::from_millis(request.duration_ms)),
    };
    let started = dns.start(&spec).await?;
    Ok(api::StartDnsExperimentResponse {
        plan: format!(
            "{} on {} in the pod of {}: responder pid {}, relaying to {}, redirect through iptables-{}",
            spec.responder.action.name(),
            if spec.responder.patterns.is_empty() {
                "every name".to_owned()
            } else {
                spec.responder.pattern_strings().join(", ")
            },
            spec.container_id,
            started.responder_pid,
            started
                .upstreams
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            started.backend.name()
        ),
        id: started.id,
        responder_pid: started.responder_pid,
    })
}

/// Every DNS experiment, as listed.
pub fn experiments(dns: &DnsChaos) -> Vec<api::Experiment> {
    dns.records()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|record| {
            let Fault::Dns(fault) = &record.fault else {
                return None;
            };
            let status = match fault.as_ref() {
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
            };
            Some(api::Experiment {
                kind: record.fault.kind().into(),
                rules: fault.summary(),
                id: record.id,
                container_id: record.container_id,
                target_pid: record.target.pid,
                since_unix_ms: record.started_at_ms as i64,
                deadline_unix_ms: record.deadline_ms.unwrap_or_default() as i64,
                volume: String::new(),
                injector_status: status,
                handover: None,
            })
        })
        .collect()
}
