//! What a handover did, for the experiment's status.

use serde::{Deserialize, Serialize};

use crate::scan::Skipped;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Processes that were looked at (every process that sees the mount).
    pub scanned: u32,
    /// Processes that were stopped (only those holding something to move).
    pub stopped: u32,
    pub fds: u32,
    pub cwds: u32,
    pub mappings: u32,
    pub skipped: Vec<Skipped>,
    /// The longest time one process was stopped, in microseconds.
    pub longest_stop_us: u64,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "moved {} fds, {} cwds, {} mappings in {} of {} processes (longest stop {} µs)",
            self.fds, self.cwds, self.mappings, self.stopped, self.scanned, self.longest_stop_us
        );
        for skip in &self.skipped {
            s.push_str(&format!(
                "; skipped pid {} {}: {}",
                skip.pid, skip.what, skip.reason
            ));
        }
        s
    }

    pub fn merge(&mut self, other: Report) {
        self.scanned += other.scanned;
        self.stopped += other.stopped;
        self.fds += other.fds;
        self.cwds += other.cwds;
        self.mappings += other.mappings;
        self.skipped.extend(other.skipped);
        self.longest_stop_us = self.longest_stop_us.max(other.longest_stop_us);
    }
}
