//! The handover step of an IO experiment (the `handover` crate does the work): once the fault
//! mount is in place, what the container's processes already held under the volume (open
//! files, working directories, file mappings) moves onto it; at recovery, once the injector has
//! detached its mount (so the volume path resolves to the original directory again while it
//! still serves the files open on it), everything on the fault mount moves back, so the
//! injector drains and exits with nothing left busy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use handover::{Direction, FaultMount, Options, Report, Scope, Skipped};
use io_rules::{ActionType, Method, MethodSet};

use crate::io_spec::IoActions;
use serde_json::{Value, json};

/// What the handover's own system calls make the fault filesystem do: resolve the path, check
/// permissions, open, and close the temporary descriptor.
const HANDOVER_METHODS: [Method; 9] = [
    Method::Lookup,
    Method::Getattr,
    Method::Access,
    Method::Open,
    Method::Opendir,
    Method::Flush,
    Method::Release,
    Method::Releasedir,
    Method::Forget,
];

/// The rules to mount with while handing over: the real ones, less what would fail or delay
/// the handover's own calls (faults on the methods above, attribute overrides, which could
/// refuse the open). Files are reopened under these, so that every file a real rule may read
/// or write is opened as such (not in kernel passthrough, which a later rule cannot reach);
/// the real rules replace them before ApplyIOChaos returns.
///
/// Decided on the typed rules (one per action, in order); the document written is the
/// injector's input, Chaos Mesh's action JSON, with each kept action's `methods` narrowed.
pub fn rules_while_handing_over(actions: &IoActions) -> Value {
    let handover: MethodSet = HANDOVER_METHODS.into_iter().collect();
    let wire = actions
        .wire()
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let kept: Vec<Value> = actions
        .rules()
        .rules()
        .iter()
        .zip(wire)
        .filter(|(rule, _)| rule.action_type() != ActionType::AttrOverride)
        .filter_map(|(rule, action)| {
            let methods: Vec<&str> = rule
                .methods()
                .iter()
                .filter(|m| !handover.contains(*m))
                .map(Method::name)
                .collect();
            if methods.is_empty() {
                return None;
            }
            let mut action = action.clone();
            action["methods"] = json!(methods);
            Some(action)
        })
        .collect();
    Value::Array(kept)
}

/// How long the injector gets to detach its mount after `recover` before the way back is
/// attempted anyway.
const DETACH_WITHIN: Duration = Duration::from_secs(2);

/// What the handover at the start did.
#[derive(Debug, Clone)]
pub struct HandedOver {
    pub report: Report,
    /// The fault mount, if it was found: recovery moves back what is on it.
    pub fault: Option<FaultMount>,
}

fn failed(pid: u32, what: &str, reason: String) -> Report {
    Report {
        skipped: vec![Skipped {
            pid,
            what: what.into(),
            reason,
        }],
        ..Report::default()
    }
}

/// Moves what the processes in `target_pid`'s mount namespace hold under `volume` onto the
/// fault mount over it: `known`, as its injector reported it, or else the one the target's
/// mount table shows over the volume (reading it cost 0.1–0.6 ms of an injection here).
pub async fn onto_fault_mount(
    target_pid: u32,
    volume: &str,
    known: Option<FaultMount>,
) -> HandedOver {
    let volume = PathBuf::from(volume);
    let work = move || {
        let found = match known {
            Some(fault) => Ok(fault),
            None => handover::fault_mount(target_pid, &volume),
        };
        let fault = match found {
            Ok(fault) => fault,
            Err(err) => {
                return HandedOver {
                    report: failed(target_pid, "mount", err.to_string()),
                    fault: None,
                };
            }
        };
        let scope = Scope {
            volume,
            fault,
            direction: Direction::ToFault,
        };
        let report = handover::hand_over(target_pid, &scope, &Options::default())
            .unwrap_or_else(|err| failed(target_pid, "processes", err.to_string()));
        HandedOver {
            report,
            fault: Some(fault),
        }
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(err) => HandedOver {
            report: failed(target_pid, "handover", err.to_string()),
            fault: None,
        },
    }
}

/// Moves everything on the (detached) fault mount back onto the original directory.
pub async fn back_to_original(target_pid: u32, volume: &str, fault: FaultMount) -> Report {
    let volume = PathBuf::from(volume);
    let work = move || {
        let deadline = Instant::now() + DETACH_WITHIN;
        loop {
            match still_attached(target_pid, fault.mount_id) {
                Ok(false) => break,
                Ok(true) => {}
                Err(err) => {
                    return failed(
                        target_pid,
                        "mount",
                        format!("cannot tell whether the fault mount is detached: {err}"),
                    );
                }
            }
            if Instant::now() >= deadline {
                return failed(
                    target_pid,
                    "mount",
                    "the fault mount was not detached: nothing can be moved back yet".into(),
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let scope = Scope {
            volume,
            fault,
            direction: Direction::ToOriginal,
        };
        handover::hand_over(target_pid, &scope, &Options::default())
            .unwrap_or_else(|err| failed(target_pid, "processes", err.to_string()))
    };
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| failed(target_pid, "handover", err.to_string()))
}

/// Whether the mount is still in `pid`'s mount table. A process that is gone took its
/// namespace (and the mount) with it; any other failure to read is an error, not "detached".
/// Only the first field (the mount ID) of each line is read, polled every 2 ms: a split of the
/// line is all it needs, the full mountinfo parse of the procfs crate is not.
fn still_attached(pid: u32, mount_id: u64) -> std::io::Result<bool> {
    let table = match std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
        Ok(table) => table,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return Ok(false),
        Err(e) => return Err(e),
    };
    let id = mount_id.to_string();
    Ok(table
        .lines()
        .any(|l| l.split(' ').next() == Some(id.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handover_rules_spare_its_own_calls_and_keep_the_rest() {
        let actions = json!([
            {"type": "fault", "path": "/data/**", "percent": 100, "faults": [{"errno": 5, "weight": 1}]},
            {"type": "latency", "path": "/data/**", "latency": "1s", "methods": ["open", "READ"]},
            {"type": "fault", "path": "/data/x", "methods": ["lookup", "open"], "faults": [{"errno": 2, "weight": 1}]},
            {"type": "attrOverride", "path": "/data/**", "perm": 0},
        ]);
        let parsed = IoActions::parse(
            &actions.to_string(),
            &crate::io_spec::VolumePath::parse("/data").unwrap(),
        )
        .unwrap()
        .unwrap();
        let rules = rules_while_handing_over(&parsed);
        let rules = rules.as_array().unwrap();
        assert_eq!(rules.len(), 2, "{rules:?}");
        let all: Vec<&str> = rules[0]["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(all.contains(&"read") && all.contains(&"write") && all.contains(&"unlink"));
        assert!(!all.contains(&"open") && !all.contains(&"lookup") && !all.contains(&"getattr"));
        assert_eq!(rules[0]["faults"], actions[0]["faults"]);
        assert_eq!(rules[1]["methods"], json!(["read"]));
        assert_eq!(rules[1]["latency"], "1s");
        // Still a valid rule set.
        io_rules::RuleSet::parse(
            &Value::Array(rules.clone()).to_string(),
            std::path::Path::new("/data"),
        )
        .unwrap();
    }
}
