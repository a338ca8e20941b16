//! The Workflow and StatusCheck reconcilers against a stateful mocked API (support/store.rs)
//! with a fixed clock: serial → parallel → suspend → deadline expiry, a parent's deadline
//! stopping its children, a Task's branch, and a StatusCheck against a real HTTP server in the
//! test failing its threshold and aborting the workflow, its running experiment recovered.
//! Each pass is one reconcile; the assertions read the WorkflowNodes and the objects they made.

mod support;

use std::sync::Arc;
use std::time::Duration;

use controller::crd::{NetworkChaos, StatusCheck, Workflow};
use controller::reconcile::FINALIZER;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::*;

const CHAOS: &str = "apis/chaos.faultline.dev/v1alpha1";

fn put_workflow(bed: &StoreBed, spec: Value) {
    bed.store.put(
        &format!("{CHAOS}/workflows"),
        "demo",
        json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "Workflow",
               "metadata": {"name": "wf", "finalizers": [FINALIZER]}, "spec": spec}),
    );
}

/// One reconcile of the stored Workflow.
async fn pass(bed: &StoreBed) -> Action {
    let wf: Workflow = serde_json::from_value(
        bed.store
            .get("workflows", "demo", "wf")
            .expect("the workflow"),
    )
    .expect("a Workflow");
    within(controller::workflow::reconcile(
        Arc::new(wf),
        bed.ctx.clone(),
    ))
    .await
    .expect("reconcile")
}

/// The node of a template (there is one per template in these scenarios).
fn node(bed: &StoreBed, template: &str) -> Option<Value> {
    bed.store
        .list("workflownodes", "demo")
        .into_iter()
        .find(|n| n["spec"]["templateName"] == template)
}

fn phase(bed: &StoreBed, template: &str) -> String {
    node(bed, template)
        .map(|n| n["status"]["phase"].as_str().unwrap_or("none").to_owned())
        .unwrap_or_else(|| "absent".into())
}

fn condition(n: &Value, type_: &str) -> (String, String) {
    let c = n["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or("").to_owned(),
        c["reason"].as_str().unwrap_or("").to_owned(),
    )
}

fn chaos_of(bed: &StoreBed, template: &str) -> String {
    node(bed, template).expect("the node")["status"]["chaosResource"]["name"]
        .as_str()
        .expect("a chaos resource")
        .to_owned()
}

fn io() -> Value {
    json!({"action": "latency", "delay": "100ms", "volumePath": "/data", "mode": "all",
           "selector": {"labelSelectors": {"app": "web"}}})
}

fn net() -> Value {
    json!({"action": "delay", "delay": {"latency": "50ms"}, "mode": "all",
           "selector": {"labelSelectors": {"app": "web"}}})
}

#[tokio::test]
async fn serial_then_parallel_then_suspend_until_every_deadline_passes() {
    let bed = store_testbed();
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": [
            {"name": "entry", "templateType": "Serial", "deadline": "5m", "children": ["io", "both", "rest"]},
            {"name": "io", "templateType": "IOChaos", "deadline": "30s", "ioChaos": io()},
            {"name": "both", "templateType": "Parallel", "children": ["net", "pause"]},
            {"name": "net", "templateType": "NetworkChaos", "deadline": "20s", "networkChaos": net()},
            {"name": "pause", "templateType": "Suspend", "deadline": "10s"},
            {"name": "rest", "templateType": "Suspend", "deadline": "10s"}]}),
    );
    // 12:00:00: the entry node, its first child, and that child's IOChaos; back at its deadline.
    let action = pass(&bed).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let entry = node(&bed, "entry").expect("the entry node");
    assert_eq!(entry["spec"]["type"], "Serial");
    assert_eq!(
        entry["metadata"]["labels"]["chaos-mesh.org/controlled-by"],
        "wf"
    );
    assert_eq!(entry["metadata"]["ownerReferences"][0]["kind"], "Workflow");
    assert_eq!(entry["spec"]["deadline"], "2026-11-24T12:05:00Z");
    let io_node = node(&bed, "io").expect("the io node");
    assert_eq!(
        io_node["metadata"]["ownerReferences"][0]["name"],
        entry["metadata"]["name"]
    );
    assert_eq!(phase(&bed, "io"), "Running");
    assert_eq!(
        condition(&io_node, "ChaosInjected"),
        ("True".into(), "ChaosCRCreated".into())
    );
    let io_chaos = bed
        .store
        .get("iochaos", "demo", &chaos_of(&bed, "io"))
        .expect("the IOChaos");
    assert_eq!(io_chaos["spec"]["delay"], "100ms");
    assert_eq!(
        io_chaos["metadata"]["labels"]["chaos-mesh.org/workflow"],
        "wf"
    );
    assert_eq!(
        io_chaos["metadata"]["ownerReferences"][0]["kind"],
        "WorkflowNode"
    );
    assert!(node(&bed, "both").is_none(), "serial: the next child waits");
    let wf = bed.store.get("workflows", "demo", "wf").expect("wf");
    assert_eq!(wf["status"]["entryNode"], entry["metadata"]["name"]);
    assert_eq!(wf["status"]["startTime"], "2026-11-24T12:00:00Z");

    // 12:00:30: the IOChaos is deleted (recovered), the parallel starts both children.
    bed.clock.set("2026-11-24T12:00:30Z");
    let action = pass(&bed).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(phase(&bed, "io"), "DeadlineExceeded");
    assert!(bed.store.list("iochaos", "demo").is_empty());
    let io_node = node(&bed, "io").expect("io");
    assert_eq!(
        condition(&io_node, "ChaosInjected"),
        ("False".into(), "ChaosCRDeleted".into())
    );
    assert_eq!(io_node["status"]["finishTime"], "2026-11-24T12:00:30Z");
    assert_eq!(phase(&bed, "net"), "Running");
    assert_eq!(phase(&bed, "pause"), "Running");
    assert_eq!(bed.store.list("networkchaos", "demo").len(), 1);

    // 12:00:40: the pause is over, the parallel still waits for the NetworkChaos.
    bed.clock.set("2026-11-24T12:00:40Z");
    pass(&bed).await;
    assert_eq!(phase(&bed, "pause"), "DeadlineExceeded");
    assert_eq!(phase(&bed, "both"), "Running");
    assert!(node(&bed, "rest").is_none());

    // 12:00:50: the NetworkChaos goes, the parallel is done, the last suspend starts.
    bed.clock.set("2026-11-24T12:00:50Z");
    pass(&bed).await;
    assert!(bed.store.list("networkchaos", "demo").is_empty());
    assert_eq!(phase(&bed, "both"), "Accomplished");
    assert_eq!(phase(&bed, "rest"), "Running");
    let entry = node(&bed, "entry").expect("entry");
    assert_eq!(
        entry["status"]["finishedChildren"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        entry["status"]["activeChildren"].as_array().map(Vec::len),
        Some(1)
    );

    // 12:01:00: everything has run: the workflow is accomplished.
    bed.clock.set("2026-11-24T12:01:00Z");
    let action = pass(&bed).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(phase(&bed, "entry"), "Accomplished");
    let wf = bed.store.get("workflows", "demo", "wf").expect("wf");
    assert_eq!(wf["status"]["endTime"], "2026-11-24T12:01:00Z");
    let accomplished = wf["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accomplished").cloned())
        .expect("Accomplished");
    assert_eq!(accomplished["status"], "True");
    assert_eq!(bed.store.list("workflownodes", "demo").len(), 6);
}

#[tokio::test]
async fn a_parent_s_deadline_stops_its_running_children() {
    let bed = store_testbed();
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": [
            {"name": "entry", "templateType": "Serial", "deadline": "45s", "children": ["net", "never"]},
            {"name": "net", "templateType": "NetworkChaos", "networkChaos": net()},
            {"name": "never", "templateType": "Suspend", "deadline": "10s"}]}),
    );
    pass(&bed).await;
    assert_eq!(bed.store.list("networkchaos", "demo").len(), 1);
    bed.clock.set("2026-11-24T12:00:45Z");
    pass(&bed).await;
    assert_eq!(phase(&bed, "entry"), "DeadlineExceeded");
    let net_node = node(&bed, "net").expect("net");
    assert_eq!(
        condition(&net_node, "DeadlineExceed"),
        ("True".into(), "ParentNodeDeadlineExceed".into())
    );
    assert!(bed.store.list("networkchaos", "demo").is_empty());
    assert!(
        node(&bed, "never").is_none(),
        "nothing starts after the deadline"
    );
}

#[tokio::test]
async fn a_task_s_result_chooses_its_branch() {
    let bed = store_testbed();
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": [
            {"name": "entry", "templateType": "Task",
             "task": {"container": {"name": "main", "image": "busybox", "command": ["echo", "branch-b"]}},
             "conditionalBranches": [
                {"target": "a", "expression": "exitCode == 0 && stdout == \"branch-a\""},
                {"target": "b", "expression": "exitCode == 0 && stdout == \"branch-b\""},
                {"target": "failed", "expression": "exitCode != 0"},
                {"target": "a", "expression": ""}]},
            {"name": "a", "templateType": "Suspend", "deadline": "10s"},
            {"name": "b", "templateType": "NetworkChaos", "deadline": "10s", "networkChaos": net()},
            {"name": "failed", "templateType": "Suspend", "deadline": "10s"}]}),
    );
    pass(&bed).await;
    let pod_name = chaos_of(&bed, "entry");
    let pod = bed
        .store
        .get("pods", "demo", &pod_name)
        .expect("the task pod");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox");
    assert_eq!(pod["metadata"]["labels"]["chaos-mesh.org/workflow"], "wf");

    // Running: nothing chosen yet.
    pass(&bed).await;
    assert!(node(&bed, "b").is_none());

    // The pod ends with exit code 0 and prints branch-b.
    bed.store.update(
        "pods",
        "demo",
        &pod_name,
        json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "main", "ready": false,
            "restartCount": 0, "image": "busybox", "imageID": "",
            "state": {"terminated": {"exitCode": 0}}}]}}),
    );
    bed.store.logs.lock().insert(pod_name, "branch-b\n".into());
    bed.clock.set("2026-11-24T12:00:05Z");
    pass(&bed).await;
    let entry = node(&bed, "entry").expect("entry");
    let results: Vec<(String, String)> = entry["status"]["conditionalBranchesStatus"]["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            (
                b["target"].as_str().unwrap_or("").to_owned(),
                b["evaluationResult"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    // An empty expression cannot be evaluated: Unknown, as in Chaos Mesh.
    assert_eq!(
        results,
        [
            ("a".to_owned(), "False".to_owned()),
            ("b".to_owned(), "True".to_owned()),
            ("failed".to_owned(), "False".to_owned()),
            ("a".to_owned(), "Unknown".to_owned())
        ]
    );
    assert_eq!(phase(&bed, "b"), "Running");
    assert_eq!(bed.store.list("networkchaos", "demo").len(), 1);
    assert!(node(&bed, "a").is_none() && node(&bed, "failed").is_none());

    bed.clock.set("2026-11-24T12:00:15Z");
    pass(&bed).await;
    assert_eq!(phase(&bed, "b"), "DeadlineExceeded");
    assert_eq!(phase(&bed, "entry"), "Accomplished");
}

/// An HTTP server answering every request with `code`; returns its URL and what it was sent.
async fn http_server(code: u16) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                // The head, then as many body bytes as content-length says.
                let mut text = String::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        if n == 0 {
                            break;
                        }
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0usize);
                    if n == 0 || body.len() >= length {
                        break;
                    }
                }
                log.lock().expect("lock").push(text);
                let reply =
                    format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/healthz"), seen)
}

async fn check_pass(bed: &StoreBed, name: &str) -> Action {
    let sc: StatusCheck = serde_json::from_value(
        bed.store
            .get("statuschecks", "demo", name)
            .expect("the check"),
    )
    .expect("a StatusCheck");
    within(controller::status_check::reconcile(
        Arc::new(sc),
        bed.ctx.clone(),
    ))
    .await
    .expect("reconcile")
}

#[tokio::test]
async fn a_failing_status_check_aborts_the_workflow_and_its_experiment_is_recovered() {
    let bed = store_testbed();
    let (url, _) = http_server(503).await;
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": [
            {"name": "entry", "templateType": "Parallel", "children": ["check", "net", "later"]},
            {"name": "check", "templateType": "StatusCheck", "deadline": "5m", "abortWithStatusCheck": true,
             "statusCheck": {"mode": "Continuous", "intervalSeconds": 5, "failureThreshold": 2,
                 "http": {"url": url, "criteria": {"statusCode": "200-299"}}}},
            {"name": "net", "templateType": "NetworkChaos", "deadline": "5m", "networkChaos": net()},
            {"name": "later", "templateType": "Serial", "children": ["pause", "net2"]},
            {"name": "pause", "templateType": "Suspend", "deadline": "4m"},
            {"name": "net2", "templateType": "NetworkChaos", "deadline": "1m", "networkChaos": net()}]}),
    );
    pass(&bed).await;
    let check = chaos_of(&bed, "check");
    let network = chaos_of(&bed, "net");
    assert!(bed.store.get("statuschecks", "demo", &check).is_some());

    bed.store.put(
        "api/v1/pods",
        "demo",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-0", "uid": "uid-web-0", "labels": {"app": "web"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "web"}]},
               "status": {"phase": "Running", "containerStatuses": [{"name": "web", "ready": true,
                   "restartCount": 0, "image": "web", "imageID": "", "containerID": "containerd://abc"}]}}),
    );
    // The NetworkChaos's own reconciler has injected it (its finalizer and record, as the
    // reconcile scenarios show): deleting it now waits for its recovery.
    bed.store.update(
        "networkchaos",
        "demo",
        &network,
        json!({"metadata": {"finalizers": [FINALIZER]},
               "status": {"experiment": {"desiredPhase": "Run", "containerRecords": [{
                   "id": "demo/web-0", "namespace": "demo", "pod": "web-0", "podUid": "uid-web-0",
                   "node": "node-1", "containerId": "containerd://abc", "selectorKey": ".",
                   "phase": "Injected", "state": "Injected", "experimentIds": ["exp-1"]}]}}}),
    );

    // The check: first request after one interval; two failures in a row complete it.
    let action = check_pass(&bed, &check).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    bed.clock.set("2026-11-24T12:00:05Z");
    check_pass(&bed, &check).await;
    let sc = bed
        .store
        .get("statuschecks", "demo", &check)
        .expect("check");
    assert_eq!(sc["status"]["count"], 1);
    assert_eq!(sc["status"]["records"][0]["outcome"], "Failure");
    assert!(
        sc["status"]["records"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "{sc}"
    );
    pass(&bed).await;
    assert_eq!(phase(&bed, "check"), "Running");
    bed.clock.set("2026-11-24T12:00:10Z");
    let action = check_pass(&bed, &check).await;
    assert_eq!(action, Action::await_change());
    let sc = bed
        .store
        .get("statuschecks", "demo", &check)
        .expect("check");
    assert_eq!(sc["status"]["completionTime"], "2026-11-24T12:00:10Z");

    // The workflow is aborted: every running node stops, the experiment is deleted.
    pass(&bed).await;
    let wf = bed.store.get("workflows", "demo", "wf").expect("wf");
    assert_eq!(
        wf["metadata"]["annotations"]["workflow.chaos-mesh.org/abort"],
        "true"
    );
    let check_node = node(&bed, "check").expect("check node");
    assert_eq!(
        condition(&check_node, "Aborted"),
        ("True".into(), "StatusCheckNotExceedSuccessThreshold".into())
    );
    assert_eq!(
        condition(&node(&bed, "entry").expect("entry"), "Aborted"),
        ("True".into(), "WorkflowAborted".into())
    );
    assert_eq!(
        condition(&node(&bed, "net").expect("net"), "Aborted"),
        ("True".into(), "ParentNodeAborted".into())
    );
    assert_eq!(phase(&bed, "pause"), "Aborted");
    assert!(
        node(&bed, "net2").is_none(),
        "nothing starts after the abort"
    );
    let held = bed
        .store
        .get("networkchaos", "demo", &network)
        .expect("held by its finalizer");
    assert!(!held["metadata"]["deletionTimestamp"].is_null());

    // Its reconciler recovers it through the agent, then it is gone.
    let chaos: NetworkChaos = serde_json::from_value(held).expect("NetworkChaos");
    within(controller::reconcile::reconcile(
        Arc::new(chaos),
        bed.ctx.clone(),
    ))
    .await
    .expect("recovered");
    let calls = bed.agents.take_calls();
    assert!(!calls.is_empty(), "the agent was asked to recover");
    assert!(calls.iter().all(|(node, _)| node == "node-1"));
    assert!(bed.store.get("networkchaos", "demo", &network).is_none());
    let wf = bed.store.get("workflows", "demo", "wf").expect("wf");
    assert!(wf["status"]["endTime"].is_string(), "{wf}");
}

#[tokio::test]
async fn deleting_a_workflow_waits_for_what_it_started() {
    let bed = store_testbed();
    put_workflow(
        &bed,
        json!({"entry": "net", "templates": [
            {"name": "net", "templateType": "NetworkChaos", "deadline": "5m", "networkChaos": net()}]}),
    );
    pass(&bed).await;
    let network = chaos_of(&bed, "net");
    bed.store.update(
        "networkchaos",
        "demo",
        &network,
        json!({"metadata": {"finalizers": [FINALIZER]}}),
    );
    bed.store.update(
        "workflows",
        "demo",
        "wf",
        json!({"metadata": {"deletionTimestamp": "2026-11-24T12:00:10Z"}}),
    );
    // The experiment is still being recovered: the workflow keeps its finalizer.
    let wf: Workflow =
        serde_json::from_value(bed.store.get("workflows", "demo", "wf").expect("wf")).expect("wf");
    let result = within(controller::workflow::reconcile(
        Arc::new(wf),
        bed.ctx.clone(),
    ))
    .await;
    assert!(result.is_err(), "waits for the experiment");
    assert!(bed.store.get("workflows", "demo", "wf").is_some());
    // Recovered (its finalizer gone): the workflow goes.
    bed.store.update(
        "networkchaos",
        "demo",
        &network,
        json!({"metadata": {"finalizers": []}}),
    );
    let gone = bed.store.get("networkchaos", "demo", &network);
    assert!(gone.is_some());
    // (the store removes an object whose last finalizer a patch removes; here the test edited
    // it directly, so the delete is repeated by the next pass)
    pass(&bed).await;
    assert!(bed.store.get("networkchaos", "demo", &network).is_none());
    assert!(bed.store.get("workflows", "demo", "wf").is_none());
}

#[tokio::test]
async fn a_passing_synchronous_check_lets_the_serial_go_on() {
    let bed = store_testbed();
    let (url, seen) = http_server(200).await;
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": [
            {"name": "entry", "templateType": "Serial", "children": ["check", "then"]},
            {"name": "check", "templateType": "StatusCheck", "abortWithStatusCheck": true,
             "statusCheck": {"intervalSeconds": 1, "http": {"url": url, "method": "POST",
                 "headers": {"X-Probe": ["workflow"]}, "body": "{}",
                 "criteria": {"statusCode": "200"}}}},
            {"name": "then", "templateType": "Schedule", "deadline": "1h", "schedule": {
                "schedule": "@every 5m", "type": "PodChaos", "historyLimit": 2,
                "podChaos": {"action": "pod-kill", "mode": "one",
                             "selector": {"labelSelectors": {"app": "web"}}}}}]}),
    );
    pass(&bed).await;
    let check = chaos_of(&bed, "check");
    // Started now; the first request one interval later.
    assert_eq!(
        check_pass(&bed, &check).await,
        Action::requeue(Duration::from_secs(1))
    );
    bed.clock.set("2026-11-24T12:00:01Z");
    // Chaos Mesh's default successThreshold 1 in Synchronous mode: one success completes it.
    assert_eq!(check_pass(&bed, &check).await, Action::await_change());
    let sc = bed
        .store
        .get("statuschecks", "demo", &check)
        .expect("check");
    assert_eq!(sc["status"]["records"][0]["outcome"], "Success", "{sc}");
    let request = seen.lock().expect("lock")[0].to_lowercase();
    assert!(request.starts_with("post /healthz http/1.1"), "{request}");
    assert!(
        request.contains("x-probe: workflow") && request.ends_with("{}"),
        "{request}"
    );
    pass(&bed).await;
    let check_node = node(&bed, "check").expect("check node");
    assert_eq!(
        condition(&check_node, "Accomplished"),
        ("True".into(), "StatusCheckCompleted".into())
    );
    let wf = bed.store.get("workflows", "demo", "wf").expect("wf");
    assert!(wf["metadata"]["annotations"].is_null(), "not aborted: {wf}");
    // The Schedule template: a Schedule object with the template's schedule spec.
    let schedule = bed
        .store
        .get("schedules", "demo", &chaos_of(&bed, "then"))
        .expect("the Schedule");
    assert_eq!(schedule["spec"]["schedule"], "@every 5m");
    assert_eq!(schedule["spec"]["podChaos"]["action"], "pod-kill");
    // At its deadline the Schedule goes (its finalizer deletes its runs).
    bed.clock.set("2026-11-24T13:00:01Z");
    pass(&bed).await;
    assert!(bed.store.list("schedules", "demo").is_empty());
    assert_eq!(phase(&bed, "entry"), "Accomplished");
}

#[tokio::test]
async fn an_invalid_workflow_runs_nothing_and_says_why() {
    let bed = store_testbed();
    put_workflow(
        &bed,
        json!({"entry": "missing", "templates": [
            {"name": "wait", "templateType": "Suspend"}]}),
    );
    assert_eq!(pass(&bed).await, Action::await_change());
    assert!(bed.store.list("workflownodes", "demo").is_empty());
    let wf = bed.store.get("workflows", "demo", "wf").expect("wf");
    let accepted = &wf["status"]["conditions"][0];
    assert_eq!(accepted["type"], "Accepted");
    assert_eq!(accepted["status"], "False");
    let message = accepted["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.entry") && message.contains("spec.templates[0].deadline"),
        "{message}"
    );
    assert_eq!(bed.store.events.lock().len(), 1, "one InvalidSpec event");
}

#[tokio::test]
async fn an_object_made_before_its_node_s_status_was_written_is_adopted() {
    let bed = store_testbed();
    put_workflow(
        &bed,
        json!({"entry": "net", "templates": [
            {"name": "net", "templateType": "NetworkChaos", "deadline": "5m", "networkChaos": net()}]}),
    );
    pass(&bed).await;
    let network = chaos_of(&bed, "net");
    // As if the pass had stopped between creating the NetworkChaos and writing the node.
    let node_name = node(&bed, "net").expect("net")["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    bed.store
        .update("workflownodes", "demo", &node_name, json!({"status": null}));
    pass(&bed).await;
    assert_eq!(
        bed.store.list("networkchaos", "demo").len(),
        1,
        "not made twice"
    );
    assert_eq!(chaos_of(&bed, "net"), network);
}

// A changed spec under a running Serial, Parallel or Task node (Chaos Mesh's
// RerunBySpecChanged): the node takes its template's new children or branches, the children no
// longer wanted are cleaned up (their experiments deleted, so recovered) and the node reruns.

/// The notes of the events of that reason, in order.
fn notes(bed: &StoreBed, reason: &str) -> Vec<String> {
    bed.store
        .events
        .lock()
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["note"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn names(values: &Value) -> Vec<String> {
    values
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn node_name(bed: &StoreBed, template: &str) -> String {
    node(bed, template).expect("the node")["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned()
}

/// Replaces the Workflow's templates, as `kubectl apply` of a changed manifest does.
fn change_templates(bed: &StoreBed, templates: Value) {
    bed.store.update(
        "workflows",
        "demo",
        "wf",
        json!({"spec": {"templates": templates}}),
    );
}

#[tokio::test]
async fn a_parallel_whose_children_change_reruns_all_of_them() {
    let bed = store_testbed();
    let templates = |children: Value| {
        json!([
            {"name": "entry", "templateType": "Parallel", "children": children},
            {"name": "net", "templateType": "NetworkChaos", "deadline": "5m", "networkChaos": net()},
            {"name": "wait", "templateType": "Suspend", "deadline": "5m"},
            {"name": "io", "templateType": "IOChaos", "deadline": "5m", "ioChaos": io()}])
    };
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": templates(json!(["net", "wait"]))}),
    );
    pass(&bed).await;
    let old_net = node_name(&bed, "net");
    let old_wait = node_name(&bed, "wait");
    let old_chaos = chaos_of(&bed, "net");
    assert_eq!(bed.store.list("workflownodes", "demo").len(), 3);

    // Unchanged: a pass changes nothing.
    bed.clock.set("2026-11-24T12:00:10Z");
    pass(&bed).await;
    assert!(notes(&bed, "RerunBySpecChanged").is_empty());
    assert_eq!(chaos_of(&bed, "net"), old_chaos);

    // `wait` replaced by `io`: Chaos Mesh reruns the whole set, `net` included.
    bed.clock.set("2026-11-24T12:00:20Z");
    change_templates(&bed, templates(json!(["net", "io"])));
    pass(&bed).await;
    let entry = node(&bed, "entry").expect("entry");
    assert_eq!(entry["spec"]["children"], json!(["net", "io"]));
    assert_eq!(
        notes(&bed, "NodeSpecUpdated"),
        ["the workflow's template entry changed: children [net wait] -> [net io]"]
    );
    assert_eq!(
        notes(&bed, "RerunBySpecChanged"),
        [format!(
            "rerun by spec changed, remove children nodes: [{old_net} {old_wait}]"
        )]
    );
    assert!(bed.store.get("workflownodes", "demo", &old_net).is_none());
    assert!(bed.store.get("workflownodes", "demo", &old_wait).is_none());
    // The old experiment deleted (its finalizer recovers the pods), a new one in its place.
    assert!(bed.store.get("networkchaos", "demo", &old_chaos).is_none());
    let new_chaos = chaos_of(&bed, "net");
    assert_ne!(new_chaos, old_chaos);
    assert_eq!(bed.store.list("networkchaos", "demo").len(), 1);
    assert_eq!(bed.store.list("iochaos", "demo").len(), 1);
    assert_eq!(phase(&bed, "io"), "Running");
    assert_eq!(
        node(&bed, "net").expect("net")["spec"]["startTime"],
        "2026-11-24T12:00:20Z"
    );
    let mut active = names(&entry["status"]["activeChildren"]);
    active.sort();
    let mut expected = vec![node_name(&bed, "net"), node_name(&bed, "io")];
    expected.sort();
    assert_eq!(active, expected);
    assert_eq!(bed.store.list("workflownodes", "demo").len(), 3);

    // The same set in another order is the same Parallel: nothing reruns.
    change_templates(&bed, templates(json!(["io", "net"])));
    pass(&bed).await;
    assert_eq!(notes(&bed, "RerunBySpecChanged").len(), 1);
    assert_eq!(chaos_of(&bed, "net"), new_chaos);

    // Chaos Mesh's own way: the node edited (kubectl edit workflownode), the Workflow not. The
    // node's spec is what the rules read, and it is not put back from the template.
    let entry_name = node_name(&bed, "entry");
    bed.store.update(
        "workflownodes",
        "demo",
        &entry_name,
        json!({"spec": {"children": ["io"]}}),
    );
    bed.clock.set("2026-11-24T12:00:30Z");
    pass(&bed).await;
    assert_eq!(notes(&bed, "RerunBySpecChanged").len(), 2);
    assert_eq!(notes(&bed, "NodeSpecUpdated").len(), 2, "the order change");
    let entry = node(&bed, "entry").expect("entry");
    assert_eq!(entry["spec"]["children"], json!(["io"]));
    assert!(node(&bed, "net").is_none());
    assert!(bed.store.list("networkchaos", "demo").is_empty());
    assert_eq!(
        node(&bed, "io").expect("io")["spec"]["startTime"],
        "2026-11-24T12:00:30Z"
    );
    assert_eq!(bed.store.list("iochaos", "demo").len(), 1);
}

#[tokio::test]
async fn a_serial_whose_children_change_keeps_the_matching_ones_and_reruns_from_the_first_change() {
    let bed = store_testbed();
    let templates = |children: Value| {
        json!([
            {"name": "entry", "templateType": "Serial", "children": children},
            {"name": "first", "templateType": "Suspend", "deadline": "10s"},
            {"name": "net", "templateType": "NetworkChaos", "deadline": "5m", "networkChaos": net()},
            {"name": "io", "templateType": "IOChaos", "deadline": "5m", "ioChaos": io()},
            {"name": "last", "templateType": "Suspend", "deadline": "10s"}])
    };
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": templates(json!(["first", "net", "last"]))}),
    );
    pass(&bed).await;
    bed.clock.set("2026-11-24T12:00:10Z");
    pass(&bed).await;
    let first = node_name(&bed, "first");
    let old_net = node_name(&bed, "net");
    let old_chaos = chaos_of(&bed, "net");
    assert_eq!(phase(&bed, "first"), "DeadlineExceeded");
    assert_eq!(phase(&bed, "net"), "Running");

    // A step appended: nothing reruns, the Serial just has more to do.
    bed.clock.set("2026-11-24T12:00:20Z");
    change_templates(&bed, templates(json!(["first", "net", "last", "io"])));
    pass(&bed).await;
    assert!(notes(&bed, "RerunBySpecChanged").is_empty());
    assert_eq!(chaos_of(&bed, "net"), old_chaos);

    // The running step replaced: `first` is kept, `net` goes (its experiment deleted) and `io`
    // starts in its place.
    bed.clock.set("2026-11-24T12:00:30Z");
    change_templates(&bed, templates(json!(["first", "io", "last"])));
    pass(&bed).await;
    assert_eq!(
        notes(&bed, "RerunBySpecChanged"),
        [format!(
            "rerun by spec changed, remove children nodes: [{old_net}]"
        )]
    );
    assert!(bed.store.get("workflownodes", "demo", &old_net).is_none());
    assert!(bed.store.list("networkchaos", "demo").is_empty());
    assert_eq!(node_name(&bed, "first"), first, "the matching prefix stays");
    assert_eq!(phase(&bed, "io"), "Running");
    assert_eq!(bed.store.list("iochaos", "demo").len(), 1);
    let entry = node(&bed, "entry").expect("entry");
    assert_eq!(
        names(&entry["status"]["finishedChildren"]),
        std::slice::from_ref(&first)
    );
    assert_eq!(
        names(&entry["status"]["activeChildren"]),
        [node_name(&bed, "io")]
    );

    // Cut back to what has run: the running step goes and the Serial is accomplished.
    bed.clock.set("2026-11-24T12:00:40Z");
    change_templates(&bed, templates(json!(["first"])));
    pass(&bed).await;
    assert!(bed.store.list("iochaos", "demo").is_empty());
    assert_eq!(notes(&bed, "RerunBySpecChanged").len(), 2);
    assert_eq!(phase(&bed, "entry"), "Accomplished");
    let entry = node(&bed, "entry").expect("entry");
    // The status lists what is left: no active child any more (written as such, not kept).
    assert!(entry["status"]["activeChildren"].is_null(), "{entry}");
    assert_eq!(names(&entry["status"]["finishedChildren"]), [first]);
}

#[tokio::test]
async fn a_task_whose_branches_change_is_evaluated_again_and_its_children_follow() {
    let bed = store_testbed();
    let templates = |branches: Value| {
        json!([
            {"name": "entry", "templateType": "Task",
             "task": {"container": {"name": "main", "image": "busybox", "command": ["true"]}},
             "conditionalBranches": branches},
            {"name": "wait", "templateType": "Suspend", "deadline": "5m"},
            {"name": "net", "templateType": "NetworkChaos", "deadline": "5m", "networkChaos": net()}])
    };
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": templates(json!([
            {"target": "wait", "expression": "exitCode == 0"}]))}),
    );
    pass(&bed).await;
    let pod_name = chaos_of(&bed, "entry");
    bed.store.update(
        "pods",
        "demo",
        &pod_name,
        json!({"status": {"phase": "Succeeded", "containerStatuses": [{"name": "main", "ready": false,
            "restartCount": 0, "image": "busybox", "imageID": "",
            "state": {"terminated": {"exitCode": 0}}}]}}),
    );
    bed.store
        .logs
        .lock()
        .insert(pod_name.clone(), "ok\n".into());
    bed.clock.set("2026-11-24T12:00:05Z");
    pass(&bed).await;
    let old_wait = node_name(&bed, "wait");
    assert_eq!(phase(&bed, "wait"), "Running");

    // The branch now targets `net` when the task succeeded: evaluated again on the same pod,
    // `wait` goes and `net` starts.
    bed.clock.set("2026-11-24T12:00:15Z");
    change_templates(
        &bed,
        templates(json!([
            {"target": "wait", "expression": "exitCode != 0"},
            {"target": "net", "expression": "exitCode == 0 && stdout == \"ok\""}])),
    );
    pass(&bed).await;
    let entry = node(&bed, "entry").expect("entry");
    let results: Vec<(String, String)> = entry["status"]["conditionalBranchesStatus"]["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            (
                b["target"].as_str().unwrap_or("").to_owned(),
                b["evaluationResult"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("wait".to_owned(), "False".to_owned()),
            ("net".to_owned(), "True".to_owned())
        ]
    );
    assert_eq!(
        notes(&bed, "RerunBySpecChanged"),
        [format!(
            "rerun by spec changed, remove children nodes: [{old_wait}]"
        )]
    );
    assert!(bed.store.get("workflownodes", "demo", &old_wait).is_none());
    assert_eq!(phase(&bed, "net"), "Running");
    assert_eq!(bed.store.list("networkchaos", "demo").len(), 1);
    assert_eq!(
        bed.store.list("pods", "demo").len(),
        1,
        "the task's pod is not run again"
    );

    // The branches change but still choose `net`: evaluated again, nothing reruns.
    let chaos = chaos_of(&bed, "net");
    change_templates(
        &bed,
        templates(json!([{"target": "net", "expression": "exitCode == 0"}])),
    );
    pass(&bed).await;
    assert_eq!(notes(&bed, "RerunBySpecChanged").len(), 1);
    assert_eq!(chaos_of(&bed, "net"), chaos);
}

/// One reconcile of the stored Schedule.
async fn schedule_pass(bed: &StoreBed) -> Action {
    let sd: controller::crd::Schedule = serde_json::from_value(
        bed.store
            .get("schedules", "demo", "sd")
            .expect("the schedule"),
    )
    .expect("a Schedule");
    within(controller::schedule::reconcile(
        Arc::new(sd),
        bed.ctx.clone(),
    ))
    .await
    .expect("reconcile")
}

/// Every Workflow the Schedule made, by name, with the state its reconciler wrote.
fn scheduled(bed: &StoreBed) -> Vec<Value> {
    let mut all: Vec<Value> = bed
        .store
        .list("workflows", "demo")
        .into_iter()
        .filter(|w| w["metadata"]["labels"]["managed-by"] == "sd")
        .collect();
    all.sort_by_key(|w| {
        w["metadata"]["creationTimestamp"]
            .as_str()
            .map(str::to_owned)
    });
    all
}

/// One Workflow reconcile of each Workflow the Schedule made.
async fn workflows_pass(bed: &StoreBed) {
    for w in scheduled(bed) {
        let wf: Workflow = serde_json::from_value(w).expect("a Workflow");
        within(controller::workflow::reconcile(
            Arc::new(wf),
            bed.ctx.clone(),
        ))
        .await
        .expect("reconcile");
    }
}

/// The Schedule and Workflow reconcilers together: what the Workflow reconciler writes
/// (Accomplished) is what the Schedule waits for under Forbid, and what historyLimit prunes.
#[tokio::test]
async fn a_schedule_of_workflows_waits_for_each_to_be_accomplished() {
    let bed = store_testbed();
    bed.store.put(
        &format!("{CHAOS}/schedules"),
        "demo",
        json!({"apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "Schedule",
               "metadata": {"name": "sd", "finalizers": [FINALIZER],
                            "creationTimestamp": "2026-11-24T11:59:30Z"},
               "spec": {"schedule": "@every 1m", "type": "Workflow", "historyLimit": 1,
                        "workflow": {"entry": "steps", "templates": [
                            {"name": "steps", "templateType": "Serial", "children": ["net"]},
                            {"name": "net", "templateType": "NetworkChaos", "deadline": "90s",
                             "networkChaos": net()}]}}}),
    );
    // 12:00:30: the first run.
    bed.clock.set("2026-11-24T12:00:30Z");
    schedule_pass(&bed).await;
    let first = scheduled(&bed);
    assert_eq!(first.len(), 1);
    let first = first[0]["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    // Its first reconcile adds the finalizer, the second runs it.
    workflows_pass(&bed).await;
    workflows_pass(&bed).await;
    assert_eq!(bed.store.list("networkchaos", "demo").len(), 1);

    // 12:01:30, the next run is due but the Workflow runs until 12:02:00: Forbid.
    bed.clock.set("2026-11-24T12:01:30Z");
    workflows_pass(&bed).await;
    schedule_pass(&bed).await;
    assert_eq!(scheduled(&bed).len(), 1);
    let forbid = bed
        .store
        .events
        .lock()
        .iter()
        .any(|e| e["reason"] == "ScheduleForbid");
    assert!(forbid);

    // 12:02:00: the experiment's deadline; the Workflow is accomplished and the missed run
    // starts; historyLimit 1 keeps one, so the accomplished one goes (its finalizer first).
    bed.clock.set("2026-11-24T12:02:00Z");
    workflows_pass(&bed).await;
    assert!(bed.store.list("networkchaos", "demo").is_empty());
    let done = bed.store.get("workflows", "demo", &first).expect("first");
    assert!(done["status"]["endTime"].is_string(), "{done}");
    schedule_pass(&bed).await;
    let names: Vec<String> = scheduled(&bed)
        .iter()
        .filter_map(|w| w["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&first));
    // The next pass prunes the accomplished one (its own finalizer goes on its next pass).
    bed.clock.set("2026-11-24T12:02:10Z");
    schedule_pass(&bed).await;
    workflows_pass(&bed).await;
    let names: Vec<String> = scheduled(&bed)
        .iter()
        .filter_map(|w| w["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!names.contains(&first));
    let sd = bed.store.get("schedules", "demo", "sd").expect("sd");
    assert_eq!(sd["status"]["active"][0]["name"], names[0].as_str());
    assert_eq!(sd["status"]["active"].as_array().map(Vec::len), Some(1));
}

/// A node made by an older controller (no template annotation) whose template differs: which
/// changed is unknown, so the node is read as it is and only marked; a later change of the
/// template is followed.
#[tokio::test]
async fn a_node_without_the_template_annotation_is_marked_not_changed() {
    let bed = store_testbed();
    let templates = |children: Value| {
        json!([
            {"name": "entry", "templateType": "Parallel", "children": children},
            {"name": "wait", "templateType": "Suspend", "deadline": "5m"},
            {"name": "net", "templateType": "NetworkChaos", "deadline": "5m", "networkChaos": net()}])
    };
    put_workflow(
        &bed,
        json!({"entry": "entry", "templates": templates(json!(["wait"]))}),
    );
    pass(&bed).await;
    let entry_name = node_name(&bed, "entry");
    bed.store.update(
        "workflownodes",
        "demo",
        &entry_name,
        json!({"metadata": {"annotations": null}}),
    );
    change_templates(&bed, templates(json!(["net"])));
    pass(&bed).await;
    let entry = node(&bed, "entry").expect("entry");
    assert_eq!(entry["spec"]["children"], json!(["wait"]));
    assert!(
        entry["metadata"]["annotations"]["workflow.chaos.faultline.dev/template"]
            .as_str()
            .is_some_and(|a| a.contains("net")),
        "{entry}"
    );
    assert!(notes(&bed, "RerunBySpecChanged").is_empty());
    assert_eq!(phase(&bed, "wait"), "Running");

    change_templates(&bed, templates(json!(["net", "wait"])));
    pass(&bed).await;
    let entry = node(&bed, "entry").expect("entry");
    assert_eq!(entry["spec"]["children"], json!(["net", "wait"]));
    assert_eq!(notes(&bed, "RerunBySpecChanged").len(), 1);
    assert_eq!(phase(&bed, "net"), "Running");
}
