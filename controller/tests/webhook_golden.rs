//! Golden tests of the sidecar webhook: real AdmissionReviews (as the API server sends them for
//! a TiKV StatefulSet's pod) against the manifests in tests/webhook/manifests (the original
//! documentation's tikv template ConfigMap and its older full-form config, verbatim), read the
//! way `faultline-controller webhook --manifests DIR` reads them. Each response is snapshotted
//! with its patch decoded, and for injected pods the pod with the patch applied; the assertions
//! beside the snapshots say what must hold whatever the snapshot.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use controller::webhook::Webhook;
use controller::webhook::config::Settings;
use controller::webhook::sources;
use controller::webhook::template::GoTemplates;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook")
}

fn webhook() -> Webhook {
    sources::offline(&GoTemplates, Settings::default(), &dir().join("manifests"))
        .expect("the golden manifests load")
}

struct Outcome {
    /// The response, its patch decoded from base64 into JSON.
    response: Value,
    /// The request's pod with the patch applied, when there is a patch.
    patched: Option<Value>,
}

fn run(name: &str) -> Outcome {
    let body = std::fs::read(dir().join(format!("reviews/{name}.json"))).expect("the review");
    let out = webhook().review(&body).expect("an AdmissionReview");
    let mut review: Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let request: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(review["response"]["uid"], request["request"]["uid"]);
    let mut patched = None;
    if let Some(encoded) = review["response"]["patch"].as_str() {
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        let mut pod = request["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod");
        // Still a pod the API server can read.
        serde_json::from_value::<Pod>(pod.clone()).expect("the patched pod is a Pod");
        review["response"]["patch"] = serde_json::to_value(&patch).expect("JSON");
        patched = Some(pod);
    }
    Outcome {
        response: review["response"].take(),
        patched,
    }
}

fn unchanged(outcome: &Outcome) {
    assert_eq!(outcome.response["allowed"], true);
    assert!(outcome.response["patch"].is_null());
    assert!(outcome.patched.is_none());
}

fn warnings(outcome: &Outcome) -> Vec<String> {
    outcome.response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn the_tikv_template_with_the_documented_arguments_injects_the_sidecar() {
    let outcome = run("tikv-template");
    assert_eq!(outcome.response["allowed"], true);
    assert!(warnings(&outcome).is_empty(), "{:?}", warnings(&outcome));
    let pod = outcome.patched.as_ref().expect("a patch");
    assert_eq!(
        pod["metadata"]["annotations"]["admission-webhook.faultline.dev/status"],
        "injected"
    );
    let chaosfs = container(pod, "chaosfs");
    assert_eq!(
        chaosfs["command"],
        serde_json::json!([
            "/usr/local/bin/chaosfs",
            "-addr=:65533",
            "-pidfile=/tmp/fuse/pid",
            "-original=/var/lib/tikv/fuse-data",
            "-mountpoint=/var/lib/tikv/data"
        ])
    );
    assert_eq!(
        pod["spec"]["initContainers"][0]["command"][2],
        "/scripts/init.sh -d /var/lib/tikv/data -f /var/lib/tikv/fuse-data"
    );
    let tikv = container(pod, "tikv");
    // The data volume's mount overwritten (HostToContainer), the scripts and fuse ones added.
    let mounts = tikv["volumeMounts"].as_array().expect("mounts");
    assert!(mounts.contains(&serde_json::json!({"name": "tikv", "mountPath": "/var/lib/tikv", "mountPropagation": "HostToContainer"})));
    assert!(mounts.iter().any(|m| m["name"] == "scripts"));
    assert!(mounts.iter().any(|m| m["name"] == "fuse"));
    // wait-fuse.sh first, then the original command.
    assert_eq!(
        tikv["command"],
        serde_json::json!([
            "/bin/sh",
            "-c",
            "'/tmp/scripts/wait-fuse.sh' && exec \"$@\"",
            "faultline-poststart",
            "/bin/sh",
            "/usr/local/bin/tikv_start_script.sh"
        ])
    );
    insta::assert_yaml_snapshot!("tikv-template-response", outcome.response);
    insta::assert_yaml_snapshot!("tikv-template-pod", outcome.patched);
}

#[test]
fn the_older_full_form_config_injects_the_same_way_under_the_legacy_prefix() {
    let outcome = run("tikv-full-form");
    let pod = outcome.patched.as_ref().expect("a patch");
    assert_eq!(
        pod["metadata"]["annotations"]["admission-webhook.pingcap.com/status"],
        "injected"
    );
    assert_eq!(container(pod, "chaosfs")["image"], "pingcap/chaos-fs");
    assert_eq!(
        container(pod, "tikv")["command"][2],
        "'/tmp/scripts/wait-fuse.sh' && exec \"$@\""
    );
    insta::assert_yaml_snapshot!("tikv-full-form-response", outcome.response);
    insta::assert_yaml_snapshot!("tikv-full-form-pod", outcome.patched);
}

#[test]
fn a_namespace_annotation_for_one_pod_name_picks_that_pods_config() {
    let outcome = run("request-by-pod-name");
    let pod = outcome.patched.as_ref().expect("a patch");
    // chaosfs-tikv-full's sidecar (port 65534), not the namespace-wide chaosfs-tikv's.
    assert_eq!(
        container(pod, "chaosfs")["ports"][0]["containerPort"],
        65534
    );
    insta::assert_yaml_snapshot!("request-by-pod-name-response", outcome.response);
}

#[test]
fn a_pod_already_injected_is_left_alone() {
    let outcome = run("already-injected");
    unchanged(&outcome);
    assert!(warnings(&outcome).is_empty());
    insta::assert_yaml_snapshot!("already-injected-response", outcome.response);
}

#[test]
fn a_pod_in_kube_system_is_never_injected() {
    let outcome = run("kube-system");
    unchanged(&outcome);
    assert!(warnings(&outcome).is_empty());
    insta::assert_yaml_snapshot!("kube-system-response", outcome.response);
}

#[test]
fn a_namespace_without_the_label_is_not_injected() {
    let outcome = run("namespace-without-label");
    unchanged(&outcome);
    assert!(warnings(&outcome).is_empty());
    insta::assert_yaml_snapshot!("namespace-without-label-response", outcome.response);
}

#[test]
fn an_unknown_config_is_allowed_unchanged_with_a_warning() {
    let outcome = run("unknown-config");
    unchanged(&outcome);
    let w = warnings(&outcome);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("config \"chaosfs-nosuch\""), "{w:?}");
    assert!(
        w[0].contains("admission-webhook.chaos-mesh.org/request"),
        "{w:?}"
    );
    insta::assert_yaml_snapshot!("unknown-config-response", outcome.response);
}

#[test]
fn a_template_that_fails_to_render_is_named_with_its_line_and_argument() {
    let outcome = run("template-fails-to-render");
    unchanged(&outcome);
    let w = warnings(&outcome);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("template \"broken-sidecar\", line 5, at {{.DatPath}}: argument \"DatPath\" is not given (given: DataPath)"),
        "{w:?}"
    );
    insta::assert_yaml_snapshot!("template-fails-to-render-response", outcome.response);
}

#[test]
fn post_start_without_a_command_to_wrap_is_denied_with_the_reason() {
    let outcome = run("no-command-to-wrap");
    assert_eq!(outcome.response["allowed"], false);
    assert!(outcome.patched.is_none());
    let message = outcome.response["status"]["message"]
        .as_str()
        .expect("a message");
    assert!(
        message.contains("postStart of container \"tikv\""),
        "{message}"
    );
    insta::assert_yaml_snapshot!("no-command-to-wrap-response", outcome.response);
}

#[test]
fn a_pod_that_does_not_parse_is_allowed_with_a_warning() {
    let outcome = run("unreadable-pod");
    unchanged(&outcome);
    assert!(warnings(&outcome)[0].contains("cannot read the request"));
    insta::assert_yaml_snapshot!("unreadable-pod-response", outcome.response);
}

#[test]
fn not_an_admission_review_is_refused() {
    assert!(webhook().review(b"{\"kind\": \"Pod\"}").is_err());
    assert!(webhook().review(b"not json").is_err());
}

#[test]
fn a_new_catalog_takes_effect_for_the_next_request() {
    let webhook = webhook();
    let body = std::fs::read(dir().join("reviews/tikv-template.json")).expect("the review");
    let before: Value = serde_json::from_slice(&webhook.review(&body).unwrap()).unwrap();
    assert!(before["response"]["patch"].is_string());
    // The ConfigMaps deleted: the same request now names an unknown config.
    webhook.set_catalog(controller::webhook::catalog::Catalog::default());
    let after: Value = serde_json::from_slice(&webhook.review(&body).unwrap()).unwrap();
    assert!(after["response"]["patch"].is_null());
    assert!(
        after["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("is not defined (configs: none)")
    );
}
