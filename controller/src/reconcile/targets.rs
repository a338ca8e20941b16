//! Injecting and recovering one target: read its pod (a pod that is gone, or was replaced by
//! one of the same name, counts as recovered), then ask the node's agent, or the Kubernetes API
//! for pod-kill and pod-failure.

use std::collections::BTreeMap;

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::context::Context;
use super::kind::Recovery;
use super::network::PodShare;
use crate::agent::{AgentCall, AgentError};
use crate::crd::TargetRecord;
use crate::error::Result;
use crate::plan::{Action, Peers, Plan, network_request};

/// Annotation prefix under which pod-failure keeps each container's original image.
pub const POD_FAILURE_ANNOTATION: &str = "pod-failure.chaos.faultline.dev";

/// What happened to one target.
#[derive(Debug)]
pub enum Outcome {
    Done {
        detail: String,
        ids: Vec<String>,
        container_id: Option<String>,
        node: Option<String>,
    },
    /// The pod is gone: nothing to inject, nothing left to recover.
    Gone,
    Failed {
        message: String,
        transient: bool,
        uncertain: bool,
    },
}

fn done(detail: impl Into<String>, ids: Vec<String>) -> Outcome {
    Outcome::Done {
        detail: detail.into(),
        ids,
        container_id: None,
        node: None,
    }
}

fn failed(message: impl Into<String>, transient: bool) -> Outcome {
    Outcome::Failed {
        message: message.into(),
        transient,
        uncertain: false,
    }
}

fn agent_failed(e: AgentError) -> Outcome {
    Outcome::Failed {
        message: e.to_string(),
        transient: e.is_transient(),
        uncertain: e.may_have_applied(),
    }
}

/// The target's pod, if it is still the one that was selected.
async fn current_pod(ctx: &Context, rec: &TargetRecord) -> Result<Option<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &rec.namespace);
    let pod = pods.get_opt(&rec.pod).await?;
    Ok(pod.filter(|p| rec.pod_uid.is_none() || p.metadata.uid == rec.pod_uid))
}

/// The runtime ID of a container (or, for a pod target, of the first container that has one).
fn container_id(pod: &Pod, container: Option<&str>) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter(|s| container.is_none_or(|c| s.name == c))
        .find_map(|s| s.container_id.clone().filter(|id| !id.is_empty()))
}

pub async fn inject(
    ctx: &Context,
    plan: &Plan,
    peers: &Peers,
    rec: &TargetRecord,
    duration_ms: u64,
    network_share: Option<&PodShare>,
) -> Result<Outcome> {
    let network_state = match &plan.action {
        Action::Network(network) => {
            let own = network.state(&rec.selector_key, peers);
            if own.is_empty() {
                // Chaos Mesh: a side with nothing to do (a `.Target` pod with direction to) is
                // Injected without a call.
                return Ok(done("nothing to do on this side of the experiment", vec![]));
            }
            let mut merged = network_share.map(|s| s.state.clone()).unwrap_or_default();
            merged.merge(own);
            Some(merged)
        }
        _ => None,
    };
    let Some(pod) = current_pod(ctx, rec).await? else {
        return Ok(Outcome::Gone);
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let needs_container = !matches!(plan.action, Action::PodKill { .. } | Action::PodFailure);
    let cid = container_id(&pod, rec.container.as_deref());
    let (cid, node_name) = match (needs_container, &cid, &node) {
        (false, _, _) => (String::new(), String::new()),
        (true, None, _) => {
            let what = match &rec.container {
                Some(c) => format!("container {c} of pod {}/{}", rec.namespace, rec.pod),
                None => format!("pod {}/{}", rec.namespace, rec.pod),
            };
            return Ok(failed(format!("{what} has no running container yet"), true));
        }
        (true, Some(_), None) => {
            return Ok(failed(
                format!(
                    "pod {}/{} is not scheduled on a node",
                    rec.namespace, rec.pod
                ),
                true,
            ));
        }
        (true, Some(c), Some(n)) => (c.clone(), n.clone()),
    };
    let call = match &plan.action {
        Action::Io { volume, actions } => AgentCall::StartIo(api::StartIoExperimentRequest {
            container_id: cid.clone(),
            volume: volume.clone(),
            actions: actions.clone(),
            duration_ms,
            dry_run: false,
            no_handover: false,
        }),
        Action::Network(_) => AgentCall::StartNetwork(network_request(
            &network_state.unwrap_or_default(),
            &cid,
            &pod_uid,
            duration_ms,
        )),
        Action::Stress {
            cpu,
            memory,
            oom_score_adj,
        } => AgentCall::StartStress(api::StartStressExperimentRequest {
            container_id: cid.clone(),
            pod_scope: false,
            cpu_stressors: cpu.clone(),
            memory_stressors: memory.clone(),
            oom_score_adj: *oom_score_adj,
            duration_ms,
            dry_run: false,
        }),
        Action::Dns { action, patterns } => AgentCall::StartDns(api::StartDnsExperimentRequest {
            container_id: cid.clone(),
            action: action.clone(),
            patterns: patterns.clone(),
            duration_ms,
        }),
        Action::Http { rules, port, tls } => {
            let tls = match tls {
                None => String::new(),
                Some(tls) => match http_tls(ctx, tls, *port).await? {
                    Ok(json) => json,
                    // The Secret may be created or fixed later: tried again.
                    Err(message) => return Ok(failed(message, true)),
                },
            };
            AgentCall::StartHttp(api::StartHttpExperimentRequest {
                container_id: cid.clone(),
                rules: rules.clone(),
                proxy_ports: vec![u32::from(*port)],
                duration_ms,
                tls,
            })
        }
        Action::Time { offset, clock_ids } => {
            AgentCall::StartTime(api::StartTimeExperimentRequest {
                container_id: cid.clone(),
                offset: offset.clone(),
                clock_ids: clock_ids.clone(),
                duration_ms,
                dry_run: false,
                id: String::new(),
            })
        }
        Action::ContainerKill => AgentCall::KillContainer(api::KillContainerRequest {
            container_id: cid.clone(),
            dry_run: false,
        }),
        Action::PodKill {
            grace_period_seconds,
        } => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &rec.namespace);
            let params = DeleteParams {
                grace_period_seconds: u32::try_from(*grace_period_seconds).ok(),
                ..DeleteParams::default()
            };
            pods.delete(&rec.pod, &params).await?;
            return Ok(Outcome::Done {
                detail: format!("pod deleted (grace period {grace_period_seconds}s)"),
                ids: vec![],
                container_id: None,
                node,
            });
        }
        Action::PodFailure => {
            let patch = pod_failure_patch(&pod, &ctx.settings.pause_image);
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &rec.namespace);
            pods.patch(&rec.pod, &PatchParams::default(), &Patch::Strategic(patch))
                .await?;
            return Ok(Outcome::Done {
                detail: format!("images replaced by {}", ctx.settings.pause_image),
                ids: vec![],
                container_id: None,
                node,
            });
        }
    };
    Ok(match ctx.agents.call(&node_name, call).await {
        Ok(reply) => Outcome::Done {
            detail: reply.detail,
            ids: reply.ids,
            container_id: Some(cid),
            node: Some(node_name),
        },
        Err(e) => agent_failed(e),
    })
}

/// An HTTPChaos's tls JSON for the agent, from its Secret (as Chaos Mesh's PodHttpChaos
/// controller reads it); `Ok(Err(why))` when the Secret is missing or unusable.
async fn http_tls(
    ctx: &Context,
    tls: &crate::crd::HttpChaosTls,
    port: u16,
) -> Result<std::result::Result<String, String>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &tls.secret_namespace);
    let Some(secret) = secrets.get_opt(&tls.secret_name).await? else {
        return Ok(Err(format!(
            "tls.secretName: secret {}/{} not found",
            tls.secret_namespace, tls.secret_name
        )));
    };
    let data = secret.data.unwrap_or_default();
    Ok(crate::plan::http::tls_json(tls, &data, port))
}

/// Strategic merge patch: every container's image becomes the pause image; originals go into
/// annotations (kept if already there, so a retried injection never records the pause image).
pub fn pod_failure_patch(pod: &Pod, pause_image: &str) -> Value {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut keep = serde_json::Map::new();
    let mut containers = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let key = format!("{POD_FAILURE_ANNOTATION}/{}", c.name);
        if !annotations.contains_key(&key) {
            keep.insert(key, json!(c.image.clone().unwrap_or_default()));
        }
        containers.push(json!({"name": c.name, "image": pause_image}));
    }
    json!({"metadata": {"annotations": keep}, "spec": {"containers": containers}})
}

/// The inverse: originals back from the annotations, annotations removed.
pub fn pod_failure_restore_patch(pod: &Pod) -> Option<Value> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let prefix = format!("{POD_FAILURE_ANNOTATION}/");
    let mut remove = serde_json::Map::new();
    let mut containers = Vec::new();
    for (key, image) in annotations {
        if let Some(name) = key.strip_prefix(&prefix) {
            remove.insert(key.clone(), Value::Null);
            containers.push(json!({"name": name, "image": image}));
        }
    }
    (!containers.is_empty())
        .then(|| json!({"metadata": {"annotations": remove}, "spec": {"containers": containers}}))
}

pub async fn recover(
    ctx: &Context,
    recovery: &Recovery,
    rec: &TargetRecord,
    network_share: Option<&PodShare>,
    now: Timestamp,
) -> Result<Outcome> {
    let Some(pod) = current_pod(ctx, rec).await? else {
        return Ok(Outcome::Gone);
    };
    let node = rec.node.clone().unwrap_or_default();
    let cid = rec.container_id.clone().unwrap_or_default();
    let by_agent = matches!(
        recovery,
        Recovery::Io { .. }
            | Recovery::Network
            | Recovery::Stress
            | Recovery::Time
            | Recovery::Dns
            | Recovery::Http
    );
    if by_agent && (node.is_empty() || cid.is_empty()) {
        // Never reached an agent: nothing can be in force.
        return Ok(done("never injected", vec![]));
    }
    let calls: Vec<AgentCall> = match recovery {
        Recovery::Nothing => return Ok(done("nothing to recover (one-shot action)", vec![])),
        Recovery::PodFailure => {
            let Some(patch) = pod_failure_restore_patch(&pod) else {
                return Ok(done("no image to restore", vec![]));
            };
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &rec.namespace);
            pods.patch(&rec.pod, &PatchParams::default(), &Patch::Strategic(patch))
                .await?;
            return Ok(done("original images restored", vec![]));
        }
        // The pod keeps what the other experiments hold there (Chaos Mesh's PodNetworkChaos
        // without this one's rules); nothing left removes every rule.
        Recovery::Network => {
            let share = network_share.cloned().unwrap_or_default();
            vec![AgentCall::StartNetwork(network_request(
                &share.state,
                &cid,
                rec.pod_uid.as_deref().unwrap_or_default(),
                share.duration_ms(now, None, false),
            ))]
        }
        _ if !rec.experiment_ids.is_empty() => rec
            .experiment_ids
            .iter()
            .map(|id| AgentCall::Recover { id: id.clone() })
            .collect(),
        Recovery::Io { volume } => vec![AgentCall::ApplyIo(pb::ApplyIoChaosRequest {
            actions: String::new(),
            volume: volume.clone(),
            container_id: cid.clone(),
            ..Default::default()
        })],
        Recovery::Stress | Recovery::Time | Recovery::Dns | Recovery::Http => {
            match ctx.agents.call(&node, AgentCall::ListExperiments).await {
                Ok(list) => list
                    .experiments
                    .into_iter()
                    .filter(|e| {
                        let kind = match recovery {
                            Recovery::Time => "time",
                            Recovery::Dns => "dns",
                            Recovery::Http => "http",
                            _ => "stress",
                        };
                        e.kind == kind && e.container_id == cid
                    })
                    .map(|e| AgentCall::Recover { id: e.id })
                    .collect(),
                Err(e) => return Ok(agent_failed(e)),
            }
        }
    };
    let mut details = Vec::new();
    for call in calls {
        match ctx.agents.call(&node, call).await {
            Ok(reply) if !reply.detail.is_empty() => details.push(reply.detail),
            Ok(_) => {}
            Err(e) => return Ok(agent_failed(e)),
        }
    }
    Ok(done(details.join("; "), vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_failure_keeps_originals_and_restores_them() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "side", "image": "envoy:2"}]}
        }))
        .expect("pod");
        let patch = pod_failure_patch(&pod, "pause:3");
        assert_eq!(
            patch,
            json!({
                "metadata": {"annotations": {
                    "pod-failure.chaos.faultline.dev/app": "nginx:1",
                    "pod-failure.chaos.faultline.dev/side": "envoy:2"}},
                "spec": {"containers": [{"name": "app", "image": "pause:3"}, {"name": "side", "image": "pause:3"}]}
            })
        );
        let mut failed = pod.clone();
        failed.metadata.annotations = Some(BTreeMap::from([
            (
                "pod-failure.chaos.faultline.dev/app".to_string(),
                "nginx:1".to_string(),
            ),
            ("other".to_string(), "x".to_string()),
        ]));
        // A retry keeps the recorded original instead of recording the pause image.
        assert_eq!(
            pod_failure_patch(&failed, "pause:3")["metadata"]["annotations"]
                .as_object()
                .map(|m| m.len()),
            Some(1)
        );
        assert_eq!(
            pod_failure_restore_patch(&failed),
            Some(json!({
                "metadata": {"annotations": {"pod-failure.chaos.faultline.dev/app": null}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}
            }))
        );
        assert_eq!(pod_failure_restore_patch(&pod), None);
    }
}
