//! StressChaos: CPU and memory stressors charged to the target containers' cgroups (Chaos
//! Mesh's `StressChaosSpec`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::selector::ContainerSelector;
use super::status::ChaosStatus;

/// StressChaos: CPU and memory stressors in the selected containers' cgroups.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "StressChaos",
    plural = "stresschaos",
    singular = "stresschaos",
    namespaced,
    status = "ChaosStatus",
    shortname = "sc",
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StressChaosSpec {
    #[serde(flatten)]
    pub container_selector: ContainerSelector,
    /// CPU and/or memory stressors; at least one (or stressngStressors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stressors: Option<Stressors>,
    /// stress-ng style options; wins over `stressors` when both are given. Supported:
    /// --cpu, --cpu-load, --vm, --vm-bytes, --vm-keep, --vm-populate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stressng_stressors: Option<String>,
    /// How long the stressors run (Go duration); default: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Chaos Mesh's remote cluster: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stressors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStressor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStressor>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CpuStressor {
    /// Workers, each loading one CPU.
    #[schemars(range(min = 0, max = 8192))]
    pub workers: i64,
    /// Percent of one CPU each worker uses; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub load: Option<i64>,
    /// Extra stress-ng options (passed to the agent, which refuses the ones it lacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStressor {
    /// Workers sharing `size`.
    #[schemars(range(min = 0, max = 8192))]
    pub workers: i64,
    /// Memory to hold: a size (256MB, 1GiB) or a percentage of the limit (50%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^([0-9]+([BbKkMmGgTt]|[KkMmGgTt][Bb]|[KkMmGgTt][Ii][Bb])?|[0-9]+(\.[0-9]+)?%)$"
    ))]
    pub size: Option<String>,
    /// oom_score_adj of the stressor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1000, max = 1000))]
    pub oom_score_adj: Option<i32>,
    /// Extra memStress options (passed to the agent, which refuses the ones it lacks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}
