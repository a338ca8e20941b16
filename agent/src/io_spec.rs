//! An ApplyIOChaos / StartIoExperiment request parsed once, at the edge: the container (typed),
//! the volume (checked), and the actions parsed once into the typed `io_rules::RuleSet` (kept
//! with the JSON document the injector takes, Chaos Mesh's action array, so nothing downstream
//! parses the text again).

use std::path::Path;

use io_rules::{RuleError, RuleSet};
use serde_json::Value;

use crate::container_fs;
use crate::container_runtime::{ContainerRef, Resolver};
use crate::error::AgentError;

/// A volume path inside a container: absolute, not `/`, no `..`, no NUL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VolumePath(String);

impl VolumePath {
    pub fn parse(path: &str) -> Result<Self, AgentError> {
        container_fs::validate_volume_path(path)?;
        Ok(Self(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VolumePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// IOChaos actions, validated: the typed rules and the same document as JSON.
#[derive(Clone, Debug)]
pub struct IoActions {
    rules: RuleSet,
    wire: Value,
}

impl IoActions {
    /// Parses and validates actions for `volume`; `None` when they ask for no fault at all
    /// (`""`, `"null"`, `"[]"`).
    pub fn parse(text: &str, volume: &VolumePath) -> Result<Option<Self>, AgentError> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "null" {
            return Ok(None);
        }
        let invalid = |err: RuleError| AgentError::InvalidActions(err.to_string());
        io_rules::check_action_count(trimmed).map_err(invalid)?;
        let wire: Value =
            serde_json::from_str(trimmed).map_err(|e| invalid(RuleError::Syntax(e)))?;
        let rules = RuleSet::from_json_value(&wire, Path::new(volume.as_str())).map_err(invalid)?;
        if rules.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self { rules, wire }))
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The document the injector takes (its `--rules` and `update`).
    pub fn wire(&self) -> &Value {
        &self.wire
    }
}

/// One IO request, parsed.
#[derive(Clone, Debug)]
pub struct IoSpec {
    pub container: ContainerRef,
    pub volume: VolumePath,
    /// `None`: recover.
    pub actions: Option<IoActions>,
}

impl IoSpec {
    /// Parses the three fields, in the order a user fixes them: container, volume, actions.
    pub fn parse(
        resolver: &Resolver,
        container_id: &str,
        volume: &str,
        actions: &str,
    ) -> Result<Self, AgentError> {
        let container = resolver.parse(container_id)?;
        let volume = VolumePath::parse(volume)?;
        let actions = IoActions::parse(actions, &volume)?;
        Ok(Self {
            container,
            volume,
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> VolumePath {
        VolumePath::parse("/data").unwrap()
    }

    #[test]
    fn actions_are_parsed_once_into_rules_and_their_document() {
        let text = r#"[{"type":"fault","path":"/data/**","percent":50,"faults":[{"errno":5,"weight":1}]}]"#;
        let actions = IoActions::parse(text, &volume()).unwrap().unwrap();
        assert_eq!(actions.len(), 1);
        assert_eq!(actions.wire()[0]["percent"], 50);
        for nothing in ["", "  ", "null", "[]"] {
            assert!(
                IoActions::parse(nothing, &volume()).unwrap().is_none(),
                "{nothing:?}"
            );
        }
    }

    #[test]
    fn bad_actions_name_the_action_and_field() {
        let err = IoActions::parse(
            r#"[{"type":"fault","percent":150,"faults":[{"errno":5}]}]"#,
            &volume(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("actions[0].percent"), "{err}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
        let err = IoActions::parse("[{", &volume()).unwrap_err();
        assert!(err.to_string().starts_with("actions: "), "{err}");
        assert!(VolumePath::parse("data").is_err());
        assert!(VolumePath::parse("/a/../b").is_err());
    }
}
