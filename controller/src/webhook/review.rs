//! One AdmissionReview (v1) in, one out: the webhook's whole answer to the API server.
//!
//! Never fails on what a request contains: a pod that cannot be read or injected is allowed
//! unchanged with a warning, except a pod whose spec makes the requested injection impossible
//! (a postStart with no command to wrap), which is denied with the reason, so that its author
//! can fix it. Only a body that is not an AdmissionReview at all (no uid to answer) is a 400.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::{ObjectRef, Store};

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
pub struct BadReview(String);

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
        let response = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
            Ok(review) => {
                let request: AdmissionRequest<Pod> = review
                    .try_into()
                    .map_err(|_| BadReview("no request".into()))?;
                self.respond(&request)
            }
            Err(e) => unreadable(body, &e)?,
        };
        serde_json::to_vec(&response.into_review()).map_err(|e| BadReview(e.to_string()))
    }

    /// The response to a request.
    pub fn respond(&self, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        if request.kind.kind != "Pod" || request.operation != Operation::Create {
            return response;
        }
        let Some(pod) = &request.object else {
            return warned(response, "faultline webhook: the request has no pod".into());
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
                    warned(response, reason)
                } else {
                    tracing::debug!(namespace, pod = pod_name, %reason, "not injected");
                    response
                }
            }
            Decision::Inject { config, prefix } => {
                let injection = match &config.injection {
                    Ok(injection) => injection,
                    Err(reason) => return warned(response, reason.clone()),
                };
                match mutate::patch(pod, injection, prefix) {
                    Ok(patch) => {
                        tracing::info!(namespace, pod = pod_name, config = %config.name, "injected");
                        match response.with_patch(patch) {
                            Ok(r) => r,
                            Err(e) => warned(
                                AdmissionResponse::from(request),
                                format!("faultline webhook: cannot serialize the patch: {e}"),
                            ),
                        }
                    }
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

fn warned(mut response: AdmissionResponse, warning: String) -> AdmissionResponse {
    response.warnings.get_or_insert_with(Vec::new).push(warning);
    response
}

/// A review whose pod does not parse: answered (allowed, with the reason) when it has a uid.
fn unreadable(body: &[u8], error: &serde_json::Error) -> Result<AdmissionResponse, BadReview> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BadReview(e.to_string()))?;
    let request = &value["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or_else(|| BadReview(format!("{error} (and no request.uid)")))?;
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Default::default();
    if let Some(api_version) = value["apiVersion"].as_str() {
        response.types.api_version = api_version.to_owned();
    }
    Ok(warned(
        response,
        format!("faultline webhook: cannot read the request ({error}); the pod is not injected"),
    ))
}
