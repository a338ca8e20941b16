//! HTTPChaos spec -> one rule in Chaos Mesh's tproxy format (what its controller puts in
//! PodHttpChaos), checked with the proxy's own parser, and the port the proxy takes; `tls` ->
//! the tproxy tls JSON from the Secret's data, as Chaos Mesh's PodHttpChaos controller builds it.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use serde_json::{Map, Value, json};

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::{HTTPChaosSpec, HttpChaosTls, HttpTarget};

pub(super) fn plan(spec: &HTTPChaosSpec, namespace: &str) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::common(&mut problems, &spec.pod_selector, "", namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());
    let tls = spec.tls.as_ref().map(|tls| {
        for (field, value) in [
            ("tls.secretName", &tls.secret_name),
            ("tls.certName", &tls.cert_name),
            ("tls.keyName", &tls.key_name),
        ] {
            if value.is_empty() {
                problems.invalid(field, "must not be empty");
            }
        }
        if tls.ca_name.as_deref() == Some("") {
            problems.invalid("tls.caName", "must not be empty when given");
        }
        HttpChaosTls {
            secret_namespace: if tls.secret_namespace.is_empty() {
                namespace.to_owned()
            } else {
                tls.secret_namespace.clone()
            },
            ..tls.clone()
        }
    });
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
        action: Action::Http { rules, port, tls },
    });
    problems.finish(plan)
}

/// The tls JSON the agent takes (tproxy's: `{"cert_file": {"type": "Contents", "value": base64
/// PEM}, "key_file": ..., "ca_file"?: ...}`), from the data of `tls`'s Secret, checked usable
/// by the proxy's own parser; errors name the HTTPChaos field and the Secret's key.
pub fn tls_json(
    tls: &HttpChaosTls,
    data: &BTreeMap<String, ByteString>,
    port: u16,
) -> Result<String, String> {
    let secret = format!("secret {}/{}", tls.secret_namespace, tls.secret_name);
    let item = |field: &str, key: &str| -> Result<Value, String> {
        let bytes = data
            .get(key)
            .ok_or_else(|| format!("{field}: {secret} has no key {key:?}"))?;
        Ok(json!({
            "type": "Contents",
            "value": base64::engine::general_purpose::STANDARD.encode(&bytes.0),
        }))
    };
    let mut json = json!({
        "cert_file": item("tls.certName", &tls.cert_name)?,
        "key_file": item("tls.keyName", &tls.key_name)?,
    });
    if let Some(ca) = &tls.ca_name {
        json["ca_file"] = item("tls.caName", ca)?;
    }
    let json = json.to_string();
    http_chaos::HttpChaosSpec::parse("[]", &[u32::from(port)], &json).map_err(|err| {
        let text = err.to_string();
        let (field, key) = if text.starts_with("tls.key_file") {
            ("tls.keyName", tls.key_name.as_str())
        } else if text.starts_with("tls.ca_file") {
            ("tls.caName", tls.ca_name.as_deref().unwrap_or_default())
        } else {
            ("tls.certName", tls.cert_name.as_str())
        };
        format!("{field} ({secret}, key {key:?}): {text}")
    })?;
    Ok(json)
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
        let Action::Http { rules, port, tls } = &plan.action else {
            panic!("{:?}", plan.action)
        };
        assert_eq!(*port, 8080);
        assert_eq!(*tls, None);
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
            "tls": {"secretName": "", "secretNamespace": "n", "certName": "c", "keyName": "k"},
        }))
        .plan()
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls.secretName"), "{err}");
    }

    /// Chaos Mesh's PodHttpChaosTLS: secretName, secretNamespace, certName, keyName, caName
    /// (optional); the namespace defaults to the experiment's.
    #[test]
    fn tls_plans_to_its_secret() {
        let plan = chaos(json!({
            "mode": "one", "selector": {}, "target": "Request", "port": 443, "abort": true,
            "tls": {"secretName": "web-tls", "certName": "tls.crt", "keyName": "tls.key",
                    "caName": "ca.crt"},
        }))
        .plan()
        .unwrap();
        let Action::Http { tls: Some(tls), .. } = &plan.action else {
            panic!("{:?}", plan.action)
        };
        assert_eq!(
            *tls,
            HttpChaosTls {
                secret_name: "web-tls".into(),
                secret_namespace: "shop".into(),
                cert_name: "tls.crt".into(),
                key_name: "tls.key".into(),
                ca_name: Some("ca.crt".into()),
            }
        );
    }

    fn pem_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["web".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The agent gets what Chaos Mesh's PodHttpChaos controller sends: each item `type:
    /// Contents`, `value` the Secret's bytes as Go []byte (base64); ca_file only with caName.
    #[test]
    fn tls_json_is_built_from_the_secret_as_chaos_mesh_does() {
        let (cert, key) = pem_pair();
        let data: BTreeMap<String, ByteString> = [
            ("tls.crt".to_owned(), ByteString(cert.clone().into_bytes())),
            ("tls.key".to_owned(), ByteString(key.clone().into_bytes())),
            ("ca.crt".to_owned(), ByteString(cert.clone().into_bytes())),
        ]
        .into();
        let mut tls = HttpChaosTls {
            secret_name: "web-tls".into(),
            secret_namespace: "shop".into(),
            cert_name: "tls.crt".into(),
            key_name: "tls.key".into(),
            ca_name: None,
        };
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json: Value = serde_json::from_str(&tls_json(&tls, &data, 443).unwrap()).unwrap();
        assert_eq!(
            json,
            json!({"cert_file": {"type": "Contents", "value": b64(&cert)},
                   "key_file": {"type": "Contents", "value": b64(&key)}})
        );
        tls.ca_name = Some("ca.crt".into());
        let json: Value = serde_json::from_str(&tls_json(&tls, &data, 443).unwrap()).unwrap();
        assert_eq!(
            json["ca_file"],
            json!({"type": "Contents", "value": b64(&cert)})
        );

        // A missing key and bad material name the field, the Secret and its key.
        tls.ca_name = Some("nope".into());
        let err = tls_json(&tls, &data, 443).unwrap_err();
        assert!(
            err.starts_with("tls.caName: secret shop/web-tls has no key \"nope\""),
            "{err}"
        );
        tls.ca_name = None;
        tls.key_name = "tls.crt".into();
        let err = tls_json(&tls, &data, 443).unwrap_err();
        assert!(
            err.starts_with(
                "tls.keyName (secret shop/web-tls, key \"tls.crt\"): tls.key_file.value"
            ),
            "{err}"
        );
    }
}
