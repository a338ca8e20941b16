//! A Workflow's spec checked by Chaos Mesh's webhook rules (workflow_webhook.go): the entry
//! names a template; templates exist, have unique DNS-1123 names and only the fields of their
//! type; a Suspend has a deadline; a chaos template has its spec, without a `duration` (the
//! template's `deadline` says how long); deadlines are Go durations; every embedded spec (chaos,
//! Schedule, StatusCheck) passes its own kind's validation.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::crd::{ScheduleType, Template, WorkflowSpec};
use crate::plan::preview::{self, Problem};

/// What a template does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Serial,
    Parallel,
    Suspend,
    Schedule,
    StatusCheck,
    Task,
    Chaos(ScheduleType),
}

impl Kind {
    pub fn of(template_type: &str) -> Option<Kind> {
        Some(match template_type {
            "Serial" => Kind::Serial,
            "Parallel" => Kind::Parallel,
            "Suspend" => Kind::Suspend,
            "Schedule" => Kind::Schedule,
            "StatusCheck" => Kind::StatusCheck,
            "Task" => Kind::Task,
            // A Schedule can create a Workflow; a template cannot be one.
            other => Kind::Chaos(
                serde_json::from_value::<ScheduleType>(json!(other))
                    .ok()
                    .filter(|t| t.is_chaos())?,
            ),
        })
    }
}

/// Every problem, each naming its field under `spec`.
pub fn problems(spec: &WorkflowSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |field: String, message: String| out.push(Problem { field, message });
    if spec.entry.is_empty() {
        bad(
            "spec.entry".into(),
            "the entry of the workflow is required".into(),
        );
    } else if !spec.templates.iter().any(|t| t.name == spec.entry) {
        bad(
            "spec.entry".into(),
            format!("{:?}: no template has this name", spec.entry),
        );
    }
    if spec.templates.is_empty() {
        bad(
            "spec.templates".into(),
            "the templates of a workflow cannot be empty".into(),
        );
        return out;
    }
    let mut seen = BTreeSet::new();
    let duplicated: BTreeSet<&str> = spec
        .templates
        .iter()
        .filter(|t| !seen.insert(t.name.as_str()))
        .map(|t| t.name.as_str())
        .collect();
    if !duplicated.is_empty() {
        bad(
            "spec.templates".into(),
            format!("template names must be unique, duplicated: {duplicated:?}"),
        );
    }
    for (i, template) in spec.templates.iter().enumerate() {
        for p in template_problems(spec, template) {
            bad(format!("spec.templates[{i}].{}", p.field), p.message);
        }
    }
    out
}

fn template_problems(spec: &WorkflowSpec, t: &Template) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |field: &str, message: String| {
        out.push(Problem {
            field: field.into(),
            message,
        })
    };
    if t.name.is_empty() {
        bad("name", "the name of a template is required".into());
    } else if let Err(e) = dns1123_subdomain(&t.name) {
        bad(
            "name",
            format!("{:?}: must be a DNS-1123 subdomain ({e})", t.name),
        );
    }
    if let Some(deadline) = &t.deadline
        && let Err(e) = crate::plan::parse_go_duration(deadline)
    {
        bad("deadline", e);
    }
    let Some(kind) = Kind::of(&t.template_type) else {
        bad(
            "templateType",
            format!(
                "unrecognized template type {:?}: Serial, Parallel, Suspend, Schedule, StatusCheck, Task or a chaos kind ({})",
                t.template_type,
                preview::KINDS
                    .iter()
                    .filter(|k| Kind::of(k).is_some_and(|k| matches!(k, Kind::Chaos(_))))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return out;
    };
    let no = |has: bool, what: &str, out: &mut Vec<Problem>| {
        if has {
            out.push(Problem {
                field: what.into(),
                message: format!("a {} template cannot have {what}", t.template_type),
            });
        }
    };
    let has_task = t.task.is_some();
    let has_children = !t.children.is_empty();
    let has_branches = !t.conditional_branches.is_empty();
    let has_chaos = !t.chaos.is_empty();
    let has_schedule = t.schedule.is_some();
    let has_check = t.status_check.is_some();
    match kind {
        Kind::Suspend => {
            if t.deadline.as_deref().is_none_or(str::is_empty) {
                out.push(Problem {
                    field: "deadline".into(),
                    message: "a Suspend template needs a deadline".into(),
                });
            }
            no(has_task, "task", &mut out);
            no(has_children, "children", &mut out);
            no(has_branches, "conditionalBranches", &mut out);
            no(has_chaos, "a chaos spec", &mut out);
            no(has_schedule, "schedule", &mut out);
        }
        Kind::Serial | Kind::Parallel => {
            for (i, child) in t.children.iter().enumerate() {
                if !spec.templates.iter().any(|x| &x.name == child) {
                    out.push(Problem {
                        field: format!("children[{i}]"),
                        message: format!("{child:?}: no template has this name"),
                    });
                }
            }
            no(has_task, "task", &mut out);
            no(has_branches, "conditionalBranches", &mut out);
            no(has_chaos, "a chaos spec", &mut out);
            no(has_schedule, "schedule", &mut out);
        }
        Kind::Schedule => {
            no(has_task, "task", &mut out);
            no(has_children, "children", &mut out);
            no(has_branches, "conditionalBranches", &mut out);
            no(has_chaos, "a chaos spec", &mut out);
            match &t.schedule {
                None => out.push(Problem {
                    field: "schedule".into(),
                    message: "a Schedule template needs schedule".into(),
                }),
                // Chaos Mesh's ChaosOnlyScheduleSpec has no `workflow` to create.
                Some(schedule) if !schedule.type_.is_chaos() => out.push(Problem {
                    field: "schedule.type".into(),
                    message: format!(
                        "{}: a Schedule template can only create chaos experiments, not a Workflow",
                        schedule.type_.as_str()
                    ),
                }),
                Some(schedule) => {
                    let object = json!({
                        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "Schedule",
                        "metadata": {"name": t.name}, "spec": schedule});
                    nested(&mut out, "schedule", &object);
                }
            }
        }
        Kind::Task => {
            no(has_children, "children", &mut out);
            no(has_chaos, "a chaos spec", &mut out);
            no(has_schedule, "schedule", &mut out);
            match t.task.as_ref().and_then(|task| task.container.as_ref()) {
                None => out.push(Problem {
                    field: "task.container".into(),
                    message: "a Task template needs task.container".into(),
                }),
                Some(c)
                    if c.get("image")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty) =>
                {
                    out.push(Problem {
                        field: "task.container.image".into(),
                        message: "required".into(),
                    })
                }
                Some(_) => {}
            }
            for (i, branch) in t.conditional_branches.iter().enumerate() {
                if !spec.templates.iter().any(|x| x.name == branch.target) {
                    out.push(Problem {
                        field: format!("conditionalBranches[{i}].target"),
                        message: format!("{:?}: no template has this name", branch.target),
                    });
                }
                if !branch.expression.is_empty()
                    && let Err(e) = super::expr::parse(&branch.expression)
                {
                    out.push(Problem {
                        field: format!("conditionalBranches[{i}].expression"),
                        message: e,
                    });
                }
            }
        }
        Kind::StatusCheck => {
            no(has_task, "task", &mut out);
            no(has_children, "children", &mut out);
            no(has_branches, "conditionalBranches", &mut out);
            no(has_chaos, "a chaos spec", &mut out);
            no(has_schedule, "schedule", &mut out);
            match &t.status_check {
                None => out.push(Problem {
                    field: "statusCheck".into(),
                    message: "a StatusCheck template needs statusCheck".into(),
                }),
                Some(check) => {
                    out.extend(check.problems("statusCheck.").into_iter().map(|p| Problem {
                        field: p.field,
                        message: p.message,
                    }))
                }
            }
        }
        Kind::Chaos(type_) => {
            no(has_task, "task", &mut out);
            no(has_children, "children", &mut out);
            no(has_branches, "conditionalBranches", &mut out);
            no(has_schedule, "schedule", &mut out);
            no(has_check, "statusCheck", &mut out);
            let field = type_.field();
            match t.chaos.fields().remove(field) {
                None => out.push(Problem {
                    field: field.into(),
                    message: format!("required when templateType is {}", t.template_type),
                }),
                Some(spec) => {
                    if spec
                        .get("duration")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.is_empty())
                    {
                        out.push(Problem {
                            field: format!("{field}.duration"),
                            message: "no duration in a workflow's chaos: the template's deadline says how long".into(),
                        });
                    }
                    let object = json!({
                        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": type_.as_str(),
                        "metadata": {"name": t.name}, "spec": spec});
                    nested(&mut out, field, &object);
                }
            }
        }
    }
    out
}

/// An embedded object validated as its own kind; its problems named under `field`.
fn nested(out: &mut Vec<Problem>, field: &str, object: &Value) {
    let (verdict, _) = preview::validate(object);
    out.extend(verdict.problems.into_iter().map(|p| Problem {
        field: match p.field.strip_prefix("spec") {
            Some(rest) => format!("{field}{rest}"),
            None => format!("{field}.{}", p.field),
        },
        message: p.message,
    }));
}

/// Kubernetes' IsDNS1123Subdomain.
fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("at most 253 characters".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(
            "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> WorkflowSpec {
        serde_json::from_value(v).expect("a spec")
    }

    fn fields(v: Value) -> Vec<String> {
        problems(&spec(v)).into_iter().map(|p| p.field).collect()
    }

    const POD: &str =
        r#"{"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": "web"}}}"#;

    /// Chaos Mesh's workflow template types include DNSChaos and HTTPChaos, their specs in
    /// `dnsChaos` and `httpChaos`; an embedded one is validated as its kind.
    #[test]
    fn dns_and_http_chaos_templates() {
        let dns = json!({"action": "error", "mode": "all", "patterns": ["*.example.com"],
            "selector": {"labelSelectors": {"app": "web"}}});
        let http = json!({"target": "Request", "port": 8080, "path": "/api/*", "abort": true,
            "mode": "all", "selector": {"labelSelectors": {"app": "web"}}});
        assert_eq!(
            fields(json!({"entry": "e", "templates": [
                {"name": "e", "templateType": "Parallel", "children": ["d", "h"]},
                {"name": "d", "templateType": "DNSChaos", "deadline": "30s", "dnsChaos": dns},
                {"name": "h", "templateType": "HTTPChaos", "deadline": "30s", "httpChaos": http}]})),
            Vec::<String>::new()
        );
        let mut bad = dns.clone();
        bad["patterns"] = json!(["bad pattern"]);
        let found = fields(json!({"entry": "e", "templates": [
            {"name": "e", "templateType": "DNSChaos", "deadline": "30s", "dnsChaos": bad},
            {"name": "h", "templateType": "HTTPChaos", "deadline": "30s"}]}));
        assert_eq!(
            found,
            [
                "spec.templates[0].dnsChaos.patterns[0]",
                "spec.templates[1].httpChaos"
            ]
        );
    }

    #[test]
    fn chaos_mesh_webhook_rules() {
        let pod: Value = serde_json::from_str(POD).expect("json");
        // A valid serial of a chaos and a suspend.
        assert_eq!(
            fields(json!({"entry": "e", "templates": [
                {"name": "e", "templateType": "Serial", "children": ["k", "s"]},
                {"name": "k", "templateType": "PodChaos", "deadline": "30s", "podChaos": pod},
                {"name": "s", "templateType": "Suspend", "deadline": "10s"}]})),
            Vec::<String>::new()
        );
        // The entry must name a template; templates cannot be empty.
        assert_eq!(
            fields(json!({"entry": "x", "templates": []})),
            ["spec.entry", "spec.templates"]
        );
        // Names unique and DNS-1123.
        assert_eq!(
            fields(json!({"entry": "e", "templates": [
                {"name": "e", "templateType": "Suspend", "deadline": "1s"},
                {"name": "e", "templateType": "Suspend", "deadline": "1s"},
                {"name": "Bad_Name", "templateType": "Suspend", "deadline": "1s"}]})),
            ["spec.templates", "spec.templates[2].name"]
        );
        // A Suspend needs a deadline; a Serial's children must exist; unknown types refused.
        assert_eq!(
            fields(json!({"entry": "e", "templates": [
                {"name": "e", "templateType": "Serial", "children": ["nope"]},
                {"name": "s", "templateType": "Suspend"},
                {"name": "u", "templateType": "Sequence"}]})),
            [
                "spec.templates[0].children[0]",
                "spec.templates[1].deadline",
                "spec.templates[2].templateType"
            ]
        );
        // A chaos template: its spec required, no duration in it (the deadline says how long),
        // no children; the embedded spec validated as its kind.
        let mut with_duration = pod.clone();
        with_duration["duration"] = json!("30s");
        assert_eq!(
            fields(json!({"entry": "e", "templates": [
                {"name": "e", "templateType": "PodChaos"},
                {"name": "d", "templateType": "PodChaos", "podChaos": with_duration},
                {"name": "c", "templateType": "PodChaos", "podChaos": pod, "children": ["e"]},
                {"name": "m", "templateType": "PodChaos",
                 "podChaos": {"action": "pod-kill", "mode": "fixed", "selector": {"labelSelectors": {"app": "web"}}}}]})),
            [
                "spec.templates[0].podChaos",
                "spec.templates[1].podChaos.duration",
                "spec.templates[2].children",
                "spec.templates[3].podChaos.value"
            ]
        );
        // A Suspend with a chaos spec; a bad deadline.
        assert_eq!(
            fields(json!({"entry": "e", "templates": [
                {"name": "e", "templateType": "Suspend", "deadline": "soon", "podChaos": pod}]})),
            [
                "spec.templates[0].deadline",
                "spec.templates[0].a chaos spec"
            ]
        );
        // A StatusCheck template's check is validated; a Task's branches must target templates
        // and parse.
        assert_eq!(
            fields(json!({"entry": "e", "templates": [
                {"name": "e", "templateType": "StatusCheck", "statusCheck": {"http":
                    {"url": "http://x/", "criteria": {"statusCode": "2000"}}}},
                {"name": "t", "templateType": "Task", "task": {"container": {"name": "c", "image": "busybox"}},
                 "conditionalBranches": [{"target": "nowhere", "expression": "exitCode =="}]}]})),
            [
                "spec.templates[0].statusCheck.http.criteria.statusCode",
                "spec.templates[1].conditionalBranches[0].target",
                "spec.templates[1].conditionalBranches[0].expression"
            ]
        );
    }

    /// A Workflow template (and a Schedule) can be a TimeChaos, as in Chaos Mesh: its spec in
    /// `timeChaos`, validated as a TimeChaos (timeOffset a Go duration, clockIds Linux clock
    /// names).
    #[test]
    fn a_time_chaos_template_is_validated_as_a_time_chaos() {
        assert_eq!(
            Kind::of("TimeChaos"),
            Some(Kind::Chaos(ScheduleType::TimeChaos))
        );
        let time = json!({"mode": "all", "selector": {"labelSelectors": {"app": "web"}},
                          "timeOffset": "-5m", "clockIds": ["CLOCK_REALTIME"]});
        assert_eq!(
            fields(json!({"entry": "t", "templates": [
                {"name": "t", "templateType": "TimeChaos", "deadline": "30s", "timeChaos": time}]})),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(json!({"entry": "t", "templates": [
                {"name": "t", "templateType": "TimeChaos", "deadline": "30s"},
                {"name": "b", "templateType": "TimeChaos", "deadline": "30s",
                 "timeChaos": {"mode": "all", "selector": {}, "timeOffset": "1d",
                               "clockIds": ["CLOCK_NOPE"]}}]})),
            [
                "spec.templates[0].timeChaos",
                "spec.templates[1].timeChaos.timeOffset",
                "spec.templates[1].timeChaos.clockIds"
            ]
        );
    }

    /// A Schedule creates Workflows (`type: Workflow`), a Workflow's Schedule template cannot:
    /// Chaos Mesh embeds a ChaosOnlyScheduleSpec there ("it could not schedule Workflow"), which
    /// has nowhere to put the workflow's spec. Nor is Workflow a template type.
    #[test]
    fn a_schedule_template_cannot_create_workflows() {
        assert_eq!(Kind::of("Workflow"), None);
        let found = problems(&spec(json!({"entry": "e", "templates": [
            {"name": "e", "templateType": "Parallel", "children": ["s", "w"]},
            {"name": "s", "templateType": "Schedule", "deadline": "1h",
             "schedule": {"schedule": "@every 10m", "type": "Workflow",
                          "workflow": {"entry": "p", "templates": [
                              {"name": "p", "templateType": "Suspend", "deadline": "1s"}]}}},
            {"name": "w", "templateType": "Workflow"}]})));
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|p| (p.field.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, "spec.templates[1].schedule.type");
        assert!(found[0].1.contains("not a Workflow"), "{found:?}");
        assert_eq!(found[1].0, "spec.templates[2].templateType");
    }
}
