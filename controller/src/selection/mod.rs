//! Choosing the targets of an experiment exactly as Chaos Mesh's `pkg/selector` does: the pods
//! the selector matches (or, when `pods` is given, those pods and nothing else), as many of them
//! as the mode says (percentages rounded up), chosen at random; then one target per pod, or per
//! named container (no names: the pod's first container). The cluster is read through a
//! [`ClusterView`], the API server or a saved state, so the reconciler and `plan` share this code.

mod matching;
mod targets;
mod view;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;
use rand::seq::SliceRandom;

pub use matching::{
    field_selector, label_selector, listed_by_api, passes_filters, phase_matches, pod_matches,
};
pub use targets::{Chosen, choose_targets};
pub use view::{ApiView, ClusterState, ClusterView, StateError};

use crate::crd::{PodSelectorSpec, TargetRecord};
use crate::plan::{Mode, Scope};

/// Chaos Mesh's annotation on a namespace that lets experiments in when the controller filters
/// namespaces (`enableFilterNamespace`).
pub const INJECT_ANNOTATION: &str = "chaos-mesh.org/inject";
/// faultline's name for the same annotation; either one with the value `enabled` allows.
pub const FAULTLINE_INJECT_ANNOTATION: &str = "chaos.faultline.dev/inject";

/// Which namespaces the controller may act in, as Chaos Mesh's controller is configured
/// (`clusterScoped`, `targetNamespace`, `enableFilterNamespace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scoping {
    /// false: only `target_namespace`.
    pub cluster_scoped: bool,
    pub target_namespace: String,
    /// Only namespaces annotated `chaos-mesh.org/inject: enabled`.
    pub filter_namespaces: bool,
}

impl Default for Scoping {
    fn default() -> Self {
        Scoping {
            cluster_scoped: true,
            target_namespace: String::new(),
            filter_namespaces: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The selector names namespaces the controller is not allowed into.
    #[error("{field}: {reason}")]
    OutOfScope { field: &'static str, reason: String },
}

/// The pods the selector matches (before the mode), in namespace/name order.
pub async fn matching_pods(
    view: &dyn ClusterView,
    selector: &PodSelectorSpec,
    scoping: &Scoping,
) -> Result<Vec<Pod>, SelectError> {
    let mut allowed = std::collections::BTreeMap::new();
    let mut pods = Vec::new();
    if !selector.pods.is_empty() {
        // `pods` overrides every other selector (selectSpecifiedPods).
        for (namespace, names) in &selector.pods {
            if !scoping.cluster_scoped && *namespace != scoping.target_namespace {
                continue;
            }
            if !namespace_allowed(view, scoping, namespace, &mut allowed).await? {
                continue;
            }
            for name in names {
                if let Some(pod) = view.get_pod(namespace, name).await? {
                    pods.push(pod);
                }
            }
        }
    } else {
        if !scoping.cluster_scoped {
            if selector.namespaces.len() > 1 {
                return Err(SelectError::OutOfScope {
                    field: "selector.namespaces",
                    reason: format!(
                        "more than one namespace while the controller is scoped to namespace {}",
                        scoping.target_namespace
                    ),
                });
            }
            if let Some(ns) = selector.namespaces.first()
                && *ns != scoping.target_namespace
            {
                return Err(SelectError::OutOfScope {
                    field: "selector.namespaces",
                    reason: format!(
                        "namespace {ns} is out of the controller's scope (namespace {})",
                        scoping.target_namespace
                    ),
                });
            }
        }
        let namespaces = if selector.namespaces.is_empty() {
            vec![scoping.target_namespace.clone()]
        } else {
            selector.namespaces.clone()
        };
        for namespace in &namespaces {
            if !namespace_allowed(view, scoping, namespace, &mut allowed).await? {
                continue;
            }
            pods.extend(view.list_pods(namespace, selector).await?);
        }
        // Nodes: those named plus those the node selectors match (their union).
        let nodes: Option<BTreeSet<String>> =
            if selector.nodes.is_empty() && selector.node_selectors.is_empty() {
                None
            } else {
                let mut names: BTreeSet<String> = selector.nodes.iter().cloned().collect();
                if !selector.node_selectors.is_empty() {
                    names.extend(view.node_names(&selector.node_selectors).await?);
                }
                Some(names)
            };
        pods.retain(|p| passes_filters(p, selector, nodes.as_ref()));
    }
    pods.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    pods.dedup_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    Ok(pods)
}

async fn namespace_allowed(
    view: &dyn ClusterView,
    scoping: &Scoping,
    namespace: &str,
    cache: &mut std::collections::BTreeMap<String, bool>,
) -> Result<bool, SelectError> {
    if !scoping.filter_namespaces {
        return Ok(true);
    }
    if let Some(allowed) = cache.get(namespace) {
        return Ok(*allowed);
    }
    let allowed = view.get_namespace(namespace).await?.is_some_and(|ns| {
        ns.metadata.annotations.is_some_and(|a| {
            [INJECT_ANNOTATION, FAULTLINE_INJECT_ANNOTATION]
                .iter()
                .any(|k| a.get(*k).is_some_and(|v| v == "enabled"))
        })
    });
    cache.insert(namespace.to_owned(), allowed);
    Ok(allowed)
}

/// `mode` applied: a random subset of the right size, kept in namespace/name order.
pub fn choose<R: Rng>(mut pods: Vec<Pod>, mode: Mode, rng: &mut R) -> Vec<Pod> {
    let count = mode.count(pods.len(), |max| rng.random_range(0..=max));
    if count < pods.len() {
        pods.shuffle(rng);
        pods.truncate(count);
        pods.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    }
    pods
}

/// The pods the selector and mode choose.
pub async fn select<R: Rng>(
    view: &dyn ClusterView,
    selector: &PodSelectorSpec,
    mode: Mode,
    scoping: &Scoping,
    rng: &mut R,
) -> Result<Vec<Pod>, SelectError> {
    let pods = matching_pods(view, selector, scoping).await?;
    Ok(choose(pods, mode, rng))
}

/// One record per target of the chosen pods, with its selector key (`.` or `.Target`). Named
/// containers a pod does not have give no target (Chaos Mesh selects the pods first).
pub fn records(pods: &[Pod], scope: &Scope, selector_key: &str) -> Vec<TargetRecord> {
    let mut records = Vec::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let mut add = |container: Option<&str>| {
            let mut record = TargetRecord::new(namespace, name, container);
            record.selector_key = selector_key.to_owned();
            record.pod_uid = pod.metadata.uid.clone();
            record.node = node.clone();
            records.push(record);
        };
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        match scope {
            Scope::Pod => add(None),
            Scope::Containers(names) if names.is_empty() => {
                // No names: the first container (Chaos Mesh's container selector).
                if let Some(first) = containers.clone().next() {
                    add(Some(&first.name));
                }
            }
            Scope::Containers(names) => {
                for c in containers {
                    if names.contains(&c.name) {
                        add(Some(&c.name));
                    }
                }
            }
        }
    }
    records
}

/// The pods' IPv4 addresses as /32 CIDRs.
pub fn pod_cidrs(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref())
        .filter(|ip| !ip.contains(':'))
        .map(|ip| format!("{ip}/32"))
        .collect()
}

#[cfg(test)]
mod tests;
