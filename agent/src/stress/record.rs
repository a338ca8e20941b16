//! What a stressor injected, as journaled: all its recovery needs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::journal::{FaultRecord, ProcessIdentity};

/// A CPU or memory stressor in the target's (or its pod's) cgroups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StressRecord {
    pub stressor: StressorKind,
    pub scope: StressScope,
    /// The option string as given (`--cpu 1 --cpu-load 50`).
    pub options: String,
    /// Every cgroup directory the stressor joins.
    pub cgroups: Vec<PathBuf>,
    /// The cgroups made for it (removed at recovery), recorded before they are made.
    pub created_cgroups: Vec<PathBuf>,
    /// The stressor process, once spawned.
    pub process: Option<ProcessIdentity>,
}

impl FaultRecord for StressRecord {
    const KIND: &'static str = "stress";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StressorKind {
    Cpu,
    Memory,
}

impl StressorKind {
    pub fn name(self) -> &'static str {
        match self {
            StressorKind::Cpu => "cpu",
            StressorKind::Memory => "memory",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StressScope {
    Container,
    Pod,
}

impl StressScope {
    pub fn name(self) -> &'static str {
        match self {
            StressScope::Container => "container",
            StressScope::Pod => "pod",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Record;

    /// The on-disk form of records written before the journal became generic still reads.
    #[test]
    fn records_of_earlier_agents_still_read() {
        let text = r#"{"id":"stress-cpu-1","started_at_ms":1,"deadline_ms":null,
            "container_id":"containerd://abc","target":{"pid":42,"start_time":7},
            "namespace_inode":0,"fault":{"kind":"stress","stressor":"memory","scope":"pod",
            "options":"--size 1G","cgroups":["/sys/fs/cgroup/x"],
            "created_cgroups":["/sys/fs/cgroup/x"],"process":{"pid":43,"start_time":8}}}"#;
        let stored: crate::journal::StoredRecord = serde_json::from_str(text).unwrap();
        let record: Record<StressRecord> = stored.decode().unwrap();
        assert_eq!(record.fault.stressor, StressorKind::Memory);
        assert_eq!(record.fault.scope, StressScope::Pod);
        assert_eq!(
            record.fault.process,
            Some(ProcessIdentity {
                pid: 43,
                start_time: 8
            })
        );
        assert_eq!(record.to_stored().unwrap().fault, stored.fault);
    }
}
