//! DNSChaos: lookups of chosen names fail or get random answers in the selected pods (Chaos
//! Mesh's `DNSChaosSpec`). Unlike Chaos Mesh, no cluster-wide DNS server is deployed: the agent
//! runs a responder in each target pod's network namespace.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::selector::ContainerSelector;
use super::status::ChaosStatus;

/// DNSChaos: lookups of the names `patterns` cover fail (`error`) or get random addresses
/// (`random`) in the selected pods.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "DNSChaos",
    plural = "dnschaos",
    singular = "dnschaos",
    namespaced,
    status = "ChaosStatus",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DNSChaosSpec {
    /// error: the lookup fails (SERVFAIL); random: a random address.
    pub action: DnsChaosAction,
    #[serde(flatten)]
    pub container_selector: ContainerSelector,
    /// Domain names the experiment covers: `?` stands for one character, `*` for any run
    /// (`*.example.com`, `github.*`); none: every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// How long the experiment lasts (Go duration); default: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Chaos Mesh's remote cluster: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsChaosAction {
    Error,
    Random,
}

impl DnsChaosAction {
    pub fn name(self) -> &'static str {
        match self {
            DnsChaosAction::Error => "error",
            DnsChaosAction::Random => "random",
        }
    }
}
