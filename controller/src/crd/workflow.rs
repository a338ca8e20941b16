//! Workflow and WorkflowNode (Chaos Mesh's `WorkflowSpec` and `WorkflowNodeSpec`): templates
//! run from `entry`, serially, in parallel, after a pause, on a cron, behind a status check or a
//! task's result; every running template is a WorkflowNode object, visible with kubectl.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ChaosOnlyScheduleSpec, DNSChaosSpec, HTTPChaosSpec, IOChaosSpec, NetworkChaosSpec,
    PodChaosSpec, StatusCheckSpec, StressChaosSpec, TimeChaosSpec,
};

/// Chaos Mesh's label naming the object (Workflow or WorkflowNode) that created a node or a
/// resource.
pub const CONTROLLED_BY_LABEL: &str = "chaos-mesh.org/controlled-by";
/// Chaos Mesh's label naming the Workflow a node or a resource belongs to.
pub const WORKFLOW_LABEL: &str = "chaos-mesh.org/workflow";
/// `true` aborts a Workflow (Chaos Mesh's annotation): every running node stops.
pub const ABORT_ANNOTATION: &str = "workflow.chaos-mesh.org/abort";
/// On a Serial, Parallel or Task node: its template's `children` and `conditionalBranches` (JSON)
/// when the node last took them, so that a changed Workflow is told from a node edited with
/// kubectl (which Chaos Mesh's rules read, and which stays as edited).
pub const TEMPLATE_ANNOTATION: &str = "workflow.chaos.faultline.dev/template";

/// Workflow: chaos experiments in sequence, in parallel, with pauses and checks.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "Workflow",
    plural = "workflows",
    singular = "workflow",
    namespaced,
    status = "WorkflowStatus",
    shortname = "wf",
    printcolumn = r#"{"name":"Entry","type":"string","jsonPath":".spec.entry"}"#,
    printcolumn = r#"{"name":"Started","type":"date","jsonPath":".status.startTime"}"#,
    printcolumn = r#"{"name":"Ended","type":"date","jsonPath":".status.endTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowSpec {
    /// The template the workflow starts from.
    pub entry: String,
    pub templates: Vec<Template>,
}

/// One step of a workflow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    /// Serial, Parallel, Suspend, Schedule, StatusCheck, Task, or a chaos kind (PodChaos,
    /// NetworkChaos, IOChaos, StressChaos, TimeChaos, DNSChaos, HTTPChaos) whose spec is the
    /// field of the same name.
    pub template_type: String,
    /// How long the node runs (Go duration); a chaos node's experiment is deleted (recovered)
    /// then, a Suspend ends then, a Serial or Parallel stops its children then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Serial and Parallel: the templates run, in order or at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Task: the templates run after the task, each when its expression holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditional_branches: Vec<ConditionalBranch>,
    #[serde(flatten)]
    pub chaos: EmbedChaos,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ChaosOnlyScheduleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_check: Option<StatusCheckSpec>,
    /// StatusCheck: a check that completes without reaching its success threshold aborts the
    /// whole workflow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort_with_status_check: bool,
}

/// The spec of a chaos template, in the field named after its kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbedChaos {
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

impl EmbedChaos {
    /// Every chaos spec set, by field name (`podChaos`...), as JSON.
    pub fn fields(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
            _ => BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields().is_empty()
    }
}

/// A container run to completion in a pod of its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// A core/v1 Container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub container: Option<Value>,
    /// core/v1 Volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "any_objects")]
    pub volumes: Vec<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn any_objects(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "array", "items":
        {"type": "object", "x-kubernetes-preserve-unknown-fields": true}})
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionalBranch {
    /// The template run when the expression holds.
    pub target: String,
    /// Over `exitCode` (the task container's) and `stdout` (its output, trimmed), e.g.
    /// `exitCode == 0 && stdout == "ok"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expression: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    /// The WorkflowNode of `entry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Scheduled (the entry node exists) and Accomplished (it has finished).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<WorkflowCondition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
}

/// WorkflowNode: one running template of a Workflow (created by the controller).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "WorkflowNode",
    plural = "workflownodes",
    singular = "workflownode",
    namespaced,
    status = "WorkflowNodeStatus",
    shortname = "wfn",
    printcolumn = r#"{"name":"Workflow","type":"string","jsonPath":".spec.workflowName"}"#,
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.templateName"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Started","type":"date","jsonPath":".spec.startTime"}"#,
    printcolumn = r#"{"name":"Finished","type":"date","jsonPath":".status.finishTime"}"#,
    printcolumn = r#"{"name":"Chaos","type":"string","jsonPath":".status.chaosResource.name"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowNodeSpec {
    pub template_name: String,
    pub workflow_name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditional_branches: Vec<ConditionalBranch>,
    #[serde(flatten)]
    pub chaos: EmbedChaos,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ChaosOnlyScheduleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_check: Option<StatusCheckSpec>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort_with_status_check: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowNodeStatus {
    /// Running, Accomplished, DeadlineExceeded or Aborted (from the conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    /// The object the node created: the chaos experiment, Schedule, StatusCheck or task Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos_resource: Option<ChaosResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_branches_status: Option<ConditionalBranchesStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_children: Vec<LocalReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished_children: Vec<LocalReference>,
    /// Accomplished, DeadlineExceed, ChaosInjected, Aborted (Chaos Mesh's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NodeCondition>,
}

/// A TypedLocalObjectReference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalReference {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionalBranchesStatus {
    pub branches: Vec<ConditionalBranchStatus>,
    /// The values the expressions saw (JSON).
    #[serde(default)]
    pub context: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionalBranchStatus {
    pub target: String,
    /// True, False, or Unknown (the expression could not be evaluated).
    pub evaluation_result: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
}

impl WorkflowNodeStatus {
    pub fn condition(&self, type_: &str) -> Option<&NodeCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// Sets a condition (replacing the one of that type).
    pub fn set(&mut self, type_: &str, status: bool, reason: &str) {
        let condition = NodeCondition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
        };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => *c = condition,
            None => self.conditions.push(condition),
        }
    }

    /// Chaos Mesh's WorkflowNodeFinished: accomplished, past its deadline, or aborted.
    pub fn finished(&self) -> bool {
        self.is_true(ACCOMPLISHED) || self.is_true(DEADLINE_EXCEED) || self.is_true(ABORTED)
    }
}

pub const ACCOMPLISHED: &str = "Accomplished";
pub const DEADLINE_EXCEED: &str = "DeadlineExceed";
pub const CHAOS_INJECTED: &str = "ChaosInjected";
pub const ABORTED: &str = "Aborted";
