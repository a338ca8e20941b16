//! What a time experiment journals: enough to put every process back with nothing else (after
//! a crash the agent has nothing else).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use timeshift::{Shift, Site};

/// Where the container's processes are found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A cgroup v2 directory (its processes and its descendants').
    Cgroup(PathBuf),
    /// Every process in this pid namespace (cgroup v1 hosts).
    PidNamespace(u64),
}

/// A process we shifted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftedProcess {
    pub pid: u32,
    pub start_time: u64,
    /// Its vDSO's address when shifted: a different one now means it exec'd.
    pub vdso: u64,
}

/// A process left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedProcess {
    pub pid: u32,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeRecord {
    pub pod_container_name: String,
    pub shift: Shift,
    pub scope: Scope,
    /// The vDSO entries' original bytes on this kernel, journaled before any process is
    /// touched: recovery writes them back into every process of the scope that jumps to a page
    /// of ours, recorded below or not (a fork of a shifted process, one shifted just before a
    /// crash).
    pub originals: Vec<Site>,
    pub processes: Vec<ShiftedProcess>,
    pub skipped: Vec<SkippedProcess>,
    /// The longest a process was stopped, in microseconds.
    pub longest_stop_us: u64,
}

impl crate::journal::FaultRecord for TimeRecord {
    const KIND: &'static str = "time";
}
