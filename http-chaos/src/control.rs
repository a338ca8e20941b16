//! The proxy's control line: every rule set in force in a pod, one JSON object per line on the
//! proxy's stdin, `{"sets": [{"ports": [8080], "rules": [...]}, ...]}`. A pod may hold several
//! HTTPChaos at once (Chaos Mesh's PodHttpChaos merges them); each keeps its rules to its own
//! ports, and the sets apply in the order given (the order the experiments came in), every
//! selected rule of every set, as tproxy applies every selected rule of its one list.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::spec::{HttpChaosSpec, Rule, SpecError};

/// One experiment's rules and the ports they apply to; no ports means every port the proxy
/// serves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleSet {
    pub ports: Vec<u16>,
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn serves(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }
}

#[derive(Deserialize)]
struct WireSets {
    sets: Vec<WireSet>,
}

#[derive(Deserialize)]
struct WireSet {
    #[serde(default)]
    ports: Vec<u32>,
    #[serde(default)]
    rules: Value,
}

/// The control line for `sets`: each a list of ports and Chaos Mesh's rules JSON (validated by
/// [`HttpChaosSpec::parse`] already; `""` is no rule).
pub fn line<'a>(sets: impl IntoIterator<Item = (&'a [u16], &'a str)>) -> Result<String, SpecError> {
    let sets =
        sets.into_iter()
            .map(|(ports, rules)| {
                let rules: Value = match rules.trim() {
                    "" | "null" => json!([]),
                    text => serde_json::from_str(text)
                        .map_err(|e| SpecError::RulesJson(e.to_string()))?,
                };
                Ok(json!({"ports": ports, "rules": rules}))
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
    Ok(json!({ "sets": sets }).to_string())
}

/// Parses a control line; errors name the set (`sets[1].rules[0].actions.delay: ...`).
pub fn parse(line: &str) -> Result<Vec<RuleSet>, SpecError> {
    let wire: WireSets =
        serde_json::from_str(line).map_err(|e| SpecError::RulesJson(e.to_string()))?;
    wire.sets
        .into_iter()
        .enumerate()
        .map(|(i, set)| {
            let spec = HttpChaosSpec::parse(&set.rules.to_string(), &set.ports, "").map_err(
                |e| match e {
                    SpecError::Invalid { field, reason } => SpecError::Invalid {
                        field: format!("sets[{i}].{field}"),
                        reason,
                    },
                    other => other,
                },
            )?;
            Ok(RuleSet {
                ports: spec.proxy_ports,
                rules: spec.rules,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABORT: &str =
        r#"[{"target": "Request", "selector": {"path": "/a"}, "actions": {"abort": true}}]"#;
    const DELAY: &str = r#"[{"target": "Request", "selector": {}, "actions": {"delay": "1s"}}]"#;

    #[test]
    fn sets_round_trip_in_order_with_their_ports() {
        let text = line([(&[8080u16][..], ABORT), (&[9090u16, 8080][..], DELAY)]).unwrap();
        let sets = parse(&text).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].ports, [8080]);
        assert!(sets[0].rules[0].action.abort);
        assert_eq!(sets[1].ports, [9090, 8080]);
        assert_eq!(
            sets[1].rules[0].action.delay,
            Some(std::time::Duration::from_secs(1))
        );
        assert!(sets[0].serves(8080) && !sets[0].serves(9090));
        assert!(RuleSet::default().serves(1));
        // No rule is an empty set, not an error; no set at all is no rule in force.
        assert_eq!(
            parse(&line([(&[80u16][..], "")]).unwrap()).unwrap()[0].rules,
            []
        );
        assert_eq!(parse(&line([]).unwrap()).unwrap(), []);
        assert!(!line([]).unwrap().contains('\n'));
    }

    #[test]
    fn errors_name_the_set_and_the_field() {
        let bad = r#"{"sets": [{"ports": [80], "rules": []}, {"ports": [80], "rules": [{"target": "Request", "actions": {"delay": "10"}}]}]}"#;
        let err = parse(bad).unwrap_err().to_string();
        assert!(err.starts_with("sets[1].rules[0].actions.delay: "), "{err}");
        assert!(parse("[]").is_err(), "a bare list is not a control line");
        assert!(line([(&[80u16][..], "{not json")]).is_err());
    }
}
