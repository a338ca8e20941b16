//! Leader election against a mocked API server (create, renew, wait for a live holder, take over
//! an expired one) and the HTTP endpoints.

mod support;

use std::sync::Arc;
use std::time::Duration;

use controller::leader::{LeaderElector, LeaseSettings};
use controller::metrics::Metrics;
use http::Method;
use serde_json::{Value, json};
use support::*;
use tower::ServiceExt;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/faultline/leases/faultline-controller";

fn settings() -> LeaseSettings {
    LeaseSettings {
        namespace: "faultline".into(),
        name: "faultline-controller".into(),
        identity: "replica-a".into(),
        lease_duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    }
}

fn lease(holder: &str, renewed: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "faultline-controller", "namespace": "faultline", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "leaseTransitions": 2}
    })
}

fn lease_client(tb: &TestBed) -> kube::Client {
    tb.ctx.client.clone()
}

#[tokio::test]
async fn a_missing_lease_is_created_and_ours_is_renewed() {
    let tb = testbed();
    let elector = LeaderElector::new(lease_client(&tb), settings());
    let server = tb.server.play(vec![
        not_found(Method::GET, LEASE),
        expect(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/faultline/leases?",
            Value::Null,
        )
        .body(|b| {
            assert_eq!(b["spec"]["holderIdentity"], "replica-a");
            assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
        }),
        expect(
            Method::GET,
            LEASE,
            lease("replica-a", "2020-01-01T00:00:00.000000Z"),
        ),
        expect(Method::PUT, format!("{LEASE}?"), Value::Null).body(|b| {
            // Renewed under the resourceVersion read: a concurrent writer gets a conflict.
            assert_eq!(b["metadata"]["resourceVersion"], "7");
            assert_eq!(b["spec"]["leaseTransitions"], 2);
        }),
    ]);
    assert_eq!(within(elector.try_hold()).await.expect("create"), Ok(()));
    assert_eq!(within(elector.try_hold()).await.expect("renew"), Ok(()));
    finished(server).await;
}

#[tokio::test]
async fn a_live_holder_is_waited_for_and_an_expired_one_taken_over() {
    let tb = testbed();
    let elector = LeaderElector::new(lease_client(&tb), settings());
    let now = k8s_openapi::jiff::Timestamp::now();
    let live = lease("replica-b", &now.to_string());
    let server = tb.server.play(vec![
        expect(Method::GET, LEASE, live),
        expect(
            Method::GET,
            LEASE,
            lease("replica-b", "2020-01-01T00:00:00.000000Z"),
        ),
        expect(Method::PUT, format!("{LEASE}?"), Value::Null).body(|b| {
            assert_eq!(b["spec"]["holderIdentity"], "replica-a");
            assert_eq!(b["spec"]["leaseTransitions"], 3);
        }),
    ]);
    let waited = within(elector.try_hold()).await.expect("read");
    assert!(
        matches!(waited, Err(d) if d > Duration::from_secs(10)),
        "{waited:?}"
    );
    assert_eq!(within(elector.try_hold()).await.expect("take over"), Ok(()));
    finished(server).await;
}

#[tokio::test]
async fn metrics_and_healthz_are_served() {
    let metrics = Arc::new(Metrics::new());
    metrics.reconciled("IOChaos");
    metrics.agent_call("StartIoExperiment", "ok", Duration::from_millis(12));
    let app = controller::http::router(metrics);
    let response = app
        .clone()
        .oneshot(
            http::Request::get("/healthz")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);
    let response = app
        .oneshot(
            http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(r#"faultline_controller_reconciles_total{kind="IOChaos"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"faultline_controller_agent_call_duration_seconds_count{method="StartIoExperiment",outcome="ok"} 1"#),
        "{text}"
    );
}
