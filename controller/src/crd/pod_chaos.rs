//! PodChaos: kill pods, fail them (images swapped for a pause image), or kill containers
//! (Chaos Mesh's `PodChaosSpec`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::selector::ContainerSelector;
use super::status::ChaosStatus;

/// PodChaos: kill pods, fail them for a duration, or kill containers.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "PodChaos",
    plural = "podchaos",
    singular = "podchaos",
    namespaced,
    status = "ChaosStatus",
    shortname = "pc",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PodChaosSpec {
    #[serde(flatten)]
    pub container_selector: ContainerSelector,
    /// pod-kill, pod-failure or container-kill.
    pub action: PodAction,
    /// How long pod-failure lasts (Go duration); pod-kill and container-kill act once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Seconds before a killed pod is deleted (pod-kill); default 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub grace_period: i64,
    /// Chaos Mesh's remote cluster: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PodAction {
    PodKill,
    PodFailure,
    ContainerKill,
}

impl PodAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PodAction::PodKill => "pod-kill",
            PodAction::PodFailure => "pod-failure",
            PodAction::ContainerKill => "container-kill",
        }
    }
}
