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
    /// Said loudly: what the rules in force cannot reach, and what to do about it. Empty
    /// when every operation the rules match is faulted.
    pub warnings: Vec<String>,
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
    /// The mount's choice for files no rule in force may read or write: `reachable` (every
    /// read and write through the daemon: later rules reach every open file), `passthrough`
    /// or `cached` (faster; later rules miss files already open).
    pub file_io: &'static str,
    /// Files open through kernel passthrough, or the page cache in the `cached` mode
    /// (container paths).
    pub open_passthrough_files: Vec<PathBuf>,
    /// The subset the rules in force cannot reach on read/write (see [`UpdateReport`]).
    pub unreachable_open_files: Vec<PathBuf>,
    /// As in [`UpdateReport`]: never an unreachable open file without a warning here.
    pub warnings: Vec<String>,
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
