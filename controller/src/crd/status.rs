//! What the controller records about an experiment: conditions (Chaos Mesh's condition types
//! plus `Accepted`), the desired phase, the deadline and one record per target. The records are
//! what recovery is computed from, so they are written before anything is injected.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The status shared by every chaos kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ChaosCondition>,
    #[serde(default)]
    pub experiment: ExperimentStatus,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionType {
    /// The spec was validated (False: what is wrong, nothing was done).
    Accepted,
    /// Targets were selected and recorded.
    Selected,
    /// Every target is injected.
    AllInjected,
    /// Nothing is in force on any target any more.
    AllRecovered,
    /// The pause annotation is set: every target was recovered and nothing is injected.
    Paused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosCondition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Where the experiment is heading: `Run` (inject every target) or `Stop` (recover them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DesiredPhase {
    Run,
    Stop,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_phase: Option<DesiredPhase>,
    /// When the first target was injected (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When every target is recovered: start time + duration (RFC 3339). Kept in the status so
    /// a restarted controller recovers on time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// NetworkChaos: the CIDRs of the target pods and external targets, resolved when the
    /// targets were selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// One record per target (pod, or pod and container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_records: Vec<TargetRecord>,
}

/// What is in force on one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetPhase {
    /// Selected; not injected yet (or being retried).
    Pending,
    /// The fault is in force.
    Injected,
    /// The fault was removed (or the pod is gone).
    Recovered,
    /// Injection failed: nothing is in force. `message` says why.
    Failed,
}

/// One target: a pod, or a container of a pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecord {
    /// `namespace/pod` or `namespace/pod/container`.
    pub id: String,
    pub namespace: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The runtime's container ID the fault was applied to (`containerd://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub phase: TargetPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<String>,
    /// Failed attempts in a row (inject or recover); drives the backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// When a transient failure is retried (RFC 3339); none for a permanent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    /// The agent's experiment ids, recovered by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experiment_ids: Vec<String>,
    /// A failed call may have reached the agent (a timeout): recovery must try this target.
    #[serde(default, skip_serializing_if = "is_false")]
    pub uncertain: bool,
    /// The pod is gone (deleted, or replaced by one of the same name): it counts as recovered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gone: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TargetRecord {
    pub fn new(namespace: &str, pod: &str, container: Option<&str>) -> TargetRecord {
        let id = match container {
            Some(c) => format!("{namespace}/{pod}/{c}"),
            None => format!("{namespace}/{pod}"),
        };
        TargetRecord {
            id,
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            pod_uid: None,
            container: container.map(str::to_owned),
            container_id: None,
            node: None,
            phase: TargetPhase::Pending,
            message: None,
            injected_at: None,
            recovered_at: None,
            attempts: 0,
            next_retry_at: None,
            experiment_ids: Vec::new(),
            uncertain: false,
            gone: false,
        }
    }
}

impl ChaosStatus {
    pub fn condition(&self, type_: ConditionType) -> Option<&ChaosCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: ConditionType) -> bool {
        self.condition(type_)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// Sets a condition; the transition time changes only when the status does.
    pub fn set_condition(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        now: &str,
    ) {
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => {
                if existing.status != status {
                    existing.last_transition_time = Some(now.to_owned());
                }
                existing.status = status;
                existing.reason = reason.to_owned();
                existing.message = message;
            }
            None => self.conditions.push(ChaosCondition {
                type_,
                status,
                reason: reason.to_owned(),
                message,
                last_transition_time: Some(now.to_owned()),
            }),
        }
    }
}
