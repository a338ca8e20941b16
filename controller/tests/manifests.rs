//! The CRDs in deploy/crds are what the types generate, every example in docs/examples is
//! accepted by the controller, and every invalid example is refused where it says it is: by the
//! schema (checked with kubernetes-validate and jsonschema, schema/validate.sh) or by the
//! controller, with the message it names.

use std::path::{Path, PathBuf};
use std::process::Command;

use controller::crd::{
    DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodChaos, StressChaos, TimeChaos,
};
use controller::plan::{InvalidSpec, Plan, Plannable};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Parses a manifest as its kind and plans it.
fn plan(path: &Path) -> Result<Plan, InvalidSpec> {
    let text = std::fs::read_to_string(path).expect("readable manifest");
    let value: yaml_serde::Value = yaml_serde::from_str(&text).expect("YAML");
    let kind = value["kind"].as_str().expect("a kind").to_owned();
    fn parsed<K: serde::de::DeserializeOwned>(path: &Path, value: yaml_serde::Value) -> K {
        yaml_serde::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
    let of_workflows = kind == "Schedule" && value["spec"]["type"].as_str() == Some("Workflow");
    match kind.as_str() {
        // No plan of their own: validated as `plan` does, each embedded spec as its kind.
        "Workflow" | "StatusCheck" | "Schedule" if kind != "Schedule" || of_workflows => {
            let json: serde_json::Value = yaml_serde::from_value(value).expect("JSON");
            let (verdict, _) = controller::plan::preview::validate(&json);
            let mut invalid = InvalidSpec::default();
            for p in verdict.problems {
                invalid.invalid(p.field.trim_start_matches("spec."), p.message);
            }
            // An accepted object of these kinds has no Plan: a trivial one stands for it.
            let stand_in: PodChaos = serde_json::from_value(serde_json::json!({
                "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "PodChaos",
                "metadata": {"name": "x", "namespace": "demo"},
                "spec": {"action": "pod-kill", "mode": "all", "selector": {"namespaces": ["demo"]}}}))
            .expect("a PodChaos");
            if invalid.is_empty() {
                stand_in.plan()
            } else {
                Err(invalid)
            }
        }
        "DNSChaos" => parsed::<DNSChaos>(path, value).plan(),
        "HTTPChaos" => parsed::<HTTPChaos>(path, value).plan(),
        "IOChaos" => parsed::<IOChaos>(path, value).plan(),
        "NetworkChaos" => parsed::<NetworkChaos>(path, value).plan(),
        "PodChaos" => parsed::<PodChaos>(path, value).plan(),
        "StressChaos" => parsed::<StressChaos>(path, value).plan(),
        "TimeChaos" => parsed::<TimeChaos>(path, value).plan(),
        // A Schedule: its cron, then the experiment each run creates.
        "Schedule" => {
            let schedule = parsed::<controller::crd::Schedule>(path, value);
            if let Err(e) = controller::schedule::Cron::parse(&schedule.spec.schedule) {
                let mut invalid = InvalidSpec::default();
                invalid.invalid("schedule", e.reason);
                return Err(invalid);
            }
            let spec = schedule
                .spec
                .child_spec()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let child = yaml_serde::to_value(serde_json::json!({
                "apiVersion": "chaos.faultline.dev/v1alpha1",
                "kind": schedule.spec.type_.as_str(),
                "metadata": {"name": "run", "namespace": "demo"},
                "spec": spec,
            }))
            .expect("YAML");
            match schedule.spec.type_ {
                controller::crd::ScheduleType::IOChaos => parsed::<IOChaos>(path, child).plan(),
                controller::crd::ScheduleType::NetworkChaos => {
                    parsed::<NetworkChaos>(path, child).plan()
                }
                controller::crd::ScheduleType::PodChaos => parsed::<PodChaos>(path, child).plan(),
                controller::crd::ScheduleType::StressChaos => {
                    parsed::<StressChaos>(path, child).plan()
                }
                controller::crd::ScheduleType::DNSChaos => parsed::<DNSChaos>(path, child).plan(),
                controller::crd::ScheduleType::HTTPChaos => parsed::<HTTPChaos>(path, child).plan(),
                controller::crd::ScheduleType::TimeChaos => parsed::<TimeChaos>(path, child).plan(),
                controller::crd::ScheduleType::Workflow => unreachable!("validated above"),
            }
        }
        other => panic!("{}: unknown kind {other}", path.display()),
    }
}

fn expectation(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# expect-{key}:")))
        .map(|v| v.trim().to_owned())
}

#[test]
fn crds_in_deploy_are_generated_from_the_types() {
    for (file, yaml) in controller::crdgen::render_all().expect("render") {
        let path = root().join("deploy/crds").join(file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} is stale: run `cargo run -p faultline-controller -- crdgen`",
            path.display()
        );
    }
}

#[test]
fn every_example_is_accepted() {
    let files = yaml_files(&root().join("docs/examples"));
    assert!(files.len() >= 16, "one example per kind and action");
    for path in files {
        if let Err(e) = plan(&path) {
            panic!("{}: refused: {e}", path.display());
        }
    }
}

#[test]
fn invalid_examples_are_refused_by_the_controller_with_a_clear_message() {
    let mut controller_refused = 0;
    for path in yaml_files(&root().join("docs/examples/invalid")) {
        let text = std::fs::read_to_string(&path).expect("readable");
        if expectation(&text, "rejected-by").as_deref() != Some("controller") {
            continue;
        }
        let message = expectation(&text, "message").expect("an expect-message line");
        match plan(&path) {
            Ok(_) => panic!("{}: accepted", path.display()),
            Err(e) => assert!(
                e.to_string().contains(&message),
                "{}: {e:?} does not say {message:?}",
                path.display()
            ),
        }
        controller_refused += 1;
    }
    assert!(controller_refused >= 5);
}

/// kubernetes-validate (PyPI) on the CRDs, jsonschema on the examples; installs them into a
/// virtualenv on first use.
#[test]
fn crds_and_examples_pass_the_kubernetes_schema_checks() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema/validate.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("all manifests checked: 0 failure(s)"),
        "{stdout}"
    );
}
