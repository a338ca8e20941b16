//! The reconciler against a mocked API server, in the style of kube-rs controller-rs: each
//! scenario scripts every request the reconciler must make, in order, and fails on any other.
//! Agents are a recording double (the real agent over mTLS is driven in the e2e suite).

mod support;

use std::sync::Arc;
use std::time::Duration;

use controller::agent::{AgentCall, AgentError, AgentReply};
use controller::crd::IOChaos;
use controller::reconcile::{self, FINALIZER, PAUSE_ANNOTATION};
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::*;

const CHAOS: &str = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/iochaos/io";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/demo/events?";
const POD: &str = "/api/v1/namespaces/demo/pods/web-0";
const LIST_PODS: &str = "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb";

fn io_chaos(meta: Value, status: Value) -> IOChaos {
    let mut metadata = json!({
        "name": "io", "namespace": "demo", "uid": "chaos-uid", "generation": 1,
        "finalizers": [FINALIZER]
    });
    if let (Some(m), Some(extra)) = (metadata.as_object_mut(), meta.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "chaos.faultline.dev/v1alpha1",
        "kind": "IOChaos",
        "metadata": metadata,
        "spec": {
            "action": "fault", "mode": "all", "errno": 5, "percent": 100,
            "selector": {"labelSelectors": {"app": "web"}},
            "containerNames": ["app"],
            "volumePath": "/data", "duration": "60s"
        },
        "status": status
    }))
    .expect("an IOChaos")
}

/// What the API server answers to a patch of the resource.
fn chaos_json() -> Value {
    serde_json::to_value(io_chaos(json!({}), Value::Null)).expect("json")
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "demo", "uid": "pod-uid", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.7",
                   "containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "busybox",
                                          "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

fn pod_list() -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod()]})
}

/// The status after selection and injection at T0, as recorded.
fn injected_status() -> Value {
    json!({
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Valid", "lastTransitionTime": T0},
            {"type": "Selected", "status": "True", "reason": "Selected", "message": "1 target(s): demo/web-0/app", "lastTransitionTime": T0},
            {"type": "AllInjected", "status": "True", "reason": "AllInjected", "message": "1 injected, 0 recovered, 0 failed, 0 pending of 1", "lastTransitionTime": T0},
            {"type": "AllRecovered", "status": "False", "reason": "Running", "message": "1 injected, 0 recovered, 0 failed, 0 pending of 1", "lastTransitionTime": T0},
            {"type": "Paused", "status": "False", "reason": "NotPaused", "lastTransitionTime": T0}
        ],
        "experiment": {
            "desiredPhase": "Run", "startTime": T0, "deadline": "2026-11-24T12:01:00Z",
            "containerRecords": [{
                "id": "demo/web-0/app", "namespace": "demo", "pod": "web-0", "podUid": "pod-uid",
                "container": "app", "containerId": "containerd://abc", "node": "node-a",
                "phase": "Injected", "state": "Injected", "injectedCount": 1, "injectedAt": T0, "experimentIds": ["io-1"]
            }]
        },
        "observedGeneration": 1
    })
}

fn event_reason(reason: &'static str) -> impl Fn(&Value) + Send {
    move |body: &Value| assert_eq!(body["reason"], reason, "event {body}")
}

fn record(body: &Value) -> &Value {
    &body["status"]["experiment"]["containerRecords"][0]
}

fn condition<'a>(body: &'a Value, type_: &str) -> &'a Value {
    body["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_new_experiment_first_gets_the_finalizer_and_nothing_else() {
    let tb = testbed();
    let mut chaos = io_chaos(json!({}), Value::Null);
    chaos.metadata.finalizers = None;
    let server = tb.server.play(vec![
        expect(Method::PATCH, format!("{CHAOS}?"), chaos_json()).body(|b| {
            assert_eq!(
                b[1],
                json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
            )
        }),
    ]);
    let action = (run(Arc::new(chaos), tb.ctx.clone()))
        .await
        .expect("reconcile");
    finished(server).await;
    assert_eq!(action, Action::await_change());
    assert!(
        tb.agents.take_calls().is_empty(),
        "nothing is injected before the finalizer is in place"
    );
}

#[tokio::test]
async fn first_reconcile_selects_records_then_injects_through_the_agent() {
    let tb = testbed();
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["io-1".into()],
        detail: "mount /data".into(),
        ..Default::default()
    }));
    let server = tb.server.play(vec![
        expect(Method::GET, LIST_PODS, pod_list()),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Selected")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            // Recorded before anything is injected.
            assert_eq!(record(b)["state"], "Pending");
            assert_eq!(record(b)["id"], "demo/web-0/app");
            assert_eq!(record(b)["node"], "node-a");
            assert_eq!(
                b["status"]["experiment"]["deadline"],
                "2026-11-24T12:01:00Z"
            );
            assert_eq!(condition(b, "Selected")["status"], "True");
        }),
        expect(Method::GET, POD, pod()),
        expect(Method::POST, EVENTS, Value::Null).body(|b| {
            assert_eq!(b["reason"], "Injected");
            assert_eq!(b["related"]["name"], "web-0");
            assert_eq!(b["note"], "demo/web-0/app on node-a: mount /data");
        }),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Injected");
            assert_eq!(record(b)["experimentIds"], json!(["io-1"]));
            assert_eq!(record(b)["containerId"], "containerd://abc");
            assert_eq!(condition(b, "AllInjected")["status"], "True");
        }),
    ]);
    let action = run(Arc::new(io_chaos(json!({}), Value::Null)), tb.ctx.clone())
        .await
        .expect("reconcile");
    finished(server).await;
    // Back at the deadline.
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    let calls = tb.agents.take_calls();
    assert_eq!(calls.len(), 1);
    let (node, AgentCall::StartIo(request)) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(node, "node-a");
    assert_eq!(request.container_id, "containerd://abc");
    assert_eq!(request.volume, "/data");
    assert_eq!(
        request.duration_ms, 60_000,
        "the agent recovers by itself at the deadline too"
    );
    let actions: Value = serde_json::from_str(&request.actions).expect("json");
    assert_eq!(
        actions,
        json!([{"type": "fault", "percent": 100, "faults": [{"errno": 5, "weight": 1}]}])
    );
}

#[tokio::test]
async fn an_injected_experiment_reconciled_again_makes_no_call() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:00:20Z");
    let server = tb.server.play(vec![]);
    let action = run(
        Arc::new(io_chaos(json!({}), injected_status())),
        tb.ctx.clone(),
    )
    .await
    .expect("reconcile");
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(40)));
    assert!(tb.agents.take_calls().is_empty());
}

#[tokio::test]
async fn at_the_deadline_every_target_is_recovered_and_the_experiment_finishes() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:01:00Z");
    let server = tb.server.play(vec![
        expect(Method::GET, POD, pod()),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Recovered")),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Finished")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Recovered");
            assert_eq!(record(b)["recoveredAt"], "2026-11-24T12:01:00Z");
            assert_eq!(b["status"]["experiment"]["desiredPhase"], "Stop");
            assert_eq!(condition(b, "AllRecovered")["status"], "True");
            assert_eq!(condition(b, "AllInjected")["reason"], "DurationOver");
        }),
    ]);
    let action = run(
        Arc::new(io_chaos(json!({}), injected_status())),
        tb.ctx.clone(),
    )
    .await
    .expect("reconcile");
    finished(server).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(
        tb.agents.take_calls(),
        vec![(
            "node-a".to_string(),
            AgentCall::Recover { id: "io-1".into() }
        )]
    );
}

#[tokio::test]
async fn pause_recovers_and_resume_injects_again() {
    let tb = testbed();
    tb.clock.set("2026-11-24T12:00:10Z");
    let paused_meta = json!({"annotations": {PAUSE_ANNOTATION: "true"}});
    let server = tb.server.play(vec![
        expect(Method::GET, POD, pod()),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Recovered")),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Paused")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Recovered");
            assert_eq!(condition(b, "Paused")["status"], "True");
            assert_eq!(condition(b, "AllRecovered")["status"], "True");
        }),
    ]);
    let paused = io_chaos(paused_meta, injected_status());
    (run(Arc::new(paused), tb.ctx.clone()))
        .await
        .expect("pause");
    let seen = finished(server).await;
    assert_eq!(
        tb.agents.take_calls(),
        vec![(
            "node-a".to_string(),
            AgentCall::Recover { id: "io-1".into() }
        )]
    );

    // The annotation goes: the same target is injected again, for what is left of the duration.
    let status_after_pause = seen.last().expect("a status patch").1["status"].clone();
    tb.clock.set("2026-11-24T12:00:30Z");
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["io-2".into()],
        ..Default::default()
    }));
    let server = tb.server.play(vec![
        expect(Method::GET, POD, pod()),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Injected")),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Resumed")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Injected");
            assert_eq!(record(b)["experimentIds"], json!(["io-2"]));
            assert_eq!(condition(b, "Paused")["status"], "False");
        }),
    ]);
    let resumed = io_chaos(json!({}), status_after_pause);
    let action = (run(Arc::new(resumed), tb.ctx.clone()))
        .await
        .expect("resume");
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let calls = tb.agents.take_calls();
    let AgentCall::StartIo(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.duration_ms, 30_000);
}

#[tokio::test]
async fn deletion_recovers_every_target_then_removes_the_finalizer() {
    let tb = testbed();
    let deleting = json!({"deletionTimestamp": "2026-11-24T12:00:30Z"});
    let server = tb.server.play(vec![
        expect(Method::GET, POD, pod()),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Recovered")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Recovered");
            assert_eq!(condition(b, "AllRecovered")["status"], "True");
        }),
        expect(Method::PATCH, format!("{CHAOS}?"), chaos_json()).body(|b| {
            assert_eq!(
                b[0],
                json!({"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER})
            );
            assert_eq!(
                b[1],
                json!({"op": "remove", "path": "/metadata/finalizers/0"})
            );
        }),
    ]);
    run(
        Arc::new(io_chaos(deleting, injected_status())),
        tb.ctx.clone(),
    )
    .await
    .expect("cleanup");
    finished(server).await;
    assert_eq!(
        tb.agents.take_calls(),
        vec![(
            "node-a".to_string(),
            AgentCall::Recover { id: "io-1".into() }
        )]
    );
}

#[tokio::test]
async fn a_vanished_pod_counts_as_recovered() {
    let tb = testbed();
    let deleting = json!({"deletionTimestamp": "2026-11-24T12:00:30Z"});
    let server = tb.server.play(vec![
        not_found(Method::GET, POD),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("TargetGone")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Recovered");
            assert_eq!(record(b)["gone"], true);
        }),
        expect(Method::PATCH, format!("{CHAOS}?"), chaos_json()),
    ]);
    run(
        Arc::new(io_chaos(deleting, injected_status())),
        tb.ctx.clone(),
    )
    .await
    .expect("cleanup");
    finished(server).await;
    assert!(
        tb.agents.take_calls().is_empty(),
        "no agent is asked about a pod that is gone"
    );
}

#[tokio::test]
async fn an_agent_that_is_down_fails_the_target_with_the_reason_and_is_retried_with_backoff() {
    let tb = testbed();
    let down = || AgentError::Unreachable {
        node: "node-a".into(),
        address: "10.0.0.1:31767".into(),
        reason: "connection refused".into(),
    };
    tb.agents.answer(Err(down()));
    let server = tb.server.play(vec![
        expect(Method::GET, LIST_PODS, pod_list()),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("Selected")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()),
        expect(Method::GET, POD, pod()),
        expect(Method::POST, EVENTS, Value::Null).body(|b| {
            assert_eq!(b["reason"], "InjectFailed");
            assert_eq!(b["type"], "Warning");
        }),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Failed");
            assert_eq!(record(b)["attempts"], 1);
            assert_eq!(record(b)["nextRetryAt"], "2026-11-24T12:00:05Z");
            let message = record(b)["message"].as_str().unwrap_or_default().to_owned();
            assert!(
                message.contains(
                    "agent on node node-a at 10.0.0.1:31767 is unreachable: connection refused"
                ),
                "{message}"
            );
            assert_eq!(condition(b, "AllInjected")["reason"], "InjectionFailed");
        }),
    ]);
    let action = run(Arc::new(io_chaos(json!({}), Value::Null)), tb.ctx.clone())
        .await
        .expect("reconcile");
    let seen = finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    tb.agents.take_calls();

    // Before the retry time nothing is asked; the second failure waits twice as long.
    let failed_status = seen.last().expect("a status patch").1["status"].clone();
    tb.clock.set("2026-11-24T12:00:05Z");
    tb.agents.answer(Err(down()));
    let server = tb.server.play(vec![
        expect(Method::GET, POD, pod()),
        // The same event again: the recorder counts it in a series on the first one.
        expect(
            Method::PATCH,
            "/apis/events.k8s.io/v1/namespaces/demo/events/io.",
            Value::Null,
        )
        .prefix()
        .body(|b| {
            assert_eq!(b["reason"], "InjectFailed");
            assert_eq!(b["series"]["count"], 2);
        }),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json())
            .body(|b| assert_eq!(record(b)["nextRetryAt"], "2026-11-24T12:00:15Z")),
    ]);
    let action = run(
        Arc::new(io_chaos(json!({}), failed_status.clone())),
        tb.ctx.clone(),
    )
    .await
    .expect("reconcile");
    let seen = finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));

    // Deleting it now: nothing reached an agent, so nothing is recovered and the finalizer goes.
    let failed_twice = seen.last().expect("a status patch").1["status"].clone();
    tb.agents.take_calls();
    let deleting = json!({"deletionTimestamp": "2026-11-24T12:00:06Z"});
    let server = tb.server.play(vec![
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()),
        expect(Method::PATCH, format!("{CHAOS}?"), chaos_json()),
    ]);
    (run(Arc::new(io_chaos(deleting, failed_twice)), tb.ctx.clone()))
        .await
        .expect("cleanup");
    finished(server).await;
    assert!(tb.agents.take_calls().is_empty());
}

#[tokio::test]
async fn deletion_keeps_the_finalizer_while_an_injected_target_cannot_be_recovered() {
    let tb = testbed();
    tb.agents.answer(Err(AgentError::NoAgent {
        node: "node-a".into(),
        service: "faultline/faultline-agent".into(),
    }));
    let deleting = json!({"deletionTimestamp": "2026-11-24T12:00:30Z"});
    let server = tb.server.play(vec![
        expect(Method::GET, POD, pod()),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("RecoverFailed")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(record(b)["state"], "Injected");
            assert_eq!(condition(b, "AllRecovered")["reason"], "RecoveryFailed");
        }),
    ]);
    let chaos = Arc::new(io_chaos(deleting, injected_status()));
    let error = (run(chaos.clone(), tb.ctx.clone()))
        .await
        .expect_err("not recovered");
    finished(server).await;
    assert!(
        error
            .to_string()
            .contains("1 target(s) still need recovery"),
        "{error}"
    );
    let action = reconcile::error_policy(chaos, &error, tb.ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let metrics = tb.ctx.metrics.encode();
    assert!(
        metrics.contains(r#"faultline_controller_reconcile_failures_total{kind="IOChaos",reason="recovery_incomplete"} 1"#),
        "{metrics}"
    );
}

/// Chaos Mesh (controllers/common/finalizers): `chaos-mesh.chaos-mesh.org/cleanFinalizer:
/// forced` on a deleted experiment removes the finalizer whatever is left in force.
#[tokio::test]
async fn the_chaos_mesh_forced_clean_annotation_lets_an_unrecoverable_experiment_go() {
    for key in [
        "chaos-mesh.chaos-mesh.org/cleanFinalizer",
        "chaos.faultline.dev/cleanFinalizer",
    ] {
        let tb = testbed();
        tb.agents.answer(Err(AgentError::NoAgent {
            node: "node-a".into(),
            service: "faultline/faultline-agent".into(),
        }));
        let meta =
            json!({"deletionTimestamp": "2026-11-24T12:00:30Z", "annotations": {key: "forced"}});
        let server = tb.server.play(vec![
            expect(Method::GET, POD, pod()),
            expect(Method::POST, EVENTS, Value::Null).body(event_reason("RecoverFailed")),
            expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()),
            expect(Method::POST, EVENTS, Value::Null).body(event_reason("ForcedCleanup")),
            expect(Method::PATCH, format!("{CHAOS}?"), chaos_json()).body(|b| {
                assert_eq!(
                    b[1],
                    json!({"op": "remove", "path": "/metadata/finalizers/0"})
                );
            }),
        ]);
        run(Arc::new(io_chaos(meta, injected_status())), tb.ctx.clone())
            .await
            .expect("the finalizer goes");
        finished(server).await;
    }
}

#[tokio::test]
async fn an_invalid_spec_gets_a_condition_and_an_event_and_nothing_is_selected() {
    let tb = testbed();
    let mut chaos = io_chaos(json!({}), Value::Null);
    chaos.spec.duration = Some("thirty seconds".into());
    let server = tb.server.play(vec![
        expect(Method::POST, EVENTS, Value::Null).body(|b| {
            assert_eq!(b["reason"], "Invalid");
            assert_eq!(b["type"], "Warning");
        }),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            let accepted = condition(b, "Accepted");
            assert_eq!(accepted["status"], "False");
            assert!(
                accepted["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("spec.duration: \"thirty seconds\" is not a duration"),
                "{accepted}"
            );
        }),
    ]);
    let action = (run(Arc::new(chaos), tb.ctx.clone()))
        .await
        .expect("reconcile");
    finished(server).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_selector_matching_nothing_says_so_and_tries_again_later() {
    let tb = testbed();
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            LIST_PODS,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ),
        expect(Method::POST, EVENTS, Value::Null).body(event_reason("NoMatch")),
        expect(Method::PATCH, format!("{CHAOS}/status?"), chaos_json()).body(|b| {
            assert_eq!(condition(b, "Selected")["status"], "False");
            assert_eq!(condition(b, "Selected")["reason"], "NoMatch");
        }),
    ]);
    let action = run(Arc::new(io_chaos(json!({}), Value::Null)), tb.ctx.clone())
        .await
        .expect("reconcile");
    finished(server).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

/// `reconcile` with a time limit: a request the script does not answer fails the test instead
/// of hanging it.
async fn run(
    chaos: Arc<IOChaos>,
    ctx: Arc<controller::reconcile::Context>,
) -> Result<Action, controller::error::Error> {
    within(reconcile::reconcile(chaos, ctx)).await
}
