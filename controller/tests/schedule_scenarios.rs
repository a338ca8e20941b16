//! The Schedule reconciler against the scripted API server with a fixed clock (support/): runs
//! created on time, Forbid and Allow, historyLimit, startingDeadlineSeconds after a restart,
//! pause and resume, deletion. Each scenario lists every request the reconciler must make and
//! fails on any other.

mod support;

use std::sync::Arc;
use std::time::Duration;

use controller::crd::Schedule;
use controller::reconcile::FINALIZER;
use controller::schedule;
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::*;

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/demo/events?";
const CHILDREN: &str = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/podchaos";
const LIST: &str =
    "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/podchaos?&labelSelector=managed-by%3Dsd";
const STATUS: &str = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/schedules/sd/status?";

/// Every 5 minutes, 10 children kept; each run a pod-failure of one minute.
fn sd(extra_spec: Value, meta: Value, status: Value) -> Schedule {
    let mut spec = json!({
        "schedule": "*/5 * * * *",
        "type": "PodChaos",
        "historyLimit": 10,
        "podChaos": {"action": "pod-failure", "mode": "one", "duration": "1m",
                     "selector": {"labelSelectors": {"app": "web"}}}
    });
    let mut metadata = json!({"name": "sd", "namespace": "demo", "uid": "sd-uid",
        "creationTimestamp": "2026-11-24T11:58:00Z", "finalizers": [FINALIZER]});
    merge(&mut spec, extra_spec);
    merge(&mut metadata, meta);
    serde_json::from_value(json!({
        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "Schedule",
        "metadata": metadata, "spec": spec, "status": status
    }))
    .expect("a Schedule")
}

/// A Schedule as the API server answers a patch (the reconciler does not read it).
fn any_sd() -> Value {
    serde_json::to_value(sd(json!({}), json!({}), json!({}))).expect("json")
}

fn any_child() -> Value {
    child(
        "sd-a",
        "2026-11-24T12:00:00Z",
        "2026-11-24T12:06:00Z",
        true,
        json!({}),
    )
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(m), Some(e)) = (into.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
}

/// A child created at `created`; `running`: its minute is not over at 12:05:30.
fn child(name: &str, created: &str, deadline: &str, running: bool, meta: Value) -> Value {
    let mut metadata = json!({"name": name, "namespace": "demo", "uid": format!("uid-{name}"),
        "creationTimestamp": created, "labels": {"managed-by": "sd"}});
    merge(&mut metadata, meta);
    json!({
        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "PodChaos",
        "metadata": metadata,
        "spec": {"action": "pod-failure", "mode": "one", "duration": "1m",
                 "selector": {"labelSelectors": {"app": "web"}}},
        "status": {"experiment": {
            "desiredPhase": if running { "Run" } else { "Stop" },
            "deadline": deadline,
            "containerRecords": [{"id": "demo/web-0", "namespace": "demo", "pod": "web-0",
                "selectorKey": ".", "phase": if running { "Injected" } else { "Not Injected" },
                "state": if running { "Injected" } else { "Recovered" }}]
        }}
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "PodChaosList", "metadata": {}, "items": items})
}

fn reference(name: &str) -> Value {
    json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "PodChaos", "name": name,
           "namespace": "demo", "uid": format!("uid-{name}")})
}

fn event(reason: &'static str) -> Expect {
    expect(Method::POST, EVENTS, Value::Null).body(move |b| assert_eq!(b["reason"], reason, "{b}"))
}

/// The POST of a new child: Chaos Mesh's label and a controlling owner reference.
fn spawn() -> Expect {
    expect(Method::POST, format!("{CHILDREN}?"), Value::Null).body(|b| {
        let name = b["metadata"]["name"].as_str().expect("a name");
        assert!(name.starts_with("sd-") && name.len() == 8, "{name}");
        assert_eq!(b["metadata"]["labels"], json!({"managed-by": "sd"}));
        let owner = &b["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Schedule");
        assert_eq!(owner["name"], "sd");
        assert_eq!(owner["uid"], "sd-uid");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert_eq!(b["spec"]["action"], "pod-failure");
        assert_eq!(b["spec"]["duration"], "1m");
        assert_eq!(b["kind"], "PodChaos");
    })
}

async fn run(tb: &TestBed, obj: Schedule) -> Action {
    within(schedule::reconcile(Arc::new(obj), tb.ctx.clone()))
        .await
        .expect("reconcile")
}

#[tokio::test]
async fn a_run_is_created_on_time_and_not_before() {
    let tb = testbed();
    tb.clock.set("2026-11-24T11:59:00Z");
    // Created at 11:58: nothing is due before 12:00; come back then.
    let server = tb
        .server
        .play(vec![expect(Method::GET, LIST, list(vec![]))]);
    let action = run(&tb, sd(json!({}), json!({}), json!({}))).await;
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));

    tb.clock.set("2026-11-24T12:00:00Z");
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![])),
        spawn(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()).body(|b| {
            assert_eq!(b["status"]["lastScheduleTime"], "2026-11-24T12:00:00Z");
            assert_eq!(b["status"]["time"], "2026-11-24T12:00:00Z");
            assert_eq!(b["status"]["active"].as_array().map(Vec::len), Some(1));
            assert_eq!(b["status"]["active"][0]["kind"], "PodChaos");
        }),
    ]);
    let action = run(&tb, sd(json!({}), json!({}), json!({}))).await;
    finished(server).await;
    // The next run at 12:05.
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // 12:02 with the 12:00 run recorded: nothing due.
    tb.clock.set("2026-11-24T12:02:00Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:00:00Z", "active": [reference("sd-a")]});
    let server = tb.server.play(vec![expect(
        Method::GET,
        LIST,
        list(vec![child(
            "sd-a",
            "2026-11-24T12:00:00Z",
            "2026-11-24T12:01:00Z",
            false,
            json!({}),
        )]),
    )]);
    let action = run(&tb, sd(json!({}), json!({}), status)).await;
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(180)));
}

#[tokio::test]
async fn forbid_skips_a_run_while_a_child_runs_and_allow_overlaps() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:05:30Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:00:00Z", "active": [reference("sd-a")]});
    // The 12:00 child is still in force until 12:06.
    let running = || {
        child(
            "sd-a",
            "2026-11-24T12:00:00Z",
            "2026-11-24T12:06:00Z",
            true,
            json!({}),
        )
    };
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![running()])),
        event("ScheduleForbid"),
    ]);
    let action = run(&tb, sd(json!({}), json!({}), status.clone())).await;
    let seen = finished(server).await;
    assert!(seen.iter().all(|(r, _)| !r.starts_with("POST /apis/chaos")));
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    // concurrencyPolicy Allow: the 12:05 run starts beside it.
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![running()])),
        spawn(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()).body(|b| {
            assert_eq!(b["status"]["lastScheduleTime"], "2026-11-24T12:05:30Z");
            assert_eq!(b["status"]["active"].as_array().map(Vec::len), Some(2));
        }),
    ]);
    run(
        &tb,
        sd(json!({"concurrencyPolicy": "Allow"}), json!({}), status),
    )
    .await;
    finished(server).await;
}

#[tokio::test]
async fn forbid_starts_the_missed_run_once_the_child_has_finished() {
    // Chaos Mesh: a run skipped under Forbid is still due (lastScheduleTime unchanged) and
    // starts when the child finishes, unless startingDeadlineSeconds has passed.
    let tb = testbed();
    tb.clock.set("2026-11-24T12:06:10Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:00:00Z", "active": [reference("sd-a")]});
    let done = child(
        "sd-a",
        "2026-11-24T12:00:00Z",
        "2026-11-24T12:06:00Z",
        false,
        json!({}),
    );
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![done.clone()])),
        spawn(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()),
    ]);
    run(&tb, sd(json!({}), json!({}), status.clone())).await;
    finished(server).await;

    // With startingDeadlineSeconds 60, 12:05 is more than a minute ago: skipped, and the
    // schedule waits for 12:10.
    let server = tb
        .server
        .play(vec![expect(Method::GET, LIST, list(vec![done]))]);
    let action = run(
        &tb,
        sd(json!({"startingDeadlineSeconds": 60}), json!({}), status),
    )
    .await;
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(230)));
}

#[tokio::test]
async fn history_limit_deletes_the_oldest_finished_children() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:12:00Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:10:00Z",
        "active": [reference("sd-a"), reference("sd-b"), reference("sd-c")]});
    // historyLimit 1, three children: the two oldest are beyond it; sd-a (no duration over
    // yet: still running) stays, sd-b (finished) goes, sd-c is within the limit.
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            LIST,
            list(vec![
                child(
                    "sd-c",
                    "2026-11-24T12:10:00Z",
                    "2026-11-24T12:11:00Z",
                    false,
                    json!({}),
                ),
                child(
                    "sd-a",
                    "2026-11-24T12:00:00Z",
                    "2026-11-24T12:30:00Z",
                    true,
                    json!({}),
                ),
                child(
                    "sd-b",
                    "2026-11-24T12:05:00Z",
                    "2026-11-24T12:06:00Z",
                    false,
                    json!({}),
                ),
            ]),
        ),
        expect(
            Method::DELETE,
            format!("{CHILDREN}/sd-b?"),
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        expect(Method::PATCH, STATUS, any_sd()).body(|b| {
            assert_eq!(
                b["status"]["active"],
                json!([reference("sd-a"), reference("sd-c")])
            );
        }),
    ]);
    run(
        &tb,
        sd(
            json!({"historyLimit": 1, "concurrencyPolicy": "Allow"}),
            json!({}),
            status,
        ),
    )
    .await;
    finished(server).await;
}

#[tokio::test]
async fn without_history_limit_no_finished_child_is_kept() {
    // Chaos Mesh: historyLimit unset is 0 (its gc subtracts the zero value).
    let tb = testbed();
    tb.clock.set("2026-11-24T12:07:00Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:05:00Z",
        "active": [reference("sd-a"), reference("sd-b")]});
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            LIST,
            list(vec![
                child(
                    "sd-a",
                    "2026-11-24T12:00:00Z",
                    "2026-11-24T12:01:00Z",
                    false,
                    json!({}),
                ),
                child(
                    "sd-b",
                    "2026-11-24T12:05:00Z",
                    "2026-11-24T12:08:00Z",
                    true,
                    json!({}),
                ),
            ]),
        ),
        expect(
            Method::DELETE,
            format!("{CHILDREN}/sd-a?"),
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        expect(Method::PATCH, STATUS, any_sd())
            .body(|b| assert_eq!(b["status"]["active"], json!([reference("sd-b")]))),
    ]);
    run(&tb, sd(json!({"historyLimit": null}), json!({}), status)).await;
    finished(server).await;
}

#[tokio::test]
async fn after_a_restart_only_the_latest_missed_run_starts_within_the_deadline() {
    let tb = testbed();
    // The controller was down from 12:01 to 12:21:30: 12:05, 12:10, 12:15 and 12:20 missed.
    tb.clock.set("2026-11-24T12:21:30Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:00:00Z"});
    // startingDeadlineSeconds 120: 12:20 is 90 s late, within it: one run, not four.
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![])),
        spawn(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd())
            .body(|b| assert_eq!(b["status"]["lastScheduleTime"], "2026-11-24T12:21:30Z")),
    ]);
    let action = run(
        &tb,
        sd(
            json!({"startingDeadlineSeconds": 120}),
            json!({}),
            status.clone(),
        ),
    )
    .await;
    let seen = finished(server).await;
    assert_eq!(
        seen.iter()
            .filter(|(r, _)| r.starts_with("POST /apis/chaos"))
            .count(),
        1
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(210)));

    // startingDeadlineSeconds 60: 12:20 is too late; nothing until 12:25.
    let server = tb
        .server
        .play(vec![expect(Method::GET, LIST, list(vec![]))]);
    let action = run(
        &tb,
        sd(
            json!({"startingDeadlineSeconds": 60}),
            json!({}),
            status.clone(),
        ),
    )
    .await;
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(210)));

    // No deadline and a day down (288 runs missed): Chaos Mesh refuses past 100 missed runs.
    let stale = json!({"lastScheduleTime": "2026-11-23T12:00:00Z"});
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![])),
        event("ScheduleFailed").body(|b| {
            assert!(
                b["note"]
                    .as_str()
                    .unwrap_or("")
                    .contains("startingDeadlineSeconds"),
                "{b}"
            )
        }),
    ]);
    run(&tb, sd(json!({}), json!({}), stale)).await;
    finished(server).await;
}

#[tokio::test]
async fn pause_stops_runs_and_pauses_the_children_resume_undoes_both() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:05:00Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:00:00Z", "active": [reference("sd-a")]});
    let paused = json!({"annotations": {"experiment.chaos-mesh.org/pause": "true"}});
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            LIST,
            list(vec![child(
                "sd-a",
                "2026-11-24T12:00:00Z",
                "2026-11-24T12:06:00Z",
                true,
                json!({}),
            )]),
        ),
        expect(Method::PATCH, format!("{CHILDREN}/sd-a?"), any_child()).body(|b| {
            let a = &b["metadata"]["annotations"];
            assert_eq!(a["experiment.chaos-mesh.org/pause"], "true");
            assert_eq!(a["experiment.chaos.faultline.dev/pause"], "true");
        }),
    ]);
    let action = run(&tb, sd(json!({}), paused, status.clone())).await;
    let seen = finished(server).await;
    assert!(seen.iter().all(|(r, _)| !r.starts_with("POST /apis/chaos")));
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // Resumed at 12:07: the child is unpaused and the missed 12:05 run starts (its child
    // finished at 12:06).
    tb.clock.set("2026-11-24T12:07:00Z");
    let child_paused = json!({"annotations": {"experiment.chaos-mesh.org/pause": "true",
        "experiment.chaos.faultline.dev/pause": "true"}});
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            LIST,
            list(vec![child(
                "sd-a",
                "2026-11-24T12:00:00Z",
                "2026-11-24T12:06:00Z",
                false,
                child_paused,
            )]),
        ),
        expect(Method::PATCH, format!("{CHILDREN}/sd-a?"), any_child()).body(|b| {
            assert_eq!(
                b["metadata"]["annotations"]["experiment.chaos-mesh.org/pause"],
                "false"
            );
        }),
        spawn(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()),
    ]);
    run(&tb, sd(json!({}), json!({}), status)).await;
    finished(server).await;
}

#[tokio::test]
async fn deleting_the_schedule_deletes_its_children_first() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:03:00Z");
    let deleting = json!({"deletionTimestamp": "2026-11-24T12:03:00Z"});
    let a = child(
        "sd-a",
        "2026-11-24T12:00:00Z",
        "2026-11-24T12:30:00Z",
        true,
        json!({}),
    );
    let mut a_deleting = a.clone();
    a_deleting["metadata"]["deletionTimestamp"] = json!("2026-11-24T12:03:00Z");
    a_deleting["metadata"]["finalizers"] = json!([FINALIZER]);
    // sd-a still has a fault in force: its own finalizer recovers it, the Schedule waits.
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![a.clone()])),
        expect(
            Method::DELETE,
            format!("{CHILDREN}/sd-a?"),
            a_deleting.clone(),
        ),
    ]);
    let err = within(schedule::reconcile(
        Arc::new(sd(json!({}), deleting.clone(), json!({}))),
        tb.ctx.clone(),
    ))
    .await
    .expect_err("waits for the children");
    assert!(err.to_string().contains("sd-a"), "{err}");
    finished(server).await;

    // Still being recovered: not deleted twice.
    let server = tb
        .server
        .play(vec![expect(Method::GET, LIST, list(vec![a_deleting]))]);
    within(schedule::reconcile(
        Arc::new(sd(json!({}), deleting.clone(), json!({}))),
        tb.ctx.clone(),
    ))
    .await
    .expect_err("still waiting");
    finished(server).await;

    // Gone: the Schedule's finalizer goes.
    let server = tb.server.play(vec![
        expect(Method::GET, LIST, list(vec![])),
        expect(
            Method::PATCH,
            "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/schedules/sd?",
            any_sd(),
        ),
    ]);
    run(&tb, sd(json!({}), deleting, json!({}))).await;
    let seen = finished(server).await;
    assert!(seen[1].1.to_string().contains("remove"), "{:?}", seen[1]);
}

// A Schedule of Workflows (`type: Workflow`, the spec in `workflow`): the same cron, Forbid,
// historyLimit, startingDeadlineSeconds and deletion; a Workflow child is running until its
// Accomplished condition is True (Chaos Mesh's schedule controllers); pausing the Schedule stops
// new runs but cannot pause a Workflow (Chaos Mesh: NotSupported).

const WORKFLOWS: &str = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/workflows";
const WF_LIST: &str =
    "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/workflows?&labelSelector=managed-by%3Dsd";

/// Every 5 minutes a Workflow: a minute of pod-failure, then a 30 s pause.
fn wf_sd(extra_spec: Value, meta: Value, status: Value) -> Schedule {
    let mut base = json!({
        "type": "Workflow", "podChaos": null,
        "workflow": {"entry": "steps", "templates": [
            {"name": "steps", "templateType": "Serial", "children": ["fail", "pause"]},
            {"name": "fail", "templateType": "PodChaos", "deadline": "1m",
             "podChaos": {"action": "pod-failure", "mode": "one",
                          "selector": {"labelSelectors": {"app": "web"}}}},
            {"name": "pause", "templateType": "Suspend", "deadline": "30s"}]}
    });
    merge(&mut base, extra_spec);
    sd(base, meta, status)
}

/// A Workflow child; `accomplished`: its Accomplished condition (None: no status yet).
fn wf_child(name: &str, created: &str, accomplished: Option<bool>, meta: Value) -> Value {
    let mut metadata = json!({"name": name, "namespace": "demo", "uid": format!("uid-{name}"),
        "creationTimestamp": created, "labels": {"managed-by": "sd"}});
    merge(&mut metadata, meta);
    let status = match accomplished {
        None => json!({}),
        Some(done) => json!({"entryNode": format!("steps-{name}"), "conditions": [
            {"type": "Scheduled", "status": "True", "reason": ""},
            {"type": "Accomplished", "status": if done { "True" } else { "False" }, "reason": ""}]}),
    };
    json!({
        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "Workflow",
        "metadata": metadata,
        "spec": {"entry": "steps", "templates": [
            {"name": "steps", "templateType": "Suspend", "deadline": "30s"}]},
        "status": status
    })
}

fn wf_list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "WorkflowList", "metadata": {}, "items": items})
}

fn wf_reference(name: &str) -> Value {
    json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "Workflow", "name": name,
           "namespace": "demo", "uid": format!("uid-{name}")})
}

/// The POST of a new Workflow: Chaos Mesh's label, a controlling owner reference, the spec.
fn spawn_workflow() -> Expect {
    expect(Method::POST, format!("{WORKFLOWS}?"), Value::Null).body(|b| {
        assert_eq!(b["kind"], "Workflow");
        let name = b["metadata"]["name"].as_str().expect("a name");
        assert!(name.starts_with("sd-") && name.len() == 8, "{name}");
        assert_eq!(b["metadata"]["labels"], json!({"managed-by": "sd"}));
        let owner = &b["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Schedule");
        assert_eq!(owner["uid"], "sd-uid");
        assert_eq!(owner["controller"], true);
        assert_eq!(b["spec"]["entry"], "steps");
        assert_eq!(
            b["spec"]["templates"][1]["podChaos"]["action"],
            "pod-failure"
        );
        assert_eq!(b["spec"]["templates"][2]["deadline"], "30s");
    })
}

#[tokio::test]
async fn a_schedule_of_workflows_creates_a_workflow_on_time() {
    let tb = testbed();
    tb.clock.set("2026-11-24T11:59:00Z");
    let server = tb
        .server
        .play(vec![expect(Method::GET, WF_LIST, wf_list(vec![]))]);
    let action = run(&tb, wf_sd(json!({}), json!({}), json!({}))).await;
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));

    tb.clock.set("2026-11-24T12:00:00Z");
    let server = tb.server.play(vec![
        expect(Method::GET, WF_LIST, wf_list(vec![])),
        spawn_workflow(),
        event("ScheduleSpawn").body(|b| {
            assert!(
                b["note"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("created Workflow sd-"),
                "{b}"
            )
        }),
        expect(Method::PATCH, STATUS, any_sd()).body(|b| {
            assert_eq!(b["status"]["lastScheduleTime"], "2026-11-24T12:00:00Z");
            assert_eq!(b["status"]["active"][0]["kind"], "Workflow");
            assert_eq!(b["status"]["active"].as_array().map(Vec::len), Some(1));
        }),
    ]);
    let action = run(&tb, wf_sd(json!({}), json!({}), json!({}))).await;
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // Without its spec, no run: the Schedule says which field is missing.
    tb.clock.set("2026-11-24T12:05:00Z");
    let server = tb.server.play(vec![
        expect(Method::GET, WF_LIST, wf_list(vec![])),
        event("InvalidSpec").body(|b| {
            assert_eq!(
                b["note"],
                "spec.workflow: required when spec.type is Workflow"
            )
        }),
    ]);
    let status = json!({"lastScheduleTime": "2026-11-24T12:00:00Z"});
    run(&tb, wf_sd(json!({"workflow": null}), json!({}), status)).await;
    finished(server).await;
}

#[tokio::test]
async fn forbid_waits_for_the_workflow_to_be_accomplished_and_allow_overlaps() {
    let status =
        json!({"lastScheduleTime": "2026-11-24T12:00:00Z", "active": [wf_reference("sd-a")]});
    // Not accomplished yet (and, before its first pass, no status at all): still running.
    for running in [Some(false), None] {
        // A fresh recorder each time (a repeated event is a PATCH of its series).
        let tb = testbed();
        tb.clock.set("2026-11-24T12:05:30Z");
        let server = tb.server.play(vec![
            expect(
                Method::GET,
                WF_LIST,
                wf_list(vec![wf_child(
                    "sd-a",
                    "2026-11-24T12:00:00Z",
                    running,
                    json!({}),
                )]),
            ),
            event("ScheduleForbid")
                .body(|b| assert!(b["note"].as_str().unwrap_or("").contains("sd-a"), "{b}")),
        ]);
        let action = run(&tb, wf_sd(json!({}), json!({}), status.clone())).await;
        let seen = finished(server).await;
        assert!(seen.iter().all(|(r, _)| !r.starts_with("POST /apis/chaos")));
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    }

    // Accomplished (its entry node finished, deadline or abort included): the run starts.
    let tb = testbed();
    tb.clock.set("2026-11-24T12:05:30Z");
    let done = wf_child("sd-a", "2026-11-24T12:00:00Z", Some(true), json!({}));
    let server = tb.server.play(vec![
        expect(Method::GET, WF_LIST, wf_list(vec![done])),
        spawn_workflow(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()).body(|b| {
            assert_eq!(b["status"]["active"].as_array().map(Vec::len), Some(2));
        }),
    ]);
    run(
        &tb,
        wf_sd(json!({"historyLimit": 5}), json!({}), status.clone()),
    )
    .await;
    finished(server).await;

    // Allow: a new Workflow beside the running one.
    let tb = testbed();
    tb.clock.set("2026-11-24T12:05:30Z");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            WF_LIST,
            wf_list(vec![wf_child(
                "sd-a",
                "2026-11-24T12:00:00Z",
                Some(false),
                json!({}),
            )]),
        ),
        spawn_workflow(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()),
    ]);
    run(
        &tb,
        wf_sd(json!({"concurrencyPolicy": "Allow"}), json!({}), status),
    )
    .await;
    finished(server).await;
}

#[tokio::test]
async fn history_limit_deletes_the_oldest_accomplished_workflows_only() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:12:00Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:10:00Z",
        "active": [wf_reference("sd-a"), wf_reference("sd-b"), wf_reference("sd-c")]});
    // historyLimit 1: sd-a and sd-b are beyond it; sd-a is still running and stays.
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            WF_LIST,
            wf_list(vec![
                wf_child("sd-c", "2026-11-24T12:10:00Z", Some(true), json!({})),
                wf_child("sd-a", "2026-11-24T12:00:00Z", Some(false), json!({})),
                wf_child("sd-b", "2026-11-24T12:05:00Z", Some(true), json!({})),
            ]),
        ),
        expect(
            Method::DELETE,
            format!("{WORKFLOWS}/sd-b?"),
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        expect(Method::PATCH, STATUS, any_sd()).body(|b| {
            assert_eq!(
                b["status"]["active"],
                json!([wf_reference("sd-a"), wf_reference("sd-c")])
            );
        }),
    ]);
    run(
        &tb,
        wf_sd(
            json!({"historyLimit": 1, "concurrencyPolicy": "Allow"}),
            json!({}),
            status,
        ),
    )
    .await;
    finished(server).await;
}

#[tokio::test]
async fn a_schedule_of_workflows_after_a_restart_honours_the_starting_deadline() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:21:30Z");
    let status = json!({"lastScheduleTime": "2026-11-24T12:00:00Z"});
    // 12:20 is 90 s late: within 120 s, one Workflow for the four missed runs.
    let server = tb.server.play(vec![
        expect(Method::GET, WF_LIST, wf_list(vec![])),
        spawn_workflow(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()),
    ]);
    run(
        &tb,
        wf_sd(
            json!({"startingDeadlineSeconds": 120}),
            json!({}),
            status.clone(),
        ),
    )
    .await;
    finished(server).await;
    // Beyond 60 s: none; the 12:25 run is next.
    let server = tb
        .server
        .play(vec![expect(Method::GET, WF_LIST, wf_list(vec![]))]);
    let action = run(
        &tb,
        wf_sd(json!({"startingDeadlineSeconds": 60}), json!({}), status),
    )
    .await;
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(210)));
}

#[tokio::test]
async fn pausing_a_schedule_of_workflows_stops_new_runs_and_says_a_workflow_cannot_pause() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:05:00Z");
    let status =
        json!({"lastScheduleTime": "2026-11-24T12:00:00Z", "active": [wf_reference("sd-a")]});
    let paused = json!({"annotations": {"experiment.chaos-mesh.org/pause": "true"}});
    // The running Workflow is not touched (no PATCH), no run starts, the user is told.
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            WF_LIST,
            wf_list(vec![wf_child(
                "sd-a",
                "2026-11-24T12:00:00Z",
                Some(true),
                json!({}),
            )]),
        ),
        event("NotSupported").body(|b| {
            assert_eq!(b["type"], "Warning");
            assert!(
                b["note"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("pausing a Workflow schedule is not supported"),
                "{b}"
            );
        }),
    ]);
    let action = run(
        &tb,
        wf_sd(json!({"historyLimit": 5}), paused, status.clone()),
    )
    .await;
    let seen = finished(server).await;
    assert!(
        seen.iter()
            .all(|(r, _)| !r.starts_with("POST /apis/chaos") && !r.starts_with("PATCH")),
        "{seen:?}"
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // Resumed: the missed 12:05 run starts.
    tb.clock.set("2026-11-24T12:06:00Z");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            WF_LIST,
            wf_list(vec![wf_child(
                "sd-a",
                "2026-11-24T12:00:00Z",
                Some(true),
                json!({}),
            )]),
        ),
        spawn_workflow(),
        event("ScheduleSpawn"),
        expect(Method::PATCH, STATUS, any_sd()),
    ]);
    run(&tb, wf_sd(json!({"historyLimit": 5}), json!({}), status)).await;
    finished(server).await;
}

#[tokio::test]
async fn deleting_a_schedule_of_workflows_deletes_them_and_waits_for_their_recovery() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:03:00Z");
    let deleting = json!({"deletionTimestamp": "2026-11-24T12:03:00Z"});
    let a = wf_child("sd-a", "2026-11-24T12:00:00Z", Some(false), json!({}));
    let mut a_deleting = a.clone();
    a_deleting["metadata"]["deletionTimestamp"] = json!("2026-11-24T12:03:00Z");
    a_deleting["metadata"]["finalizers"] = json!([FINALIZER]);
    // The Workflow's own finalizer recovers what it started; the Schedule waits for it.
    let server = tb.server.play(vec![
        expect(Method::GET, WF_LIST, wf_list(vec![a])),
        expect(
            Method::DELETE,
            format!("{WORKFLOWS}/sd-a?"),
            a_deleting.clone(),
        ),
    ]);
    let err = within(schedule::reconcile(
        Arc::new(wf_sd(json!({}), deleting.clone(), json!({}))),
        tb.ctx.clone(),
    ))
    .await
    .expect_err("waits for the workflow");
    assert!(err.to_string().contains("sd-a"), "{err}");
    finished(server).await;

    let server = tb.server.play(vec![
        expect(Method::GET, WF_LIST, wf_list(vec![])),
        expect(
            Method::PATCH,
            "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/schedules/sd?",
            any_sd(),
        ),
    ]);
    run(&tb, wf_sd(json!({}), deleting, json!({}))).await;
    let seen = finished(server).await;
    assert!(seen[1].1.to_string().contains("remove"), "{:?}", seen[1]);
}
