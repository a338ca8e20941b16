//! NetworkChaos: netem (delay, loss, duplicate, corrupt), bandwidth (tbf) and partitions
//! (iptables) in the target pods' network namespace (Chaos Mesh's `NetworkChaosSpec`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::selector::PodSelector;
use super::status::ChaosStatus;

/// NetworkChaos: netem, bandwidth or partition faults in the selected pods' network.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "NetworkChaos",
    plural = "networkchaos",
    singular = "networkchaos",
    namespaced,
    status = "ChaosStatus",
    shortname = "nc",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkChaosSpec {
    #[serde(flatten)]
    pub pod_selector: PodSelector,
    /// netem, delay, loss, duplicate, corrupt, partition or bandwidth.
    pub action: NetworkAction,
    /// How long the faults stay (Go duration); default: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelaySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<DuplicateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthSpec>,
    /// Chaos Mesh's rate limit: not supported (use bandwidth; rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateSpec>,
    /// to (default), from or both: which way the affected traffic flows, seen from the
    /// selected pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only traffic with these pods is affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PodSelector>,
    /// Only traffic with these IPs or CIDRs is affected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_targets: Vec<String>,
    /// The network device in the pod; default eth0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Chaos Mesh's device of the target pods: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_device: Option<String>,
    /// Chaos Mesh's remote cluster: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkAction {
    Netem,
    Delay,
    Loss,
    Duplicate,
    Corrupt,
    Partition,
    Bandwidth,
}

impl NetworkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkAction::Netem => "netem",
            NetworkAction::Delay => "delay",
            NetworkAction::Loss => "loss",
            NetworkAction::Duplicate => "duplicate",
            NetworkAction::Corrupt => "corrupt",
            NetworkAction::Partition => "partition",
            NetworkAction::Bandwidth => "bandwidth",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    To,
    From,
    Both,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DelaySpec {
    /// e.g. "100ms".
    pub latency: String,
    /// Percent, as a string ("25").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    /// e.g. "10ms".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<ReorderSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReorderSpec {
    /// Percent of packets sent at once, as a string.
    pub reorder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub gap: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LossSpec {
    /// Percent, as a string ("50").
    pub loss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DuplicateSpec {
    /// Percent, as a string.
    pub duplicate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CorruptSpec {
    /// Percent, as a string.
    pub corrupt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BandwidthSpec {
    /// tc's rate syntax: "1mbit", "100kbps" (bps = bytes per second).
    pub rate: String,
    /// Bytes that may wait in the queue.
    #[schemars(range(min = 1))]
    pub limit: u32,
    /// Bytes of tokens available at once.
    #[schemars(range(min = 1))]
    pub buffer: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peakrate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minburst: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RateSpec {
    pub rate: String,
}
