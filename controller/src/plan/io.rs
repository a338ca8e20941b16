//! IOChaos spec -> the IOChaos action the agent applies, built as Chaos Mesh's controller builds
//! it (`type`, filter, `faults: [{errno, weight: 1}]`, `latency`, `attr`, `mistake`) and checked
//! with the injector's own rule parser, so what the controller accepts the agent accepts.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::{IOChaosSpec, IoAction};

pub(super) fn plan(spec: &IOChaosSpec, namespace: &str) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::container_selection(&mut problems, &spec.container_selector, namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());

    let volume = spec.volume_path.trim();
    if !volume.starts_with('/') || volume == "/" || volume.split('/').any(|c| c == "..") {
        problems.invalid(
            "volumePath",
            format!(
                "{volume:?}: the absolute mount path of a volume in the container (not /, no ..)"
            ),
        );
    }
    let required = |problems: &mut InvalidSpec, present: bool, field: &str| {
        if !present {
            problems.invalid(
                field,
                format!("required for action {}", spec.action.as_str()),
            );
        }
    };
    match spec.action {
        IoAction::Latency => required(&mut problems, spec.delay.is_some(), "delay"),
        IoAction::Fault => required(&mut problems, spec.errno.is_some_and(|e| e != 0), "errno"),
        IoAction::AttrOverride => required(&mut problems, spec.attr.is_some(), "attr"),
        IoAction::Mistake => required(&mut problems, spec.mistake.is_some(), "mistake"),
    }

    let action = actions_json(spec);
    if problems.is_empty()
        && let Err(e) = io_rules::RuleSet::from_json_value(&action, Path::new(volume))
    {
        // The parser names `actions[0].<field>`; the spec's field has the same name.
        let text = e.to_string();
        let field = e
            .location()
            .map(|l| l.field.clone())
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "action".into());
        let problem = text
            .split_once(": ")
            .map(|(_, p)| p.to_owned())
            .unwrap_or(text);
        problems.invalid(spec_field(&field), problem);
    }

    let plan = selection.map(|(selector, mode)| Plan {
        selection: Selection {
            selector,
            mode,
            scope: Scope::Containers(spec.container_selector.container_names.clone()),
        },
        duration,
        action: Action::Io {
            volume: volume.to_owned(),
            actions: action.to_string(),
        },
    });
    problems.finish(plan)
}

/// The rule parser's field names for the spec's: `latency` is `delay`, `faults[0].errno` is
/// `errno`.
fn spec_field(field: &str) -> String {
    match field {
        "latency" => "delay".into(),
        f if f.starts_with("faults") => "errno".into(),
        f => f.to_owned(),
    }
}

/// The JSON array of one IOChaos action.
pub fn actions_json(spec: &IOChaosSpec) -> Value {
    let mut action = Map::new();
    action.insert("type".into(), json!(spec.action.as_str()));
    if let Some(path) = spec.path.as_deref().filter(|p| !p.is_empty()) {
        action.insert("path".into(), json!(path));
    }
    if !spec.methods.is_empty() {
        action.insert("methods".into(), json!(spec.methods));
    }
    action.insert("percent".into(), json!(spec.percent.unwrap_or(100)));
    match spec.action {
        IoAction::Latency => {
            action.insert(
                "latency".into(),
                json!(spec.delay.clone().unwrap_or_default()),
            );
        }
        IoAction::Fault => {
            action.insert(
                "faults".into(),
                json!([{ "errno": spec.errno.unwrap_or(0), "weight": 1 }]),
            );
        }
        IoAction::AttrOverride => {
            action.insert("attr".into(), json!(spec.attr.clone().unwrap_or_default()));
        }
        IoAction::Mistake => {
            action.insert(
                "mistake".into(),
                json!(spec.mistake.clone().unwrap_or_default()),
            );
        }
    }
    Value::Array(vec![Value::Object(action)])
}
