//! The chaos kinds' admission, as the API server calls it: an AdmissionReview in, allowed or
//! denied (with each field and its reason) out, for every kind; the spec of an existing object
//! cannot change (Chaos Mesh's "Cannot update chaos spec"); Chaos Mesh's defaults come back as a
//! JSON Patch; and the webhook binary answers /validate-chaos over TLS.

#[path = "support/webhook_client.rs"]
mod webhook_client;

use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use controller::webhook::chaos::{default_review, validate_review};
use serde_json::{Value, json};

fn review(operation: &str, kind: &str, resource: &str, spec: Value, old: Option<Value>) -> Vec<u8> {
    let object = |spec: Value| {
        json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": kind,
               "metadata": {"name": "x", "namespace": "demo"}, "spec": spec})
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0b1c", "operation": operation, "name": "x", "namespace": "demo",
            "kind": {"group": "chaos.faultline.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "chaos.faultline.dev", "version": "v1alpha1", "resource": resource},
            "requestKind": {"group": "chaos.faultline.dev", "version": "v1alpha1", "kind": kind},
            "requestResource": {"group": "chaos.faultline.dev", "version": "v1alpha1", "resource": resource},
            "userInfo": {"username": "alice"},
            "object": object(spec),
            "oldObject": old.map(object),
            "dryRun": false
        }
    }))
    .expect("JSON")
}

fn answer(bytes: Vec<u8>) -> Value {
    let out: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["response"]["uid"], "0b1c");
    out["response"].clone()
}

/// The denied fields, in order.
fn fields(response: &Value) -> Vec<String> {
    response["status"]["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn check(kind: &str, resource: &str, valid: Value, invalid: Value, want: &[&str]) {
    let ok =
        answer(validate_review(&review("CREATE", kind, resource, valid, None)).expect("review"));
    assert_eq!(ok["allowed"], true, "{kind}: {ok}");
    let denied =
        answer(validate_review(&review("CREATE", kind, resource, invalid, None)).expect("review"));
    assert_eq!(denied["allowed"], false, "{kind}: {denied}");
    assert_eq!(denied["status"]["code"], 422);
    assert_eq!(denied["status"]["reason"], "Invalid");
    assert_eq!(fields(&denied), want, "{kind}: {denied}");
    let message = denied["status"]["message"].as_str().unwrap_or_default();
    for field in want {
        assert!(message.contains(field), "{kind}: {message}");
    }
}

#[test]
fn io_chaos() {
    check(
        "IOChaos",
        "iochaos",
        json!({"action": "fault", "mode": "one", "selector": {}, "volumePath": "/data", "errno": 5}),
        // Chaos Mesh (IOErrno.Validate): action fault with errno 0 is refused; mode fixed needs
        // a value above 0.
        json!({"action": "fault", "mode": "fixed", "value": "0", "selector": {}, "volumePath": "/data", "errno": 0}),
        &["spec.value", "spec.errno"],
    );
}

#[test]
fn network_chaos() {
    check(
        "NetworkChaos",
        "networkchaos",
        json!({"action": "partition", "mode": "all", "selector": {}, "direction": "both"}),
        // Chaos Mesh (NetworkChaosSpec.Validate, Rate.Validate).
        json!({"action": "delay", "mode": "all", "selector": {}, "direction": "from",
               "delay": {"latency": "10ms"}, "rate": {"rate": "fast"}}),
        &["spec.direction", "spec.rate.rate"],
    );
}

#[test]
fn pod_chaos() {
    check(
        "PodChaos",
        "podchaos",
        json!({"action": "pod-kill", "mode": "one", "selector": {}, "duration": "30s"}),
        // Chaos Mesh (PodChaosSpec.Validate, Duration.Validate).
        json!({"action": "container-kill", "mode": "one", "selector": {}, "duration": "soon"}),
        &["spec.duration", "spec.containerNames"],
    );
}

#[test]
fn stress_chaos() {
    check(
        "StressChaos",
        "stresschaos",
        json!({"mode": "random-max-percent", "value": "50", "selector": {}, "stressors": {"cpu": {"workers": 1}}}),
        // Chaos Mesh (PodSelector.Validate: random-max-percent in (0,100]; StressChaosSpec:
        // missing stressors).
        json!({"mode": "random-max-percent", "value": "0", "selector": {}}),
        &["spec.value", "spec.stressors"],
    );
}

#[test]
fn a_spec_that_does_not_parse_names_the_field() {
    let denied = answer(
        validate_review(&review(
            "CREATE",
            "PodChaos",
            "podchaos",
            json!({"action": "explode", "mode": "one", "selector": {}}),
            None,
        ))
        .expect("review"),
    );
    assert_eq!(denied["allowed"], false);
    assert_eq!(fields(&denied), ["spec.action"], "{denied}");
}

/// Chaos Mesh (ValidateUpdate): "Cannot update chaos spec"; an update that keeps the spec (a
/// finalizer, an annotation such as pause) is allowed.
#[test]
fn the_spec_cannot_change_but_the_rest_can() {
    let spec = json!({"action": "pod-kill", "mode": "one", "selector": {}});
    let mut other = spec.clone();
    other["mode"] = json!("all");
    let denied = answer(
        validate_review(&review(
            "UPDATE",
            "PodChaos",
            "podchaos",
            other,
            Some(spec.clone()),
        ))
        .expect("review"),
    );
    assert_eq!(denied["allowed"], false);
    assert_eq!(fields(&denied), ["spec"]);
    assert!(
        denied["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Cannot update chaos spec")
    );
    let same = answer(
        validate_review(&review(
            "UPDATE",
            "PodChaos",
            "podchaos",
            spec.clone(),
            Some(spec),
        ))
        .expect("review"),
    );
    assert_eq!(same["allowed"], true);
}

/// Chaos Mesh's defaulting: the selectors' namespaces (PodSelector.Default), direction to,
/// jitter 0ms and correlations 0 (the `default` tags), the device without `@ifN`.
#[test]
fn defaults_come_back_as_a_json_patch() {
    let out = answer(
        default_review(&review(
            "CREATE",
            "NetworkChaos",
            "networkchaos",
            json!({"action": "delay", "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
                   "delay": {"latency": "10ms"}, "device": "eth0@if12",
                   "target": {"mode": "all", "selector": {}}}),
            None,
        ))
        .expect("review"),
    );
    assert_eq!(out["allowed"], true);
    assert_eq!(out["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(out["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON Patch");
    let mut object = json!({"spec": {"action": "delay", "mode": "all",
        "selector": {"labelSelectors": {"app": "web"}}, "delay": {"latency": "10ms"},
        "device": "eth0@if12", "target": {"mode": "all", "selector": {}}},
        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "NetworkChaos",
        "metadata": {"name": "x", "namespace": "demo"}});
    json_patch::patch(&mut object, &patch).expect("applies");
    let spec = &object["spec"];
    assert_eq!(spec["selector"]["namespaces"], json!(["demo"]));
    assert_eq!(spec["target"]["selector"]["namespaces"], json!(["demo"]));
    assert_eq!(spec["direction"], "to");
    assert_eq!(spec["device"], "eth0");
    assert_eq!(spec["delay"]["jitter"], "0ms");
    assert_eq!(spec["delay"]["correlation"], "0");
}

/// `kubectl apply` of an invalid object, as the API server sends it: over TLS to the webhook
/// binary's /validate-chaos, refused with every field.
#[tokio::test]
async fn the_webhook_binary_refuses_an_invalid_chaos_over_tls() {
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let certs = webhook_client::certs();
    let server = webhook_client::start(
        Path::new(env!("CARGO_BIN_EXE_faultline-controller")),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook/manifests"),
        tls_dir.path(),
        &certs,
    );
    let mut client =
        webhook_client::connect(server.addr, &certs.ca_pem, webhook_client::SERVER_NAME)
            .await
            .expect("TLS");
    let body = review(
        "CREATE",
        "StressChaos",
        "stresschaos",
        json!({"mode": "fixed-percent", "value": "0", "selector": {}}),
        None,
    );
    let (status, body) = client
        .post("/validate-chaos", Bytes::from(body))
        .await
        .expect("a response");
    assert_eq!(status, 200);
    let out: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(out["response"]["allowed"], false, "{out}");
    assert_eq!(fields(&out["response"]), ["spec.value", "spec.stressors"]);
}

#[test]
fn schedule_admission_checks_the_cron_and_the_embedded_spec_and_allows_spec_updates() {
    let spec = |schedule: &str, duration: &str| {
        json!({"schedule": schedule, "type": "PodChaos", "podChaos": {
            "action": "pod-failure", "mode": "one", "duration": duration,
            "selector": {"labelSelectors": {"app": "web"}}}})
    };
    // A bad cron and a bad duration inside podChaos, each named.
    check(
        "Schedule",
        "schedules",
        spec("@every 5m", "30s"),
        spec("*/5 * * *", "soon"),
        &["spec.schedule", "spec.podChaos.duration"],
    );
    // Chaos Mesh lets a Schedule's spec change (its webhook validates the new one).
    let update = answer(
        validate_review(&review(
            "UPDATE",
            "Schedule",
            "schedules",
            spec("@hourly", "30s"),
            Some(spec("@every 5m", "30s")),
        ))
        .expect("review"),
    );
    assert_eq!(update["allowed"], true, "{update}");
    let bad_update = answer(
        validate_review(&review(
            "UPDATE",
            "Schedule",
            "schedules",
            spec("@fortnightly", "30s"),
            Some(spec("@every 5m", "30s")),
        ))
        .expect("review"),
    );
    assert_eq!(fields(&bad_update), ["spec.schedule"], "{bad_update}");
}

#[test]
fn workflow_and_status_check() {
    let suspend = json!({"name": "wait", "templateType": "Suspend", "deadline": "10s"});
    check(
        "Workflow",
        "workflows",
        json!({"entry": "wait", "templates": [suspend]}),
        // Chaos Mesh (workflow_webhook.go): the entry names a template; a Suspend needs a
        // deadline.
        json!({"entry": "nope", "templates": [{"name": "wait", "templateType": "Suspend"}]}),
        &["spec.entry", "spec.templates[0].deadline"],
    );
    check(
        "StatusCheck",
        "statuschecks",
        json!({"http": {"url": "http://web/", "criteria": {"statusCode": "200-299"}}}),
        // Chaos Mesh (statuscheck_webhook.go): a status code is 1 to 999.
        json!({"http": {"url": "http://web/", "criteria": {"statusCode": "0"}}}),
        &["spec.http.criteria.statusCode"],
    );
    // A Workflow's spec may be updated (Chaos Mesh validates the new one).
    let updated = answer(
        validate_review(&review(
            "UPDATE",
            "Workflow",
            "workflows",
            json!({"entry": "wait", "templates": [{"name": "wait", "templateType": "Suspend", "deadline": "20s"}]}),
            Some(json!({"entry": "wait", "templates": [suspend]})),
        ))
        .expect("review"),
    );
    assert_eq!(updated["allowed"], true, "{updated}");
}
