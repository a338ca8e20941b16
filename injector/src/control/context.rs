//! What the control methods act on: the rule store, the filesystem's facts, the recovery
//! signal. The methods themselves live here so the binary can call them directly (initial
//! rules from the command line, SIGTERM) exactly as the RPC does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use super::error::UpdateError;
use super::recovery::RecoverySignal;
use super::reports::{RecoverReport, StatusReport, UpdateReport};
use crate::fault_rules::{MethodSet, RuleSet, RuleStore, container_path};

/// Facts about the mounted filesystem that the control plane reports.
pub trait FsStatus: Send + Sync + 'static {
    /// Mounted and serving requests.
    fn mounted(&self) -> bool;

    /// Files currently open through kernel passthrough, as paths relative to the mount
    /// root. Their reads and writes bypass the daemon, so rules cannot reach them.
    fn open_passthrough_files(&self) -> Vec<String>;

    /// Requests come through FUSE over io_uring (else from `/dev/fuse`).
    fn io_uring(&self) -> bool {
        false
    }
}

/// Everything the control methods need; cheap to clone.
#[derive(Clone)]
pub struct ControlContext {
    rules: Arc<RuleStore>,
    fs: Arc<dyn FsStatus>,
    recovery: RecoverySignal,
    // Makes "not recovering, so swap in rules" and "recover, so clear rules" exclusive:
    // no update may land after recovery emptied the rules.
    transition: Arc<Mutex<()>>,
}

impl ControlContext {
    pub fn new(rules: Arc<RuleStore>, fs: Arc<dyn FsStatus>) -> ControlContext {
        ControlContext {
            rules,
            fs,
            recovery: RecoverySignal::new(),
            transition: Arc::new(Mutex::new(())),
        }
    }

    pub fn rules(&self) -> &Arc<RuleStore> {
        &self.rules
    }

    pub fn recovery(&self) -> &RecoverySignal {
        &self.recovery
    }

    /// Validates `actions` (a JSON array of IOChaos actions) and puts them in force.
    pub fn update(&self, actions: &Value) -> Result<UpdateReport, UpdateError> {
        let rules = RuleSet::from_json_value(actions, self.rules.mount_point())?;
        let rule_count = rules.len();
        let generation = {
            let _transition = self.transition.lock();
            if self.recovery.is_requested() {
                return Err(UpdateError::Recovering);
            }
            self.rules.update(rules)
        };
        tracing::info!(generation, rule_count, "fault rules updated");
        let unreachable_open_files = self.unreachable_open_files(&self.fs.open_passthrough_files());
        if !unreachable_open_files.is_empty() {
            tracing::warn!(
                files = ?unreachable_open_files,
                "files open through kernel passthrough escape the new read/write rules until reopened"
            );
        }
        Ok(UpdateReport {
            generation,
            rule_count,
            unreachable_open_files,
        })
    }

    pub fn status(&self) -> StatusReport {
        let rules = self.rules.status();
        let mounted = self.fs.mounted();
        let recovering = self.recovery.is_requested();
        let open = self.fs.open_passthrough_files();
        let unreachable_open_files = self.unreachable_open_files(&open);
        StatusReport {
            ready: mounted && !recovering,
            mounted,
            recovering,
            mount_point: rules.mount_point,
            generation: rules.generation,
            rule_count: rules.rules.len(),
            rules: rules.rules,
            open_passthrough_files: open.iter().map(|p| self.container_path(p)).collect(),
            unreachable_open_files,
            io_uring: self.fs.io_uring(),
        }
    }

    /// Stops injecting at once (rules emptied, latency sleeps cut short) and signals the
    /// binary to unmount and exit. Idempotent.
    pub fn recover(&self) -> RecoverReport {
        let (first, generation) = {
            let _transition = self.transition.lock();
            let first = self.recovery.request();
            let generation = if first {
                self.rules.clear()
            } else {
                self.rules.generation()
            };
            (first, generation)
        };
        if first {
            tracing::info!(generation, "recovery requested: injection stopped");
        }
        RecoverReport {
            recovering: true,
            generation,
        }
    }

    fn unreachable_open_files(&self, open: &[String]) -> Vec<PathBuf> {
        open.iter()
            .filter(|path| {
                self.rules
                    .may_match(Path::new(path.as_str()), MethodSet::DATA_TRANSFER)
            })
            .map(|path| self.container_path(path))
            .collect()
    }

    fn container_path(&self, path_rel: &str) -> PathBuf {
        container_path(self.rules.mount_point(), Path::new(path_rel))
    }
}

impl std::fmt::Debug for ControlContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlContext")
            .field("rules", &self.rules)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}
