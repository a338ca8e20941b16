//! Schedule: runs an experiment (or a Workflow) on a cron (Chaos Mesh's `ScheduleSpec`): each
//! run creates a child object of `type` from the embedded spec, owned by the Schedule.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    DNSChaosSpec, HTTPChaosSpec, IOChaosSpec, NetworkChaosSpec, PodChaosSpec, StressChaosSpec,
    TimeChaosSpec, WorkflowSpec,
};

/// Schedule: a chaos experiment or a Workflow created on a cron.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "Schedule",
    plural = "schedules",
    singular = "schedule",
    namespaced,
    status = "ScheduleStatus",
    shortname = "sd",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Cron (5 fields, or 6 with seconds first) or a descriptor (@every 5m, @hourly, @daily,
    /// @weekly, @monthly, @yearly), in UTC.
    pub schedule: String,
    /// A run missed by more than this many seconds (controller down, Forbid) is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// Forbid (default): no run while a child is still running; Allow: runs overlap.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// How many children are kept; the oldest finished ones beyond it are deleted (unset: none
    /// is kept once finished, as in Chaos Mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub history_limit: Option<i64>,
    /// The kind each run creates; its spec is the field of the same name below (`workflow`
    /// for a Workflow).
    #[serde(rename = "type")]
    pub type_: ScheduleType,
    // Not a flattened EmbedChaos: serde loses the path of an error inside a flattened field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_chaos: Option<PodChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_chaos: Option<NetworkChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "ioChaos")]
    pub io_chaos: Option<IOChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stress_chaos: Option<StressChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_chaos: Option<TimeChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "dnsChaos")]
    pub dns_chaos: Option<DNSChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "httpChaos")]
    pub http_chaos: Option<HTTPChaosSpec>,
    /// `type: Workflow`: the Workflow each run creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowSpec>,
}

/// The Schedule a Workflow's Schedule template creates (Chaos Mesh's `ChaosOnlyScheduleSpec`):
/// a ScheduleSpec without `workflow`, so a workflow cannot schedule workflows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosOnlyScheduleSpec {
    /// Cron (5 fields, or 6 with seconds first) or a descriptor (@every 5m, @hourly, @daily,
    /// @weekly, @monthly, @yearly), in UTC.
    pub schedule: String,
    /// A run missed by more than this many seconds (controller down, Forbid) is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// Forbid (default): no run while a child is still running; Allow: runs overlap.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// How many children are kept; the oldest finished ones beyond it are deleted (unset: none
    /// is kept once finished, as in Chaos Mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub history_limit: Option<i64>,
    /// A chaos kind (Workflow is refused: Chaos Mesh has nowhere to put its spec).
    #[serde(rename = "type")]
    pub type_: ScheduleType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_chaos: Option<PodChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_chaos: Option<NetworkChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "ioChaos")]
    pub io_chaos: Option<IOChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stress_chaos: Option<StressChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_chaos: Option<TimeChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "dnsChaos")]
    pub dns_chaos: Option<DNSChaosSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "httpChaos")]
    pub http_chaos: Option<HTTPChaosSpec>,
}

impl From<ChaosOnlyScheduleSpec> for ScheduleSpec {
    fn from(s: ChaosOnlyScheduleSpec) -> ScheduleSpec {
        ScheduleSpec {
            schedule: s.schedule,
            starting_deadline_seconds: s.starting_deadline_seconds,
            concurrency_policy: s.concurrency_policy,
            history_limit: s.history_limit,
            type_: s.type_,
            pod_chaos: s.pod_chaos,
            network_chaos: s.network_chaos,
            io_chaos: s.io_chaos,
            stress_chaos: s.stress_chaos,
            time_chaos: s.time_chaos,
            dns_chaos: s.dns_chaos,
            http_chaos: s.http_chaos,
            workflow: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    #[default]
    Forbid,
    Allow,
}

/// The kinds a Schedule can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ScheduleType {
    PodChaos,
    NetworkChaos,
    IOChaos,
    StressChaos,
    TimeChaos,
    DNSChaos,
    HTTPChaos,
    Workflow,
}

impl ScheduleType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleType::PodChaos => "PodChaos",
            ScheduleType::NetworkChaos => "NetworkChaos",
            ScheduleType::IOChaos => "IOChaos",
            ScheduleType::StressChaos => "StressChaos",
            ScheduleType::TimeChaos => "TimeChaos",
            ScheduleType::DNSChaos => "DNSChaos",
            ScheduleType::HTTPChaos => "HTTPChaos",
            ScheduleType::Workflow => "Workflow",
        }
    }

    /// The spec field that goes with the type.
    pub fn field(self) -> &'static str {
        match self {
            ScheduleType::PodChaos => "podChaos",
            ScheduleType::NetworkChaos => "networkChaos",
            ScheduleType::IOChaos => "ioChaos",
            ScheduleType::StressChaos => "stressChaos",
            ScheduleType::TimeChaos => "timeChaos",
            ScheduleType::DNSChaos => "dnsChaos",
            ScheduleType::HTTPChaos => "httpChaos",
            ScheduleType::Workflow => "workflow",
        }
    }

    /// A chaos kind (everything but Workflow).
    pub fn is_chaos(self) -> bool {
        self != ScheduleType::Workflow
    }
}

impl ScheduleSpec {
    /// The embedded spec of `type`, as JSON; an error names the missing field.
    pub fn child_spec(&self) -> Result<serde_json::Value, String> {
        let value = match self.type_ {
            ScheduleType::PodChaos => self.pod_chaos.as_ref().map(serde_json::to_value),
            ScheduleType::NetworkChaos => self.network_chaos.as_ref().map(serde_json::to_value),
            ScheduleType::IOChaos => self.io_chaos.as_ref().map(serde_json::to_value),
            ScheduleType::StressChaos => self.stress_chaos.as_ref().map(serde_json::to_value),
            ScheduleType::TimeChaos => self.time_chaos.as_ref().map(serde_json::to_value),
            ScheduleType::DNSChaos => self.dns_chaos.as_ref().map(serde_json::to_value),
            ScheduleType::HTTPChaos => self.http_chaos.as_ref().map(serde_json::to_value),
            ScheduleType::Workflow => self.workflow.as_ref().map(serde_json::to_value),
        };
        match value {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(format!("spec.{}: {e}", self.type_.field())),
            None => Err(format!(
                "spec.{}: required when spec.type is {}",
                self.type_.field(),
                self.type_.as_str()
            )),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The children that exist (sorted by name), as Chaos Mesh lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<ChildReference>,
    /// When the last run was started (RFC 3339); Chaos Mesh's JSON name `time` is written too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// A child, as an ObjectReference names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chaos Mesh's ScheduleSpec embeds DNSChaos and HTTPChaos too (`type: DNSChaos` with
    /// `dnsChaos`, `type: HTTPChaos` with `httpChaos`).
    #[test]
    fn dns_and_http_chaos_schedules() {
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@every 1m", "type": "DNSChaos",
            "dnsChaos": {"action": "random", "mode": "all",
                "selector": {"labelSelectors": {"app": "web"}}}}))
        .expect("a DNSChaos schedule");
        assert_eq!(spec.type_.as_str(), "DNSChaos");
        assert_eq!(spec.child_spec().expect("its spec")["action"], "random");
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@every 1m", "type": "HTTPChaos"}))
        .expect("an HTTPChaos schedule");
        assert_eq!(
            spec.child_spec().unwrap_err(),
            "spec.httpChaos: required when spec.type is HTTPChaos"
        );
    }

    /// Chaos Mesh's `type: Workflow` with the Workflow's spec in `workflow`.
    #[test]
    fn workflow_schedules() {
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@every 1h", "type": "Workflow",
            "workflow": {"entry": "pause", "templates": [
                {"name": "pause", "templateType": "Suspend", "deadline": "10s"}]}}))
        .expect("a Workflow schedule");
        assert_eq!(spec.child_spec().expect("its spec")["entry"], "pause");
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@every 1h", "type": "Workflow",
            "podChaos": {"action": "pod-kill", "mode": "all", "selector": {}}}))
        .expect("parses");
        assert_eq!(
            spec.child_spec().unwrap_err(),
            "spec.workflow: required when spec.type is Workflow"
        );
    }
}
