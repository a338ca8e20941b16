//! What a DNSChaos asks for, validated.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pattern::DomainPattern;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("action: {0:?} is not one of error, random")]
    Action(String),
    #[error("patterns[{index}]: {pattern:?}: {reason}")]
    Pattern {
        index: usize,
        pattern: String,
        reason: String,
    },
}

/// DNSChaos `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsAction {
    /// The lookup fails (SERVFAIL), as Chaos Mesh's chaos CoreDNS answers.
    Error,
    /// A random address of the asked family (A or AAAA).
    Random,
}

impl DnsAction {
    pub fn name(self) -> &'static str {
        match self {
            DnsAction::Error => "error",
            DnsAction::Random => "random",
        }
    }
}

impl FromStr for DnsAction {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "error" => Ok(DnsAction::Error),
            "random" => Ok(DnsAction::Random),
            other => Err(SpecError::Action(other.to_owned())),
        }
    }
}

/// The responder's whole configuration besides where it listens and forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderSpec {
    pub action: DnsAction,
    /// Empty: every name (as Chaos Mesh: "if the patterns is empty, will take effect on all the
    /// domain names").
    pub patterns: Vec<DomainPattern>,
}

impl ResponderSpec {
    pub fn parse<S: AsRef<str>>(action: &str, patterns: &[S]) -> Result<Self, SpecError> {
        let action = action.parse()?;
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| DomainPattern::parse(i, p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { action, patterns })
    }

    /// Whether the experiment covers `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(name))
    }

    /// The patterns as strings (for arguments and records).
    pub fn pattern_strings(&self) -> Vec<String> {
        self.patterns.iter().map(|p| p.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chaos Mesh: DNSChaos action is `error` or `random`; an empty pattern list covers every
    /// name.
    #[test]
    fn actions_and_the_empty_pattern_list() {
        let spec = ResponderSpec::parse::<&str>("random", &[]).unwrap();
        assert_eq!(spec.action, DnsAction::Random);
        assert!(spec.covers("anything.example.org"));
        let err = ResponderSpec::parse::<&str>("delay", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "action: \"delay\" is not one of error, random"
        );
        let spec = ResponderSpec::parse("error", &["*.example.com", "x.org"]).unwrap();
        assert!(spec.covers("a.example.com") && spec.covers("x.org."));
        assert!(!spec.covers("example.net"));
        assert_eq!(spec.pattern_strings(), ["*.example.com", "x.org"]);
    }
}
