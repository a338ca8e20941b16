//! From IOChaos action JSON to validated [`Rule`]s: the one place input is checked.

use std::num::NonZeroUsize;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::attr::{AttrOverride, FileKind};
use super::duration::parse_duration;
use super::error::{Problem, RuleError};
use super::method::{Method, MethodSet};
use super::mistake::{Filling, Mistake};
use super::path_glob::PathGlob;
use super::rule::{ActionType, Effect, Errno, Percent, Rule, WeightedErrnos};
use super::wire::{ACTION_FIELDS, WireAction, WireAttr, WireFault, WireMistake, json_type_name};

/// Validates every action; the first problem refuses the whole array.
/// The most actions one volume takes. Chaos Mesh's controller sends one per IOChaos on the
/// volume (a handful); the bound keeps a hostile request from costing the agent and the
/// injector memory in proportion (20,000 actions once took the agent to 646 MB).
pub const MAX_ACTIONS: usize = 1024;

/// Refuses a JSON array of more than [`MAX_ACTIONS`] elements before anything is built from it:
/// the elements are skipped, not parsed (a `Vec` of the zero-sized `IgnoredAny` allocates
/// nothing), so a hostile request costs no memory in proportion to its size. 20,000 actions
/// parsed into a `serde_json::Value` first took the agent's RSS up by 60 MB, which the
/// allocator kept. Anything that is not an array passes, for the full parse to name it.
pub fn check_action_count(json: &str) -> Result<(), RuleError> {
    match serde_json::from_str::<Vec<serde::de::IgnoredAny>>(json) {
        Ok(actions) if actions.len() > MAX_ACTIONS => Err(RuleError::TooMany {
            count: actions.len(),
            limit: MAX_ACTIONS,
        }),
        _ => Ok(()),
    }
}

pub(super) fn parse_actions(actions: &Value, mount_point: &Path) -> Result<Vec<Rule>, RuleError> {
    let Value::Array(actions) = actions else {
        return Err(RuleError::NotAnArray {
            found: json_type_name(actions),
        });
    };
    if actions.len() > MAX_ACTIONS {
        return Err(RuleError::TooMany {
            count: actions.len(),
            limit: MAX_ACTIONS,
        });
    }
    actions
        .iter()
        .enumerate()
        .map(|(index, action)| parse_action(index, action, mount_point))
        .collect()
}

fn parse_action(index: usize, action: &Value, mount_point: &Path) -> Result<Rule, RuleError> {
    let invalid = |field: &str, problem| RuleError::invalid(index, field, problem);

    let Value::Object(fields) = action else {
        return Err(invalid("", Problem::NotAnObject(json_type_name(action))));
    };
    if let Some(unknown) = fields.keys().find(|k| !ACTION_FIELDS.contains(&k.as_str())) {
        return Err(invalid(unknown, Problem::UnknownField));
    }
    let wire: WireAction = deserialize_field(index, action)?;

    let action_type = match wire.action_type.as_deref() {
        None => return Err(invalid("type", Problem::MissingType)),
        Some(name) => ActionType::parse(name).ok_or_else(|| {
            invalid(
                "type",
                Problem::UnknownType {
                    name: name.to_owned(),
                },
            )
        })?,
    };

    let path = match wire.path.as_deref() {
        None | Some("") => None,
        Some(pattern) => Some(PathGlob::new(pattern, mount_point).map_err(|e| {
            invalid(
                "path",
                Problem::InvalidGlob {
                    pattern: pattern.to_owned(),
                    reason: e.kind().to_string(),
                },
            )
        })?),
    };

    let methods = parse_methods(index, wire.methods.as_deref(), action_type)?;

    let percent = Percent::from_wire(wire.percent).map_err(|value| {
        invalid(
            "percent",
            Problem::OutOfRange {
                value,
                range: "0..=100",
            },
        )
    })?;

    let effect = match action_type {
        ActionType::Latency => Effect::Latency(parse_latency(index, wire.latency.as_deref())?),
        ActionType::Fault => Effect::Fault(parse_faults(index, wire.faults.as_deref())?),
        ActionType::AttrOverride => {
            let inline: WireAttr = deserialize_field(index, action)?;
            Effect::AttrOverride(parse_attr_override(index, inline, wire.attr)?)
        }
        ActionType::Mistake => Effect::Mistake(parse_mistake(index, wire.mistake)?),
    };

    Ok(Rule {
        path,
        methods,
        percent,
        effect,
        source: wire.source.filter(|s| !s.is_empty()),
    })
}

/// Deserializes `value` as `T`, naming the exact field on a type mismatch.
fn deserialize_field<T: DeserializeOwned>(index: usize, value: &Value) -> Result<T, RuleError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        RuleError::invalid(index, field, Problem::Malformed(e.into_inner().to_string()))
    })
}

fn parse_methods(
    index: usize,
    names: Option<&[String]>,
    action_type: ActionType,
) -> Result<MethodSet, RuleError> {
    let applicable = action_type.applicable_methods();
    let named = match names {
        None | Some([]) => return Ok(applicable),
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Method::parse(name.trim()).ok_or_else(|| {
                    RuleError::invalid(
                        index,
                        format!("methods[{i}]"),
                        Problem::UnknownMethod(name.clone()),
                    )
                })
            })
            .collect::<Result<MethodSet, _>>()?,
    };
    let methods = named.intersection(applicable);
    if methods.is_empty() {
        return Err(RuleError::invalid(
            index,
            "methods",
            Problem::NoApplicableMethod {
                action_type,
                applicable,
            },
        ));
    }
    Ok(methods)
}

fn parse_latency(index: usize, latency: Option<&str>) -> Result<std::time::Duration, RuleError> {
    let text = latency.ok_or_else(|| {
        RuleError::invalid(index, "latency", Problem::Required(ActionType::Latency))
    })?;
    parse_duration(text).map_err(|reason| {
        RuleError::invalid(
            index,
            "latency",
            Problem::InvalidDuration {
                text: text.to_owned(),
                reason,
            },
        )
    })
}

fn parse_faults(index: usize, faults: Option<&[WireFault]>) -> Result<WeightedErrnos, RuleError> {
    let faults = match faults {
        None => {
            return Err(RuleError::invalid(
                index,
                "faults",
                Problem::Required(ActionType::Fault),
            ));
        }
        Some([]) => return Err(RuleError::invalid(index, "faults", Problem::NoFaults)),
        Some(faults) => faults,
    };
    let mut weighted = Vec::with_capacity(faults.len());
    for (i, fault) in faults.iter().enumerate() {
        let errno = Errno::from_wire(fault.errno).ok_or_else(|| {
            RuleError::invalid(
                index,
                format!("faults[{i}].errno"),
                Problem::OutOfRange {
                    value: fault.errno,
                    range: Errno::RANGE,
                },
            )
        })?;
        // Chaos Mesh always sends a weight (1); a hand-written rule may leave it out.
        let weight = fault.weight.unwrap_or(1);
        let weight = u32::try_from(weight).map_err(|_| {
            RuleError::invalid(
                index,
                format!("faults[{i}].weight"),
                Problem::OutOfRange {
                    value: weight,
                    range: "0..=4294967295",
                },
            )
        })?;
        weighted.push((errno, u64::from(weight)));
    }
    if weighted.iter().all(|(_, weight)| *weight == 0) {
        return Err(RuleError::invalid(
            index,
            "faults",
            Problem::ZeroTotalWeight,
        ));
    }
    Ok(WeightedErrnos::new(weighted))
}

fn parse_attr_override(
    index: usize,
    inline: WireAttr,
    nested: Option<WireAttr>,
) -> Result<AttrOverride, RuleError> {
    let (attr, prefix) = match nested {
        Some(nested) if !inline.is_empty() && !nested.is_empty() => {
            return Err(RuleError::invalid(index, "attr", Problem::AttrGivenTwice));
        }
        Some(nested) if !nested.is_empty() => (nested, "attr."),
        _ => (inline, ""),
    };
    if attr.is_empty() {
        let field = if prefix.is_empty() { "" } else { "attr" };
        return Err(RuleError::invalid(index, field, Problem::NothingToOverride));
    }
    let kind = match attr.kind {
        None => None,
        Some(name) => Some(FileKind::parse(&name).ok_or_else(|| {
            RuleError::invalid(
                index,
                format!("{prefix}kind"),
                Problem::UnknownFileKind(name),
            )
        })?),
    };
    let perm = match attr.perm {
        None => None,
        Some(perm @ 0..=0o7777) => Some(perm as u16),
        Some(value) => {
            return Err(RuleError::invalid(
                index,
                format!("{prefix}perm"),
                Problem::OutOfRange {
                    value,
                    range: "0..=4095 (0o7777)",
                },
            ));
        }
    };
    Ok(AttrOverride {
        ino: attr.ino,
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.atime.map(|t| t.0),
        mtime: attr.mtime.map(|t| t.0),
        ctime: attr.ctime.map(|t| t.0),
        kind,
        perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
    })
}

fn parse_mistake(index: usize, mistake: Option<WireMistake>) -> Result<Mistake, RuleError> {
    let invalid = |field: &str, problem| RuleError::invalid(index, field, problem);
    let mistake =
        mistake.ok_or_else(|| invalid("mistake", Problem::Required(ActionType::Mistake)))?;
    let filling = match mistake.filling {
        None => {
            return Err(invalid(
                "mistake.filling",
                Problem::Required(ActionType::Mistake),
            ));
        }
        Some(name) => Filling::parse(&name)
            .ok_or_else(|| invalid("mistake.filling", Problem::UnknownFilling(name)))?,
    };
    let at_least_one = |field: &str, value: Option<i64>| {
        let value = value.ok_or_else(|| invalid(field, Problem::Required(ActionType::Mistake)))?;
        usize::try_from(value)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| {
                invalid(
                    field,
                    Problem::OutOfRange {
                        value,
                        range: "1..",
                    },
                )
            })
    };
    Ok(Mistake {
        filling,
        max_occurrences: at_least_one("mistake.maxOccurrences", mistake.max_occurrences)?,
        max_length: at_least_one("mistake.maxLength", mistake.max_length)?,
    })
}
