//! "What would this experiment hit?": each chaos object validated and its targets chosen through
//! the reconciler's own code ([`Plannable::plan`], [`crate::selection::choose_targets`]) against a
//! [`ClusterView`], without changing anything. `faultline-controller plan` prints the result.

use k8s_openapi::jiff::Timestamp;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;

use super::{InvalidSpec, Plannable};
use crate::crd::{
    DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodChaos, Schedule, StressChaos, TimeChaos,
};
use crate::schedule::{Cron, next_runs};
use crate::selection::{ClusterView, Scoping, SelectError, choose_targets};

/// The kinds the controller supports.
pub const KINDS: [&str; 10] = [
    "DNSChaos",
    "HTTPChaos",
    "IOChaos",
    "NetworkChaos",
    "PodChaos",
    "Schedule",
    "StatusCheck",
    "StressChaos",
    "TimeChaos",
    "Workflow",
];

/// How many of a Schedule's next runs a plan shows.
pub const NEXT_RUNS: usize = 3;

/// The API groups a chaos object may name: ours, and Chaos Mesh's (a manifest written for it).
pub const GROUPS: [&str; 2] = ["chaos.faultline.dev/", "chaos-mesh.org/"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    pub node: Option<String>,
    /// `.` (the selector) or `.Target` (NetworkChaos's target).
    #[serde(rename = "selectorKey")]
    pub selector_key: String,
}

/// One chaos object's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub accepted: bool,
    pub problems: Vec<Problem>,
    pub targets: Vec<Target>,
    /// When every target would be recovered (RFC 3339): the plan's time plus `duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// A Schedule's next runs after the plan's time (RFC 3339); `targets` and `deadline` are
    /// those of the experiment the first of them would create (a Schedule of Workflows: `nodes`
    /// are those of the Workflow it would create).
    #[serde(rename = "nextRuns", skip_serializing_if = "Vec::is_empty")]
    pub next_runs: Vec<String>,
    /// A Workflow's templates (or those of the Workflow a Schedule's next run creates), each
    /// with what its node would hit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeVerdict>,
}

/// One template of a Workflow as its node would run it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeVerdict {
    pub template: String,
    #[serde(rename = "templateType")]
    pub template_type: String,
    /// How long the node runs (the template's deadline, a Go duration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Serial and Parallel: the templates run; Task: the branches' targets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// A chaos template's targets (a Schedule template's: its first run's).
    pub targets: Vec<Target>,
}

fn problems_of(invalid: &InvalidSpec) -> Vec<Problem> {
    invalid
        .problems
        .iter()
        .map(|p| Problem {
            field: format!("spec.{}", p.field),
            message: p.problem.clone(),
        })
        .collect()
}

/// A chaos object parsed: its kind's type, or why not.
fn parse<K: serde::de::DeserializeOwned>(value: Value) -> Result<K, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| Problem {
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Validates one chaos object (any document: kind and group are checked here) and nothing more.
pub fn validate(value: &Value) -> (Verdict, Option<super::Plan>) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let kind = text(value.get("kind"));
    let api_version = text(value.get("apiVersion"));
    let meta = value.get("metadata");
    let mut verdict = Verdict {
        kind: kind.clone(),
        namespace: meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned(),
        name: text(meta.and_then(|m| m.get("name"))),
        accepted: false,
        problems: vec![],
        targets: vec![],
        deadline: None,
        next_runs: vec![],
        nodes: vec![],
    };
    if !GROUPS.iter().any(|g| api_version.starts_with(g)) {
        verdict.problems.push(Problem {
            field: "apiVersion".into(),
            message: format!(
                "{api_version:?}: chaos.faultline.dev/v1alpha1 (or Chaos Mesh's chaos-mesh.org/v1alpha1)"
            ),
        });
        return (verdict, None);
    }
    let mut value = value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace")
            .or_insert_with(|| Value::String("default".into()));
    }
    let planned = match kind.as_str() {
        "DNSChaos" => parse::<DNSChaos>(value).map(|c| c.plan()),
        "HTTPChaos" => parse::<HTTPChaos>(value).map(|c| c.plan()),
        "IOChaos" => parse::<IOChaos>(value).map(|c| c.plan()),
        "NetworkChaos" => parse::<NetworkChaos>(value).map(|c| c.plan()),
        "PodChaos" => parse::<PodChaos>(value).map(|c| c.plan()),
        "StressChaos" => parse::<StressChaos>(value).map(|c| c.plan()),
        "TimeChaos" => parse::<TimeChaos>(value).map(|c| c.plan()),
        "Schedule" => return validate_schedule(verdict, value),
        "Workflow" => {
            match parse::<crate::crd::Workflow>(value) {
                Ok(wf) => verdict.problems = crate::workflow::validate::problems(&wf.spec),
                Err(problem) => verdict.problems.push(problem),
            }
            verdict.accepted = verdict.problems.is_empty();
            return (verdict, None);
        }
        "StatusCheck" => {
            match parse::<crate::crd::StatusCheck>(value) {
                Ok(check) => {
                    verdict.problems = check
                        .spec
                        .problems("spec.")
                        .into_iter()
                        .map(|p| Problem {
                            field: p.field,
                            message: p.message,
                        })
                        .collect()
                }
                Err(problem) => verdict.problems.push(problem),
            }
            verdict.accepted = verdict.problems.is_empty();
            return (verdict, None);
        }
        other => Err(Problem {
            field: "kind".into(),
            message: format!("{other:?} is not supported: {}", KINDS.join(", ")),
        }),
    };
    match planned {
        Err(problem) => {
            verdict.problems.push(problem);
            (verdict, None)
        }
        Ok(Err(invalid)) => {
            verdict.problems = problems_of(&invalid);
            (verdict, None)
        }
        Ok(Ok(plan)) => {
            verdict.accepted = true;
            (verdict, Some(plan))
        }
    }
}

/// A Schedule: its cron, then its embedded spec validated as the object each run creates
/// (problems named under `spec.<type's field>`).
fn validate_schedule(mut verdict: Verdict, value: Value) -> (Verdict, Option<super::Plan>) {
    // The cron first, so that it is named even when the embedded spec does not parse.
    if let Some(Err(e)) = value
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .map(Cron::parse)
    {
        verdict.problems.push(Problem {
            field: "spec.schedule".into(),
            message: e.reason,
        });
    }
    let schedule = match parse::<Schedule>(value) {
        Ok(s) => s,
        Err(problem) => {
            verdict.problems.push(problem);
            return (verdict, None);
        }
    };
    let field = schedule.spec.type_.field();
    let child = match schedule.spec.child_spec() {
        Ok(spec) => serde_json::json!({
            "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            "kind": schedule.spec.type_.as_str(),
            "metadata": {"name": verdict.name, "namespace": verdict.namespace},
            "spec": spec,
        }),
        Err(message) => {
            verdict.problems.push(Problem {
                field: format!("spec.{field}"),
                message,
            });
            return (verdict, None);
        }
    };
    let (inner, plan) = validate(&child);
    verdict
        .problems
        .extend(inner.problems.into_iter().map(|p| Problem {
            field: match p.field.strip_prefix("spec") {
                Some(rest) => format!("spec.{field}{rest}"),
                None => format!("spec.{field}.{}", p.field),
            },
            message: p.message,
        }));
    if verdict.problems.is_empty() {
        verdict.accepted = true;
        (verdict, plan)
    } else {
        (verdict, None)
    }
}

/// Validates one chaos object and chooses its targets.
pub async fn preview<R: Rng>(
    view: &dyn ClusterView,
    scoping: &Scoping,
    value: &Value,
    now: Timestamp,
    rng: &mut R,
) -> Result<Verdict, kube::Error> {
    let (mut verdict, plan) = validate(value);
    if verdict.kind == "Workflow" && verdict.accepted {
        verdict.nodes = workflow_nodes(view, scoping, value, now, rng).await?;
        return Ok(verdict);
    }
    let mut now = now;
    if verdict.kind == "Schedule" && verdict.accepted {
        let cron = value
            .pointer("/spec/schedule")
            .and_then(Value::as_str)
            .and_then(|s| Cron::parse(s).ok());
        if let Some(cron) = cron {
            let runs = next_runs(&cron, now, NEXT_RUNS);
            if let Some(first) = runs.first() {
                now = *first;
            }
            verdict.next_runs = runs.into_iter().map(crate::reconcile::rfc3339).collect();
        }
        // A Schedule of Workflows: the nodes of the Workflow its next run creates.
        if value.pointer("/spec/type").and_then(Value::as_str) == Some("Workflow") {
            let child = serde_json::json!({
                "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
                "kind": "Workflow",
                "metadata": {"name": verdict.name, "namespace": verdict.namespace},
                "spec": value.pointer("/spec/workflow").cloned().unwrap_or(Value::Null),
            });
            verdict.nodes = workflow_nodes(view, scoping, &child, now, rng).await?;
            return Ok(verdict);
        }
    }
    let Some(plan) = plan else {
        return Ok(verdict);
    };
    verdict.deadline = plan.duration.and_then(|d| {
        let ms = i64::try_from(d.as_millis()).ok()?;
        let at = Timestamp::from_millisecond(now.as_millisecond().checked_add(ms)?).ok()?;
        Some(crate::reconcile::rfc3339(at))
    });
    match choose_targets(view, &plan, scoping, rng).await {
        // A selector that matches nothing selects nothing at all (the reconciler waits).
        Ok(chosen) if chosen.no_match.is_some() => {}
        Ok(chosen) => {
            verdict.targets = chosen
                .records
                .into_iter()
                .map(|r| Target {
                    namespace: r.namespace,
                    pod: r.pod,
                    container: r.container,
                    node: r.node,
                    selector_key: r.selector_key,
                })
                .collect();
        }
        Err(SelectError::Kube(e)) => return Err(e),
        Err(SelectError::OutOfScope { field, reason }) => {
            verdict.accepted = false;
            verdict.problems.push(Problem {
                field: format!("spec.{field}"),
                message: reason,
            });
        }
    }
    Ok(verdict)
}

/// A valid Workflow's templates, each chaos (or Schedule) template previewed as the object its
/// node would create.
async fn workflow_nodes<R: Rng>(
    view: &dyn ClusterView,
    scoping: &Scoping,
    value: &Value,
    now: Timestamp,
    rng: &mut R,
) -> Result<Vec<NodeVerdict>, kube::Error> {
    use crate::workflow::Kind;
    let Ok(wf) = serde_json::from_value::<crate::crd::Workflow>(value.clone()) else {
        return Ok(vec![]);
    };
    let namespace = wf
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut out = Vec::new();
    for t in &wf.spec.templates {
        let object = match Kind::of(&t.template_type) {
            Some(Kind::Chaos(type_)) => t.chaos.fields().remove(type_.field()).map(|spec| {
                serde_json::json!({"apiVersion": "chaos.faultline.dev/v1alpha1",
                    "kind": type_.as_str(), "metadata": {"name": t.name, "namespace": namespace},
                    "spec": spec})
            }),
            Some(Kind::Schedule) => t.schedule.as_ref().map(|spec| {
                serde_json::json!({"apiVersion": "chaos.faultline.dev/v1alpha1",
                    "kind": "Schedule", "metadata": {"name": t.name, "namespace": namespace},
                    "spec": spec})
            }),
            _ => None,
        };
        let targets = match object {
            Some(object) => {
                Box::pin(preview(view, scoping, &object, now, rng))
                    .await?
                    .targets
            }
            None => vec![],
        };
        let mut children = t.children.clone();
        children.extend(t.conditional_branches.iter().map(|b| b.target.clone()));
        out.push(NodeVerdict {
            template: t.name.clone(),
            template_type: t.template_type.clone(),
            deadline: t.deadline.clone(),
            children,
            targets,
        });
    }
    Ok(out)
}

/// The chaos objects of a YAML (or JSON) text: every document, `List` items unpacked.
pub fn documents(text: &str) -> Result<Vec<Value>, yaml_serde::Error> {
    let mut out = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        match value.get("kind").and_then(Value::as_str) {
            _ if value.is_null() => {}
            Some(k) if k == "List" || k.ends_with("List") => out.extend(
                value
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => out.push(value),
        }
    }
    Ok(out)
}

/// A readable table.
pub fn text_table(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        out.push_str(&format!(
            "{} {}/{}: {}\n",
            v.kind,
            v.namespace,
            v.name,
            if v.accepted
                && (v.kind == "Workflow" || v.kind == "StatusCheck" || !v.nodes.is_empty())
            {
                "accepted".into()
            } else if v.accepted && v.targets.is_empty() {
                "accepted, no target (nothing matches: the controller would wait and retry)".into()
            } else if v.accepted {
                format!("accepted, {} target(s)", v.targets.len())
            } else {
                "refused".into()
            }
        ));
        for n in &v.nodes {
            out.push_str(&format!(
                "  node {} ({}{}): {}\n",
                n.template,
                n.template_type,
                n.deadline
                    .as_deref()
                    .map(|d| format!(", deadline {d}"))
                    .unwrap_or_default(),
                if !n.children.is_empty() {
                    format!("then {}", n.children.join(", "))
                } else if n.targets.is_empty() {
                    "no target".into()
                } else {
                    n.targets
                        .iter()
                        .map(|t| format!("{}/{}", t.namespace, t.pod))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
        if !v.next_runs.is_empty() {
            out.push_str(&format!(
                "  next runs {} ({}: the first one's)\n",
                v.next_runs.join(", "),
                if v.nodes.is_empty() {
                    "targets"
                } else {
                    "nodes"
                }
            ));
        }
        for p in &v.problems {
            out.push_str(&format!("  problem  {}: {}\n", p.field, p.message));
        }
        if !v.targets.is_empty() {
            out.push_str(&format!(
                "  {:<10} {:<20} {:<30} {:<15} {}\n",
                "SELECTOR", "NAMESPACE", "POD", "CONTAINER", "NODE"
            ));
        }
        for t in &v.targets {
            out.push_str(&format!(
                "  {:<10} {:<20} {:<30} {:<15} {}\n",
                t.selector_key,
                t.namespace,
                t.pod,
                t.container.as_deref().unwrap_or("-"),
                t.node.as_deref().unwrap_or("-")
            ));
        }
    }
    out
}
