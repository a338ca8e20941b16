//! HTTPChaos spec -> one rule in Chaos Mesh's tproxy format (what its controller puts in
//! PodHttpChaos), checked with the proxy's own parser, and the port the proxy takes.

use serde_json::{Map, Value, json};

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::{HTTPChaosSpec, HttpTarget};

pub(super) fn plan(spec: &HTTPChaosSpec, namespace: &str) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::common(&mut problems, &spec.pod_selector, "", namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());
    if spec.tls.is_some() {
        problems.unsupported("tls", "HTTPS interception is not supported yet");
    }
    let port = match u16::try_from(spec.port) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            problems.invalid(
                "port",
                format!("port {} is not supported (1-65535)", spec.port),
            );
            None
        }
    };
    let rules = rule_json(spec);
    if let Some(port) = port
        && let Err(err) = http_chaos::HttpChaosSpec::parse(&rules, &[u32::from(port)], "")
    {
        let (field, reason) = match err {
            http_chaos::SpecError::Invalid { field, reason } => (field, reason),
            other => ("spec".to_owned(), other.to_string()),
        };
        let field = field
            .trim_start_matches("rules[0].")
            .trim_start_matches("selector.")
            .trim_start_matches("actions.")
            .to_owned();
        problems.invalid(field, reason);
    }
    let plan = selection.zip(port).map(|((selector, mode), port)| Plan {
        selection: Selection {
            selector,
            mode,
            scope: Scope::Containers(Vec::new()),
        },
        duration,
        action: Action::Http { rules, port },
    });
    problems.finish(plan)
}

/// The rule as Chaos Mesh's controller writes it into PodHttpChaos.
fn rule_json(spec: &HTTPChaosSpec) -> String {
    let mut selector = Map::new();
    selector.insert("port".into(), json!(spec.port));
    if let Some(path) = &spec.path {
        selector.insert("path".into(), json!(path));
    }
    if let Some(method) = &spec.method {
        selector.insert("method".into(), json!(method));
    }
    if let Some(code) = spec.code {
        selector.insert("code".into(), json!(code));
    }
    if !spec.request_headers.is_empty() {
        selector.insert("request_headers".into(), json!(spec.request_headers));
    }
    if !spec.response_headers.is_empty() {
        selector.insert("response_headers".into(), json!(spec.response_headers));
    }
    let mut actions = Map::new();
    if let Some(abort) = spec.abort {
        actions.insert("abort".into(), json!(abort));
    }
    if let Some(delay) = &spec.delay {
        actions.insert("delay".into(), json!(delay));
    }
    if let Some(replace) = &spec.replace {
        actions.insert("replace".into(), replace.clone());
    }
    if let Some(patch) = &spec.patch {
        actions.insert("patch".into(), patch.clone());
    }
    let target = match spec.target {
        HttpTarget::Request => "Request",
        HttpTarget::Response => "Response",
    };
    Value::Array(vec![json!({
        "target": target,
        "selector": selector,
        "actions": actions,
    })])
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::HTTPChaos;
    use crate::plan::Plannable;

    fn chaos(spec: Value) -> HTTPChaos {
        serde_json::from_value(json!({
            "apiVersion": "chaos.faultline.dev/v1alpha1",
            "kind": "HTTPChaos",
            "metadata": {"name": "http", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    /// Chaos Mesh's HTTPChaos fields: target, port, path, method, code, request_headers,
    /// abort, delay, replace, patch; the rule carries the port, and the port is the proxy's.
    #[test]
    fn a_chaos_mesh_httpchaos_plans_to_one_tproxy_rule() {
        let plan = chaos(json!({
            "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
            "target": "Response", "port": 8080, "path": "/api/*", "method": "GET", "code": 200,
            "request_headers": {"X-User": "alice"},
            "replace": {"code": 503, "body": "Z29uZQ=="},
            "patch": {"headers": [["X-Chaos", "1"]]},
            "delay": "400ms",
            "duration": "30s",
        }))
        .plan()
        .unwrap();
        let Action::Http { rules, port } = &plan.action else {
            panic!("{:?}", plan.action)
        };
        assert_eq!(*port, 8080);
        let rules: Value = serde_json::from_str(rules).unwrap();
        assert_eq!(
            rules,
            json!([{
                "target": "Response",
                "selector": {"port": 8080, "path": "/api/*", "method": "GET", "code": 200,
                             "request_headers": {"X-User": "alice"}},
                "actions": {"delay": "400ms", "replace": {"code": 503, "body": "Z29uZQ=="},
                            "patch": {"headers": [["X-Chaos", "1"]]}},
            }])
        );
        assert_eq!(plan.duration, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn bad_values_and_tls_are_named() {
        let err = chaos(json!({
            "mode": "one", "selector": {}, "target": "Request", "port": 80, "delay": "10",
        }))
        .plan()
        .unwrap_err()
        .to_string();
        assert!(err.contains("delay"), "{err}");
        let err = chaos(json!({"mode": "one", "selector": {}, "target": "Request", "port": 0}))
            .plan()
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = chaos(json!({
            "mode": "one", "selector": {}, "target": "Request", "port": 443,
            "tls": {"secretName": "s", "secretNamespace": "n", "certName": "c", "keyName": "k"},
        }))
        .plan()
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls"), "{err}");
    }
}
