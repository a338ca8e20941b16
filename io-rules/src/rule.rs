//! Validated rules: once a [`RuleSet`] exists, every value in it is in range.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::Candidate;
use rand::Rng;
use serde::{Serialize, Serializer};

use super::attr::AttrOverride;
use super::error::RuleError;
use super::method::{Method, MethodSet};
use super::mistake::Mistake;
use super::parse::parse_actions;
use super::path_glob::PathGlob;

/// The four IOChaos action types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionType {
    Latency,
    Fault,
    AttrOverride,
    Mistake,
}

impl ActionType {
    pub(super) const NAMES: &'static str = "latency, fault, attrOverride, mistake";

    pub const fn name(self) -> &'static str {
        match self {
            ActionType::Latency => "latency",
            ActionType::Fault => "fault",
            ActionType::AttrOverride => "attrOverride",
            ActionType::Mistake => "mistake",
        }
    }

    pub fn parse(name: &str) -> Option<ActionType> {
        [
            ActionType::Latency,
            ActionType::Fault,
            ActionType::AttrOverride,
            ActionType::Mistake,
        ]
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The operations this type can affect at all: attributes only exist in replies that
    /// carry them, and corrupted data only in reads and writes.
    pub const fn applicable_methods(self) -> MethodSet {
        match self {
            ActionType::Latency | ActionType::Fault => MethodSet::ALL,
            ActionType::AttrOverride => MethodSet::ATTRIBUTE_REPLIES,
            ActionType::Mistake => MethodSet::DATA_TRANSFER,
        }
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ActionType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The probability that a matching operation is injected, 1..=100 percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Percent(u8);

impl Percent {
    pub const ALWAYS: Percent = Percent(100);

    /// Chaos Mesh documents 100 as the default, and its Go types cannot tell an omitted
    /// percent from 0 (the webhook defaults both to 100), so 0 and `None` mean 100 here too.
    pub(super) fn from_wire(percent: Option<i64>) -> Result<Percent, i64> {
        match percent {
            None | Some(0) => Ok(Percent::ALWAYS),
            Some(p @ 1..=100) => Ok(Percent(p as u8)),
            Some(out_of_range) => Err(out_of_range),
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    pub(super) fn roll<R: Rng + ?Sized>(self, rng: &mut R) -> bool {
        self.0 >= 100 || rng.random_range(0..100u8) < self.0
    }
}

/// An error number the kernel's FUSE will pass to the application (1..=511).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Errno(i32);

impl Errno {
    pub(super) const RANGE: &'static str = "1..=511";

    pub(super) fn from_wire(errno: i64) -> Option<Errno> {
        // The kernel refuses a FUSE reply error outside -511..=-1 (it turns it into EINVAL).
        (1..=511).contains(&errno).then_some(Errno(errno as i32))
    }

    pub const fn get(self) -> i32 {
        self.0
    }
}

/// Errors to return, chosen at random in proportion to their weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedErrnos {
    /// Each errno with the running total of weights up to and including it.
    cumulative: Box<[(Errno, u64)]>,
}

#[derive(Serialize)]
struct WeightedErrno {
    errno: Errno,
    weight: u64,
}

impl WeightedErrnos {
    /// `weighted` must have a positive total weight (checked by the parser).
    pub(super) fn new(weighted: impl IntoIterator<Item = (Errno, u64)>) -> WeightedErrnos {
        let mut total = 0u64;
        let cumulative = weighted
            .into_iter()
            .filter(|(_, weight)| *weight > 0)
            .map(|(errno, weight)| {
                total += weight;
                (errno, total)
            })
            .collect();
        WeightedErrnos { cumulative }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().map_or(0, |(_, total)| *total)
    }

    pub fn choose<R: Rng + ?Sized>(&self, rng: &mut R) -> Errno {
        match &*self.cumulative {
            [(only, _)] => *only,
            choices => {
                let ticket = rng.random_range(0..self.total());
                choices
                    .iter()
                    .find(|(_, running_total)| ticket < *running_total)
                    .or(choices.last())
                    .map_or(Errno(libc::EIO), |(errno, _)| *errno)
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Errno, u64)> + '_ {
        let mut previous = 0;
        self.cumulative.iter().map(move |(errno, running_total)| {
            let weight = running_total - previous;
            previous = *running_total;
            (*errno, weight)
        })
    }
}

impl Serialize for WeightedErrnos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.iter()
                .map(|(errno, weight)| WeightedErrno { errno, weight }),
        )
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    Latency(#[serde(serialize_with = "serialize_duration")] Duration),
    Fault(WeightedErrnos),
    AttrOverride(AttrOverride),
    Mistake(Mistake),
}

fn serialize_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

impl Effect {
    pub fn action_type(&self) -> ActionType {
        match self {
            Effect::Latency(_) => ActionType::Latency,
            Effect::Fault(_) => ActionType::Fault,
            Effect::AttrOverride(_) => ActionType::AttrOverride,
            Effect::Mistake(_) => ActionType::Mistake,
        }
    }
}

/// One validated action.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None` matches every path.
    pub(super) path: Option<PathGlob>,
    /// The methods the action named, narrowed to those its type can affect.
    pub(super) methods: MethodSet,
    pub(super) percent: Percent,
    pub(super) effect: Effect,
    /// Chaos Mesh's `source` ("namespace/name" of the IOChaos), for status reports.
    pub(super) source: Option<String>,
}

impl Rule {
    pub fn action_type(&self) -> ActionType {
        self.effect.action_type()
    }

    pub fn path_pattern(&self) -> Option<&str> {
        self.path.as_ref().map(PathGlob::pattern)
    }

    pub fn methods(&self) -> MethodSet {
        self.methods
    }

    pub fn percent(&self) -> Percent {
        self.percent
    }

    pub fn effect(&self) -> &Effect {
        &self.effect
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    pub(super) fn matches_path(&self, candidate: &Candidate<'_>) -> bool {
        self.path
            .as_ref()
            .is_none_or(|glob| glob.is_match(candidate))
    }

    pub(super) fn selects(&self, method: Method, candidate: &Candidate<'_>) -> bool {
        self.methods.contains(method) && self.matches_path(candidate)
    }
}

/// An immutable, validated set of rules for one mount point.
#[derive(Debug, Clone)]
pub struct RuleSet {
    mount_point: PathBuf,
    rules: Box<[Rule]>,
    /// Union of the rules' methods: a method outside it needs no path matching at all.
    methods: MethodSet,
}

impl RuleSet {
    /// Parses Chaos Mesh IOChaos actions (a JSON array). Paths evaluated later are relative
    /// to the mount root and are matched as `mount_point/<path>`.
    pub fn parse(json: &str, mount_point: &Path) -> Result<RuleSet, RuleError> {
        crate::parse::check_action_count(json)?;
        let value = serde_json::from_str(json).map_err(RuleError::Syntax)?;
        RuleSet::from_json_value(&value, mount_point)
    }

    /// [`RuleSet::parse`] for JSON that is already parsed.
    pub fn from_json_value(
        actions: &serde_json::Value,
        mount_point: &Path,
    ) -> Result<RuleSet, RuleError> {
        let rules = parse_actions(actions, mount_point)?;
        Ok(RuleSet::from_rules(mount_point, rules))
    }

    /// Compiles every path matcher now, so that no operation pays for it when it is first
    /// matched (the store does this before rules go into force; a set that is only validated
    /// never compiles them).
    pub fn compile(&self) {
        for path in self.rules.iter().filter_map(|rule| rule.path.as_ref()) {
            path.compile();
        }
    }

    /// Whether every path matcher is compiled.
    pub fn is_compiled(&self) -> bool {
        self.rules
            .iter()
            .filter_map(|rule| rule.path.as_ref())
            .all(PathGlob::is_compiled)
    }

    /// No rules: nothing is injected.
    pub fn empty(mount_point: &Path) -> RuleSet {
        RuleSet::from_rules(mount_point, Vec::new())
    }

    fn from_rules(mount_point: &Path, rules: Vec<Rule>) -> RuleSet {
        let methods = rules
            .iter()
            .fold(MethodSet::EMPTY, |all, rule| all.union(rule.methods));
        RuleSet {
            mount_point: mount_point.to_owned(),
            rules: rules.into_boxed_slice(),
            methods,
        }
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every method some rule can affect.
    pub fn methods(&self) -> MethodSet {
        self.methods
    }
}
