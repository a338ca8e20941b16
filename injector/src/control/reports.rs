//! What the control methods answer.

use std::path::PathBuf;

use serde::Serialize;

use crate::fault_rules::RuleStatus;

/// `update`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateReport {
    /// The generation of the rules now in force.
    pub generation: u64,
    pub rule_count: usize,
    /// Files open through kernel passthrough that the new rules would delay, fail or
    /// corrupt on read/write: the kernel serves their data directly, so those reads and
    /// writes escape the rules until the files are closed and reopened.
    pub unreachable_open_files: Vec<PathBuf>,
}

/// `get_status`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Mounted and serving, and not recovering.
    pub ready: bool,
    pub mounted: bool,
    pub recovering: bool,
    /// The volume path as seen inside the container.
    pub mount_point: PathBuf,
    pub generation: u64,
    pub rule_count: usize,
    pub rules: Vec<RuleStatus>,
    /// Files open through kernel passthrough (container paths).
    pub open_passthrough_files: Vec<PathBuf>,
    /// The subset the rules in force cannot reach on read/write (see [`UpdateReport`]).
    pub unreachable_open_files: Vec<PathBuf>,
    /// Requests come through FUSE over io_uring, each CPU's on that CPU (else from
    /// `/dev/fuse`).
    pub io_uring: bool,
}

/// `recover`'s answer: injection has stopped; unmounting follows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverReport {
    pub recovering: bool,
    /// The generation of the (empty) rule set now in force.
    pub generation: u64,
}
