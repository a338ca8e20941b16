//! The HTTP pipeline against a recording host and iptables runner: inject → live update →
//! crash (service dropped) → a new service recovers from the journal alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::host::{HttpHost, StartedProxy};
use super::*;
use crate::network::runner::fake::{FakeRunner, fail, ok};

const CONTAINER: &str = "containerd://web";
const PID: u32 = 42;

#[derive(Debug, Default)]
struct FakeHost {
    calls: Mutex<Vec<String>>,
    exits: Mutex<HashMap<u32, oneshot::Sender<String>>>,
}

impl FakeHost {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn call(&self, line: String) {
        self.calls.lock().unwrap().push(line);
    }
}

#[tonic::async_trait]
impl HttpHost for FakeHost {
    async fn locate(&self, container_id: &str) -> Result<Option<u32>, HttpError> {
        Ok((container_id == CONTAINER).then_some(PID))
    }
    fn netns_inode(&self, pid: u32) -> Result<u64, HttpError> {
        Ok(4_026_000_000 + u64::from(pid))
    }
    fn is_host_netns(&self, _: u64) -> bool {
        false
    }
    fn process_in_netns(&self, _: u64, hint: u32) -> Option<u32> {
        Some(hint)
    }
    fn identity(&self, pid: u32) -> Result<ProcessIdentity, HttpError> {
        Ok(ProcessIdentity { pid, start_time: 1 })
    }
    async fn start_proxy(&self, pid: u32, mark: u32) -> Result<StartedProxy, HttpError> {
        self.call(format!("start proxy in {pid} mark {mark:#x}"));
        let (tx, exited) = oneshot::channel();
        self.exits.lock().unwrap().insert(7000, tx);
        Ok(StartedProxy {
            identity: ProcessIdentity {
                pid: 7000,
                start_time: 1,
            },
            port: 40080,
            exited,
        })
    }
    async fn set_rules(&self, proxy: &ProcessIdentity, rules: &str) -> Result<(), HttpError> {
        self.call(format!("rules {}: {rules}", proxy.pid));
        Ok(())
    }
    async fn stop_proxy(&self, proxy: &ProcessIdentity) {
        self.call(format!("stop proxy {}", proxy.pid));
        self.exits.lock().unwrap().remove(&proxy.pid);
    }
}

/// The ids of the HTTP experiments in the journal.
fn ids(http: &HttpChaos) -> Vec<String> {
    http.records().unwrap().into_iter().map(|r| r.id).collect()
}

/// What the agent does at start: the registry recovers whatever the journal holds.
async fn recover_left_over(
    http: Arc<HttpChaos>,
    journal: &Journal,
) -> Vec<(String, Result<(), crate::error::AgentError>)> {
    crate::fault_kinds::Registry::new(journal.clone())
        .register(http as Arc<dyn FaultKind>)
        .recover_left_over()
        .await
}

fn runner() -> Arc<FakeRunner> {
    Arc::new(FakeRunner::new(|program, args, _| {
        match (program, args.get(4).map(String::as_str)) {
            ("iptables-legacy-save", _) => fail("not here"),
            (_, Some("-C")) => fail("no such rule"),
            _ => ok(""),
        }
    }))
}

const ABORT: &str =
    r#"[{"target": "Request", "selector": {"path": "/a"}, "actions": {"abort": true}}]"#;
const DELAY: &str = r#"[{"target": "Request", "selector": {}, "actions": {"delay": "400ms"}}]"#;

fn spec(rules: &str, ports: &[u32]) -> HttpChaosSpec {
    HttpChaosSpec::parse(rules, ports, "").unwrap()
}

#[tokio::test]
async fn inject_update_crash_recover() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let runner = runner();
    let service = || {
        HttpChaos::new(
            journal.clone(),
            Arc::new(Metrics::new()),
            host.clone(),
            runner.clone(),
        )
    };
    let http = service();
    let Applied::InForce { id, proxy_pid, .. } = http
        .apply(CONTAINER, ABORT, &spec(ABORT, &[8080]), false)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(proxy_pid, 7000);
    assert_eq!(
        host.calls(),
        [
            "start proxy in 42 mark 0xd00080".to_owned(),
            format!("rules 7000: {ABORT}")
        ]
    );
    let restore = runner
        .calls()
        .into_iter()
        .find(|c| c.starts_with("iptables-nft-restore"))
        .unwrap();
    assert!(
        restore.contains("--dports 8080 -j REDIRECT --to-ports 40080"),
        "{restore}"
    );
    assert!(
        restore.contains("-I PREROUTING 1 -j FAULTLINE-HTTP"),
        "{restore}"
    );

    // A second apply changes the rules live (same proxy, same experiment) and the ports without
    // a second jump.
    let before = runner.calls().len();
    let again = http
        .apply(CONTAINER, DELAY, &spec(DELAY, &[8080, 9090]), false)
        .await
        .unwrap();
    assert!(matches!(again, Applied::InForce { id: ref i, proxy_pid: 7000, .. } if *i == id));
    assert_eq!(
        host.calls().last().unwrap(),
        &format!("rules 7000: {DELAY}")
    );
    let update = runner.calls()[before..].join("\n");
    assert!(update.contains("--dports 8080,9090"), "{update}");
    assert!(!update.contains("PREROUTING"), "{update}");
    let (records, _) = journal.list().unwrap();
    let record = records[0].decode::<HttpRecord>().unwrap().fault;
    assert_eq!(record.rules, DELAY);
    assert_eq!(record.proxy_ports, [8080, 9090]);

    // Crash: a new service recovers from the journal alone.
    drop(http);
    let before = runner.calls().len();
    let outcomes = recover_left_over(service(), &journal).await;
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
    assert!(
        runner.calls()[before..]
            .iter()
            .any(|c| c.ends_with("-X FAULTLINE-HTTP"))
    );
    assert_eq!(host.calls().last().unwrap(), "stop proxy 7000");
    assert!(journal.list().unwrap().0.is_empty());
}

/// Chaos Mesh: an apply with no rules and no ports removes the chaos.
#[tokio::test]
async fn no_rules_and_no_ports_removes_and_a_dead_proxy_takes_its_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let runner = runner();
    let http = HttpChaos::new(
        journal.clone(),
        Arc::new(Metrics::new()),
        host.clone(),
        runner.clone(),
    );
    http.apply(CONTAINER, ABORT, &spec(ABORT, &[80]), false)
        .await
        .unwrap();
    assert_eq!(
        http.apply(CONTAINER, "", &spec("", &[]), false)
            .await
            .unwrap(),
        Applied::Removed
    );
    assert!(journal.list().unwrap().0.is_empty());
    assert_eq!(
        http.apply(CONTAINER, "", &spec("", &[]), false)
            .await
            .unwrap(),
        Applied::Removed
    );

    http.apply(CONTAINER, ABORT, &spec(ABORT, &[80]), false)
        .await
        .unwrap();
    let before = runner.calls().len();
    let tx = host.exits.lock().unwrap().remove(&7000).unwrap();
    tx.send("killed".into()).unwrap();
    for _ in 0..500 {
        if ids(&http).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(ids(&http).is_empty());
    assert!(
        runner.calls()[before..]
            .iter()
            .any(|c| c.ends_with("-X FAULTLINE-HTTP"))
    );
}

#[tokio::test]
async fn tls_and_unknown_containers_are_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let http = HttpChaos::new(
        journal.clone(),
        Arc::new(Metrics::new()),
        host.clone(),
        runner(),
    );
    let tls = r#"{"cert_file": {"type": "Contents", "value": "Q0VSVA=="}, "key_file": {"type": "Contents", "value": "S0VZ"}}"#;
    let with_tls = HttpChaosSpec::parse(ABORT, &[443], tls).unwrap();
    let err = http
        .apply(CONTAINER, ABORT, &with_tls, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    let err = http
        .apply("containerd://gone", ABORT, &spec(ABORT, &[80]), false)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("container_id: "), "{err}");
    assert!(host.calls().is_empty());
    assert!(journal.list().unwrap().0.is_empty());
}

/// Our own API (StartHttpExperiment): another experiment's rules are refused, not replaced.
#[tokio::test]
async fn exclusive_apply_refuses_other_rules_and_answers_the_same_again() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let http = HttpChaos::new(
        journal,
        Arc::new(Metrics::new()),
        Arc::new(FakeHost::default()),
        runner(),
    );
    let first = http
        .apply(CONTAINER, ABORT, &spec(ABORT, &[80]), true)
        .await
        .unwrap();
    assert_eq!(
        http.apply(CONTAINER, ABORT, &spec(ABORT, &[80]), true)
            .await
            .unwrap(),
        first
    );
    let err = http
        .apply(CONTAINER, DELAY, &spec(DELAY, &[80]), true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
}
