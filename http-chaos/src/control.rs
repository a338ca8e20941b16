//! The proxy's control line: every rule set in force in a pod, one JSON object per line on the
//! proxy's stdin, `{"sets": [{"ports": [8080], "rules": [...]}, ...]}`. A pod may hold several
//! HTTPChaos at once (Chaos Mesh's PodHttpChaos merges them); each keeps its rules to its own
//! ports, and the sets apply in the order given (the order the experiments came in), every
//! selected rule of every set, as tproxy applies every selected rule of its one list. A set with
//! `tls` (Chaos Mesh's tls JSON) has the connections to its ports intercepted as HTTPS; one port
//! has one way of being served, so two sets that share a port must agree on it.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::spec::{HttpChaosSpec, Rule, SpecError};
use crate::tls::Interception;

/// One experiment's rules and the ports they apply to; no ports means every port the proxy
/// serves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleSet {
    pub ports: Vec<u16>,
    pub rules: Vec<Rule>,
    /// HTTPS on these ports: TLS terminated with the set's certificate.
    pub tls: Option<Arc<Interception>>,
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
    #[serde(default)]
    tls: Value,
}

/// Sets whose ports overlap (no ports: every port) must intercept alike: the first pair that
/// does not, as `(earlier, later)` indexes.
pub fn tls_conflict<T: PartialEq>(sets: &[(&[u16], Option<T>)]) -> Option<(usize, usize)> {
    for (j, (ports_j, tls_j)) in sets.iter().enumerate() {
        for (i, (ports_i, tls_i)) in sets[..j].iter().enumerate() {
            let overlap = ports_i.is_empty()
                || ports_j.is_empty()
                || ports_i.iter().any(|p| ports_j.contains(p));
            if overlap && tls_i != tls_j {
                return Some((i, j));
            }
        }
    }
    None
}

/// The control line for `sets`: each a list of ports, Chaos Mesh's rules JSON and its tls JSON
/// (validated by [`HttpChaosSpec::parse`] already; `""` is no rule, no TLS).
pub fn line<'a>(
    sets: impl IntoIterator<Item = (&'a [u16], &'a str, &'a str)>,
) -> Result<String, SpecError> {
    let sets =
        sets.into_iter()
            .map(|(ports, rules, tls)| {
                let rules: Value = match rules.trim() {
                    "" | "null" => json!([]),
                    text => serde_json::from_str(text)
                        .map_err(|e| SpecError::RulesJson(e.to_string()))?,
                };
                let mut set = json!({"ports": ports, "rules": rules});
                match tls.trim() {
                    "" | "null" => {}
                    text => {
                        set["tls"] = serde_json::from_str(text)
                            .map_err(|e| SpecError::TlsJson(e.to_string()))?
                    }
                }
                Ok(set)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
    Ok(json!({ "sets": sets }).to_string())
}

/// Parses a control line; errors name the set (`sets[1].rules[0].actions.delay: ...`).
pub fn parse(line: &str) -> Result<Vec<RuleSet>, SpecError> {
    let wire: WireSets =
        serde_json::from_str(line).map_err(|e| SpecError::RulesJson(e.to_string()))?;
    let sets = wire
        .sets
        .into_iter()
        .enumerate()
        .map(|(i, set)| {
            let in_set = |e| match e {
                SpecError::Invalid { field, reason } => SpecError::Invalid {
                    field: format!("sets[{i}].{field}"),
                    reason,
                },
                other => other,
            };
            let tls = match &set.tls {
                Value::Null => String::new(),
                tls => tls.to_string(),
            };
            let spec =
                HttpChaosSpec::parse(&set.rules.to_string(), &set.ports, &tls).map_err(in_set)?;
            let tls = spec
                .tls
                .as_ref()
                .map(|tls| Interception::new(tls).map(Arc::new))
                .transpose()
                .map_err(in_set)?;
            Ok(RuleSet {
                ports: spec.proxy_ports,
                rules: spec.rules,
                tls,
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    let by_port: Vec<_> = sets
        .iter()
        .map(|s| (s.ports.as_slice(), s.tls.as_deref()))
        .collect();
    if let Some((i, j)) = tls_conflict(&by_port) {
        return Err(SpecError::Invalid {
            field: format!("sets[{j}].tls"),
            reason: format!("a port it shares with sets[{i}] is intercepted differently there"),
        });
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABORT: &str =
        r#"[{"target": "Request", "selector": {"path": "/a"}, "actions": {"abort": true}}]"#;
    const DELAY: &str = r#"[{"target": "Request", "selector": {}, "actions": {"delay": "1s"}}]"#;

    #[test]
    fn sets_round_trip_in_order_with_their_ports() {
        let text = line([
            (&[8080u16][..], ABORT, ""),
            (&[9090u16, 8080][..], DELAY, ""),
        ])
        .unwrap();
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
            parse(&line([(&[80u16][..], "", "")]).unwrap()).unwrap()[0].rules,
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
        assert!(line([(&[80u16][..], "{not json", "")]).is_err());
        assert!(line([(&[80u16][..], "", "{not json")]).is_err());
    }

    fn tls_json(pki: &crate::tls::tests::Pki) -> String {
        use base64::Engine;
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        json!({
            "cert_file": {"type": "Contents", "value": b64(&pki.cert_pem)},
            "key_file": {"type": "Contents", "value": b64(&pki.key_pem)},
            "ca_file": {"type": "Contents", "value": b64(&pki.ca_pem)},
        })
        .to_string()
    }

    /// A set's TLS travels with it; sets that share a port must intercept alike.
    #[test]
    fn tls_travels_per_set_and_a_shared_port_agrees() {
        let pki = crate::tls::tests::pki(&["web"]);
        let tls = tls_json(&pki);
        let sets = parse(
            &line([
                (&[443u16][..], ABORT, tls.as_str()),
                (&[80u16][..], DELAY, ""),
            ])
            .unwrap(),
        )
        .unwrap();
        assert!(sets[0].tls.is_some());
        assert!(sets[1].tls.is_none());
        let same = parse(
            &line([
                (&[443u16][..], ABORT, tls.as_str()),
                (&[443u16][..], DELAY, tls.as_str()),
            ])
            .unwrap(),
        );
        assert!(same.is_ok(), "{same:?}");
        let err = parse(
            &line([
                (&[443u16][..], ABORT, tls.as_str()),
                (&[443u16, 80][..], DELAY, ""),
            ])
            .unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("sets[1].tls: "), "{err}");
        // No ports is every port: it shares them all.
        let err =
            parse(&line([(&[][..], ABORT, ""), (&[443u16][..], DELAY, tls.as_str())]).unwrap())
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("sets[1].tls: "), "{err}");
        assert_eq!(
            tls_conflict(&[(&[80u16][..], Some(1)), (&[81u16][..], None)]),
            None
        );
    }
}
