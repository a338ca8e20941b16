//! TimeChaos: the clocks the selected containers' processes read are shifted (Chaos Mesh's
//! `TimeChaosSpec`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::selector::ContainerSelector;
use super::status::ChaosStatus;

/// TimeChaos: shifted clocks in the selected containers.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "TimeChaos",
    plural = "timechaos",
    singular = "timechaos",
    namespaced,
    status = "ChaosStatus",
    shortname = "tc",
    printcolumn = r#"{"name":"Offset","type":"string","jsonPath":".spec.timeOffset"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TimeChaosSpec {
    #[serde(flatten)]
    pub container_selector: ContainerSelector,
    /// The shift, a signed Go duration: "-5m", "24h", "-1.5s".
    pub time_offset: String,
    /// The clocks shifted (CLOCK_REALTIME, CLOCK_MONOTONIC, ...); default CLOCK_REALTIME.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clock_ids: Vec<String>,
    /// How long (Go duration); default: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Chaos Mesh's remote cluster: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
}
