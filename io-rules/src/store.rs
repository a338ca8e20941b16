//! The live rule set shared by the filesystem threads and the control plane.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::generation_gate::{GenerationGate, SleepOutcome};
use super::injection::Injection;
use super::method::{Method, MethodSet};
use super::path_glob::with_container_path;
use super::rng::with_fast_rng;
use super::rule::{Effect, RuleSet};
use super::status::{RuleStatus, RulesStatus};

/// Called after every [`RuleStore::update`] with the previous and the new rule set, before
/// `update` returns (the filesystem invalidates kernel attribute/entry caches here, so a
/// rule is in force for every operation issued after `update` returns).
pub type UpdateHook = Box<dyn Fn(&RuleSet, &RuleSet) + Send + Sync>;

#[derive(Debug, Default)]
struct RuleCounters {
    matched: AtomicU64,
    injected: AtomicU64,
}

/// A rule set in force, its generation, and its counters (which start at 0 with it).
#[derive(Debug)]
struct ActiveRules {
    rules: Arc<RuleSet>,
    counters: Box<[RuleCounters]>,
    generation: u64,
}

impl ActiveRules {
    fn new(rules: Arc<RuleSet>, generation: u64) -> ActiveRules {
        let counters = rules
            .rules()
            .iter()
            .map(|_| RuleCounters::default())
            .collect();
        ActiveRules {
            rules,
            counters,
            generation,
        }
    }

    fn evaluate(&self, method: Method, path_rel: &Path) -> Injection {
        let mut injection = Injection::nothing(self.generation);
        if !self.rules.methods().contains(method) {
            return injection;
        }
        with_container_path(self.rules.mount_point(), path_rel, |candidate| {
            with_fast_rng(|rng| {
                for (rule, counters) in self.rules.rules().iter().zip(&*self.counters) {
                    if !rule.selects(method, candidate) {
                        continue;
                    }
                    counters.matched.fetch_add(1, Ordering::Relaxed);
                    if !rule.percent.roll(rng) {
                        continue;
                    }
                    counters.injected.fetch_add(1, Ordering::Relaxed);
                    match &rule.effect {
                        Effect::Latency(delay) => {
                            let total = injection.delay.unwrap_or_default().saturating_add(*delay);
                            injection.delay = Some(total);
                        }
                        Effect::Fault(errnos) => {
                            injection.errno = Some(errnos.choose(rng).get());
                            break;
                        }
                        Effect::AttrOverride(attr) => {
                            injection.attr = Some(match injection.attr {
                                Some(earlier) => earlier.then(*attr),
                                None => *attr,
                            });
                        }
                        Effect::Mistake(mistake) => {
                            injection.mistake.get_or_insert(*mistake);
                        }
                    }
                }
            })
        });
        injection
    }

    fn may_match(&self, path_rel: &Path, methods: MethodSet) -> bool {
        if !self.rules.methods().intersects(methods) {
            return false;
        }
        with_container_path(self.rules.mount_point(), path_rel, |candidate| {
            self.rules
                .rules()
                .iter()
                .any(|rule| rule.methods.intersects(methods) && rule.matches_path(candidate))
        })
    }
}

/// The rule set in force, swapped atomically by the control plane and read lock-free by
/// the filesystem on every operation.
pub struct RuleStore {
    mount_point: PathBuf,
    active: ArcSwap<ActiveRules>,
    // Mirrors `!active.rules.is_empty()` so the no-rules path is one relaxed load.
    has_rules: AtomicBool,
    gate: GenerationGate,
    // Also serialises updates, so the hook sees them in generation order.
    update_hook: Mutex<Option<UpdateHook>>,
}

impl RuleStore {
    /// An empty store (generation 0) for the volume mounted at `mount_point` (the path as
    /// seen inside the container).
    pub fn new(mount_point: impl Into<PathBuf>) -> RuleStore {
        let mount_point = mount_point.into();
        RuleStore {
            active: ArcSwap::from_pointee(ActiveRules::new(
                Arc::new(RuleSet::empty(&mount_point)),
                0,
            )),
            mount_point,
            has_rules: AtomicBool::new(false),
            gate: GenerationGate::new(),
            update_hook: Mutex::new(None),
        }
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// Sets the hook run on every update (replacing any earlier one).
    pub fn set_update_hook(&self, hook: UpdateHook) {
        *self.update_hook.lock() = Some(hook);
    }

    /// Puts `rules` in force and returns their generation. Latency sleeps in flight end at
    /// once; the update hook has run when this returns. Counters restart at 0.
    pub fn update(&self, rules: RuleSet) -> u64 {
        // Compiled before it goes into force, not by the first operation it meets.
        rules.compile();
        let hook = self.update_hook.lock();
        let rules = Arc::new(rules);
        let has_rules = !rules.is_empty();
        let mut previous = None;
        let generation = self.gate.advance(|generation| {
            let next = Arc::new(ActiveRules::new(Arc::clone(&rules), generation));
            previous = Some(self.active.swap(next));
            self.has_rules.store(has_rules, Ordering::Release);
        });
        if let (Some(hook), Some(previous)) = (hook.as_ref(), previous) {
            hook(&previous.rules, &rules);
        }
        generation
    }

    /// Removes every rule (recovery); returns the new generation.
    pub fn clear(&self) -> u64 {
        self.update(RuleSet::empty(&self.mount_point))
    }

    /// The generation of the rules in force: 0 at start, +1 per update.
    pub fn generation(&self) -> u64 {
        self.active.load().generation
    }

    /// True when no rule is in force: the filesystem can skip all rule work.
    pub fn is_empty(&self) -> bool {
        !self.has_rules.load(Ordering::Acquire)
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.active.load().rules)
    }

    /// Could some rule in force ever act on `path_rel` (relative to the mount root) for any
    /// of `methods`? Percentages are ignored. False means the filesystem may bypass rule
    /// evaluation for it (kernel passthrough, kernel attribute caching) until the rules change.
    pub fn may_match(&self, path_rel: &Path, methods: MethodSet) -> bool {
        !self.is_empty() && self.active.load().may_match(path_rel, methods)
    }

    /// Could some rule in force act on any path for any of `methods`?
    pub fn may_match_any_path(&self, methods: MethodSet) -> bool {
        !self.is_empty() && self.active.load().rules.methods().intersects(methods)
    }

    /// Decides what to do to one operation on `path_rel` (relative to the mount root):
    /// matches paths and methods, rolls percentages and weighted errnos, counts.
    pub fn evaluate(&self, method: Method, path_rel: &Path) -> Injection {
        if self.is_empty() {
            return Injection::default();
        }
        self.active.load().evaluate(method, path_rel)
    }

    /// Blocks the calling thread for `delay`, or less if the rules change; `generation` is
    /// [`Injection::generation`] of the injection that asked for the delay.
    pub fn sleep(&self, delay: Duration, generation: u64) -> SleepOutcome {
        self.gate.sleep(delay, generation)
    }

    /// [`RuleStore::sleep`] that also ends once `cancelled` is set; the setter then calls
    /// [`RuleStore::wake_sleepers`].
    pub fn sleep_unless(
        &self,
        delay: Duration,
        generation: u64,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> SleepOutcome {
        self.gate.sleep_unless(delay, generation, cancelled)
    }

    /// Wakes every latency sleeper to check its cancel flag.
    pub fn wake_sleepers(&self) {
        self.gate.wake_all();
    }

    /// The async form of [`RuleStore::sleep`] (needs a Tokio runtime with time enabled).
    pub async fn sleep_async(&self, delay: Duration, generation: u64) -> SleepOutcome {
        self.gate.sleep_async(delay, generation).await
    }

    /// Blocks until the generation differs from `seen` (or `timeout` passes) and returns
    /// the current generation.
    pub fn wait_for_update(&self, seen: u64, timeout: Option<Duration>) -> u64 {
        self.gate.wait_for_change(seen, timeout)
    }

    /// A receiver that sees every new generation (for async watchers).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.gate.subscribe()
    }

    /// The rules in force with their counters.
    pub fn status(&self) -> RulesStatus {
        let active = self.active.load();
        let rules = active
            .rules
            .rules()
            .iter()
            .zip(&*active.counters)
            .enumerate()
            .map(|(index, (rule, counters))| RuleStatus {
                index,
                action_type: rule.action_type(),
                path: rule.path_pattern().map(str::to_owned),
                methods: rule.methods(),
                percent: rule.percent().get(),
                effect: rule.effect().clone(),
                source: rule.source().map(str::to_owned),
                matched: counters.matched.load(Ordering::Relaxed),
                injected: counters.injected.load(Ordering::Relaxed),
            })
            .collect();
        RulesStatus {
            generation: active.generation,
            mount_point: self.mount_point.clone(),
            rules,
        }
    }
}

impl std::fmt::Debug for RuleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleStore")
            .field("mount_point", &self.mount_point)
            .field("generation", &self.generation())
            .field("rules", &self.active.load().rules.len())
            .finish()
    }
}
