//! Two NetworkChaos on one pod, as Chaos Mesh keeps them (merged in the pod's PodNetworkChaos):
//! both in force together, each recovered alone. The agent keeps one network state per pod, so
//! the controller sends it the merge of every experiment in force there, and on recovery the
//! others' rules alone.

mod support;

use std::sync::Arc;

use controller::agent::{AgentCall, AgentReply};
use controller::crd::NetworkChaos;
use controller::reconcile::{self, FINALIZER};
use faultline_proto::pb;
use http::Method;
use serde_json::{Value, json};
use support::*;

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/demo/events?";
const ALL_NC: &str = "/apis/chaos.faultline.dev/v1alpha1/networkchaos?";
const POD: &str = "/api/v1/namespaces/demo/pods/web-0";

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "demo", "uid": "uid-web-0", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx:1"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.7",
                   "containerStatuses": [{"name": "app", "containerID": "containerd://web-0", "image": "nginx:1",
                                          "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

/// `delay` (100ms) or `loss` (50 %) on the web pods, injected on web-0 when `injected`.
fn nc(name: &str, injected: bool, deleting: bool) -> Value {
    let spec = if name == "delay" {
        json!({"action": "delay", "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
               "delay": {"latency": "100ms"}, "duration": "10m"})
    } else {
        json!({"action": "loss", "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
               "loss": {"loss": "50"}, "duration": "5m"})
    };
    let mut metadata = json!({"name": name, "namespace": "demo", "uid": format!("uid-{name}"),
                              "generation": 1, "finalizers": [FINALIZER]});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-11-24T12:01:00Z");
    }
    let mut value = json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "NetworkChaos",
                           "metadata": metadata, "spec": spec});
    if injected {
        let deadline = if name == "delay" {
            "2026-11-24T12:10:00Z"
        } else {
            "2026-11-24T12:05:00Z"
        };
        value["status"] = json!({
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Valid"}],
            "experiment": {
                "desiredPhase": "Run", "startTime": T0, "deadline": deadline,
                "sourcePeers": ["10.1.0.7/32"],
                "containerRecords": [{
                    "id": "demo/web-0", "selectorKey": ".", "phase": "Injected", "state": "Injected",
                    "injectedCount": 1, "recoveredCount": 0,
                    "namespace": "demo", "pod": "web-0", "podUid": "uid-web-0",
                    "containerId": "containerd://web-0", "node": "node-a", "injectedAt": T0,
                    "experimentIds": ["net-1"]
                }]
            },
            "observedGeneration": 1
        });
    }
    value
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "NetworkChaosList", "metadata": {}, "items": items})
}

fn typed(value: Value) -> NetworkChaos {
    serde_json::from_value(value).expect("a NetworkChaos")
}

fn event(reason: &'static str) -> Expect {
    expect(Method::POST, EVENTS, Value::Null).body(move |b| assert_eq!(b["reason"], reason, "{b}"))
}

/// The netem of each tc rule sent: (delay in µs, loss %).
fn netems(call: &AgentCall) -> Vec<(String, f32)> {
    let AgentCall::StartNetwork(request) = call else {
        panic!("not a network call: {call:?}")
    };
    assert_eq!(request.container_id, "containerd://web-0");
    request
        .tcs
        .iter()
        .map(|tc| {
            assert_eq!(tc.r#type, pb::tc::Type::Netem as i32);
            let n = tc.netem.as_ref().expect("netem");
            (n.time.clone(), n.loss)
        })
        .collect()
}

fn duration_ms(call: &AgentCall) -> u64 {
    match call {
        AgentCall::StartNetwork(r) => r.duration_ms,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn two_network_chaos_on_one_pod_are_in_force_together_and_recovered_one_at_a_time() {
    let tb = testbed();
    let ok = || {
        Ok(AgentReply {
            ids: vec!["net-1".into()],
            ..Default::default()
        })
    };

    // 1. `delay` is in force on web-0; `loss` arrives and selects the same pod: the agent gets
    //    both rules, until the later deadline (delay's, 10 minutes).
    let loss_path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/networkchaos/loss";
    tb.agents.answer(ok());
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod()]}),
        ),
        event("Selected"),
        expect(
            Method::PATCH,
            format!("{loss_path}/status?"),
            nc("loss", false, false),
        ),
        expect(
            Method::GET,
            ALL_NC,
            list(vec![nc("delay", true, false), nc("loss", false, false)]),
        ),
        expect(Method::GET, POD, pod()),
        event("Injected"),
        expect(
            Method::PATCH,
            format!("{loss_path}/status?"),
            nc("loss", false, false),
        )
        .body(|b| {
            let rec = &b["status"]["experiment"]["containerRecords"][0];
            assert_eq!(
                (rec["phase"].as_str(), rec["state"].as_str()),
                (Some("Injected"), Some("Injected"))
            );
        }),
    ]);
    within(reconcile::reconcile(
        Arc::new(typed(nc("loss", false, false))),
        tb.ctx.clone(),
    ))
    .await
    .expect("reconcile loss");
    finished(server).await;
    let calls = tb.agents.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "node-a");
    assert_eq!(
        netems(&calls[0].1),
        [("100000us".to_string(), 0.0), (String::new(), 50.0)],
        "delay's rule kept, loss's added"
    );
    assert_eq!(
        duration_ms(&calls[0].1),
        600_000,
        "until the later deadline"
    );

    // 2. `loss` is deleted: web-0 keeps delay's rule alone.
    tb.agents.answer(ok());
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            ALL_NC,
            list(vec![nc("delay", true, false), nc("loss", true, true)]),
        ),
        expect(Method::GET, POD, pod()),
        event("Recovered"),
        expect(
            Method::PATCH,
            format!("{loss_path}/status?"),
            nc("loss", true, true),
        )
        .body(|b| {
            let rec = &b["status"]["experiment"]["containerRecords"][0];
            assert_eq!(rec["phase"], "Not Injected");
            assert_eq!(rec["recoveredCount"], 1);
        }),
        expect(
            Method::PATCH,
            format!("{loss_path}?"),
            nc("loss", true, true),
        ),
    ]);
    within(reconcile::reconcile(
        Arc::new(typed(nc("loss", true, true))),
        tb.ctx.clone(),
    ))
    .await
    .expect("cleanup loss");
    finished(server).await;
    let calls = tb.agents.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        netems(&calls[0].1),
        [("100000us".to_string(), 0.0)],
        "delay stays in force"
    );
    assert_eq!(duration_ms(&calls[0].1), 600_000);

    // 3. `delay` is deleted too (loss is gone): nothing is left on the pod.
    let delay_path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/networkchaos/delay";
    tb.agents.answer(ok());
    let server = tb.server.play(vec![
        expect(Method::GET, ALL_NC, list(vec![nc("delay", true, true)])),
        expect(Method::GET, POD, pod()),
        event("Recovered"),
        expect(
            Method::PATCH,
            format!("{delay_path}/status?"),
            nc("delay", true, true),
        ),
        expect(
            Method::PATCH,
            format!("{delay_path}?"),
            nc("delay", true, true),
        ),
    ]);
    within(reconcile::reconcile(
        Arc::new(typed(nc("delay", true, true))),
        tb.ctx.clone(),
    ))
    .await
    .expect("cleanup delay");
    finished(server).await;
    let calls = tb.agents.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        netems(&calls[0].1).is_empty(),
        "an empty state removes every rule"
    );
    let AgentCall::StartNetwork(request) = &calls[0].1 else {
        unreachable!()
    };
    assert!(request.ipsets.is_empty() && request.chains.is_empty());
}

#[tokio::test]
async fn recovering_the_first_keeps_the_second_in_force() {
    // The other order: `delay` goes first while `loss` stays.
    let tb = testbed();
    tb.agents.answer(Ok(AgentReply::default()));
    let delay_path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/networkchaos/delay";
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            ALL_NC,
            list(vec![nc("delay", true, true), nc("loss", true, false)]),
        ),
        expect(Method::GET, POD, pod()),
        event("Recovered"),
        expect(
            Method::PATCH,
            format!("{delay_path}/status?"),
            nc("delay", true, true),
        ),
        expect(
            Method::PATCH,
            format!("{delay_path}?"),
            nc("delay", true, true),
        ),
    ]);
    within(reconcile::reconcile(
        Arc::new(typed(nc("delay", true, true))),
        tb.ctx.clone(),
    ))
    .await
    .expect("cleanup delay");
    finished(server).await;
    let calls = tb.agents.take_calls();
    assert_eq!(
        netems(&calls[0].1),
        [(String::new(), 50.0)],
        "loss stays in force"
    );
    assert_eq!(
        duration_ms(&calls[0].1),
        300_000,
        "until loss's own deadline"
    );
}
