//! Wall-clock time as the journal and the APIs carry it: unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds now. A clock set before 1970 reads as 0: the value only orders records
/// and is shown to people, nothing is decided on it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
