//! DNSChaos spec -> the agent's DNS experiment: the action and the patterns, validated with the
//! responder's own parser (the same one the agent uses), so a bad pattern is refused here,
//! naming its index.

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::DNSChaosSpec;

pub(super) fn plan(spec: &DNSChaosSpec, namespace: &str) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::container_selection(&mut problems, &spec.container_selector, namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());
    for (i, pattern) in spec.patterns.iter().enumerate() {
        if let Err(err) = dns_responder::DomainPattern::parse(i, pattern) {
            let message = err.to_string();
            let reason = message
                .split_once(": ")
                .map(|(_, reason)| reason.to_owned())
                .unwrap_or(message);
            problems.invalid(format!("patterns[{i}]"), reason);
        }
    }
    let plan = selection.map(|(selector, mode)| Plan {
        selection: Selection {
            selector,
            mode,
            scope: Scope::Containers(spec.container_selector.container_names.clone()),
        },
        duration,
        action: Action::Dns {
            action: spec.action.name().to_owned(),
            patterns: spec
                .patterns
                .iter()
                .map(|p| p.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        },
    });
    problems.finish(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DNSChaos;
    use crate::plan::Plannable;

    fn chaos(spec: serde_json::Value) -> DNSChaos {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "chaos.faultline.dev/v1alpha1",
            "kind": "DNSChaos",
            "metadata": {"name": "dns", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    /// Chaos Mesh's DNSChaos: action error|random, patterns, selector, mode, duration,
    /// containerNames.
    #[test]
    fn a_chaos_mesh_dnschaos_plans_to_the_agent_experiment() {
        let plan = chaos(serde_json::json!({
            "action": "random",
            "mode": "all",
            "patterns": ["google.com", "chaos-mes?.org", "github.*", "*.Example.com."],
            "selector": {"labelSelectors": {"app": "web"}},
            "containerNames": ["app"],
            "duration": "90s",
        }))
        .plan()
        .unwrap();
        assert_eq!(
            plan.action,
            Action::Dns {
                action: "random".into(),
                patterns: vec![
                    "google.com".into(),
                    "chaos-mes?.org".into(),
                    "github.*".into(),
                    "*.example.com".into()
                ],
            }
        );
        assert_eq!(plan.duration, Some(std::time::Duration::from_secs(90)));
        assert_eq!(plan.selection.scope, Scope::Containers(vec!["app".into()]));
        assert_eq!(plan.selection.selector.namespaces, ["shop"]);
    }

    #[test]
    fn bad_patterns_and_actions_are_named() {
        let err = chaos(serde_json::json!({
            "action": "error", "mode": "one", "selector": {},
            "patterns": ["ok.com", "bad pattern"],
        }))
        .plan()
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("patterns[1]"), "{text}");
        assert!(!text.contains("patterns[0]"), "{text}");
        let bad: Result<DNSChaos, _> = serde_json::from_value(serde_json::json!({
            "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "DNSChaos",
            "metadata": {"name": "dns"},
            "spec": {"action": "delay", "mode": "one", "selector": {}},
        }));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unknown variant `delay`")
        );
    }
}
