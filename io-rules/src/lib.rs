//! faultline IO rules: Chaos Mesh IOChaos actions parsed once into validated rules, and the live
//! store the filesystem consults on every operation.
//!
//! Boundaries: this module decides *what* to inject (delay, errno, attribute override, data
//! corruption) for an operation on a path; the injector's filesystem applies it. Nothing
//! here touches files, FUSE or the network.
//!
//! Hot path: [`RuleStore::evaluate`] is one atomic load when no rule is in force; otherwise
//! a lock-free snapshot load, a method bitset test, precompiled glob matches against a
//! reused thread-local path buffer, and a thread-local fast RNG. It does not allocate.
#![forbid(unsafe_code)]

mod attr;
mod duration;
mod error;
mod generation_gate;
mod injection;
mod method;
mod mistake;
mod parse;
mod path_glob;
mod rng;
mod rule;
mod status;
mod store;
mod wire;

pub use attr::{AttrOverride, FileAttrs, FileKind};
pub use duration::{DurationError, parse_duration};
pub use error::{FieldLocation, Problem, RuleError};
pub use generation_gate::SleepOutcome;
pub use injection::Injection;
pub use method::{Method, MethodSet};
pub use mistake::{Filling, Mistake};
pub use parse::{MAX_ACTIONS, check_action_count};
pub use path_glob::container_path;
pub use rule::{ActionType, Effect, Errno, Percent, Rule, RuleSet, WeightedErrnos};
pub use status::{RuleStatus, RulesStatus};
pub use store::{RuleStore, UpdateHook};

#[cfg(test)]
mod tests;
