//! One AdmissionReview (v1) in, one out: the webhook's whole answer to the API server.
//!
//! Never fails on what a request contains: a pod that cannot be read or injected is allowed
//! unchanged with a warning, except a pod whose spec makes the requested injection impossible
//! (a postStart with no command to wrap), which is denied with the reason, so that its author
//! can fix it. Only a body that is not an AdmissionReview at all (no uid to answer) is a 400.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;

use super::catalog::Catalog;
use super::config::Settings;
use super::decide::{Decision, decide};
use super::mutate;

/// The namespaces the webhook knows (their labels and annotations decide).
pub trait Namespaces: Send + Sync {
    fn get(&self, name: &str) -> Option<Arc<Namespace>>;
}

impl Namespaces for HashMap<String, Arc<Namespace>> {
    fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        HashMap::get(self, name).cloned()
    }
}

impl Namespaces for Store<Namespace> {
    fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        Store::get(self, &ObjectRef::new(name))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview with a request: {0}")]
pub struct BadReview(pub(super) String);

pub struct Webhook {
    settings: Settings,
    catalog: ArcSwap<Catalog>,
    namespaces: Arc<dyn Namespaces>,
}

impl Webhook {
    pub fn new(settings: Settings, catalog: Catalog, namespaces: Arc<dyn Namespaces>) -> Webhook {
        Webhook {
            settings,
            catalog: ArcSwap::from_pointee(catalog),
            namespaces,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Swaps in a new catalog; requests in flight finish with the old one.
    pub fn set_catalog(&self, catalog: Catalog) {
        self.catalog.store(Arc::new(catalog));
    }

    /// The AdmissionReview answering `body`, serialized.
    pub fn review(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        let (api_version, response) = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
            Ok(review) => {
                let api_version = review.types.api_version.clone();
                let request: AdmissionRequest<Pod> = review
                    .try_into()
                    .map_err(|_| BadReview("no request".into()))?;
                (api_version, self.respond(&request))
            }
            Err(e) => unreadable(body, e)?,
        };
        let review = ReviewOut {
            api_version: if api_version.is_empty() {
                ADMISSION_V1
            } else {
                &api_version
            },
            kind: "AdmissionReview",
            response,
        };
        serde_json::to_vec(&review).map_err(|e| BadReview(e.to_string()))
    }

    /// The response to a request.
    pub fn respond(&self, request: &AdmissionRequest<Pod>) -> Response {
        let response = Response::allow(&request.uid);
        if request.kind.kind != "Pod" || request.operation != Operation::Create {
            return response;
        }
        let Some(pod) = &request.object else {
            return response.warn("faultline webhook: the request has no pod".into());
        };
        let namespace = request
            .namespace
            .as_deref()
            .or(pod.metadata.namespace.as_deref())
            .unwrap_or("default");
        let named;
        let pod = if pod.metadata.name.is_none() && !request.name.is_empty() {
            let mut copy = pod.clone();
            copy.metadata.name = Some(request.name.clone());
            named = copy;
            &named
        } else {
            pod
        };
        let ns = self.namespaces.get(namespace);
        let catalog = self.catalog.load();
        let pod_name = pod
            .metadata
            .name
            .as_deref()
            .or(pod.metadata.generate_name.as_deref())
            .unwrap_or_default();
        match decide(&self.settings, &catalog, namespace, ns.as_deref(), pod) {
            Decision::Skip { reason, warn } => {
                if warn {
                    tracing::warn!(namespace, pod = pod_name, %reason, "not injected");
                    response.warn(reason)
                } else {
                    tracing::debug!(namespace, pod = pod_name, %reason, "not injected");
                    response
                }
            }
            Decision::Inject { config, prefix } => {
                let injection = match &config.injection {
                    Ok(injection) => injection,
                    Err(reason) => return response.warn(reason.clone()),
                };
                match mutate::patch(pod, injection, prefix) {
                    Ok(patch) => match serde_json::to_vec(&patch) {
                        Ok(bytes) => {
                            tracing::info!(namespace, pod = pod_name, config = %config.name, "injected");
                            response.with_patch(&bytes)
                        }
                        Err(e) => response.warn(format!(
                            "faultline webhook: cannot serialize the patch: {e}"
                        )),
                    },
                    Err(e) => {
                        let reason = format!(
                            "faultline webhook: config {:?} cannot be injected into this pod: {e}",
                            config.name
                        );
                        tracing::warn!(namespace, pod = pod_name, %reason, "denied");
                        response.deny(reason)
                    }
                }
            }
        }
    }
}

pub(super) const ADMISSION_V1: &str = "admission.k8s.io/v1";

/// The AdmissionReview sent back.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReviewOut<'a> {
    pub api_version: &'a str,
    pub kind: &'static str,
    pub response: Response,
}

/// `AdmissionResponse` (admission.k8s.io/v1), with the patch base64-encoded as the API server
/// reads a Go `[]byte`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Base64 of the JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The `status` of a denial (a metav1.Status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
    /// `Invalid` for a refused spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which fields, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// metav1.StatusDetails: the object and one cause per field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusDetails {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCause {
    /// `FieldValueInvalid`.
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Response {
    pub fn allow(uid: &str) -> Response {
        Response {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: Vec::new(),
        }
    }

    pub fn warn(mut self, warning: String) -> Response {
        self.warnings.push(warning);
        self
    }

    pub fn deny(mut self, message: String) -> Response {
        self.allowed = false;
        self.status = Some(Status {
            code: 403,
            message,
            reason: None,
            details: None,
        });
        self
    }

    pub fn with_patch(mut self, json: &[u8]) -> Response {
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
        self.patch_type = Some("JSONPatch");
        self
    }
}

/// A review whose pod does not parse: answered (allowed, with the reason) when it has a uid.
fn unreadable(body: &[u8], error: serde_json::Error) -> Result<(String, Response), BadReview> {
    // Parsed again on this rare path only, to name the field that is wrong.
    let error = match serde_path_to_error::deserialize::<_, AdmissionReview<Pod>>(
        &mut serde_json::Deserializer::from_slice(body),
    ) {
        Err(e) => format!("{}: {}", e.path(), e.inner()),
        Ok(_) => error.to_string(),
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BadReview(e.to_string()))?;
    let request = &value["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or_else(|| BadReview(format!("{error} (and no request.uid)")))?;
    let api_version = value["apiVersion"]
        .as_str()
        .unwrap_or(ADMISSION_V1)
        .to_owned();
    let response = Response::allow(uid).warn(format!(
        "faultline webhook: cannot read the request ({error}); the pod is not injected"
    ));
    Ok((api_version, response))
}
