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
    /// NetworkChaos: the CIDRs of the target pods, recorded when the targets were selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// NetworkChaos: `externalTargets` as CIDRs (`CIDR` or `CIDR:port`), host names resolved;
    /// resolved again while the experiment runs, and the rules follow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_peers: Vec<String>,
    /// NetworkChaos: the CIDRs of the selected pods, the filter of the rules Chaos Mesh puts on
    /// the target pods (direction from or both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_peers: Vec<String>,
    /// One record per target (pod, or pod and container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_records: Vec<TargetRecord>,
}

/// Chaos Mesh's phase of a record: whether the fault is in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RecordPhase {
    #[default]
    #[serde(rename = "Not Injected")]
    NotInjected,
    Injected,
}

/// Chaos Mesh's record event: one apply or recover, succeeded or failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecordEvent {
    /// Succeeded or Failed.
    #[serde(rename = "type")]
    pub type_: String,
    /// Apply or Recover.
    pub operation: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339.
    pub timestamp: String,
}

/// How many events a record keeps (the latest).
pub const RECORD_EVENTS: usize = 10;

/// What is in force on one target (faultline's finer phase; `phase` is Chaos Mesh's).
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
// `remote = "Self"`: the derives become inherent functions, wrapped below so that a record
// written by an earlier faultline (its `phase` was today's `state`) still reads back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct TargetRecord {
    /// `namespace/pod` or `namespace/pod/container`.
    pub id: String,
    /// Which selector chose the target: `.` (the spec's selector) or `.Target` (NetworkChaos's
    /// `target`), as Chaos Mesh's records say.
    #[serde(default = "dot")]
    pub selector_key: String,
    /// Chaos Mesh's phase: `Not Injected` or `Injected`.
    #[serde(default)]
    pub phase: RecordPhase,
    /// How often the fault was applied and recovered (Chaos Mesh's counters).
    #[serde(default)]
    pub injected_count: u32,
    #[serde(default)]
    pub recovered_count: u32,
    /// The latest applies and recoveries (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<RecordEvent>,
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
    /// faultline's phase: Pending, Injected, Recovered or Failed.
    pub state: TargetPhase,
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

impl Serialize for TargetRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TargetRecord::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for TargetRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        upgrade_record(&mut value);
        TargetRecord::deserialize(value).map_err(serde::de::Error::custom)
    }
}

/// A record without `state` is an earlier faultline's: its `phase` (Pending, Injected,
/// Recovered, Failed) is the state; Chaos Mesh's phase follows from it.
fn upgrade_record(value: &mut serde_json::Value) {
    let Some(record) = value.as_object_mut() else {
        return;
    };
    if record.contains_key("state") {
        return;
    }
    let Some(old) = record
        .get("phase")
        .and_then(|p| p.as_str())
        .map(str::to_owned)
    else {
        return;
    };
    if ["Pending", "Injected", "Recovered", "Failed"].contains(&old.as_str()) {
        let phase = if old == "Injected" {
            "Injected"
        } else {
            "Not Injected"
        };
        record.insert("state".into(), serde_json::Value::String(old));
        record.insert("phase".into(), serde_json::Value::String(phase.into()));
    }
}

fn dot() -> String {
    ".".into()
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
            selector_key: dot(),
            phase: RecordPhase::NotInjected,
            injected_count: 0,
            recovered_count: 0,
            events: Vec::new(),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            pod_uid: None,
            container: container.map(str::to_owned),
            container_id: None,
            node: None,
            state: TargetPhase::Pending,
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

impl TargetRecord {
    /// Records an apply or recovery: the counters, Chaos Mesh's phase and an event.
    pub fn record_event(&mut self, apply: bool, succeeded: bool, message: &str, now: &str) {
        if succeeded {
            if apply {
                self.injected_count += 1;
                self.phase = RecordPhase::Injected;
            } else {
                self.recovered_count += 1;
                self.phase = RecordPhase::NotInjected;
            }
        }
        self.events.push(RecordEvent {
            type_: if succeeded { "Succeeded" } else { "Failed" }.into(),
            operation: if apply { "Apply" } else { "Recover" }.into(),
            message: message.to_owned(),
            timestamp: now.to_owned(),
        });
        if self.events.len() > RECORD_EVENTS {
            self.events.drain(..self.events.len() - RECORD_EVENTS);
        }
    }
}

impl ExperimentStatus {
    /// The peers the network rules filter by, as recorded.
    pub fn network_peers(&self) -> crate::plan::Peers {
        let mut peers = crate::plan::Peers {
            sources: self.source_peers.clone(),
            ..Default::default()
        };
        for p in self.peers.iter().chain(&self.external_peers) {
            match p
                .rsplit_once(':')
                .and_then(|(c, port)| Some((c, port.parse::<u16>().ok()?)))
            {
                Some((cidr, port)) => peers.target_ports.push((cidr.to_owned(), port)),
                None => peers.targets.push(p.clone()),
            }
        }
        peers
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_an_earlier_faultline_read_back() {
        let old: TargetRecord = serde_json::from_value(serde_json::json!({
            "id": "d/p", "namespace": "d", "pod": "p", "phase": "Injected",
            "containerId": "containerd://x", "experimentIds": ["io-1"]
        }))
        .expect("an old record");
        assert_eq!(old.state, TargetPhase::Injected);
        assert_eq!(old.phase, RecordPhase::Injected);
        assert_eq!(old.selector_key, ".");
        let recovered: TargetRecord = serde_json::from_value(serde_json::json!({
            "id": "d/p", "namespace": "d", "pod": "p", "phase": "Recovered"
        }))
        .expect("an old record");
        assert_eq!(
            (recovered.state, recovered.phase),
            (TargetPhase::Recovered, RecordPhase::NotInjected)
        );
        // Today's records round-trip.
        let mut rec = TargetRecord::new("d", "p", Some("c"));
        rec.state = TargetPhase::Injected;
        rec.record_event(true, true, "ok", "2026-01-01T00:00:00Z");
        let back: TargetRecord =
            serde_json::from_value(serde_json::to_value(&rec).expect("json")).expect("back");
        assert_eq!(back, rec);
        let json = serde_json::to_value(&rec).expect("json");
        assert_eq!(json["phase"], "Injected");
        assert_eq!(json["state"], "Injected");
    }
}
