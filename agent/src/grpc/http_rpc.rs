//! The HTTP rpc, as thin as possible: parse the request into the HTTP module's spec, call it,
//! answer as chaos-daemon does (statusCode 200, which Chaos Mesh's controller checks).

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;

use crate::error::AgentError;
use crate::http::{Applied, HttpChaos, Placement, Sent};

pub async fn apply_http_chaos(
    http: &std::sync::Arc<HttpChaos>,
    request: pb::ApplyHttpChaosRequest,
) -> Result<pb::ApplyHttpChaosResponse, AgentError> {
    let spec = http_chaos::HttpChaosSpec::parse(&request.rules, &request.proxy_ports, &request.tls)
        .map_err(crate::http::HttpError::from)?;
    let applied = http
        .apply(
            &request.container_id,
            Sent {
                rules: &request.rules,
                tls: &request.tls,
            },
            &spec,
            Placement::WholePod,
        )
        .await?;
    Ok(match applied {
        Applied::InForce {
            id,
            proxy_pid,
            started_at_ms,
        } => pb::ApplyHttpChaosResponse {
            instance: i64::from(proxy_pid),
            start_time: started_at_ms as i64,
            status_code: 200,
            error: String::new(),
            instance_uid: id,
        },
        Applied::Removed => pb::ApplyHttpChaosResponse {
            status_code: 200,
            ..Default::default()
        },
    })
}

pub async fn start(
    http: &std::sync::Arc<HttpChaos>,
    request: api::StartHttpExperimentRequest,
) -> Result<api::StartHttpExperimentResponse, AgentError> {
    let spec = http_chaos::HttpChaosSpec::parse(&request.rules, &request.proxy_ports, &request.tls)
        .map_err(crate::http::HttpError::from)?;
    let applied = http
        .apply(
            &request.container_id,
            Sent {
                rules: &request.rules,
                tls: &request.tls,
            },
            &spec,
            Placement::Beside,
        )
        .await?;
    Ok(match applied {
        Applied::InForce { id, proxy_pid, .. } => {
            if request.duration_ms > 0 {
                http.recover_after(&id, std::time::Duration::from_millis(request.duration_ms))?;
            }
            api::StartHttpExperimentResponse {
                plan: format!(
                    "{} rule(s) on ports {:?} of the pod of {}: proxy pid {proxy_pid}",
                    spec.rules.len(),
                    spec.proxy_ports,
                    request.container_id
                ),
                id,
                proxy_pid,
            }
        }
        Applied::Removed => api::StartHttpExperimentResponse {
            plan: "no rules and no ports: nothing put in force (the pod's other HTTP experiments are untouched)".into(),
            ..Default::default()
        },
    })
}
