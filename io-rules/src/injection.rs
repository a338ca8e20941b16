//! What the filesystem must do to one operation.

use std::time::Duration;

use super::attr::AttrOverride;
use super::mistake::Mistake;

/// The combined effect of every rule that fired on one operation, in rule order (as toda
/// applies its injectors): latencies add up; the first fault that fires fails the operation
/// and stops evaluation; attribute overrides merge with later rules winning per field; the
/// first mistake that fires corrupts the data.
///
/// The filesystem applies it in this order: sleep `delay` (with [`RuleStore::sleep`]), then
/// fail with `errno` if set, else run the operation, override attributes in its reply with
/// `attr`, and corrupt the data read or written with `mistake`.
///
/// [`RuleStore::sleep`]: super::RuleStore::sleep
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injection {
    pub delay: Option<Duration>,
    /// A positive errno for the FUSE reply.
    pub errno: Option<i32>,
    pub attr: Option<AttrOverride>,
    pub mistake: Option<Mistake>,
    /// The rule-set generation that produced this injection; pass it to
    /// [`RuleStore::sleep`](super::RuleStore::sleep) so a rule change that happened
    /// since evaluation also cuts the sleep short.
    pub generation: u64,
}

impl Injection {
    pub(super) fn nothing(generation: u64) -> Injection {
        Injection {
            generation,
            ..Injection::default()
        }
    }

    /// True when no rule fired.
    pub fn is_nothing(&self) -> bool {
        self.delay.is_none()
            && self.errno.is_none()
            && self.attr.is_none()
            && self.mistake.is_none()
    }
}
