//! Serializable reports of the rules in force and what they did.

use std::path::PathBuf;

use serde::Serialize;

use super::method::MethodSet;
use super::rule::{ActionType, Effect};

/// The rules in force, for `get_status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesStatus {
    pub generation: u64,
    pub mount_point: PathBuf,
    pub rules: Vec<RuleStatus>,
}

/// One rule and its counters since it was put in force.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatus {
    /// Its index in the `update` actions array.
    pub index: usize,
    #[serde(rename = "type")]
    pub action_type: ActionType,
    /// The path glob as given; absent means every path.
    pub path: Option<String>,
    /// The methods it acts on (the named ones it can affect, or all it can affect).
    pub methods: MethodSet,
    pub percent: u8,
    pub effect: Effect,
    /// Chaos Mesh's `source` of the action ("namespace/name" of the IOChaos).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Operations whose path and method matched.
    pub matched: u64,
    /// Matched operations the percentage let through, i.e. that were delayed, failed,
    /// overridden or corrupted.
    pub injected: u64,
}
