//! Chaos Mesh's selector semantics as Kubernetes selector strings (sent to the API server) and
//! as in-memory matches (for pods fetched by name, which no list filtered).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::crd::{LabelOperator, LabelSelectorRequirement, PodSelectorSpec};

/// `key=value,...,key in (a,b),!key` or None when nothing is required.
pub fn label_selector(
    labels: &BTreeMap<String, String>,
    expressions: &[LabelSelectorRequirement],
) -> Option<String> {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in expressions {
        parts.push(match e.operator {
            LabelOperator::In => format!("{} in ({})", e.key, e.values.join(",")),
            LabelOperator::NotIn => format!("{} notin ({})", e.key, e.values.join(",")),
            LabelOperator::Exists => e.key.clone(),
            LabelOperator::DoesNotExist => format!("!{}", e.key),
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// `field=value,...` or None.
pub fn field_selector(fields: &BTreeMap<String, String>) -> Option<String> {
    (!fields.is_empty()).then(|| {
        fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn labels_match(
    have: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    expressions: &[LabelSelectorRequirement],
) -> bool {
    labels.iter().all(|(k, v)| have.get(k) == Some(v))
        && expressions.iter().all(|e| {
            let value = have.get(&e.key);
            match e.operator {
                LabelOperator::In => value.is_some_and(|v| e.values.contains(v)),
                LabelOperator::NotIn => !value.is_some_and(|v| e.values.contains(v)),
                LabelOperator::Exists => value.is_some(),
                LabelOperator::DoesNotExist => value.is_none(),
            }
        })
}

/// The value of a pod field Kubernetes lets pods be selected by.
fn pod_field<'a>(pod: &'a Pod, field: &str) -> Option<&'a str> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    match field {
        "metadata.name" => pod.metadata.name.as_deref(),
        "metadata.namespace" => pod.metadata.namespace.as_deref(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.as_deref()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.as_deref()),
        "spec.restartPolicy" => spec.and_then(|s| s.restart_policy.as_deref()),
        "spec.schedulerName" => spec.and_then(|s| s.scheduler_name.as_deref()),
        "status.phase" => status.and_then(|s| s.phase.as_deref()),
        "status.podIP" => status.and_then(|s| s.pod_ip.as_deref()),
        _ => None,
    }
}

/// Whether the API server would list the pod for the selector's labels, expressions and fields.
pub fn listed_by_api(pod: &Pod, selector: &PodSelectorSpec) -> bool {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    labels_match(
        labels,
        &selector.label_selectors,
        &selector.expression_selectors,
    ) && selector
        .field_selectors
        .iter()
        .all(|(k, v)| pod_field(pod, k) == Some(v.as_str()))
}

/// Chaos Mesh's `podPhaseSelectors`: `Running` includes (any inclusion may match), `!Running`
/// excludes (every exclusion must hold); with no inclusion, every phase not excluded passes.
pub fn phase_matches(phase: Option<&str>, selectors: &[String]) -> bool {
    let phase = phase.unwrap_or_default();
    let mut includes = selectors
        .iter()
        .filter(|s| !s.trim_start().starts_with('!'))
        .peekable();
    let included = includes.peek().is_none() || includes.any(|s| s.trim() == phase);
    let excluded = selectors
        .iter()
        .filter_map(|s| s.trim_start().strip_prefix('!'))
        .any(|s| s.trim() == phase);
    included && !excluded
}

/// The selectors applied in memory after listing: nodes (when `nodes` is given, the pod's node
/// must be one of them), annotations and phases.
pub fn passes_filters(
    pod: &Pod,
    selector: &PodSelectorSpec,
    nodes: Option<&std::collections::BTreeSet<String>>,
) -> bool {
    let empty = BTreeMap::new();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if let Some(nodes) = nodes
        && !node.is_some_and(|n| nodes.contains(n))
    {
        return false;
    }
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    if !selector
        .annotation_selectors
        .iter()
        .all(|(k, v)| annotations.get(k) == Some(v))
    {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase_matches(phase, &selector.pod_phase_selectors)
}

/// Whether a pod passes every selector that the API server did not already apply: the label
/// and field parts only when `listed` is false (pods fetched by name). Nodes by name only.
pub fn pod_matches(pod: &Pod, selector: &PodSelectorSpec, listed: bool) -> bool {
    let nodes: Option<std::collections::BTreeSet<String>> =
        (!selector.nodes.is_empty()).then(|| selector.nodes.iter().cloned().collect());
    passes_filters(pod, selector, nodes.as_ref()) && (listed || listed_by_api(pod, selector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("a pod")
    }

    #[test]
    fn selector_strings() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let exprs = vec![
            LabelSelectorRequirement {
                key: "tier".into(),
                operator: LabelOperator::In,
                values: vec!["a".into(), "b".into()],
            },
            LabelSelectorRequirement {
                key: "canary".into(),
                operator: LabelOperator::DoesNotExist,
                values: vec![],
            },
        ];
        assert_eq!(
            label_selector(&labels, &exprs).as_deref(),
            Some("app=web,tier in (a,b),!canary")
        );
        assert_eq!(label_selector(&BTreeMap::new(), &[]), None);
        let fields = BTreeMap::from([("spec.nodeName".to_string(), "n1".to_string())]);
        assert_eq!(field_selector(&fields).as_deref(), Some("spec.nodeName=n1"));
    }

    #[test]
    fn in_memory_filters() {
        let p = pod(json!({
            "metadata": {"name": "web-0", "namespace": "demo",
                         "labels": {"app": "web", "tier": "a"},
                         "annotations": {"team": "x"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running"}
        }));
        let mut s = PodSelectorSpec::default();
        assert!(pod_matches(&p, &s, false));
        s.nodes = vec!["n2".into()];
        assert!(!pod_matches(&p, &s, false));
        s.nodes = vec!["n1".into()];
        s.pod_phase_selectors = vec!["Pending".into()];
        assert!(!pod_matches(&p, &s, false));
        s.pod_phase_selectors = vec!["Running".into()];
        s.annotation_selectors = BTreeMap::from([("team".into(), "x".into())]);
        assert!(pod_matches(&p, &s, false));
        s.label_selectors = BTreeMap::from([("app".into(), "db".into())]);
        assert!(
            !pod_matches(&p, &s, false),
            "labels checked for pods fetched by name"
        );
        assert!(
            pod_matches(&p, &s, true),
            "the API server filtered listed pods already"
        );
        s.label_selectors.clear();
        s.field_selectors = BTreeMap::from([("spec.nodeName".into(), "n1".into())]);
        assert!(pod_matches(&p, &s, false));
    }
}

#[cfg(test)]
mod phase_tests {
    use super::phase_matches;

    fn sel(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Chaos Mesh (pkg/selector/pod/phase_selector.go): `podPhaseSelectors` is parsed as a label
    /// selector; a bare phase is an inclusion (one of them must match), `!Phase` an exclusion
    /// (none may match), and with only exclusions every other phase passes.
    #[test]
    fn phase_inclusions_and_exclusions() {
        assert!(phase_matches(Some("Running"), &[]));
        assert!(phase_matches(
            Some("Running"),
            &sel(&["Pending", "Running"])
        ));
        assert!(!phase_matches(
            Some("Failed"),
            &sel(&["Pending", "Running"])
        ));
        assert!(!phase_matches(Some("Running"), &sel(&["!Running"])));
        assert!(phase_matches(Some("Pending"), &sel(&["!Running"])));
        assert!(phase_matches(
            Some("Pending"),
            &sel(&["!Running", "!Failed"])
        ));
        assert!(!phase_matches(
            Some("Failed"),
            &sel(&["!Running", "!Failed"])
        ));
        assert!(!phase_matches(
            Some("Running"),
            &sel(&["Running", "!Running"])
        ));
    }
}
