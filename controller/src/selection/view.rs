//! Where selection reads the cluster from: the API server (the reconciler, `plan` without
//! `--cluster`) or a saved state (`plan --cluster STATE.yaml`). Both answer the same four
//! questions, so the selection code above them is one.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::ListParams;

use super::matching::{self, field_selector, label_selector};
use crate::crd::PodSelectorSpec;

/// The reads selection needs.
pub trait ClusterView: Send + Sync {
    /// The pods of a namespace that match the selector's labels, expressions and fields (what
    /// the API server filters when it lists).
    fn list_pods<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a PodSelectorSpec,
    ) -> BoxFuture<'a, Result<Vec<Pod>, kube::Error>>;
    fn get_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pod>, kube::Error>>;
    /// The names of the nodes whose labels include `labels`.
    fn node_names<'a>(
        &'a self,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<String>, kube::Error>>;
    fn get_namespace<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Namespace>, kube::Error>>;
}

/// The API server.
pub struct ApiView(pub kube::Client);

impl ClusterView for ApiView {
    fn list_pods<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a PodSelectorSpec,
    ) -> BoxFuture<'a, Result<Vec<Pod>, kube::Error>> {
        Box::pin(async move {
            let mut params = ListParams::default();
            if let Some(labels) =
                label_selector(&selector.label_selectors, &selector.expression_selectors)
            {
                params = params.labels(&labels);
            }
            if let Some(fields) = field_selector(&selector.field_selectors) {
                params = params.fields(&fields);
            }
            let api: Api<Pod> = if namespace.is_empty() {
                Api::all(self.0.clone())
            } else {
                Api::namespaced(self.0.clone(), namespace)
            };
            Ok(api.list(&params).await?.items)
        })
    }

    fn get_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pod>, kube::Error>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.0.clone(), namespace);
            api.get_opt(name).await
        })
    }

    fn node_names<'a>(
        &'a self,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<String>, kube::Error>> {
        Box::pin(async move {
            let selector = label_selector(labels, &[]).unwrap_or_default();
            let api: Api<Node> = Api::all(self.0.clone());
            Ok(api
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect())
        })
    }

    fn get_namespace<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Namespace>, kube::Error>> {
        Box::pin(async move {
            let api: Api<Namespace> = Api::all(self.0.clone());
            api.get_opt(name).await
        })
    }
}

/// A saved cluster state: what `kubectl get pods,nodes,namespaces -A -o yaml` prints.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("document {index}: {reason}")]
    Document { index: usize, reason: String },
}

impl ClusterState {
    /// Reads a `v1 List` or multi-document YAML (or JSON) of Pods, Nodes and Namespaces;
    /// other kinds are skipped.
    pub fn from_yaml(text: &str) -> Result<ClusterState, StateError> {
        let mut state = ClusterState::default();
        for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
            let value =
                <serde_json::Value as serde::Deserialize>::deserialize(document).map_err(|e| {
                    StateError::Document {
                        index,
                        reason: e.to_string(),
                    }
                })?;
            state.add(index, value)?;
        }
        Ok(state)
    }

    fn add(&mut self, index: usize, value: serde_json::Value) -> Result<(), StateError> {
        let bad = |reason: String| StateError::Document { index, reason };
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("List") | Some("PodList") | Some("NodeList") | Some("NamespaceList") => {
                let items = value
                    .get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .unwrap_or_default();
                for item in items {
                    self.add(index, item)?;
                }
            }
            Some("Pod") => self
                .pods
                .push(serde_json::from_value(value).map_err(|e| bad(format!("a Pod: {e}")))?),
            Some("Node") => self
                .nodes
                .push(serde_json::from_value(value).map_err(|e| bad(format!("a Node: {e}")))?),
            Some("Namespace") => self
                .namespaces
                .push(serde_json::from_value(value).map_err(|e| bad(format!("a Namespace: {e}")))?),
            _ => {}
        }
        Ok(())
    }
}

impl ClusterView for ClusterState {
    fn list_pods<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a PodSelectorSpec,
    ) -> BoxFuture<'a, Result<Vec<Pod>, kube::Error>> {
        let pods = self
            .pods
            .iter()
            .filter(|p| namespace.is_empty() || p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| matching::listed_by_api(p, selector))
            .cloned()
            .collect();
        Box::pin(async move { Ok(pods) })
    }

    fn get_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Pod>, kube::Error>> {
        let pod = self
            .pods
            .iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .cloned();
        Box::pin(async move { Ok(pod) })
    }

    fn node_names<'a>(
        &'a self,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Vec<String>, kube::Error>> {
        let empty = std::collections::BTreeMap::new();
        let names = self
            .nodes
            .iter()
            .filter(|n| {
                let have = n.metadata.labels.as_ref().unwrap_or(&empty);
                labels.iter().all(|(k, v)| have.get(k) == Some(v))
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        Box::pin(async move { Ok(names) })
    }

    fn get_namespace<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Namespace>, kube::Error>> {
        let ns = self
            .namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .cloned();
        Box::pin(async move { Ok(ns) })
    }
}
