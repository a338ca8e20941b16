//! HTTPChaos: requests to, or responses from, a port of the selected pods aborted, delayed,
//! replaced or patched (Chaos Mesh's `HTTPChaosSpec`).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::selector::PodSelector;
use super::status::ChaosStatus;

/// HTTPChaos: a proxy in each selected pod alters the selected requests or responses on `port`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "HTTPChaos",
    plural = "httpchaos",
    singular = "httpchaos",
    namespaced,
    status = "ChaosStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPChaosSpec {
    #[serde(flatten)]
    pub pod_selector: PodSelector,
    /// Request or Response.
    pub target: HttpTarget,
    /// Close the connection without an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<bool>,
    /// Delay (a Go duration, e.g. 400ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Chaos Mesh's replace actions: path, method, code, body (base64), queries, headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub replace: Option<Value>,
    /// Chaos Mesh's patch actions: body {type: JSON, value}, queries [[k, v]], headers [[k, v]].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub patch: Option<Value>,
    /// The pod's port whose traffic goes through the proxy (and the rule's port).
    pub port: i32,
    /// Only this request path (`*` and `?` wildcards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only this request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Only responses with this status (target Response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Only requests with these headers (Chaos Mesh spells it with an underscore).
    #[serde(
        default,
        rename = "request_headers",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub request_headers: BTreeMap<String, String>,
    /// Only responses with these headers.
    #[serde(
        default,
        rename = "response_headers",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub response_headers: BTreeMap<String, String>,
    /// HTTPS interception: the certificate and key the proxy shows clients on `port`, and the
    /// CA it verifies the real server with, from a Secret (Chaos Mesh's PodHttpChaosTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HttpChaosTls>,
    /// How long the experiment lasts (Go duration); default: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Chaos Mesh's remote cluster: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
}

/// Where the TLS material is: keys of a Secret's data (Chaos Mesh's `PodHttpChaosTLS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpChaosTls {
    /// The Secret's name.
    pub secret_name: String,
    /// The Secret's namespace (empty: the experiment's).
    #[serde(default)]
    pub secret_namespace: String,
    /// The data key of the certificate (PEM), e.g. `tls.crt`.
    pub cert_name: String,
    /// The data key of the private key (PEM), e.g. `tls.key`.
    pub key_name: String,
    /// The data key of the CA (PEM) the real server is verified with, e.g. `ca.crt`; without
    /// it, the public Web PKI roots (as Chaos Mesh's tproxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HttpTarget {
    Request,
    Response,
}
