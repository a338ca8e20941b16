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
use crate::fs::FileIo;

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

    /// The mount's choice for files no rule in force may read or write.
    fn file_io(&self) -> FileIo;

    /// Kernel cache invalidations of rule changes not done yet: they wait on operations the
    /// rules delay (a read holds its page locked until answered).
    fn invalidations_waiting(&self) -> usize {
        0
    }
}

/// The warning for cache invalidations still waiting (none when there are none).
pub fn invalidation_warning(waiting: usize) -> Option<String> {
    (waiting > 0).then(|| {
        format!(
            "{waiting} kernel cache invalidation(s) wait on operations the rules delay: pages \
             cached before this update may be served without the new rules until they finish"
        )
    })
}

/// The warning for open files the rules in force cannot reach (none when there are none).
pub fn unreachable_warning(file_io: FileIo, unreachable: &[PathBuf]) -> Option<String> {
    if unreachable.is_empty() {
        return None;
    }
    let how = match file_io {
        FileIo::Cached => "the kernel's page cache serves their reads",
        _ => "the kernel serves their reads and writes directly (FUSE passthrough)",
    };
    let list: Vec<String> = unreachable
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Some(format!(
        "NOT FAULTED: {} open file(s) are out of reach of the rules in force until they are \
         closed and reopened, because {how} (file-io mode {file_io}): {}. Restart the \
         application to reach them, or mount with --file-io reachable so that rules reach \
         every open file",
        list.len(),
        list.join(", ")
    ))
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
        let warnings: Vec<String> = unreachable_warning(self.fs.file_io(), &unreachable_open_files)
            .into_iter()
            .chain(invalidation_warning(self.fs.invalidations_waiting()))
            .collect();
        for warning in &warnings {
            tracing::warn!(generation, "{warning}");
        }
        Ok(UpdateReport {
            generation,
            rule_count,
            unreachable_open_files,
            warnings,
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
            file_io: self.fs.file_io().name(),
            open_passthrough_files: open.iter().map(|p| self.container_path(p)).collect(),
            warnings: unreachable_warning(self.fs.file_io(), &unreachable_open_files)
                .into_iter()
                .collect(),
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
