//! A Workflow end to end: a serial IOChaos (30 s) then NetworkChaos (20 s), run by the Workflow
//! reconciler with a fixed clock against a stateful mocked API server (the controller's
//! tests/support/store.rs) whose Pod is a real testbed pod and whose EndpointSlice points at a
//! real agent over mTLS; the chaos objects the workflow creates are reconciled by the chaos
//! reconciler as the controller does. The pod sees EIO on its volume, then (IO healthy again)
//! its round trips to a peer slowed by 100 ms, then neither.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use controller::agent::discovery::AgentService;
use controller::agent::pool::{AgentPool, PoolSettings};
use controller::agent::tls::ClientTls;
use controller::crd::{IOChaos, NetworkChaos, Workflow};
use controller::metrics::Metrics;
use controller::reconcile::{self, Chaos, Clock, Context, FINALIZER, Settings};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use testbed::{PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{AgentProcess, CONTROLLER, Pki, eventually, fault_mounts, runtime};
use crate::network::{Server, echo_rtt, ip};

#[allow(dead_code)]
#[path = "../../../controller/tests/support/store.rs"]
mod store;

use store::{Mutex, Store};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![(
        "controller::workflow_runs_iochaos_then_networkchaos_through_the_agent",
        workflow_through_the_agent,
    )]
}

const NODE: &str = "node-e2e";
const CHAOS: &str = "apis/chaos.faultline.dev/v1alpha1";

/// Appends a line to /data/journal every 20 ms and logs whether it worked to /out/log.
const WORKLOAD: &str = "i=0; while true; do i=$((i+1)); \
    if echo \"line $i\" 2>/out/err >> /data/journal; then w=ok; else w=\"FAIL $(cat /out/err)\"; fi; \
    echo \"$i write:$w\" >> /out/log; sleep 0.02; done";

struct FixedClock(Mutex<Timestamp>);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        *self.0.lock()
    }
}

fn client(store: Arc<Store>) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let store = store.clone();
        async move { Ok::<_, std::io::Error>(store.serve(request).await) }
    });
    kube::Client::new(service, "default")
}

fn workflow_through_the_agent(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-workflow"))?;
    std::fs::write(pki.dir.join("controller.crt"), &pki.controller.cert)?;
    std::fs::write(pki.dir.join("controller.key"), &pki.controller.key)?;
    let agent = AgentProcess::start(tb, &pki, "agent-workflow")?;

    let data = tb.host_dir("wf-data")?;
    let out = tb.host_dir("wf-out")?;
    let pod = tb.run_pod(
        PodSpec::new("wf-web")
            .shell(WORKLOAD)
            .volume(Volume::host_dir(&data, "/data"))
            .volume(Volume::host_dir(&out, "/out")),
    )?;
    let peer = tb.run_pod(PodSpec::new("wf-peer").shell("sleep 100000"))?;
    let peer_ip = ip(&peer)?;
    let _server = Server::start(&peer)?;
    let log = || -> Vec<String> {
        std::fs::read_to_string(out.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let writes_fail_since = |mark: usize| {
        log()
            .iter()
            .skip(mark)
            .any(|l| l.contains("write:FAIL") && l.contains("Input/output error"))
    };
    let writes_ok_again = || {
        let mark = log().len();
        eventually(Duration::from_secs(10), || {
            let log = log();
            log.len() >= mark + 3 && log[log.len() - 3..].iter().all(|l| l.ends_with("write:ok"))
        })
    };
    ensure!(writes_ok_again(), "the workload never ran");
    let base_rtt = echo_rtt(&pod, peer_ip)?;

    let ns = pod.namespace.clone();
    let clock = Arc::new(FixedClock(Mutex::new("2026-11-24T12:00:00Z".parse()?)));
    let stamp = clock.clone();
    let store = Arc::new(Store::new(Box::new(move || stamp.now().to_string())));
    store.put(
        "api/v1/pods",
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "uid": pod.uid, "labels": {"app": "wf-web"}},
            "spec": {"nodeName": NODE, "containers": [{"name": pod.container_name}]},
            "status": {"phase": "Running", "podIP": ip(&pod)?.to_string(),
                       "containerStatuses": [{"name": pod.container_name, "containerID": pod.container_uri(),
                                              "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}]}
        }),
    );
    store.put(
        "apis/discovery.k8s.io/v1/endpointslices",
        "faultline",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "faultline-agent-x",
                         "labels": {"kubernetes.io/service-name": "faultline-agent"}},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": agent.port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "nodeName": NODE, "conditions": {"ready": true}}]}),
    );
    let selector = json!({"labelSelectors": {"app": "wf-web"}});
    store.put(
        &format!("{CHAOS}/workflows"),
        &ns,
        json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "io-then-network", "finalizers": [FINALIZER]},
            "spec": {"entry": "steps", "templates": [
                {"name": "steps", "templateType": "Serial", "deadline": "5m",
                 "children": ["slow-disk", "slow-network"]},
                {"name": "slow-disk", "templateType": "IOChaos", "deadline": "30s", "ioChaos": {
                    "action": "fault", "mode": "all", "errno": 5, "percent": 100, "path": "/data/**",
                    "methods": ["write", "open", "create"], "selector": selector,
                    "containerNames": [pod.container_name], "volumePath": "/data"}},
                {"name": "slow-network", "templateType": "NetworkChaos", "deadline": "20s",
                 "networkChaos": {"action": "delay", "mode": "all", "direction": "to",
                    "selector": selector, "delay": {"latency": "100ms"}}}]}}),
    );

    let rt = runtime()?;
    let _entered = rt.enter();
    let client = client(store.clone());
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
    let mut ctx = Context::new(
        client,
        kube::runtime::events::Reporter {
            controller: CONTROLLER.into(),
            instance: Some("e2e".into()),
        },
        Arc::new(Metrics::new()),
        agents,
        Settings::default(),
    );
    ctx.clock = clock.clone();
    let ctx = Arc::new(ctx);
    let set_time = |t: &str| -> anyhow::Result<()> {
        *clock.0.lock() = t.parse()?;
        Ok(())
    };
    let workflow_pass = || -> anyhow::Result<()> {
        let wf: Workflow = serde_json::from_value(
            store
                .get("workflows", &ns, "io-then-network")
                .context("the workflow")?,
        )?;
        rt.block_on(controller::workflow::reconcile(Arc::new(wf), ctx.clone()))
            .context("the workflow reconcile")?;
        Ok(())
    };
    let node = |template: &str| -> Value {
        store
            .list("workflownodes", &ns)
            .into_iter()
            .find(|n| n["spec"]["templateName"] == template)
            .unwrap_or(Value::Null)
    };
    // The chaos reconciler on what the workflow created, as long as the object exists (its
    // first pass adds the finalizer, the next injects; after a delete it recovers).
    fn chaos_pass<K: Chaos>(
        rt: &tokio::runtime::Runtime,
        ctx: &Arc<Context>,
        store: &Store,
        plural: &str,
        ns: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let Some(object) = store.get(plural, ns, name) else {
            return Ok(None);
        };
        let chaos: K = serde_json::from_value(object)?;
        rt.block_on(reconcile::reconcile(Arc::new(chaos), ctx.clone()))
            .with_context(|| format!("reconciling {plural} {name}"))?;
        Ok(store.get(plural, ns, name))
    }

    // 12:00:00: the workflow starts; its IOChaos is injected through the agent.
    workflow_pass()?;
    let io_name = node("slow-disk")["status"]["chaosResource"]["name"]
        .as_str()
        .context("the IO node's chaos")?
        .to_owned();
    ensure!(
        store.list("networkchaos", &ns).is_empty(),
        "serial: nothing else yet"
    );
    let mark = log().len();
    chaos_pass::<IOChaos>(&rt, &ctx, &store, "iochaos", &ns, &io_name)?;
    let io = chaos_pass::<IOChaos>(&rt, &ctx, &store, "iochaos", &ns, &io_name)?
        .context("the IOChaos")?;
    let record = &io["status"]["experiment"]["containerRecords"][0];
    ensure!(record["state"] == "Injected", "the IO record: {record}");
    ensure!(
        eventually(Duration::from_secs(10), || writes_fail_since(mark)),
        "the workload never saw EIO: {:?}",
        log().iter().rev().take(5).collect::<Vec<_>>()
    );
    let rtt = echo_rtt(&pod, peer_ip)?;
    ensure!(
        rtt < base_rtt + Duration::from_millis(50),
        "no network fault yet: {base_rtt:?} -> {rtt:?}"
    );

    // 12:00:30: the IO deadline: recovered; the NetworkChaos starts.
    set_time("2026-11-24T12:00:30Z")?;
    workflow_pass()?;
    ensure!(
        node("slow-disk")["status"]["phase"] == "DeadlineExceeded",
        "{}",
        node("slow-disk")
    );
    let left = chaos_pass::<IOChaos>(&rt, &ctx, &store, "iochaos", &ns, &io_name)?;
    ensure!(
        left.is_none(),
        "the IOChaos is recovered and gone: {left:?}"
    );
    ensure!(writes_ok_again(), "IO did not recover");
    ensure!(
        fault_mounts(pod.pid).is_empty(),
        "mounts left: {:?}",
        fault_mounts(pod.pid)
    );
    let net_name = node("slow-network")["status"]["chaosResource"]["name"]
        .as_str()
        .context("the network node's chaos")?
        .to_owned();
    chaos_pass::<NetworkChaos>(&rt, &ctx, &store, "networkchaos", &ns, &net_name)?;
    let net = chaos_pass::<NetworkChaos>(&rt, &ctx, &store, "networkchaos", &ns, &net_name)?
        .context("the NetworkChaos")?;
    let record = &net["status"]["experiment"]["containerRecords"][0];
    ensure!(
        record["state"] == "Injected",
        "the network record: {record}"
    );
    let delayed = echo_rtt(&pod, peer_ip)?;
    println!("workflow: echo RTT {base_rtt:?} -> {delayed:?} with the NetworkChaos node running");
    ensure!(
        delayed >= base_rtt + Duration::from_millis(50),
        "the 100 ms delay is not seen: {base_rtt:?} -> {delayed:?}"
    );
    let mark = log().len();
    std::thread::sleep(Duration::from_millis(200));
    ensure!(
        !writes_fail_since(mark),
        "IO is healthy during the network step"
    );

    // 12:00:50: the network deadline: recovered; the workflow is accomplished.
    set_time("2026-11-24T12:00:50Z")?;
    workflow_pass()?;
    let left = chaos_pass::<NetworkChaos>(&rt, &ctx, &store, "networkchaos", &ns, &net_name)?;
    ensure!(
        left.is_none(),
        "the NetworkChaos is recovered and gone: {left:?}"
    );
    let after = echo_rtt(&pod, peer_ip)?;
    println!("workflow: echo RTT after the workflow {after:?}");
    ensure!(
        after < base_rtt + Duration::from_millis(50),
        "the delay stayed: {base_rtt:?} -> {after:?}"
    );
    let wf = store
        .get("workflows", &ns, "io-then-network")
        .context("the workflow")?;
    ensure!(
        wf["status"]["endTime"] == "2026-11-24T12:00:50Z",
        "the workflow: {}",
        wf["status"]
    );
    ensure!(
        node("steps")["status"]["phase"] == "Accomplished",
        "{}",
        node("steps")
    );
    // Nothing after: another pass starts nothing, the pod stays healthy.
    set_time("2026-11-24T12:05:00Z")?;
    workflow_pass()?;
    ensure!(
        store.list("iochaos", &ns).is_empty() && store.list("networkchaos", &ns).is_empty(),
        "nothing new"
    );
    ensure!(writes_ok_again(), "IO after the workflow");
    drop(agent);
    Ok(())
}
