//! Each test pins one fact of Chaos Mesh's `pkg/selector`, against a saved cluster state.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use super::*;
use crate::plan::{Mode, Scope};

fn pod(ns: &str, name: &str, node: &str, phase: &str, containers: &[&str]) -> Pod {
    let containers: Vec<_> = containers.iter().map(|c| json!({"name": c})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "labels": {"app": name.trim_end_matches(char::is_numeric)}},
        "spec": {"nodeName": node, "containers": containers},
        "status": {"phase": phase, "podIP": "10.1.0.7"}
    }))
    .expect("pod")
}

fn state() -> ClusterState {
    let node = |name: &str, zone: &str| {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"zone": zone}}}))
            .expect("node")
    };
    let ns = |name: &str, inject: bool| {
        let annotations = if inject {
            json!({"chaos-mesh.org/inject": "enabled"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}}))
            .expect("namespace")
    };
    ClusterState {
        pods: vec![
            pod("d", "web0", "n1", "Running", &["app", "sidecar"]),
            pod("d", "web1", "n2", "Running", &["app", "sidecar"]),
            pod("d", "web2", "n3", "Pending", &["app"]),
            pod("d", "db0", "n3", "Running", &["db"]),
            pod("other", "web9", "n1", "Running", &["app"]),
        ],
        nodes: vec![node("n1", "a"), node("n2", "b"), node("n3", "b")],
        namespaces: vec![ns("d", true), ns("other", false)],
    }
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

fn in_d() -> PodSelectorSpec {
    PodSelectorSpec {
        namespaces: vec!["d".into()],
        ..Default::default()
    }
}

async fn matching(selector: &PodSelectorSpec, scoping: &Scoping) -> Vec<String> {
    names(
        &matching_pods(&state(), selector, scoping)
            .await
            .expect("selection"),
    )
}

/// Chaos Mesh (selectSpecifiedPods): when `pods` is given it is the whole selection; labels,
/// namespaces and phases are not applied to it.
#[tokio::test]
async fn pods_override_every_other_selector() {
    let mut s = in_d();
    s.pods = BTreeMap::from([("d".into(), vec!["web2".into(), "gone".into()])]);
    s.label_selectors = BTreeMap::from([("app".into(), "db".into())]);
    s.pod_phase_selectors = vec!["Running".into()];
    assert_eq!(matching(&s, &Scoping::default()).await, ["d/web2"]);
}

/// Chaos Mesh (newNodeSelector): "if both setting Nodes and NodeSelectors, the node list will be
/// combined" — a pod on a named node or on a node the labels match passes.
#[tokio::test]
async fn nodes_and_node_selectors_are_united() {
    let mut s = in_d();
    s.nodes = vec!["n1".into()];
    assert_eq!(matching(&s, &Scoping::default()).await, ["d/web0"]);
    s.node_selectors = BTreeMap::from([("zone".into(), "b".into())]);
    assert_eq!(
        matching(&s, &Scoping::default()).await,
        ["d/db0", "d/web0", "d/web1", "d/web2"]
    );
    s.nodes.clear();
    assert_eq!(
        matching(&s, &Scoping::default()).await,
        ["d/db0", "d/web1", "d/web2"]
    );
}

/// Chaos Mesh (phase_selector.go): `!Phase` excludes pods in that phase.
#[tokio::test]
async fn phase_exclusions() {
    let mut s = in_d();
    s.pod_phase_selectors = vec!["!Running".into()];
    assert_eq!(matching(&s, &Scoping::default()).await, ["d/web2"]);
    s.pod_phase_selectors = vec!["!Pending".into()];
    s.label_selectors = BTreeMap::from([("app".into(), "web".into())]);
    assert_eq!(
        matching(&s, &Scoping::default()).await,
        ["d/web0", "d/web1"]
    );
}

/// Chaos Mesh (namespace selector, namespace-scoped mode): more than one namespace, or one other
/// than the target namespace, is an error; `pods` outside it are skipped.
#[tokio::test]
async fn namespace_scoped_controller() {
    let scoped = Scoping {
        cluster_scoped: false,
        target_namespace: "d".into(),
        filter_namespaces: false,
    };
    assert_eq!(matching(&in_d(), &scoped).await.len(), 4);
    let mut s = in_d();
    s.namespaces = vec!["other".into()];
    assert!(matches!(
        matching_pods(&state(), &s, &scoped).await,
        Err(SelectError::OutOfScope {
            field: "selector.namespaces",
            ..
        })
    ));
    s.namespaces = vec!["d".into(), "other".into()];
    assert!(matching_pods(&state(), &s, &scoped).await.is_err());
    s.pods = BTreeMap::from([
        ("other".into(), vec!["web9".into()]),
        ("d".into(), vec!["web0".into()]),
    ]);
    assert_eq!(matching(&s, &scoped).await, ["d/web0"]);
}

/// Chaos Mesh (enableFilterNamespace, IsAllowedNamespaces): only namespaces annotated
/// `chaos-mesh.org/inject: enabled` are selected from, for listed and named pods alike.
#[tokio::test]
async fn namespace_allow_list_by_annotation() {
    let filtered = Scoping {
        filter_namespaces: true,
        ..Scoping::default()
    };
    let mut s = in_d();
    s.namespaces = vec!["d".into(), "other".into()];
    s.label_selectors = BTreeMap::from([("app".into(), "web".into())]);
    assert_eq!(
        matching(&s, &Scoping::default()).await,
        ["d/web0", "d/web1", "d/web2", "other/web9"]
    );
    assert_eq!(
        matching(&s, &filtered).await,
        ["d/web0", "d/web1", "d/web2"]
    );
    s.pods = BTreeMap::from([("other".into(), vec!["web9".into()])]);
    assert!(matching(&s, &filtered).await.is_empty());
}

/// Chaos Mesh (container selector): no containerNames takes each pod's first container; named
/// containers are looked for in the pods already chosen (a chosen pod without them gives no
/// target).
#[test]
fn containers_first_or_named() {
    let st = state();
    let first = records(&st.pods[..2], &Scope::Containers(vec![]), ".");
    assert_eq!(
        first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["d/web0/app", "d/web1/app"]
    );
    let named = records(
        &st.pods[2..4],
        &Scope::Containers(vec!["sidecar".into(), "db".into()]),
        ".",
    );
    assert_eq!(
        named.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["d/db0/db"]
    );
    let per_pod = records(&st.pods[..1], &Scope::Pod, ".Target");
    assert_eq!(per_pod[0].id, "d/web0");
    assert_eq!(per_pod[0].selector_key, ".Target");
    assert_eq!(per_pod[0].node.as_deref(), Some("n1"));
}

/// Chaos Mesh (FilterObjectsByMode): the counts per mode; fixed-percent 25 of 4 pods is 1.
#[tokio::test]
async fn modes_choose_the_right_number_and_are_seeded() {
    let pods = matching_pods(&state(), &in_d(), &Scoping::default())
        .await
        .expect("pods");
    let mut rng = StdRng::seed_from_u64(7);
    assert_eq!(choose(pods.clone(), Mode::All, &mut rng).len(), 4);
    assert_eq!(choose(pods.clone(), Mode::One, &mut rng).len(), 1);
    assert_eq!(choose(pods.clone(), Mode::Fixed(3), &mut rng).len(), 3);
    assert_eq!(
        choose(pods.clone(), Mode::FixedPercent(25), &mut rng).len(),
        1
    );
    assert_eq!(
        choose(pods.clone(), Mode::FixedPercent(26), &mut rng).len(),
        2
    );
    let a = names(&choose(
        pods.clone(),
        Mode::Fixed(2),
        &mut StdRng::seed_from_u64(1),
    ));
    let b = names(&choose(
        pods.clone(),
        Mode::Fixed(2),
        &mut StdRng::seed_from_u64(1),
    ));
    assert_eq!(a, b, "the same seed chooses the same pods");
}
