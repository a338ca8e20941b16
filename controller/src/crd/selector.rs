//! Which pods an experiment acts on: Chaos Mesh's `PodSelectorSpec`, `PodSelector` (selector,
//! mode, value) and `ContainerSelector` (plus `containerNames`), with the same JSON names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pods an experiment may act on. Every selector that is given must match (they are ANDed),
/// except `pods`, which overrides all others, and `nodes` with `nodeSelectors`, whose nodes are
/// united; with none, every pod of the experiment's namespace matches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSelectorSpec {
    /// Namespaces the pods must be in; empty means the experiment's own namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Names of the nodes the pods must run on (together with the nodes `nodeSelectors` matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Pods by name: namespace -> pod names. When given, every other selector is ignored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, Vec<String>>,
    /// Labels the pods' nodes must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selectors: BTreeMap<String, String>,
    /// Pod fields that must equal these values (`metadata.name`, `spec.nodeName`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_selectors: BTreeMap<String, String>,
    /// Labels the pods must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_selectors: BTreeMap<String, String>,
    /// Set-based label requirements (In, NotIn, Exists, DoesNotExist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expression_selectors: Vec<LabelSelectorRequirement>,
    /// Annotations the pods must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotation_selectors: BTreeMap<String, String>,
    /// Phases the pods must be in (Pending, Running, Succeeded, Failed, Unknown; any of them),
    /// or, written `!Running`, must not be in (none of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_phase_selectors: Vec<String>,
}

/// A set-based label requirement, as `metav1.LabelSelectorRequirement`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: LabelOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// How many of the matching pods are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SelectorMode {
    /// One pod, chosen at random.
    One,
    /// Every matching pod.
    All,
    /// `value` pods, chosen at random.
    Fixed,
    /// `value` percent of the pods (rounded up), chosen at random.
    FixedPercent,
    /// A random percentage between 0 and `value` of the pods (rounded up).
    RandomMaxPercent,
}

impl SelectorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectorMode::One => "one",
            SelectorMode::All => "all",
            SelectorMode::Fixed => "fixed",
            SelectorMode::FixedPercent => "fixed-percent",
            SelectorMode::RandomMaxPercent => "random-max-percent",
        }
    }
}

/// `selector`, `mode` and `value`, inlined in every spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    /// The pods that may be chosen.
    pub selector: PodSelectorSpec,
    /// How many of them are chosen: one, all, fixed, fixed-percent, random-max-percent.
    pub mode: SelectorMode,
    /// The number (fixed) or percentage (fixed-percent, random-max-percent) for the mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    pub value: Option<String>,
}

/// A [`PodSelector`] plus the containers of each pod to act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSelector {
    #[serde(flatten)]
    pub pod_selector: PodSelector,
    /// Names of the containers to act on; empty means the first container of each pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_names: Vec<String>,
}
