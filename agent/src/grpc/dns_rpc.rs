//! The DNS rpcs, as thin as possible: parse the request into the DNS module's spec, call it,
//! shape the answer.

use std::time::Duration;

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;

use crate::dns::{DnsChaos, DnsChaosSpec};
use crate::error::AgentError;

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
