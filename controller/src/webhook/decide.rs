//! Whether a pod is injected, and with which config.
//!
//! Requested by, in this order: the pod annotation `<prefix>/request: <config>`, the namespace
//! annotation `<prefix>/request-<pod name>: <config>`, the namespace annotation
//! `<prefix>/init-request: <config>` (every pod of the namespace). `<prefix>` is
//! `admission-webhook.faultline.dev` or a legacy one. Only namespaces labelled
//! `admission-webhook=enabled` take part; the system namespaces and the controller's own are
//! never injected; a pod with `<prefix>/status: injected` is never injected again.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};

use super::catalog::{Catalog, Config};
use super::config::Settings;
use super::mutate::{INJECTED, STATUS};
use crate::selection::pod_matches;

/// Ours first: the prefix of the status annotation when a request used no legacy one.
pub const PREFIXES: [&str; 3] = [
    "admission-webhook.faultline.dev",
    "admission-webhook.chaos-mesh.org",
    "admission-webhook.pingcap.com",
];
pub const ENABLE_LABEL: &str = "admission-webhook";
pub const ENABLE_VALUE: &str = "enabled";
pub const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

#[derive(Debug)]
pub enum Decision {
    /// The pod stays as it is. `warn`: the user asked for an injection that cannot be done,
    /// and is told why (an admission warning).
    Skip { reason: String, warn: bool },
    Inject {
        config: Arc<Config>,
        /// The prefix of the annotation that asked; the status annotation uses it.
        prefix: &'static str,
    },
}

fn skip(reason: impl Into<String>) -> Decision {
    Decision::Skip {
        reason: reason.into(),
        warn: false,
    }
}

fn warn(reason: impl Into<String>) -> Decision {
    Decision::Skip {
        reason: reason.into(),
        warn: true,
    }
}

/// The first annotation `<prefix>/<suffix>` present, with its prefix.
fn annotation<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    suffix: &str,
) -> Option<(&'static str, &'a str)> {
    let annotations = annotations?;
    PREFIXES.iter().find_map(|prefix| {
        annotations
            .get(&format!("{prefix}/{suffix}"))
            .map(|v| (*prefix, v.as_str()))
    })
}

pub fn decide(
    settings: &Settings,
    catalog: &Catalog,
    namespace_name: &str,
    namespace: Option<&Namespace>,
    pod: &Pod,
) -> Decision {
    if SYSTEM_NAMESPACES.contains(&namespace_name) || namespace_name == settings.namespace {
        return skip(format!("namespace {namespace_name} is never injected"));
    }
    let pod_annotations = pod.metadata.annotations.as_ref();
    if annotation(pod_annotations, STATUS).is_some_and(|(_, v)| v == INJECTED) {
        return skip("already injected");
    }
    let Some(namespace) = namespace else {
        return warn(format!(
            "namespace {namespace_name} is unknown to the faultline webhook; the pod is not injected"
        ));
    };
    let enabled = namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ENABLE_LABEL))
        .is_some_and(|v| v == ENABLE_VALUE);
    if !enabled {
        return skip(format!(
            "namespace {namespace_name} is not labelled {ENABLE_LABEL}={ENABLE_VALUE}"
        ));
    }
    let ns_annotations = namespace.metadata.annotations.as_ref();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let requested = annotation(pod_annotations, "request")
        .map(|(p, c)| (p, c, format!("pod annotation {p}/request")))
        .or_else(|| {
            (!pod_name.is_empty())
                .then(|| annotation(ns_annotations, &format!("request-{pod_name}")))
                .flatten()
                .map(|(p, c)| {
                    (
                        p,
                        c,
                        format!("annotation {p}/request-{pod_name} of namespace {namespace_name}"),
                    )
                })
        })
        .or_else(|| {
            annotation(ns_annotations, "init-request").map(|(p, c)| {
                (
                    p,
                    c,
                    format!("annotation {p}/init-request of namespace {namespace_name}"),
                )
            })
        });
    let Some((prefix, name, by)) = requested else {
        return skip("no injection requested");
    };
    let name = name.trim();
    let Some(config) = catalog.get(name) else {
        let known = catalog.names();
        return warn(format!(
            "faultline webhook: config {name:?} (requested by the {by}) is not defined (configs: {}); the pod is not injected",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ));
    };
    if let Err(reason) = &config.injection {
        return warn(format!(
            "faultline webhook: config {name:?} (requested by the {by}) cannot be used: {reason}; the pod is not injected"
        ));
    }
    if let Some(selector) = &config.selector {
        let in_namespace = selector.namespaces.is_empty()
            || selector.namespaces.iter().any(|n| n == namespace_name);
        if !in_namespace || !pod_matches(pod, selector, false) {
            return skip(format!(
                "the pod does not match the selector of config {name:?}"
            ));
        }
    }
    Decision::Inject {
        config: config.clone(),
        prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::template::GoTemplates;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn catalog() -> Catalog {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "app",
                         "labels": {"app.kubernetes.io/component": "webhook"}},
            "data": {
                "a": "name: a\ncontainers: [{name: side}]\n",
                "b": "name: b\nselector:\n  labelSelectors: {app: db}\ncontainers: [{name: side}]\n",
                "c": "name: c\nselector:\n  namespaces: [other]\n",
            },
        }))
        .unwrap();
        Catalog::build(&GoTemplates, &Settings::default(), [&cm])
    }

    fn ns(annotations: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": "app",
            "labels": {"admission-webhook": "enabled"}, "annotations": annotations}}))
        .unwrap()
    }

    fn pod(name: &str, labels: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels,
            "annotations": annotations}, "spec": {"containers": [{"name": "app"}]}}))
        .unwrap()
    }

    /// The config chosen, or the skip reason.
    fn chosen(ns: &Namespace, pod: &Pod) -> Result<(String, &'static str), String> {
        match decide(&Settings::default(), &catalog(), "app", Some(ns), pod) {
            Decision::Inject { config, prefix } => Ok((config.name.clone(), prefix)),
            Decision::Skip { reason, .. } => Err(reason),
        }
    }

    #[test]
    fn the_pod_annotation_then_the_pod_name_then_the_namespace_wide_request() {
        let namespace = ns(json!({
            "admission-webhook.pingcap.com/init-request": "a",
            "admission-webhook.chaos-mesh.org/request-db-0": "b",
        }));
        let db = |annotations| pod("db-0", json!({"app": "db"}), annotations);
        assert_eq!(
            chosen(
                &namespace,
                &db(json!({"admission-webhook.faultline.dev/request": "a"}))
            ),
            Ok(("a".into(), "admission-webhook.faultline.dev"))
        );
        assert_eq!(
            chosen(&namespace, &db(json!({}))),
            Ok(("b".into(), "admission-webhook.chaos-mesh.org"))
        );
        assert_eq!(
            chosen(&namespace, &pod("web-0", json!({}), json!({}))),
            Ok(("a".into(), "admission-webhook.pingcap.com"))
        );
        // Injected under any prefix: never again.
        let done = db(json!({"admission-webhook.pingcap.com/status": "injected",
                             "admission-webhook.faultline.dev/request": "a"}));
        assert_eq!(chosen(&namespace, &done), Err("already injected".into()));
    }

    #[test]
    fn a_selector_limits_the_pods_a_config_injects() {
        let namespace = ns(json!({"admission-webhook.faultline.dev/init-request": "b"}));
        assert!(chosen(&namespace, &pod("db-0", json!({"app": "db"}), json!({}))).is_ok());
        let web = chosen(&namespace, &pod("web-0", json!({"app": "web"}), json!({})));
        assert!(web.unwrap_err().contains("does not match the selector"));
        let namespace = ns(json!({"admission-webhook.faultline.dev/init-request": "c"}));
        assert!(chosen(&namespace, &pod("x", json!({}), json!({}))).is_err());
    }

    #[test]
    fn without_a_request_or_in_an_excluded_namespace_nothing_happens_silently() {
        let plain = pod("x", json!({}), json!({}));
        let skipped = decide(
            &Settings::default(),
            &catalog(),
            "app",
            Some(&ns(json!({}))),
            &plain,
        );
        assert!(matches!(skipped, Decision::Skip { warn: false, .. }));
        for excluded in ["kube-system", "kube-public", "faultline"] {
            let asked = pod(
                "x",
                json!({}),
                json!({"admission-webhook.faultline.dev/request": "a"}),
            );
            let d = decide(
                &Settings::default(),
                &catalog(),
                excluded,
                Some(&ns(json!({}))),
                &asked,
            );
            assert!(
                matches!(d, Decision::Skip { warn: false, .. }),
                "{excluded}"
            );
        }
        // An unknown namespace is said.
        let d = decide(&Settings::default(), &catalog(), "app", None, &plain);
        assert!(matches!(d, Decision::Skip { warn: true, .. }));
    }
}
