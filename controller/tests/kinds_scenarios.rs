//! What each chaos kind asks of the API server and the agents, scripted like
//! reconcile_scenarios.rs: PodChaos pod-kill and pod-failure go through the API server,
//! NetworkChaos records its target pods' addresses and filters through an ipset of them,
//! StressChaos starts stressors and recovers them by id; TimeChaos starts a time experiment and
//! recovers it by id; DNSChaos and HTTPChaos start the pod's responder or proxy and recover it by
//! id.

mod support;

use std::sync::Arc;

use controller::agent::{AgentCall, AgentReply};
use controller::crd::{DNSChaos, HTTPChaos, NetworkChaos, PodChaos, StressChaos, TimeChaos};
use controller::reconcile::{self, FINALIZER};
use faultline_proto::pb;
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::*;

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/demo/events?";

fn chaos<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value, meta: Value) -> K {
    let mut metadata = json!({"name": name, "namespace": "demo", "uid": "u", "generation": 1, "finalizers": [FINALIZER]});
    if let (Some(m), Some(extra)) = (metadata.as_object_mut(), meta.as_object()) {
        m.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec
    }))
    .expect("a chaos resource")
}

fn pod(name: &str, app: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "uid": format!("uid-{name}"), "labels": {"app": app}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx:1"}]},
        "status": {"phase": "Running", "podIP": ip,
                   "containerStatuses": [{"name": "app", "containerID": format!("containerd://{name}"), "image": "nginx:1",
                                          "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

fn event(reason: &'static str) -> Expect {
    expect(Method::POST, EVENTS, Value::Null).body(move |b| assert_eq!(b["reason"], reason, "{b}"))
}

#[tokio::test]
async fn network_chaos_records_the_target_pods_and_filters_through_their_ipset() {
    let tb = testbed();
    let spec = json!({
        "action": "delay", "mode": "all",
        "selector": {"labelSelectors": {"app": "web"}},
        "delay": {"latency": "100ms", "jitter": "10ms", "correlation": "25"},
        "target": {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}},
        "externalTargets": ["192.0.2.0/24"]
    });
    let nc: NetworkChaos = chaos("NetworkChaos", "net", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/networkchaos/net";
    let answer = serde_json::to_value(&nc).expect("json");
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["net-1".into()],
        ..Default::default()
    }));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Ddb",
            list(vec![pod("db-0", "db", "10.1.0.9")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()).body(|b| {
            assert_eq!(b["status"]["experiment"]["peers"], json!(["10.1.0.9/32"]));
            assert_eq!(
                b["status"]["experiment"]["externalPeers"],
                json!(["192.0.2.0/24"])
            );
            assert_eq!(b["status"]["experiment"]["sourcePeers"], json!(["10.1.0.7/32"]));
            let records = &b["status"]["experiment"]["containerRecords"];
            assert_eq!(records[0]["id"], "demo/web-0");
            assert_eq!(records[0]["selectorKey"], ".");
            assert_eq!(records[0]["phase"], "Not Injected");
            // Chaos Mesh records the target pods too, under the selector key .Target.
            assert_eq!(records[1]["id"], "demo/db-0");
            assert_eq!(records[1]["selectorKey"], ".Target");
        }),
        // The other NetworkChaos whose rules share the pod (none here).
        expect(
            Method::GET,
            "/apis/chaos.faultline.dev/v1alpha1/networkchaos?",
            json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "NetworkChaosList", "metadata": {}, "items": []}),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Injected"),
        // Direction to: nothing to do on the target pod, no call.
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer).body(|b| {
            let records = &b["status"]["experiment"]["containerRecords"];
            assert_eq!(records[0]["phase"], "Injected");
            assert_eq!(records[0]["injectedCount"], 1);
            assert_eq!(records[0]["events"][0]["operation"], "Apply");
            assert_eq!(records[0]["events"][0]["type"], "Succeeded");
            assert_eq!(records[1]["phase"], "Injected");
        }),
    ]);
    within(reconcile::reconcile(Arc::new(nc), tb.ctx.clone()))
        .await
        .expect("reconcile");
    finished(server).await;
    let calls = tb.agents.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let AgentCall::StartNetwork(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.container_id, "containerd://web-0");
    assert_eq!(request.pod_uid, "uid-web-0");
    assert_eq!(request.ipsets.len(), 1);
    let set = &request.ipsets[0];
    assert!(
        set.name.starts_with("fl-") && set.name.ends_with("-tgt") && set.name.len() <= 31,
        "{}",
        set.name
    );
    assert_eq!(set.cidrs, ["10.1.0.9/32", "192.0.2.0/24"]);
    assert_eq!(request.tcs.len(), 1);
    let tc = &request.tcs[0];
    assert_eq!(tc.r#type, pb::tc::Type::Netem as i32);
    assert_eq!(tc.ipset, set.name);
    let netem = tc.netem.as_ref().expect("netem");
    assert_eq!(
        (netem.time.as_str(), netem.jitter.as_str(), netem.delay_corr),
        ("100000us", "10000us", 25.0)
    );
}

#[tokio::test]
async fn pod_kill_deletes_the_pod_with_its_grace_period_once() {
    let tb = testbed();
    let spec = json!({"action": "pod-kill", "mode": "one", "gracePeriod": 7, "selector": {"labelSelectors": {"app": "web"}}});
    let pc: PodChaos = chaos("PodChaos", "kill", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/podchaos/kill";
    let answer = serde_json::to_value(&pc).expect("json");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        expect(
            Method::DELETE,
            "/api/v1/namespaces/demo/pods/web-0?",
            pod("web-0", "web", "10.1.0.7"),
        )
        .body(|b| assert_eq!(b["gracePeriodSeconds"], 7)),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer),
    ]);
    let action = within(reconcile::reconcile(Arc::new(pc), tb.ctx.clone()))
        .await
        .expect("reconcile");
    finished(server).await;
    // Nothing to wait for but the resync.
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(300)));
    assert!(tb.agents.take_calls().is_empty(), "pod-kill needs no agent");
}

#[tokio::test]
async fn pod_failure_swaps_the_images_and_puts_them_back() {
    let tb = testbed();
    let spec = json!({"action": "pod-failure", "mode": "all", "duration": "30s", "selector": {"labelSelectors": {"app": "web"}}});
    let pc: PodChaos = chaos("PodChaos", "fail", spec.clone(), json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/podchaos/fail";
    let answer = serde_json::to_value(&pc).expect("json");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/demo/pods/web-0?",
            pod("web-0", "web", "10.1.0.7"),
        )
        .body(|b| {
            assert_eq!(
                b["spec"]["containers"][0]["image"],
                "registry.k8s.io/pause:3.10"
            );
            assert_eq!(
                b["metadata"]["annotations"]["pod-failure.chaos.faultline.dev/app"],
                "nginx:1"
            );
        }),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
    ]);
    within(reconcile::reconcile(Arc::new(pc), tb.ctx.clone()))
        .await
        .expect("inject");
    let seen = finished(server).await;
    let status = seen.last().expect("status").1["status"].clone();

    // Deleted: the images come back from the annotations.
    let mut failed_pod = pod("web-0", "web", "10.1.0.7");
    failed_pod["metadata"]["annotations"] =
        json!({"pod-failure.chaos.faultline.dev/app": "nginx:1"});
    failed_pod["spec"]["containers"][0]["image"] = json!("registry.k8s.io/pause:3.10");
    let mut deleting: PodChaos = chaos(
        "PodChaos",
        "fail",
        spec,
        json!({"deletionTimestamp": "2026-11-24T12:00:10Z"}),
    );
    deleting.status = Some(serde_json::from_value(status).expect("status"));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            failed_pod.clone(),
        ),
        expect(
            Method::PATCH,
            "/api/v1/namespaces/demo/pods/web-0?",
            failed_pod,
        )
        .body(|b| {
            assert_eq!(
                b["spec"]["containers"][0],
                json!({"name": "app", "image": "nginx:1"})
            );
            assert_eq!(
                b["metadata"]["annotations"]["pod-failure.chaos.faultline.dev/app"],
                Value::Null
            );
        }),
        event("Recovered"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(Method::PATCH, format!("{path}?"), answer),
    ]);
    within(reconcile::reconcile(Arc::new(deleting), tb.ctx.clone()))
        .await
        .expect("cleanup");
    finished(server).await;
}

#[tokio::test]
async fn stress_chaos_starts_stressors_and_recovers_them_by_id() {
    let tb = testbed();
    let spec = json!({
        "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
        "stressors": {"cpu": {"workers": 1, "load": 50}, "memory": {"workers": 1, "size": "64MiB", "oomScoreAdj": 500}},
        "duration": "10s"
    });
    let sc: StressChaos = chaos("StressChaos", "stress", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/stresschaos/stress";
    let answer = serde_json::to_value(&sc).expect("json");
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["cpu-1".into(), "mem-1".into()],
        ..Default::default()
    }));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
    ]);
    within(reconcile::reconcile(Arc::new(sc.clone()), tb.ctx.clone()))
        .await
        .expect("inject");
    let seen = finished(server).await;
    let calls = tb.agents.take_calls();
    let AgentCall::StartStress(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.cpu_stressors, "--cpu 1 --cpu-load 50");
    assert_eq!(request.memory_stressors, "--workers 1 --size 64MiB");
    assert_eq!(request.oom_score_adj, 500);
    assert_eq!(request.duration_ms, 10_000);

    // At the deadline both stressors are recovered by id.
    let mut done = sc;
    done.status = Some(
        serde_json::from_value(seen.last().expect("status").1["status"].clone()).expect("status"),
    );
    tb.clock.set("2026-11-24T12:00:10Z");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Recovered"),
        event("Finished"),
        expect(Method::PATCH, format!("{path}/status?"), answer),
    ]);
    within(reconcile::reconcile(Arc::new(done), tb.ctx.clone()))
        .await
        .expect("recover");
    finished(server).await;
    assert_eq!(
        tb.agents.take_calls(),
        vec![
            (
                "node-a".to_string(),
                AgentCall::Recover { id: "cpu-1".into() }
            ),
            (
                "node-a".to_string(),
                AgentCall::Recover { id: "mem-1".into() }
            ),
        ]
    );
}

/// DNSChaos (Chaos Mesh's fields: action, patterns, selector, mode, duration, containerNames)
/// starts the agent's DNS experiment in the selected container's pod and recovers it by id.
#[tokio::test]
async fn dns_chaos_starts_the_pods_responder_and_recovers_it_by_id() {
    let tb = testbed();
    let spec = json!({
        "action": "error", "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
        "patterns": ["*.example.com", "google.com"],
        "duration": "10s"
    });
    let dc: DNSChaos = chaos("DNSChaos", "dns", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/dnschaos/dns";
    let answer = serde_json::to_value(&dc).expect("json");
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["dns-1".into()],
        ..Default::default()
    }));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
    ]);
    within(reconcile::reconcile(Arc::new(dc.clone()), tb.ctx.clone()))
        .await
        .expect("inject");
    let seen = finished(server).await;
    let calls = tb.agents.take_calls();
    let AgentCall::StartDns(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.action, "error");
    assert_eq!(request.patterns, ["*.example.com", "google.com"]);
    assert_eq!(request.duration_ms, 10_000);
    assert!(
        request.container_id.starts_with("containerd://"),
        "{request:?}"
    );

    let mut done = dc;
    done.status = Some(
        serde_json::from_value(seen.last().expect("status").1["status"].clone()).expect("status"),
    );
    tb.clock.set("2026-11-24T12:00:10Z");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Recovered"),
        event("Finished"),
        expect(Method::PATCH, format!("{path}/status?"), answer),
    ]);
    within(reconcile::reconcile(Arc::new(done), tb.ctx.clone()))
        .await
        .expect("recover");
    finished(server).await;
    assert_eq!(
        tb.agents.take_calls(),
        vec![(
            "node-a".to_string(),
            AgentCall::Recover { id: "dns-1".into() }
        )]
    );
}

/// HTTPChaos starts the agent's HTTP experiment (one tproxy rule, the port as the proxy port)
/// in the selected pod and recovers it by id.
#[tokio::test]
async fn http_chaos_starts_the_pods_proxy_and_recovers_it_by_id() {
    let tb = testbed();
    let spec = json!({
        "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
        "target": "Request", "port": 8080, "path": "/api/*", "abort": true,
        "duration": "10s"
    });
    let dc: HTTPChaos = chaos("HTTPChaos", "http", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/httpchaos/http";
    let answer = serde_json::to_value(&dc).expect("json");
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["http-1".into()],
        ..Default::default()
    }));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
    ]);
    within(reconcile::reconcile(Arc::new(dc.clone()), tb.ctx.clone()))
        .await
        .expect("inject");
    let seen = finished(server).await;
    let calls = tb.agents.take_calls();
    let AgentCall::StartHttp(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.proxy_ports, [8080]);
    let rules: Value = serde_json::from_str(&request.rules).expect("rules JSON");
    assert_eq!(
        rules,
        json!([{"target": "Request", "selector": {"port": 8080, "path": "/api/*"}, "actions": {"abort": true}}])
    );
    assert_eq!(request.duration_ms, 10_000);
    assert!(
        request.container_id.starts_with("containerd://"),
        "{request:?}"
    );

    let mut done = dc;
    done.status = Some(
        serde_json::from_value(seen.last().expect("status").1["status"].clone()).expect("status"),
    );
    tb.clock.set("2026-11-24T12:00:10Z");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Recovered"),
        event("Finished"),
        expect(Method::PATCH, format!("{path}/status?"), answer),
    ]);
    within(reconcile::reconcile(Arc::new(done), tb.ctx.clone()))
        .await
        .expect("recover");
    finished(server).await;
    assert_eq!(
        tb.agents.take_calls(),
        vec![(
            "node-a".to_string(),
            AgentCall::Recover {
                id: "http-1".into()
            }
        )]
    );
}

/// HTTPChaos `tls`: the Secret it names is read when injecting (by its own name and
/// namespace) and the agent gets tproxy's tls JSON: each item `type: Contents`, `value` the
/// Secret's bytes as Go []byte (base64).
#[tokio::test]
async fn http_chaos_tls_reads_its_secret_and_sends_the_material() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["web".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert")
        .pem();
    let key = key.serialize_pem();
    let tb = testbed();
    let spec = json!({
        "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
        "target": "Request", "port": 8443, "path": "/api/*", "abort": true,
        "tls": {"secretName": "web-tls", "secretNamespace": "certs",
                "certName": "tls.crt", "keyName": "tls.key", "caName": "ca.crt"},
    });
    let dc: HTTPChaos = chaos("HTTPChaos", "https", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/httpchaos/https";
    let answer = serde_json::to_value(&dc).expect("json");
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["http-1".into()],
        ..Default::default()
    }));
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "web-tls", "namespace": "certs"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(cert.as_bytes()), "tls.key": b64(key.as_bytes()),
                 "ca.crt": b64(cert.as_bytes())},
    });
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/certs/secrets/web-tls",
            secret,
        ),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer),
    ]);
    within(reconcile::reconcile(Arc::new(dc), tb.ctx.clone()))
        .await
        .expect("inject");
    finished(server).await;
    let calls = tb.agents.take_calls();
    let AgentCall::StartHttp(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.proxy_ports, [8443]);
    let tls: Value = serde_json::from_str(&request.tls).expect("tls JSON");
    assert_eq!(
        tls,
        json!({
            "cert_file": {"type": "Contents", "value": b64(cert.as_bytes())},
            "key_file": {"type": "Contents", "value": b64(key.as_bytes())},
            "ca_file": {"type": "Contents", "value": b64(cert.as_bytes())},
        })
    );
}

/// Two HTTPChaos selecting the same pod are both in force (the agent serves each beside the
/// other, as Chaos Mesh's PodHttpChaos merges them); deleting one recovers only its own
/// experiment, and nothing is sent for the other.
#[tokio::test]
async fn two_http_chaos_on_one_pod_are_both_in_force_and_deleting_one_leaves_the_other() {
    let tb = testbed();
    let inject = |name: &'static str, path: &'static str, id: &'static str| {
        let tb = &tb;
        async move {
            let spec = json!({
                "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
                "target": "Request", "port": 8080, "path": path, "abort": true,
            });
            let hc: HTTPChaos = chaos("HTTPChaos", name, spec, json!({}));
            let at = format!("/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/httpchaos/{name}");
            let answer = serde_json::to_value(&hc).expect("json");
            tb.agents.answer(Ok(AgentReply {
                ids: vec![id.into()],
                ..Default::default()
            }));
            let server = tb.server.play(vec![
                expect(
                    Method::GET,
                    "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
                    list(vec![pod("web-0", "web", "10.1.0.7")]),
                ),
                event("Selected"),
                expect(Method::PATCH, format!("{at}/status?"), answer.clone()),
                expect(
                    Method::GET,
                    "/api/v1/namespaces/demo/pods/web-0",
                    pod("web-0", "web", "10.1.0.7"),
                ),
                event("Injected"),
                expect(Method::PATCH, format!("{at}/status?"), answer),
            ]);
            within(reconcile::reconcile(Arc::new(hc.clone()), tb.ctx.clone()))
                .await
                .expect("inject");
            let seen = finished(server).await;
            let mut injected = hc;
            injected.status = Some(
                serde_json::from_value(seen.last().expect("status").1["status"].clone())
                    .expect("status"),
            );
            injected
        }
    };
    let first = inject("first", "/a", "http-a").await;
    let _second = inject("second", "/b", "http-b").await;
    let calls = tb.agents.take_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for ((node, call), path) in calls.iter().zip(["/a", "/b"]) {
        let AgentCall::StartHttp(request) = call else {
            panic!("{calls:?}")
        };
        assert_eq!(node, "node-a");
        assert_eq!(request.container_id, "containerd://web-0");
        assert_eq!(request.proxy_ports, [8080]);
        let rules: Value = serde_json::from_str(&request.rules).expect("rules JSON");
        assert_eq!(rules[0]["selector"]["path"], path, "each its own rule only");
    }

    let mut deleting = first;
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-24T12:01:00Z".parse().expect("time"),
        ));
    let at = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/httpchaos/first";
    let answer = serde_json::to_value(&deleting).expect("json");
    tb.agents.answer(Ok(AgentReply::default()));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Recovered"),
        expect(Method::PATCH, format!("{at}/status?"), answer.clone()),
        expect(Method::PATCH, format!("{at}?"), answer),
    ]);
    within(reconcile::reconcile(Arc::new(deleting), tb.ctx.clone()))
        .await
        .expect("cleanup");
    finished(server).await;
    assert_eq!(
        tb.agents.take_calls(),
        vec![(
            "node-a".to_string(),
            AgentCall::Recover {
                id: "http-a".into()
            }
        )]
    );
}

/// Chaos Mesh (trafficcontrol Apply): with direction both, the selected pods get the rule
/// filtered by the target pods' addresses, and the target pods (selector key .Target) get it
/// filtered by the selected pods' addresses.
#[tokio::test]
async fn network_chaos_both_ways_puts_rules_on_the_target_pods_too() {
    let tb = testbed();
    let spec = json!({
        "action": "loss", "mode": "all", "direction": "both",
        "selector": {"labelSelectors": {"app": "web"}},
        "loss": {"loss": "30"},
        "target": {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}}
    });
    let nc: NetworkChaos = chaos("NetworkChaos", "both", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/networkchaos/both";
    let answer = serde_json::to_value(&nc).expect("json");
    let none = json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "NetworkChaosList", "metadata": {}, "items": []});
    for _ in 0..2 {
        tb.agents.answer(Ok(AgentReply {
            ids: vec!["net-1".into()],
            ..Default::default()
        }));
    }
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Ddb",
            list(vec![pod("db-0", "db", "10.1.0.9")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/apis/chaos.faultline.dev/v1alpha1/networkchaos?",
            none.clone(),
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Injected"),
        expect(
            Method::GET,
            "/apis/chaos.faultline.dev/v1alpha1/networkchaos?",
            none,
        ),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/db-0",
            pod("db-0", "db", "10.1.0.9"),
        ),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer).body(|b| {
            let records = &b["status"]["experiment"]["containerRecords"];
            assert_eq!(records[1]["selectorKey"], ".Target");
            assert_eq!(records[1]["containerId"], "containerd://db-0");
            assert_eq!(records[1]["phase"], "Injected");
        }),
    ]);
    within(reconcile::reconcile(Arc::new(nc), tb.ctx.clone()))
        .await
        .expect("reconcile");
    finished(server).await;
    let calls = tb.agents.take_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let filter = |call: &AgentCall| {
        let AgentCall::StartNetwork(r) = call else {
            panic!("{call:?}")
        };
        assert_eq!(r.tcs.len(), 1);
        assert_eq!(r.tcs[0].ipset, r.ipsets[0].name);
        (r.container_id.clone(), r.ipsets[0].cidrs.clone())
    };
    assert_eq!(
        filter(&calls[0].1),
        (
            "containerd://web-0".to_string(),
            vec!["10.1.0.9/32".to_string()]
        )
    );
    assert_eq!(
        filter(&calls[1].1),
        (
            "containerd://db-0".to_string(),
            vec!["10.1.0.7/32".to_string()]
        )
    );
}

/// Chaos Mesh resolves externalTargets' host names at every apply: a running experiment whose
/// host now resolves elsewhere gets its rules again with the new address.
#[tokio::test]
async fn external_host_names_are_resolved_again_while_running() {
    let tb = testbed();
    let spec = json!({
        "action": "partition", "mode": "all",
        "selector": {"labelSelectors": {"app": "web"}},
        "externalTargets": ["localhost"], "duration": "10m"
    });
    let status = json!({
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Valid"}],
        "experiment": {
            "desiredPhase": "Run", "startTime": T0, "deadline": "2026-11-24T12:10:00Z",
            "externalPeers": ["203.0.113.7/32"],
            "containerRecords": [{
                "id": "demo/web-0", "selectorKey": ".", "phase": "Injected", "state": "Injected",
                "injectedCount": 1, "namespace": "demo", "pod": "web-0", "podUid": "uid-web-0",
                "containerId": "containerd://web-0", "node": "node-a", "injectedAt": T0
            }]
        },
        "observedGeneration": 1
    });
    let nc: NetworkChaos = chaos("NetworkChaos", "ext", spec, json!({}));
    let mut value = serde_json::to_value(&nc).expect("json");
    value["status"] = status;
    let nc: NetworkChaos = serde_json::from_value(value.clone()).expect("with status");
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/networkchaos/ext";
    tb.agents.answer(Ok(AgentReply::default()));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/apis/chaos.faultline.dev/v1alpha1/networkchaos?",
            json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "NetworkChaosList", "metadata": {}, "items": []}),
        ),
        expect(Method::GET, "/api/v1/namespaces/demo/pods/web-0", pod("web-0", "web", "10.1.0.7")),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), value).body(|b| {
            assert_eq!(
                b["status"]["experiment"]["externalPeers"],
                json!(["127.0.0.1/32"])
            );
            assert_eq!(b["status"]["experiment"]["containerRecords"][0]["injectedCount"], 2);
        }),
    ]);
    within(reconcile::reconcile(Arc::new(nc), tb.ctx.clone()))
        .await
        .expect("reconcile");
    finished(server).await;
    let calls = tb.agents.take_calls();
    let AgentCall::StartNetwork(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.ipsets[0].cidrs, ["127.0.0.1/32"]);
    assert_eq!(request.chains[0].ipsets, [request.ipsets[0].name.clone()]);
}

/// Chaos Mesh's TimeChaos fields: timeOffset (Go duration), clockIds (default CLOCK_REALTIME),
/// containerNames, duration.
#[tokio::test]
async fn time_chaos_shifts_the_container_and_recovers_it_by_id() {
    let tb = testbed();
    let spec = json!({
        "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
        "timeOffset": "-5m", "clockIds": ["CLOCK_MONOTONIC", "CLOCK_REALTIME"],
        "containerNames": ["app"], "duration": "10s"
    });
    let tc: TimeChaos = chaos("TimeChaos", "clock", spec, json!({}));
    let path = "/apis/chaos.faultline.dev/v1alpha1/namespaces/demo/timechaos/clock";
    let answer = serde_json::to_value(&tc).expect("json");
    tb.agents.answer(Ok(AgentReply {
        ids: vec!["time-1".into()],
        ..Default::default()
    }));
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods?&labelSelector=app%3Dweb",
            list(vec![pod("web-0", "web", "10.1.0.7")]),
        ),
        event("Selected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Injected"),
        expect(Method::PATCH, format!("{path}/status?"), answer.clone()),
    ]);
    within(reconcile::reconcile(Arc::new(tc.clone()), tb.ctx.clone()))
        .await
        .expect("inject");
    let seen = finished(server).await;
    let calls = tb.agents.take_calls();
    let AgentCall::StartTime(request) = &calls[0].1 else {
        panic!("{calls:?}")
    };
    assert_eq!(request.container_id, "containerd://web-0");
    assert_eq!(request.offset, "-5m");
    assert_eq!(request.clock_ids, ["CLOCK_REALTIME", "CLOCK_MONOTONIC"]);
    assert_eq!(request.duration_ms, 10_000);

    // At the deadline it is recovered by id.
    let mut done = tc;
    done.status = Some(
        serde_json::from_value(seen.last().expect("status").1["status"].clone()).expect("status"),
    );
    tb.clock.set("2026-11-24T12:00:10Z");
    let server = tb.server.play(vec![
        expect(
            Method::GET,
            "/api/v1/namespaces/demo/pods/web-0",
            pod("web-0", "web", "10.1.0.7"),
        ),
        event("Recovered"),
        event("Finished"),
        expect(Method::PATCH, format!("{path}/status?"), answer),
    ]);
    within(reconcile::reconcile(Arc::new(done), tb.ctx.clone()))
        .await
        .expect("recover");
    finished(server).await;
    assert_eq!(
        tb.agents.take_calls(),
        vec![(
            "node-a".to_string(),
            AgentCall::Recover {
                id: "time-1".into()
            }
        )]
    );
}
