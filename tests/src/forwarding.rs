//! The host's `net.ipv4.ip_forward`, which the CNI bridge plugin (isGateway) switches on: the
//! value from before the first testbed is recorded and put back when the last one goes.

use std::path::PathBuf;

use crate::layout::{DIR_PREFIX, Layout, TMP};
use crate::process;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const RECORD: &str = "ip_forward";

/// Base directories of testbeds whose owner is alive, other than `own`.
fn other_live_testbeds(own: &Layout) -> Vec<PathBuf> {
    std::fs::read_dir(TMP)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
        .filter_map(|e| Layout::parse(e.file_name().to_str()?))
        .filter(|l| l.base != own.base && process::alive(l.pid))
        .map(|l| l.base)
        .collect()
}

/// Records the value from before any testbed: a running testbed's record if there is one (the
/// current value may already be its doing), the current value otherwise.
pub(crate) fn record(layout: &Layout) {
    let inherited = other_live_testbeds(layout)
        .into_iter()
        .find_map(|base| std::fs::read_to_string(base.join(RECORD)).ok());
    if let Some(value) = inherited.or_else(|| std::fs::read_to_string(IP_FORWARD).ok()) {
        let _ = std::fs::write(layout.base.join(RECORD), value);
    }
}

/// Puts the recorded value back, unless another testbed still runs (it needs forwarding as it
/// is and will restore the value itself). Returns a problem if writing failed.
pub(crate) fn restore(layout: &Layout) -> Option<String> {
    let recorded = std::fs::read_to_string(layout.base.join(RECORD)).ok()?;
    if !other_live_testbeds(layout).is_empty() {
        return None;
    }
    let current = std::fs::read_to_string(IP_FORWARD).ok()?;
    if current.trim() == recorded.trim() {
        return None;
    }
    std::fs::write(IP_FORWARD, recorded.trim())
        .err()
        .map(|e| format!("restoring {IP_FORWARD} to {}: {e}", recorded.trim()))
}
