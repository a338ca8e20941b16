//! A process as it was when we saw it: PID plus start time, which together identify it across
//! PID reuse. The journal records helpers and targets this way, so a recovery after a crash never
//! signals or enters a stranger that got the same PID.

use serde::{Deserialize, Serialize};

/// A PID and its start time in clock ticks since boot (`/proc/PID/stat` field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessIdentity {
    /// Reads the identity of a live process.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        // Hand parsing stays here: one field of one file, on the path of every inject; the
        // command name (field 2) is the only subtle part, and `parse_start_time` is tested for it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let start_time = parse_start_time(&stat).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unparsable /proc/{pid}/stat"),
            )
        })?;
        Ok(Self { pid, start_time })
    }

    /// True if this very process is still running (not merely some process with its PID).
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid).is_ok_and(|now| now.start_time == self.start_time)
    }
}

/// Field 22 of /proc/PID/stat; the command name (field 2) may hold spaces and parentheses, so
/// count from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat =
            "123 (a) b) c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("123 (no end"), None);
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        assert!(
            !ProcessIdentity {
                start_time: me.start_time + 1,
                ..me
            }
            .is_alive()
        );
    }
}
