//! `faultline-controller plan` on a saved cluster state (tests/plan/cluster.yaml: namespaces
//! shop and ops, nodes node-a (zone east), node-b and node-c (zone west), web-0..3 with
//! containers app and envoy, db-0 and db-1, web-9 in ops): the targets each mode and selector
//! choose, as Chaos Mesh's selector would.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

fn cluster() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/plan/cluster.yaml")
        .display()
        .to_string()
}

/// Runs `plan` on the manifests (one YAML text) and returns its JSON.
fn plan(manifests: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("chaos.yaml");
    std::fs::write(&file, manifests).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-controller"))
        .args(["plan", "--cluster", &cluster(), "-f"])
        .arg(&file)
        .args(["-o", "json"])
        .args(extra)
        .output()
        .expect("run plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn chaos(kind: &str, name: &str, spec: Value) -> String {
    yaml_serde::to_string(&json!({
        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec
    }))
    .expect("yaml")
}

/// `pod[/container]@node` of each target, in order.
fn targets(verdict: &Value) -> Vec<String> {
    verdict["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            let container = t["container"]
                .as_str()
                .map(|c| format!("/{c}"))
                .unwrap_or_default();
            format!(
                "{}{container}@{}",
                t["pod"].as_str().unwrap_or_default(),
                t["node"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn stress(mode: &str, value: Option<&str>, selector: Value, containers: Option<Value>) -> Value {
    let mut spec = json!({"mode": mode, "selector": selector,
        "stressors": {"cpu": {"workers": 1}}});
    if let Some(v) = value {
        spec["value"] = json!(v);
    }
    if let Some(c) = containers {
        spec["containerNames"] = c;
    }
    spec
}

#[test]
fn json_has_one_element_per_object_in_input_order() {
    let text = [
        chaos(
            "StressChaos",
            "b",
            stress("all", None, json!({"labelSelectors": {"app": "db"}}), None),
        ),
        chaos(
            "PodChaos",
            "a",
            json!({"action": "container-kill", "mode": "one", "selector": {}}),
        ),
        chaos("JVMChaos", "c", json!({})),
    ]
    .join("---\n");
    let out = plan(&text, &[]);
    let out = out.as_array().expect("an array");
    assert_eq!(out.len(), 3);
    assert_eq!(
        (
            out[0]["kind"].as_str(),
            out[0]["name"].as_str(),
            &out[0]["accepted"]
        ),
        (Some("StressChaos"), Some("b"), &json!(true))
    );
    // No containerNames: the first container of each pod (Chaos Mesh's container selector).
    assert_eq!(
        targets(&out[0]),
        ["db-0/postgres@node-a", "db-1/postgres@node-b"]
    );
    assert_eq!(out[0]["namespace"], "shop");
    assert!(out[0].get("deadline").is_none(), "no duration, no deadline");
    assert_eq!(out[1]["accepted"], false);
    assert_eq!(out[1]["problems"][0]["field"], "spec.containerNames");
    assert!(out[1]["targets"].as_array().is_some_and(|t| t.is_empty()));
    assert_eq!(out[2]["accepted"], false);
    assert_eq!(out[2]["problems"][0]["field"], "kind");
}

#[test]
fn every_mode_takes_the_number_chaos_mesh_takes() {
    let web = json!({"labelSelectors": {"app": "web"}});
    let cases = [
        ("all", None, 4),
        ("one", None, 1),
        ("fixed", Some("2"), 2),
        ("fixed", Some("9"), 4),
        // ceil(4 * 25 / 100) = 1; ceil(4 * 30 / 100) = 2.
        ("fixed-percent", Some("25"), 1),
        ("fixed-percent", Some("30"), 2),
        ("fixed-percent", Some("100"), 4),
    ];
    let text: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (mode, value, _))| {
            chaos(
                "StressChaos",
                &format!("m{i}"),
                stress(mode, *value, web.clone(), None),
            )
        })
        .collect();
    let out = plan(&text.join("---\n"), &["--seed", "3"]);
    for (i, (mode, value, count)) in cases.iter().enumerate() {
        assert_eq!(
            out[i]["targets"].as_array().map(Vec::len),
            Some(*count),
            "mode {mode} value {value:?}: {}",
            out[i]
        );
    }
    // random-max-percent: never more than ceil(4 * 50 / 100) = 2, and the same under one seed.
    let random = chaos(
        "StressChaos",
        "r",
        stress("random-max-percent", Some("50"), web, None),
    );
    let a = plan(&random, &["--seed", "11"]);
    assert!(a[0]["targets"].as_array().is_some_and(|t| t.len() <= 2));
    assert_eq!(a, plan(&random, &["--seed", "11"]));
    // value 0 is refused for the percent modes.
    let zero = chaos(
        "StressChaos",
        "z",
        stress("fixed-percent", Some("0"), json!({}), None),
    );
    assert_eq!(plan(&zero, &[])[0]["problems"][0]["field"], "spec.value");
}

#[test]
fn every_selector_picks_the_pods_chaos_mesh_picks() {
    let cases: Vec<(Value, Option<Value>, Vec<&str>)> = vec![
        // Labels, and named containers.
        (
            json!({"labelSelectors": {"app": "web"}}),
            Some(json!(["envoy"])),
            vec![
                "web-0/envoy@node-a",
                "web-1/envoy@node-b",
                "web-2/envoy@node-c",
                "web-3/envoy@node-c",
            ],
        ),
        // nodes ∪ nodeSelectors.
        (
            json!({"nodes": ["node-a"], "nodeSelectors": {"zone": "west"}, "labelSelectors": {"app": "db"}}),
            None,
            vec!["db-0/postgres@node-a", "db-1/postgres@node-b"],
        ),
        (
            json!({"nodeSelectors": {"zone": "west"}, "labelSelectors": {"app": "web"}}),
            None,
            vec!["web-1/app@node-b", "web-2/app@node-c", "web-3/app@node-c"],
        ),
        // Phase exclusion and inclusion.
        (
            json!({"podPhaseSelectors": ["!Running"]}),
            None,
            vec!["db-1/postgres@node-b", "web-3/app@node-c"],
        ),
        (
            json!({"podPhaseSelectors": ["Pending", "Failed"]}),
            None,
            vec!["db-1/postgres@node-b", "web-3/app@node-c"],
        ),
        // Annotations, expressions, fields.
        (
            json!({"annotationSelectors": {"tier": "front"}}),
            None,
            vec!["web-0/app@node-a", "web-1/app@node-b"],
        ),
        (
            json!({"expressionSelectors": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
            None,
            vec!["db-0/postgres@node-a", "db-1/postgres@node-b"],
        ),
        (
            json!({"fieldSelectors": {"spec.nodeName": "node-c"}}),
            None,
            vec!["web-2/app@node-c", "web-3/app@node-c"],
        ),
        // pods overrides everything else, other namespaces included.
        (
            json!({"pods": {"ops": ["web-9"], "shop": ["db-1"]}, "labelSelectors": {"app": "none"}}),
            None,
            vec!["web-9/app@node-a", "db-1/postgres@node-b"],
        ),
        // Namespaces.
        (
            json!({"namespaces": ["ops", "shop"], "labelSelectors": {"app": "web"}, "nodes": ["node-a"]}),
            None,
            vec!["web-9/app@node-a", "web-0/app@node-a"],
        ),
    ];
    let text: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (selector, containers, _))| {
            chaos(
                "StressChaos",
                &format!("s{i}"),
                stress("all", None, selector.clone(), containers.clone()),
            )
        })
        .collect();
    let out = plan(&text.join("---\n"), &[]);
    for (i, (selector, _, expected)) in cases.iter().enumerate() {
        let mut got = targets(&out[i]);
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "selector {selector}");
    }
}

#[test]
fn namespace_scoping_and_the_allow_list() {
    let both = chaos(
        "StressChaos",
        "n",
        stress(
            "all",
            None,
            json!({"namespaces": ["ops", "shop"], "labelSelectors": {"app": "web"}, "nodes": ["node-a"]}),
            None,
        ),
    );
    // Only namespaces annotated chaos-mesh.org/inject=enabled.
    let out = plan(&both, &["--filter-namespaces"]);
    assert_eq!(targets(&out[0]), ["web-0/app@node-a"]);
    // A namespace-scoped controller refuses a selector reaching out of its namespace.
    let out = plan(&both, &["--target-namespace", "shop"]);
    assert_eq!(out[0]["accepted"], false);
    assert_eq!(out[0]["problems"][0]["field"], "spec.selector.namespaces");
}

#[test]
fn network_chaos_lists_its_target_pods_under_dot_target() {
    let nc = chaos(
        "NetworkChaos",
        "net",
        json!({"action": "delay", "mode": "all", "direction": "both", "delay": {"latency": "10ms"}, "duration": "10m",
               "selector": {"labelSelectors": {"app": "db"}, "podPhaseSelectors": ["Running"]},
               "target": {"mode": "one", "selector": {"pods": {"shop": ["web-0"]}}}}),
    );
    let out = plan(&nc, &["--now", "2026-01-02T03:04:05Z"]);
    assert_eq!(out[0]["deadline"], "2026-01-02T03:14:05Z");
    let t = &out[0]["targets"];
    assert_eq!(out[0]["accepted"], true, "{}", out[0]);
    assert_eq!(
        (
            t[0]["pod"].as_str(),
            t[0]["selectorKey"].as_str(),
            &t[0]["container"]
        ),
        (Some("db-0"), Some("."), &Value::Null)
    );
    assert_eq!(
        (t[1]["pod"].as_str(), t[1]["selectorKey"].as_str()),
        (Some("web-0"), Some(".Target"))
    );
}

#[test]
fn list_kinds_and_text_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-controller"))
        .args(["plan", "--list-kinds", "-o", "json"])
        .output()
        .expect("run");
    let kinds: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        kinds,
        json!([
            "DNSChaos",
            "HTTPChaos",
            "IOChaos",
            "NetworkChaos",
            "PodChaos",
            "Schedule",
            "StatusCheck",
            "StressChaos",
            "TimeChaos",
            "Workflow"
        ])
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        chaos(
            "StressChaos",
            "t",
            stress("all", None, json!({"labelSelectors": {"app": "db"}}), None),
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-controller"))
        .args(["plan", "--cluster", &cluster(), "-f"])
        .arg(&file)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("StressChaos shop/t: accepted, 2 target(s)"),
        "{text}"
    );
    assert!(text.contains("db-1"), "{text}");
}

#[test]
fn schedule_shows_its_next_runs_and_the_targets_of_the_next_one() {
    let sd = chaos(
        "Schedule",
        "nightly",
        json!({"schedule": "30 2 * * *", "type": "NetworkChaos", "historyLimit": 2,
               "networkChaos": {"action": "delay", "mode": "all", "delay": {"latency": "10ms"},
                                "duration": "10m", "selector": {"labelSelectors": {"app": "db"}}}}),
    );
    let out = plan(&sd, &["--now", "2026-01-02T03:04:05Z"]);
    assert_eq!(out[0]["accepted"], true, "{}", out[0]);
    assert_eq!(
        out[0]["nextRuns"],
        json!([
            "2026-01-03T02:30:00Z",
            "2026-01-04T02:30:00Z",
            "2026-01-05T02:30:00Z"
        ])
    );
    // The experiment the 02:30 run creates lasts until 02:40.
    assert_eq!(out[0]["deadline"], "2026-01-03T02:40:00Z");
    assert_eq!(targets(&out[0]), ["db-0@node-a", "db-1@node-b"]);

    // A bad cron and a bad embedded spec are named as such.
    let bad = chaos(
        "Schedule",
        "bad",
        json!({"schedule": "61 * * * *", "type": "PodChaos",
               "podChaos": {"action": "pod-kill", "mode": "sometimes", "selector": {}}}),
    );
    let out = plan(&bad, &[]);
    assert_eq!(out[0]["accepted"], false);
    let fields: Vec<&str> = out[0]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert!(fields.contains(&"spec.schedule"), "{}", out[0]);
    assert!(
        fields.iter().any(|f| f.starts_with("spec.podChaos")),
        "{}",
        out[0]
    );
}

#[test]
fn workflow_shows_each_node_with_its_targets_and_status_checks_are_validated() {
    let manifests = format!(
        "{}---\n{}",
        chaos(
            "Workflow",
            "wf",
            json!({"entry": "steps", "templates": [
                {"name": "steps", "templateType": "Serial", "deadline": "2m", "children": ["db-io", "pause"]},
                {"name": "db-io", "templateType": "IOChaos", "deadline": "30s", "ioChaos": {
                    "action": "latency", "delay": "10ms", "volumePath": "/data", "mode": "all",
                    "selector": {"labelSelectors": {"app": "db"}}}},
                {"name": "pause", "templateType": "Suspend", "deadline": "10s"}]}),
        ),
        chaos(
            "StatusCheck",
            "sc",
            json!({"http": {"url": "http://web/", "criteria": {"statusCode": "2000"}}}),
        )
    );
    let out = plan(&manifests, &[]);
    let wf = &out[0];
    assert_eq!(wf["accepted"], true, "{wf}");
    let nodes = wf["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["template"], "steps");
    assert_eq!(nodes[0]["children"], json!(["db-io", "pause"]));
    assert_eq!(nodes[1]["deadline"], "30s");
    let db: Vec<&str> = nodes[1]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["pod"].as_str())
        .collect();
    assert!(
        !db.is_empty() && db.iter().all(|p| p.starts_with("db")),
        "{db:?}"
    );
    assert_eq!(nodes[2]["targets"], json!([]));
    // Chaos Mesh's rule: a status code is 1 to 999.
    let sc = &out[1];
    assert_eq!(sc["accepted"], false);
    assert_eq!(sc["problems"][0]["field"], "spec.http.criteria.statusCode");
}

#[test]
fn a_schedule_of_workflows_shows_its_next_runs_and_the_nodes_of_the_next_workflow() {
    let sd = chaos(
        "Schedule",
        "drill",
        json!({"schedule": "0 2 * * *", "type": "Workflow", "historyLimit": 3,
               "workflow": {"entry": "steps", "templates": [
                   {"name": "steps", "templateType": "Serial", "children": ["db-delay", "pause"]},
                   {"name": "db-delay", "templateType": "NetworkChaos", "deadline": "30s",
                    "networkChaos": {"action": "delay", "mode": "all", "delay": {"latency": "10ms"},
                                     "selector": {"labelSelectors": {"app": "db"}}}},
                   {"name": "pause", "templateType": "Suspend", "deadline": "10s"}]}}),
    );
    let out = plan(&sd, &["--now", "2026-01-02T03:04:05Z"]);
    assert_eq!(out[0]["accepted"], true, "{}", out[0]);
    assert_eq!(
        out[0]["nextRuns"],
        json!([
            "2026-01-03T02:00:00Z",
            "2026-01-04T02:00:00Z",
            "2026-01-05T02:00:00Z"
        ])
    );
    let nodes = out[0]["nodes"].as_array().expect("nodes");
    let names: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n["template"].as_str())
        .collect();
    assert_eq!(names, ["steps", "db-delay", "pause"]);
    assert_eq!(nodes[0]["children"], json!(["db-delay", "pause"]));
    assert_eq!(targets(&nodes[1]), ["db-0@node-a", "db-1@node-b"]);
    // The Schedule itself targets nothing: its Workflows' nodes do.
    assert_eq!(out[0]["targets"], json!([]));

    // The embedded Workflow is validated as one, its problems under spec.workflow; without
    // it the Schedule says so.
    let bad = chaos(
        "Schedule",
        "bad",
        json!({"schedule": "@hourly", "type": "Workflow",
               "workflow": {"entry": "nowhere", "templates": [
                   {"name": "pause", "templateType": "Suspend"}]}}),
    );
    let missing = chaos(
        "Schedule",
        "missing",
        json!({"schedule": "@hourly", "type": "Workflow"}),
    );
    let out = plan(&format!("{bad}---\n{missing}"), &[]);
    let fields = |v: &Value| -> Vec<String> {
        v["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .filter_map(|p| p["field"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(out[0]["accepted"], false);
    assert_eq!(
        fields(&out[0]),
        ["spec.workflow.entry", "spec.workflow.templates[0].deadline"]
    );
    assert_eq!(out[0]["nodes"], Value::Null);
    assert_eq!(out[1]["accepted"], false);
    assert_eq!(fields(&out[1]), ["spec.workflow"]);
}

/// `plan … | head`: a reader that goes away early ends the output quietly (print! panicked on
/// the broken pipe).
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("chaos.yaml");
    let manifests = (0..50)
        .map(|i| {
            chaos(
                "PodChaos",
                &format!("kill-{i}"),
                json!({"action": "pod-kill", "mode": "all", "selector": {"namespaces": ["shop"]}}),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(&file, manifests).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline-controller"))
        .args(["plan", "--cluster", &cluster(), "-f"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run plan");
    // The reader is gone before plan has read its files, let alone written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
