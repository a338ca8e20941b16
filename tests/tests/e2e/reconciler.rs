//! The controller end to end: its reconciler, against a mocked Kubernetes API server whose Pod
//! points at a real testbed pod and whose EndpointSlice points at a real agent on loopback,
//! drives that agent over mTLS; the pod's workload sees the IO fault, and sees it go when the
//! IOChaos is deleted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use controller::agent::discovery::AgentService;
use controller::agent::pool::{AgentPool, PoolSettings};
use controller::agent::tls::ClientTls;
use controller::crd::IOChaos;
use controller::metrics::Metrics;
use controller::reconcile::{self, Context, FINALIZER, Settings};
use poison_free::Mutex;
use serde_json::{Value, json};
use testbed::{PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{AgentProcess, CONTROLLER, Pki, eventually, fault_mounts, runtime};

mod poison_free {
    /// std's Mutex, poisoning ignored (a panicking story fails anyway).
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(std::sync::Mutex::new(value))
        }
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![(
        "controller::iochaos_is_injected_through_the_agent_and_recovered_on_deletion",
        iochaos_through_the_agent,
    )]
}

const NODE: &str = "node-e2e";
const CHAOS_NAME: &str = "io-e2e";

/// Appends a line to /data/journal every 20 ms and logs whether it worked to /out/log.
const WORKLOAD: &str = "i=0; while true; do i=$((i+1)); \
    if echo \"line $i\" 2>/out/err >> /data/journal; then w=ok; else w=\"FAIL $(cat /out/err)\"; fi; \
    echo \"$i write:$w\" >> /out/log; sleep 0.02; done";

/// What the mocked API server holds and saw.
struct ApiState {
    pod: Value,
    slices: Value,
    chaos: Value,
    requests: Vec<String>,
}

fn answer(state: &mut ApiState, method: &http::Method, path: &str, body: &Value) -> (u16, Value) {
    let chaos_path = format!(
        "/apis/chaos.faultline.dev/v1alpha1/namespaces/{}/iochaos/{CHAOS_NAME}",
        state.chaos["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
    );
    let pod_name = state.pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match (method.as_str(), path) {
        ("GET", p) if p.ends_with("/pods") => (
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [state.pod]}),
        ),
        ("GET", p) if p.ends_with(&format!("/pods/{pod_name}")) => (200, state.pod.clone()),
        ("GET", "/apis/discovery.k8s.io/v1/namespaces/faultline/endpointslices") => {
            (200, state.slices.clone())
        }
        ("POST", p) if p.ends_with("/events") => (201, body.clone()),
        ("PATCH", p) if p == format!("{chaos_path}/status") => {
            state.chaos["status"] = body["status"].clone();
            (200, state.chaos.clone())
        }
        ("PATCH", p) if p == chaos_path => (200, state.chaos.clone()),
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": format!("the mock has no {method} {path}")}),
        ),
    }
}

fn mock_client(state: Arc<Mutex<ApiState>>) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let state = state.clone();
        async move {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, reply) = {
                let mut state = state.lock();
                state.requests.push(format!("{method} {path}"));
                answer(&mut state, &method, &path, &body)
            };
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(
                    serde_json::to_vec(&reply).unwrap_or_default(),
                ))
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(response)
        }
    });
    kube::Client::new(service, "default")
}

fn iochaos_through_the_agent(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-controller"))?;
    std::fs::write(pki.dir.join("controller.crt"), &pki.controller.cert)?;
    std::fs::write(pki.dir.join("controller.key"), &pki.controller.key)?;
    let agent = AgentProcess::start(tb, &pki, "agent-controller")?;

    let data = tb.host_dir("ctl-data")?;
    let out = tb.host_dir("ctl-out")?;
    let pod = tb.run_pod(
        PodSpec::new("ctl-io")
            .shell(WORKLOAD)
            .volume(Volume::host_dir(&data, "/data"))
            .volume(Volume::host_dir(&out, "/out")),
    )?;
    let log = || -> Vec<String> {
        std::fs::read_to_string(out.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    ensure!(
        eventually(Duration::from_secs(10), || log()
            .iter()
            .any(|l| l.ends_with("write:ok"))),
        "the workload never ran"
    );

    let namespace = pod.namespace.clone();
    let state = Arc::new(Mutex::new(ApiState {
        pod: json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": namespace, "uid": pod.uid, "labels": {"app": "ctl-io"}},
            "spec": {"nodeName": NODE, "containers": [{"name": pod.container_name}]},
            "status": {"phase": "Running",
                       "containerStatuses": [{"name": pod.container_name, "containerID": pod.container_uri(),
                                              "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}]}
        }),
        slices: json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": [{
            "metadata": {"name": "faultline-agent-x", "namespace": "faultline"},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": agent.port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "nodeName": NODE, "conditions": {"ready": true}}]
        }]}),
        chaos: json!({
            "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "IOChaos",
            "metadata": {"name": CHAOS_NAME, "namespace": namespace, "uid": "chaos-uid", "generation": 1,
                         "finalizers": [FINALIZER]},
            "spec": {"action": "fault", "mode": "all", "errno": 5, "percent": 100, "path": "/data/**",
                     "methods": ["write", "open", "create"],
                     "selector": {"labelSelectors": {"app": "ctl-io"}},
                     "containerNames": [pod.container_name], "volumePath": "/data"}
        }),
        requests: Vec::new(),
    }));
    // The client's buffer task needs the runtime.
    let rt = runtime()?;
    let _entered = rt.enter();
    let client = mock_client(state.clone());
    let tls = ClientTls::from_files(
        &pki.dir.join("ca.pem"),
        &pki.dir.join("controller.crt"),
        &pki.dir.join("controller.key"),
        crate::agent_support::AGENT_NAME,
    )?;
    let agents = Arc::new(AgentPool::new(
        client.clone(),
        AgentService::default(),
        tls,
        PoolSettings::default(),
        None,
    ));
    let ctx = Arc::new(Context::new(
        client,
        kube::runtime::events::Reporter {
            controller: CONTROLLER.into(),
            instance: Some("e2e".into()),
        },
        Arc::new(Metrics::new()),
        agents,
        Settings::default(),
    ));
    let chaos = |state: &Arc<Mutex<ApiState>>| -> anyhow::Result<IOChaos> {
        Ok(serde_json::from_value(state.lock().chaos.clone())?)
    };

    // First reconcile: selected, recorded, injected through the agent.
    let mark = log().len();
    rt.block_on(reconcile::reconcile(Arc::new(chaos(&state)?), ctx.clone()))
        .context("the reconcile")?;
    let record = state.lock().chaos["status"]["experiment"]["containerRecords"][0].clone();
    ensure!(record["state"] == "Injected", "the record: {record}");
    ensure!(record["node"] == NODE, "the record: {record}");
    let failed = eventually(Duration::from_secs(10), || {
        log()
            .iter()
            .skip(mark)
            .any(|l| l.contains("write:FAIL") && l.contains("Input/output error"))
    });
    ensure!(
        failed,
        "the workload never saw EIO: {:?}",
        log().iter().rev().take(5).collect::<Vec<_>>()
    );
    ensure!(
        fault_mounts(pod.pid).len() == 1,
        "mounts: {:?}",
        fault_mounts(pod.pid)
    );

    // Deleted: every target recovered through the agent, then the finalizer goes.
    {
        let mut state = state.lock();
        state.chaos["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    rt.block_on(reconcile::reconcile(Arc::new(chaos(&state)?), ctx.clone()))
        .context("the cleanup")?;
    let record = state.lock().chaos["status"]["experiment"]["containerRecords"][0].clone();
    ensure!(record["state"] == "Recovered", "the record: {record}");
    let mark = log().len();
    let healthy = eventually(Duration::from_secs(10), || {
        let log = log();
        log.len() >= mark + 3 && log[log.len() - 3..].iter().all(|l| l.ends_with("write:ok"))
    });
    ensure!(
        healthy,
        "the workload did not recover: {:?}",
        log().iter().rev().take(5).collect::<Vec<_>>()
    );
    ensure!(
        fault_mounts(pod.pid).is_empty(),
        "mounts left: {:?}",
        fault_mounts(pod.pid)
    );

    let requests = state.lock().requests.clone();
    let chaos_path =
        format!("/apis/chaos.faultline.dev/v1alpha1/namespaces/{namespace}/iochaos/{CHAOS_NAME}");
    let events = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events");
    let pod_path = format!("/api/v1/namespaces/{namespace}/pods/{}", pod.name);
    let expected = vec![
        format!("GET /api/v1/namespaces/{namespace}/pods"),
        format!("POST {events}"),
        format!("PATCH {chaos_path}/status"),
        format!("GET {pod_path}"),
        "GET /apis/discovery.k8s.io/v1/namespaces/faultline/endpointslices".to_string(),
        format!("POST {events}"),
        format!("PATCH {chaos_path}/status"),
        format!("GET {pod_path}"),
        format!("POST {events}"),
        format!("PATCH {chaos_path}/status"),
        format!("PATCH {chaos_path}"),
    ];
    ensure!(
        requests == expected,
        "the API requests:\n{requests:#?}\nexpected:\n{expected:#?}"
    );
    drop(agent);
    Ok(())
}
