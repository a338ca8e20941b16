//! `ApplyHttpChaosRequest` → [`HttpChaosSpec`]. The wire types mirror Chaos Mesh's tproxy
//! configuration (unknown fields ignored, as Go's encoding/json does); every value is checked
//! once here, and errors name the rule and field (`rules[1].actions.delay: ...`).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("rules: not the JSON of a list of rules: {0}")]
    RulesJson(String),
    #[error("tls: not the JSON of a TLS configuration: {0}")]
    TlsJson(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

// ---- the wire (Chaos Mesh's tproxyconfig) ----

#[derive(Deserialize)]
struct WireRule {
    target: String,
    #[serde(default)]
    selector: WireSelector,
    #[serde(default)]
    actions: WireActions,
}

#[derive(Default, Deserialize)]
struct WireSelector {
    port: Option<i64>,
    path: Option<String>,
    method: Option<String>,
    code: Option<i64>,
    #[serde(default)]
    request_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    response_headers: Option<BTreeMap<String, String>>,
}

#[derive(Default, Deserialize)]
struct WireActions {
    abort: Option<bool>,
    delay: Option<String>,
    replace: Option<WireReplace>,
    patch: Option<WirePatch>,
}

#[derive(Default, Deserialize)]
struct WireReplace {
    path: Option<String>,
    method: Option<String>,
    code: Option<i64>,
    body: Option<WireReplaceBody>,
    #[serde(default)]
    queries: Option<BTreeMap<String, String>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// Chaos Mesh accepts `{"type": "TEXT"|"JSON", "value": "..."}` or, from its HTTPChaos kind,
/// the body as Go `[]byte` (base64 in JSON), which means TEXT.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireReplaceBody {
    Typed {
        #[serde(rename = "type")]
        kind: String,
        value: String,
    },
    Base64(String),
}

#[derive(Default, Deserialize)]
struct WirePatch {
    body: Option<WirePatchBody>,
    #[serde(default)]
    queries: Option<Vec<Vec<String>>>,
    #[serde(default)]
    headers: Option<Vec<Vec<String>>>,
}

#[derive(Deserialize)]
struct WirePatchBody {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Deserialize)]
struct WireTls {
    cert_file: WireTlsItem,
    key_file: WireTlsItem,
    ca_file: Option<WireTlsItem>,
}

#[derive(Deserialize)]
struct WireTlsItem {
    #[serde(rename = "type")]
    kind: String,
    /// Go `[]byte`: base64.
    value: String,
}

// ---- validated ----

/// What one ApplyHttpChaos asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpChaosSpec {
    pub rules: Vec<Rule>,
    /// The pod's ports whose incoming traffic goes through the proxy.
    pub proxy_ports: Vec<u16>,
    pub tls: Option<TlsConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Request,
    Response,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub target: Target,
    pub selector: Selector,
    pub action: Action,
}

/// Every given field must match; none given matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    pub port: Option<u16>,
    /// A glob over the request path: `*` any run, `?` one character.
    pub path: Option<String>,
    pub method: Option<Method>,
    /// The response's status (Response rules).
    pub code: Option<StatusCode>,
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Action {
    /// Close the connection instead of answering.
    pub abort: bool,
    pub delay: Option<Duration>,
    pub replace_path: Option<String>,
    pub replace_method: Option<Method>,
    pub replace_code: Option<StatusCode>,
    pub replace_queries: Vec<(String, String)>,
    pub replace_headers: Vec<(HeaderName, HeaderValue)>,
    pub patch_queries: Vec<(String, String)>,
    pub patch_headers: Vec<(HeaderName, HeaderValue)>,
    pub body: BodyChange,
}

/// What happens to the body: only a rule that changes it makes the proxy read it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum BodyChange {
    #[default]
    Keep,
    Replace(Vec<u8>),
    /// A JSON merge patch (RFC 7396) applied to a JSON body.
    MergeJson(serde_json::Value),
}

/// Certificates as tproxy takes them (`type: Contents`, the PEM bytes), checked usable: the
/// certificate chain, a private key that matches it, the CA's certificates
/// ([`crate::tls::Interception`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Option<Vec<u8>>,
}

impl HttpChaosSpec {
    /// Parses the three fields of ApplyHttpChaosRequest. Empty `rules` (`""`, `null`, `[]`)
    /// is no rule; empty `tls` is none.
    pub fn parse(rules: &str, proxy_ports: &[u32], tls: &str) -> Result<Self, SpecError> {
        let wire: Vec<WireRule> = match rules.trim() {
            "" | "null" => Vec::new(),
            text => serde_json::from_str::<Option<Vec<WireRule>>>(text)
                .map_err(|e| SpecError::RulesJson(e.to_string()))?
                .unwrap_or_default(),
        };
        let rules = wire
            .into_iter()
            .enumerate()
            .map(|(i, r)| rule(&format!("rules[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        let proxy_ports = proxy_ports
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                u16::try_from(p).ok().filter(|&p| p > 0).ok_or_else(|| {
                    invalid(
                        format!("proxy_ports[{i}]"),
                        format!("{p} is not a port (1-65535)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match tls.trim() {
            "" | "null" => None,
            text => Some(tls_config(
                serde_json::from_str(text).map_err(|e| SpecError::TlsJson(e.to_string()))?,
            )?),
        };
        Ok(Self {
            rules,
            proxy_ports,
            tls,
        })
    }

    /// Chaos Mesh: an apply with no rules and no ports removes the chaos.
    pub fn removes(&self) -> bool {
        self.rules.is_empty() && self.proxy_ports.is_empty()
    }
}

fn base64_bytes(field: &str, text: &str) -> Result<Vec<u8>, SpecError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| invalid(field, format!("not base64 (Go []byte): {e}")))
}

fn tls_config(wire: WireTls) -> Result<TlsConfig, SpecError> {
    let item = |field: &str, item: &WireTlsItem| {
        if item.kind != "Contents" {
            return Err(invalid(
                format!("tls.{field}.type"),
                format!(
                    "{:?}: only \"Contents\" (the PEM itself) is supported",
                    item.kind
                ),
            ));
        }
        base64_bytes(&format!("tls.{field}.value"), &item.value)
    };
    let config = TlsConfig {
        cert_pem: item("cert_file", &wire.cert_file)?,
        key_pem: item("key_file", &wire.key_file)?,
        ca_pem: wire
            .ca_file
            .as_ref()
            .map(|ca| item("ca_file", ca))
            .transpose()?,
    };
    // Usable as it is, or refused here, before anything changes in a pod.
    crate::tls::Interception::new(&config)?;
    Ok(config)
}

fn port(field: String, value: i64) -> Result<u16, SpecError> {
    u16::try_from(value)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| invalid(field, format!("port {value} is not supported (1-65535)")))
}

fn method(field: String, value: &str) -> Result<Method, SpecError> {
    Method::from_bytes(value.as_bytes())
        .map_err(|_| invalid(field, format!("{value:?} is not an HTTP method")))
}

fn code(field: String, value: i64) -> Result<StatusCode, SpecError> {
    u16::try_from(value)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            invalid(
                field,
                format!("{value} is not an HTTP status code (100-999)"),
            )
        })
}

fn header(field: &str, name: &str, value: &str) -> Result<(HeaderName, HeaderValue), SpecError> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| invalid(field, format!("{name:?} is not a header name")))?;
    let v = HeaderValue::from_str(value)
        .map_err(|_| invalid(field, format!("{value:?} is not a header value")))?;
    Ok((n, v))
}

fn headers(
    field: String,
    map: Option<BTreeMap<String, String>>,
) -> Result<Vec<(HeaderName, HeaderValue)>, SpecError> {
    map.unwrap_or_default()
        .iter()
        .map(|(k, v)| header(&format!("{field}.{k}"), k, v))
        .collect()
}

fn pairs(
    field: String,
    list: Option<Vec<Vec<String>>>,
) -> Result<Vec<(String, String)>, SpecError> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, pair)| match <[String; 2]>::try_from(pair) {
            Ok([k, v]) => Ok((k, v)),
            Err(pair) => Err(invalid(
                format!("{field}[{i}]"),
                format!("a [key, value] pair, not {} items", pair.len()),
            )),
        })
        .collect()
}

fn rule(at: &str, wire: WireRule) -> Result<Rule, SpecError> {
    let target = match wire.target.as_str() {
        "Request" => Target::Request,
        "Response" => Target::Response,
        other => {
            return Err(invalid(
                format!("{at}.target"),
                format!("{other:?} is not supported: Request or Response"),
            ));
        }
    };
    let s = wire.selector;
    let selector = Selector {
        port: s
            .port
            .map(|p| port(format!("{at}.selector.port"), p))
            .transpose()?,
        path: s.path.filter(|p| !p.is_empty()),
        method: s
            .method
            .filter(|m| !m.is_empty())
            .map(|m| method(format!("{at}.selector.method"), &m))
            .transpose()?,
        code: s
            .code
            .map(|c| code(format!("{at}.selector.code"), c))
            .transpose()?,
        request_headers: headers(format!("{at}.selector.request_headers"), s.request_headers)?,
        response_headers: headers(
            format!("{at}.selector.response_headers"),
            s.response_headers,
        )?,
    };
    let a = wire.actions;
    let mut action = Action {
        abort: a.abort.unwrap_or(false),
        delay: a
            .delay
            .filter(|d| !d.is_empty())
            .map(|d| {
                crate::duration::parse(&d).map_err(|e| invalid(format!("{at}.actions.delay"), e))
            })
            .transpose()?,
        ..Action::default()
    };
    if let Some(r) = a.replace {
        let field = |f: &str| format!("{at}.actions.replace.{f}");
        action.replace_path = r.path.filter(|p| !p.is_empty());
        action.replace_method = r
            .method
            .filter(|m| !m.is_empty())
            .map(|m| method(field("method"), &m))
            .transpose()?;
        action.replace_code = r.code.map(|c| code(field("code"), c)).transpose()?;
        action.replace_queries = r.queries.unwrap_or_default().into_iter().collect();
        action.replace_headers = headers(field("headers"), r.headers)?;
        if let Some(body) = r.body {
            action.body = BodyChange::Replace(match body {
                WireReplaceBody::Typed { kind, value } if kind == "TEXT" || kind == "JSON" => {
                    value.into_bytes()
                }
                WireReplaceBody::Typed { kind, .. } => {
                    return Err(invalid(
                        field("body.type"),
                        format!("{kind:?}: TEXT or JSON"),
                    ));
                }
                WireReplaceBody::Base64(text) => base64_bytes(&field("body"), &text)?,
            });
        }
    }
    if let Some(p) = a.patch {
        let field = |f: &str| format!("{at}.actions.patch.{f}");
        action.patch_queries = pairs(field("queries"), p.queries)?;
        action.patch_headers = pairs(field("headers"), p.headers)?
            .iter()
            .map(|(k, v)| header(&field("headers"), k, v))
            .collect::<Result<_, _>>()?;
        if let Some(body) = p.body {
            if body.kind != "JSON" {
                return Err(invalid(
                    field("body.type"),
                    format!("{:?}: only JSON (a merge patch) is supported", body.kind),
                ));
            }
            if action.body != BodyChange::Keep {
                return Err(invalid(
                    field("body"),
                    "replace.body and patch.body cannot both be given",
                ));
            }
            let value = serde_json::from_str(&body.value)
                .map_err(|e| invalid(field("body.value"), format!("not JSON: {e}")))?;
            action.body = BodyChange::MergeJson(value);
        }
    }
    Ok(Rule {
        target,
        selector,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules JSON of the issue (Chaos Mesh's tproxy format): target, selector {port, path,
    /// method, code, request_headers, response_headers}, actions {abort, delay, replace {path,
    /// method, code, body (base64), queries, headers}, patch {body {type JSON, value}, queries
    /// [[k, v]], headers [[k, v]]}}.
    #[test]
    fn chaos_mesh_rules_parse_into_typed_rules() {
        let rules = r#"[
          {"target": "Request", "selector": {"port": 8080, "path": "/api/*", "method": "GET",
             "request_headers": {"X-User": "alice"}},
           "actions": {"delay": "400ms", "replace": {"path": "/other", "method": "POST",
             "queries": {"a": "1"}, "headers": {"X-Replaced": "yes"}},
             "patch": {"queries": [["b", "2"]], "headers": [["X-Patched", "1"]]}}},
          {"target": "Response", "selector": {"code": 200, "response_headers": {"Content-Type": "application/json"}},
           "actions": {"replace": {"code": 503, "body": "c2VydmljZSB1bmF2YWlsYWJsZQ==", "headers": {"Retry-After": "1"}}}},
          {"target": "Response", "selector": {"path": "/json"},
           "actions": {"patch": {"body": {"type": "JSON", "value": "{\"chaos\": true}"}}}},
          {"target": "Request", "selector": {}, "actions": {"abort": true}}
        ]"#;
        let spec = HttpChaosSpec::parse(rules, &[8080], "").unwrap();
        assert_eq!(spec.proxy_ports, [8080]);
        assert_eq!(spec.rules.len(), 4);
        let r0 = &spec.rules[0];
        assert_eq!(r0.target, Target::Request);
        assert_eq!(r0.selector.port, Some(8080));
        assert_eq!(r0.selector.path.as_deref(), Some("/api/*"));
        assert_eq!(r0.selector.method, Some(Method::GET));
        assert_eq!(r0.selector.request_headers[0].0, "x-user");
        assert_eq!(r0.action.delay, Some(Duration::from_millis(400)));
        assert_eq!(r0.action.replace_method, Some(Method::POST));
        assert_eq!(r0.action.patch_queries, [("b".to_owned(), "2".to_owned())]);
        let r1 = &spec.rules[1];
        assert_eq!(
            r1.action.replace_code,
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            r1.action.body,
            BodyChange::Replace(b"service unavailable".to_vec())
        );
        assert_eq!(
            spec.rules[2].action.body,
            BodyChange::MergeJson(serde_json::json!({"chaos": true}))
        );
        assert!(spec.rules[3].action.abort);
        assert!(!spec.removes());
    }

    /// Chaos Mesh: an apply with no rules and no ports removes the chaos.
    #[test]
    fn no_rules_and_no_ports_removes() {
        for rules in ["", "null", "[]"] {
            assert!(
                HttpChaosSpec::parse(rules, &[], "").unwrap().removes(),
                "{rules}"
            );
        }
        assert!(!HttpChaosSpec::parse("[]", &[80], "").unwrap().removes());
    }

    #[test]
    fn replace_body_may_be_typed_text() {
        let rules = r#"[{"target": "Response", "selector": {}, "actions": {"replace": {"body": {"type": "TEXT", "value": "hi"}}}}]"#;
        let spec = HttpChaosSpec::parse(rules, &[80], "").unwrap();
        assert_eq!(
            spec.rules[0].action.body,
            BodyChange::Replace(b"hi".to_vec())
        );
    }

    #[test]
    fn errors_name_the_rule_and_field() {
        for (rules, says) in [
            (
                r#"[{"target": "Both"}]"#,
                "rules[0].target: \"Both\" is not supported: Request or Response",
            ),
            (
                r#"[{"target": "Request"}, {"target": "Request", "actions": {"delay": "10"}}]"#,
                "rules[1].actions.delay",
            ),
            (
                r#"[{"target": "Request", "selector": {"port": 0}}]"#,
                "rules[0].selector.port: port 0 is not supported",
            ),
            (
                r#"[{"target": "Response", "actions": {"replace": {"code": 42}}}]"#,
                "rules[0].actions.replace.code",
            ),
            (
                r#"[{"target": "Request", "actions": {"patch": {"headers": [["only-key"]]}}}]"#,
                "rules[0].actions.patch.headers[0]",
            ),
            (
                r#"[{"target": "Request", "actions": {"patch": {"body": {"type": "XML", "value": "<a/>"}}}}]"#,
                "rules[0].actions.patch.body.type",
            ),
            (
                r#"[{"target": "Request", "actions": {"replace": {"body": "***"}}}]"#,
                "rules[0].actions.replace.body: not base64",
            ),
            ("{", "rules: not the JSON"),
        ] {
            let err = HttpChaosSpec::parse(rules, &[80], "")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(says), "{rules}: {err}");
        }
        let err = HttpChaosSpec::parse("[]", &[70000], "")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("proxy_ports[0]: 70000"), "{err}");
    }

    /// Chaos Mesh's controller sends TLS as {cert_file, key_file, ca_file?} items of type
    /// "Contents" whose value is the PEM as Go []byte (base64); the items are the Secret's data
    /// under certName, keyName and caName.
    #[test]
    fn tls_contents_are_decoded() {
        let pki = crate::tls::tests::pki(&["web"]);
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        let tls = format!(
            r#"{{"cert_file": {{"type": "Contents", "value": "{}"}},
                "key_file": {{"type": "Contents", "value": "{}"}}}}"#,
            b64(&pki.cert_pem),
            b64(&pki.key_pem)
        );
        let spec = HttpChaosSpec::parse("[]", &[443], &tls).unwrap();
        let parsed = spec.tls.unwrap();
        assert_eq!(parsed.cert_pem, pki.cert_pem.as_bytes());
        assert_eq!(parsed.key_pem, pki.key_pem.as_bytes());
        assert_eq!(parsed.ca_pem, None);
        let with_ca = format!(
            r#"{{"cert_file": {{"type": "Contents", "value": "{}"}},
                "key_file": {{"type": "Contents", "value": "{}"}},
                "ca_file": {{"type": "Contents", "value": "{}"}}}}"#,
            b64(&pki.cert_pem),
            b64(&pki.key_pem),
            b64(&pki.ca_pem)
        );
        let spec = HttpChaosSpec::parse("[]", &[443], &with_ca).unwrap();
        assert_eq!(spec.tls.unwrap().ca_pem.unwrap(), pki.ca_pem.as_bytes());
    }

    /// tproxy also reads `"type": "Path"` (a file in its own filesystem); Chaos Mesh's
    /// controller never sends it, and a path in the agent's filesystem means nothing to a
    /// client: refused. Values are base64; the PEM must be usable.
    #[test]
    fn bad_tls_names_the_field() {
        for (tls, says) in [
            (
                r#"{"cert_file": {"type": "Path", "value": "/tls.crt"}, "key_file": {"type": "Contents", "value": ""}}"#,
                "tls.cert_file.type",
            ),
            (
                r#"{"cert_file": {"type": "Contents", "value": "%%"}, "key_file": {"type": "Contents", "value": ""}}"#,
                "tls.cert_file.value: not base64",
            ),
            (
                r#"{"cert_file": {"type": "Contents", "value": "Q0VSVA=="}, "key_file": {"type": "Contents", "value": "S0VZ"}}"#,
                "tls.cert_file.value: no CERTIFICATE",
            ),
            (
                r#"{"key_file": {"type": "Contents", "value": ""}}"#,
                "tls: ",
            ),
            ("[1]", "tls: "),
        ] {
            let err = HttpChaosSpec::parse("[]", &[443], tls)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(says), "{tls}: {err}");
        }
    }
}
