//! Every Chaos Mesh example manifest of a supported kind (its repository's `examples/`), with
//! its apiVersion changed to ours, passes our CRD schemas and `plan` (validation through the
//! reconciler's code). The examples are read from a Chaos Mesh checkout outside this repository:
//! $FAULTLINE_CHAOS_MESH_SRC, else /work/ref/chaos-mesh; without one every check reports ignored.
//! Examples for a remote cluster (`remoteCluster`) must be refused naming that field. Each
//! Workflow example is also planned as a Schedule of `type: Workflow` (Chaos Mesh has no example
//! of one).

use std::path::{Path, PathBuf};
use std::process::Command;

use controller::plan::preview;
use controller::selection::{ClusterState, Scoping};
use libtest_mimic::{Arguments, Failed, Trial};
use rand::SeedableRng;
use serde_json::Value;

fn source() -> Option<PathBuf> {
    let dir = std::env::var_os("FAULTLINE_CHAOS_MESH_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/ref/chaos-mesh"));
    dir.join("examples").is_dir().then_some(dir)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The supported chaos objects of a file, apiVersion changed.
fn supported(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let Ok(docs) = preview::documents(&text) else {
        return vec![];
    };
    docs.into_iter()
        .filter(|d| {
            d.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("chaos-mesh.org/"))
                && d.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| preview::KINDS.contains(&k))
        })
        .map(|mut d| {
            d["apiVersion"] = Value::String("chaos.faultline.dev/v1alpha1".into());
            d
        })
        .collect()
}

fn plan_check(path: &Path) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    for doc in supported(path) {
        let verdict = runtime
            .block_on(preview::preview(
                &ClusterState::default(),
                &Scoping::default(),
                &doc,
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                &mut rand::rngs::StdRng::seed_from_u64(1),
            ))
            .map_err(|e| e.to_string())?;
        // A Schedule shows its next 3 runs (from the plan's time, the Unix epoch here).
        if doc["kind"] == "Schedule" && verdict.next_runs.len() != preview::NEXT_RUNS {
            return Err(format!("{}: nextRuns {:?}", path.display(), verdict.next_runs).into());
        }
        // Chaos Mesh's multi-cluster mode is the one thing faultline does not do: such an example
        // must be refused naming that field, and nothing else.
        if doc["spec"].get("remoteCluster").is_some() {
            let fields: Vec<&str> = verdict.problems.iter().map(|p| p.field.as_str()).collect();
            if verdict.accepted || fields != ["spec.remoteCluster"] {
                return Err(format!(
                    "{}: expected a refusal of spec.remoteCluster only, got {verdict:?}",
                    verdict.name
                )
                .into());
            }
            continue;
        }
        if !verdict.accepted {
            return Err(format!(
                "{} {}: refused: {:?}",
                verdict.kind, verdict.name, verdict.problems
            )
            .into());
        }
        // None of Chaos Mesh's examples is a Schedule of `type: Workflow`: each Workflow example
        // is also planned as one (its spec under `workflow`), with the same nodes.
        if doc["kind"] == "Workflow" {
            let schedule = serde_json::json!({
                "apiVersion": doc["apiVersion"], "kind": "Schedule", "metadata": doc["metadata"],
                "spec": {"schedule": "@every 10m", "type": "Workflow", "workflow": doc["spec"]}});
            let scheduled = runtime
                .block_on(preview::preview(
                    &ClusterState::default(),
                    &Scoping::default(),
                    &schedule,
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    &mut rand::rngs::StdRng::seed_from_u64(1),
                ))
                .map_err(|e| e.to_string())?;
            if !scheduled.accepted
                || scheduled.next_runs.len() != preview::NEXT_RUNS
                || scheduled.nodes != verdict.nodes
            {
                return Err(
                    format!("{} as a Schedule of Workflows: {scheduled:?}", verdict.name).into(),
                );
            }
        }
    }
    Ok(())
}

fn schema_check(examples: PathBuf) -> Result<(), Failed> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema/validate.sh");
    let out = Command::new(&script)
        .env("FAULTLINE_CHAOS_MESH_EXAMPLES", &examples)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("all manifests checked: 0 failure(s)") {
        return Err(format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let checked = stdout
        .lines()
        .find_map(|l| l.strip_prefix("chaos mesh examples checked: "))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if checked < 15 {
        return Err(format!("only {checked} Chaos Mesh examples checked:\n{stdout}").into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let source = source();
    let mut trials = Vec::new();
    match &source {
        None => {
            trials.push(
                Trial::test("chaos_mesh_examples_pass_the_schemas", || Ok(()))
                    .with_ignored_flag(true),
            );
            trials.push(
                Trial::test("chaos_mesh_examples_pass_plan", || Ok(())).with_ignored_flag(true),
            );
            eprintln!(
                "ignored: no Chaos Mesh checkout (set FAULTLINE_CHAOS_MESH_SRC or put one at /work/ref/chaos-mesh)"
            );
        }
        Some(src) => {
            let examples = src.join("examples");
            let mut files = Vec::new();
            yaml_files(&examples, &mut files);
            let files: Vec<PathBuf> = files
                .into_iter()
                .filter(|f| !supported(f).is_empty())
                .collect();
            let count = files.len();
            trials.push(Trial::test("chaos_mesh_examples_found", move || {
                if count >= 15 {
                    Ok(())
                } else {
                    Err(format!("only {count} example files of a supported kind").into())
                }
            }));
            let dir = examples.clone();
            trials.push(Trial::test(
                "chaos_mesh_examples_pass_the_schemas",
                move || schema_check(dir),
            ));
            for file in files {
                let name = file
                    .strip_prefix(&examples)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                trials.push(Trial::test(format!("plan::{name}"), move || {
                    plan_check(&file)
                }));
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
