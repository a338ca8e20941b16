//! Choosing the targets of an experiment: the pods the selector matches (listed through the API
//! server with label and field selectors, or fetched by name), filtered by node, annotation and
//! phase, then as many as the mode says, chosen at random; then one target per pod or per named
//! container.

mod matching;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use rand::Rng;
use rand::seq::SliceRandom;

pub use matching::{field_selector, label_selector, pod_matches};

use crate::crd::{PodSelectorSpec, TargetRecord};
use crate::plan::{Mode, Scope};

/// The pods the selector matches, in namespace/name order.
pub async fn matching_pods(
    client: &kube::Client,
    selector: &PodSelectorSpec,
) -> Result<Vec<Pod>, kube::Error> {
    let mut pods = Vec::new();
    if selector.pods.is_empty() {
        let mut params = ListParams::default();
        if let Some(labels) =
            label_selector(&selector.label_selectors, &selector.expression_selectors)
        {
            params = params.labels(&labels);
        }
        if let Some(fields) = field_selector(&selector.field_selectors) {
            params = params.fields(&fields);
        }
        for namespace in &selector.namespaces {
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            pods.extend(
                api.list(&params)
                    .await?
                    .items
                    .into_iter()
                    .filter(|p| pod_matches(p, selector, true)),
            );
        }
    } else {
        for (namespace, names) in &selector.pods {
            if !selector.namespaces.is_empty() && !selector.namespaces.contains(namespace) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            for name in names {
                if let Some(pod) = api.get_opt(name).await?
                    && pod_matches(&pod, selector, false)
                {
                    pods.push(pod);
                }
            }
        }
    }
    if !selector.node_selectors.is_empty() {
        let labels = label_selector(&selector.node_selectors, &[]).unwrap_or_default();
        let nodes: Api<Node> = Api::all(client.clone());
        let names: BTreeSet<String> = nodes
            .list(&ListParams::default().labels(&labels))
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        pods.retain(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| names.contains(n))
        });
    }
    pods.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    pods.dedup_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    Ok(pods)
}

/// The pods that have a container the scope names (every pod for a pod scope or no names).
pub fn with_containers(pods: Vec<Pod>, scope: &Scope) -> Vec<Pod> {
    match scope {
        Scope::Containers(names) if !names.is_empty() => pods
            .into_iter()
            .filter(|p| container_names(p).iter().any(|c| names.contains(c)))
            .collect(),
        _ => pods,
    }
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

fn container_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
        .collect()
}

/// One record per target of the chosen pods.
pub fn records(pods: &[Pod], scope: &Scope) -> Vec<TargetRecord> {
    let mut records = Vec::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let mut add = |container: Option<&str>| {
            let mut record = TargetRecord::new(namespace, name, container);
            record.pod_uid = pod.metadata.uid.clone();
            record.node = node.clone();
            records.push(record);
        };
        match scope {
            Scope::Pod => add(None),
            Scope::Containers(names) => {
                for c in container_names(pod) {
                    if names.is_empty() || names.contains(&c) {
                        add(Some(&c));
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
mod tests {
    use super::*;
    use rand::SeedableRng;
    use serde_json::json;

    fn pod(ns: &str, name: &str, containers: &[&str]) -> Pod {
        let containers: Vec<_> = containers.iter().map(|c| json!({"name": c})).collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1", "containers": containers},
            "status": {"podIP": "10.1.0.7"}
        }))
        .expect("pod")
    }

    #[test]
    fn modes_choose_subsets_in_order() {
        let pods: Vec<Pod> = (0..10)
            .map(|i| pod("d", &format!("p{i}"), &["c"]))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(choose(pods.clone(), Mode::All, &mut rng).len(), 10);
        assert_eq!(choose(pods.clone(), Mode::One, &mut rng).len(), 1);
        let three = choose(pods.clone(), Mode::Fixed(3), &mut rng);
        assert_eq!(three.len(), 3);
        let names: Vec<_> = three
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(
            choose(pods.clone(), Mode::FixedPercent(25), &mut rng).len(),
            2
        );
        assert!(choose(pods, Mode::RandomMaxPercent(30), &mut rng).len() <= 3);
    }

    #[test]
    fn records_per_pod_or_container() {
        let pods = vec![pod("d", "a", &["app", "sidecar"]), pod("d", "b", &["app"])];
        let per_pod = records(&pods, &Scope::Pod);
        assert_eq!(per_pod.len(), 2);
        assert_eq!(per_pod[0].id, "d/a");
        assert_eq!(per_pod[0].pod_uid.as_deref(), Some("uid-a"));
        assert_eq!(per_pod[0].node.as_deref(), Some("n1"));
        let all = records(&pods, &Scope::Containers(vec![]));
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["d/a/app", "d/a/sidecar", "d/b/app"]
        );
        let named = with_containers(pods.clone(), &Scope::Containers(vec!["sidecar".into()]));
        assert_eq!(named.len(), 1);
        assert_eq!(
            records(&named, &Scope::Containers(vec!["sidecar".into()]))[0].id,
            "d/a/sidecar"
        );
        assert_eq!(pod_cidrs(&pods), ["10.1.0.7/32", "10.1.0.7/32"]);
    }
}
