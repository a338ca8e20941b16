//! Why a rule set was refused, down to the action and the field.

use std::fmt;

use super::duration::DurationError;
use super::method::MethodSet;
use super::rule::ActionType;

/// A refused rule set. The whole set is refused: no action of it takes effect.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rules are not valid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    #[error("rules must be a JSON array of IOChaos actions, got {found}")]
    NotAnArray { found: &'static str },
    #[error("{count} actions; one volume takes at most {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("{location}: {problem}")]
    Invalid {
        location: FieldLocation,
        problem: Problem,
    },
}

impl RuleError {
    pub(super) fn invalid(index: usize, field: impl Into<String>, problem: Problem) -> RuleError {
        RuleError::Invalid {
            location: FieldLocation {
                index,
                field: field.into(),
            },
            problem,
        }
    }

    /// Where the problem is, when it is inside one action.
    pub fn location(&self) -> Option<&FieldLocation> {
        match self {
            RuleError::Invalid { location, .. } => Some(location),
            _ => None,
        }
    }
}

/// An action's index in the array and the path of a field inside it (`percent`,
/// `faults[1].errno`; empty for the action as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLocation {
    pub index: usize,
    pub field: String,
}

impl fmt::Display for FieldLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actions[{}]", self.index)?;
        match self.field.as_str() {
            "" => Ok(()),
            field if field.starts_with('[') => f.write_str(field),
            field => write!(f, ".{field}"),
        }
    }
}

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Malformed(String),
    #[error("expected an object, got {0}")]
    NotAnObject(&'static str),
    #[error("unknown field; an IOChaos action has {}", super::wire::ACTION_FIELDS.join(", "))]
    UnknownField,
    #[error("missing; expected one of {}", ActionType::NAMES)]
    MissingType,
    #[error("unknown type {name:?}; expected one of {}", ActionType::NAMES)]
    UnknownType { name: String },
    #[error("required for type {0}")]
    Required(ActionType),
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    #[error("none of these methods applies to type {action_type}, which acts on {applicable}")]
    NoApplicableMethod {
        action_type: ActionType,
        applicable: MethodSet,
    },
    #[error("{value} is out of range {range}")]
    OutOfRange { value: i64, range: &'static str },
    #[error("invalid glob {pattern:?}: {reason}")]
    InvalidGlob { pattern: String, reason: String },
    #[error("{text:?} {reason}")]
    InvalidDuration { text: String, reason: DurationError },
    #[error("a fault action needs at least one {{errno, weight}}")]
    NoFaults,
    #[error("the weights add up to 0; give at least one fault a positive weight")]
    ZeroTotalWeight,
    #[error("unknown filling {0:?}; expected zero or random")]
    UnknownFilling(String),
    #[error(
        "unknown file kind {0:?}; expected one of namedPipe, charDevice, blockDevice, directory, regularFile, symlink, socket"
    )]
    UnknownFileKind(String),
    #[error("attributes are given both inline and under `attr`; use one form")]
    AttrGivenTwice,
    #[error("names no attribute to override")]
    NothingToOverride,
}
