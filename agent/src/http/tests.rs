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
    /// As after an agent restart: the proxy's control channel is gone.
    refuse_rules: std::sync::atomic::AtomicBool,
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
    async fn set_in_force(&self, proxy: &ProcessIdentity, line: &str) -> Result<(), HttpError> {
        if self.refuse_rules.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HttpError::Proxy(format!(
                "proxy {} is not controlled by this agent",
                proxy.pid
            )));
        }
        self.call(format!("rules {}: {line}", proxy.pid));
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

fn sent(rules: &str) -> Sent<'_> {
    Sent { rules, tls: "" }
}

/// The control line the proxy gets for these rule sets, in this order.
fn sets(list: &[(&[u16], &str)]) -> String {
    http_chaos::control::line(list.iter().map(|&(ports, rules)| (ports, rules, ""))).unwrap()
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
        .apply(
            CONTAINER,
            sent(ABORT),
            &spec(ABORT, &[8080]),
            Placement::WholePod,
        )
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
            format!("rules 7000: {}", sets(&[(&[8080], ABORT)]))
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
        .apply(
            CONTAINER,
            sent(DELAY),
            &spec(DELAY, &[8080, 9090]),
            Placement::WholePod,
        )
        .await
        .unwrap();
    assert!(matches!(again, Applied::InForce { id: ref i, proxy_pid: 7000, .. } if *i == id));
    assert_eq!(
        host.calls().last().unwrap(),
        &format!("rules 7000: {}", sets(&[(&[8080, 9090], DELAY)]))
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
    http.apply(
        CONTAINER,
        sent(ABORT),
        &spec(ABORT, &[80]),
        Placement::WholePod,
    )
    .await
    .unwrap();
    assert_eq!(
        http.apply(CONTAINER, sent(""), &spec("", &[]), Placement::WholePod)
            .await
            .unwrap(),
        Applied::Removed
    );
    assert!(journal.list().unwrap().0.is_empty());
    assert_eq!(
        http.apply(CONTAINER, sent(""), &spec("", &[]), Placement::WholePod)
            .await
            .unwrap(),
        Applied::Removed
    );

    http.apply(
        CONTAINER,
        sent(ABORT),
        &spec(ABORT, &[80]),
        Placement::WholePod,
    )
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

/// Chaos Mesh's tls JSON for a fresh self-signed certificate.
fn tls_json() -> String {
    use base64::Engine;
    let b64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["web".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    serde_json::json!({
        "cert_file": {"type": "Contents", "value": b64(cert.pem())},
        "key_file": {"type": "Contents", "value": b64(key.serialize_pem())},
    })
    .to_string()
}

/// HTTPS: the tls JSON goes to the proxy with its set and into the record (a file only root
/// reads: it holds the key); a second experiment may not serve a shared port another way.
#[tokio::test]
async fn tls_goes_to_the_proxy_with_its_set_and_a_shared_port_agrees() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let http = service(&journal, &host, &runner());
    let tls = tls_json();
    let with_tls = HttpChaosSpec::parse(ABORT, &[443], &tls).unwrap();
    let id = id_of(
        http.apply(
            CONTAINER,
            Sent {
                rules: ABORT,
                tls: &tls,
            },
            &with_tls,
            Placement::Beside,
        )
        .await
        .unwrap(),
    );
    let expected = http_chaos::control::line([(&[443u16][..], ABORT, tls.as_str())]).unwrap();
    assert!(
        host.calls().iter().any(|c| c.ends_with(&expected)),
        "{:?}",
        host.calls()
    );
    let record = journal.get_as::<HttpRecord>(&id).unwrap().unwrap();
    assert_eq!(record.fault.tls, tls);
    let mode = std::fs::metadata(journal.dir().join(format!("{id}.json")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Plain HTTP on 443 beside it: refused, nothing changed.
    let calls = host.calls().len();
    let err = http
        .apply(
            CONTAINER,
            sent(DELAY),
            &spec(DELAY, &[443, 80]),
            Placement::Beside,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.to_string().starts_with("tls: "), "{err}");
    assert_eq!(host.calls().len(), calls);
    assert_eq!(journal.list_of::<HttpRecord>().unwrap().len(), 1);
    // On another port it is served beside, and the sets keep their own TLS.
    http.apply(
        CONTAINER,
        sent(DELAY),
        &spec(DELAY, &[80]),
        Placement::Beside,
    )
    .await
    .unwrap();
    let expected = http_chaos::control::line([
        (&[443u16][..], ABORT, tls.as_str()),
        (&[80u16][..], DELAY, ""),
    ])
    .unwrap();
    assert!(host.calls().iter().any(|c| c.ends_with(&expected)));
}

#[tokio::test]
async fn unknown_containers_are_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let http = service(&journal, &host, &runner());
    let err = http
        .apply(
            "containerd://gone",
            sent(ABORT),
            &spec(ABORT, &[80]),
            Placement::WholePod,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("container_id: "), "{err}");
    assert!(host.calls().is_empty());
    assert!(journal.list().unwrap().0.is_empty());
}

const PATCH: &str = r#"[{"target": "Response", "selector": {"path": "/c"}, "actions": {"patch": {"headers": [["X-Chaos", "c"]]}}}]"#;

fn service(journal: &Journal, host: &Arc<FakeHost>, runner: &Arc<FakeRunner>) -> Arc<HttpChaos> {
    HttpChaos::new(
        journal.clone(),
        Arc::new(Metrics::new()),
        host.clone(),
        runner.clone(),
    )
}

fn id_of(applied: Applied) -> String {
    match applied {
        Applied::InForce { id, .. } => id,
        Applied::Removed => panic!("nothing in force"),
    }
}

/// The iptables-restore inputs sent since call `from`.
fn restores(runner: &FakeRunner, from: usize) -> Vec<String> {
    runner.calls()[from..]
        .iter()
        .filter(|c| c.starts_with("iptables-nft-restore"))
        .cloned()
        .collect()
}

fn count(calls: &[String], line: &str) -> usize {
    calls.iter().filter(|c| c.ends_with(line)).count()
}

/// Our own API: several experiments in one pod share its proxy, each rule set on its own
/// ports, in the order they came; the redirect covers every port any of them needs, once; each
/// recovers alone, and the last takes the redirect and the proxy with it.
#[tokio::test]
async fn experiments_beside_each_other_share_the_proxy_and_recover_alone() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let runner = runner();
    let http = service(&journal, &host, &runner);
    let beside = |rules: &'static str, ports: &'static [u32]| {
        let http = Arc::clone(&http);
        async move {
            http.apply(
                CONTAINER,
                sent(rules),
                &spec(rules, ports),
                Placement::Beside,
            )
            .await
        }
    };
    let a = id_of(beside(ABORT, &[8080]).await.unwrap());
    let b = id_of(beside(DELAY, &[9090]).await.unwrap());
    let before_c = runner.calls().len();
    let c = id_of(beside(PATCH, &[8080]).await.unwrap());
    assert_eq!(ids(&http).len(), 3);
    assert!(a != b && b != c && a != c, "{a} {b} {c}");
    assert_eq!(
        host.calls()
            .iter()
            .filter(|c| c.starts_with("start proxy"))
            .count(),
        1,
        "one proxy per pod: {:?}",
        host.calls()
    );
    assert_eq!(
        host.calls().last().unwrap(),
        &format!(
            "rules 7000: {}",
            sets(&[(&[8080], ABORT), (&[9090], DELAY), (&[8080], PATCH)])
        )
    );
    // A second experiment on a port already redirected: the port is redirected once.
    let restore = restores(&runner, before_c).join("\n");
    assert!(
        restore.contains("--dports 8080,9090 -j REDIRECT --to-ports 40080"),
        "{restore}"
    );
    assert!(!restore.contains("PREROUTING"), "{restore}");
    // Every record knows the pod's proxy: recovery needs nothing else.
    for record in http.records().unwrap() {
        assert_eq!(record.fault.proxy.map(|p| p.pid), Some(7000));
        assert_eq!(record.fault.port, Some(40080));
    }

    // The same experiment again is the one in force; nothing changes.
    let calls = (host.calls().len(), runner.calls().len());
    assert_eq!(id_of(beside(ABORT, &[8080]).await.unwrap()), a);
    assert_eq!((host.calls().len(), runner.calls().len()), calls);
    // An empty one puts nothing in force and takes nothing away.
    assert_eq!(beside("", &[]).await.unwrap(), Applied::Removed);
    assert_eq!(ids(&http).len(), 3);

    // b alone ends: the others keep their rules, 9090 is no longer redirected.
    let from = runner.calls().len();
    http.recover(&b).await.unwrap();
    assert_eq!(
        host.calls().last().unwrap(),
        &format!(
            "rules 7000: {}",
            sets(&[(&[8080], ABORT), (&[8080], PATCH)])
        )
    );
    let restore = restores(&runner, from).join("\n");
    assert!(
        restore.contains("--dports 8080 -j REDIRECT --to-ports 40080"),
        "{restore}"
    );
    assert_eq!(count(&runner.calls()[from..], "-X FAULTLINE-HTTP"), 0);
    // a ends: c still needs 8080, so it stays redirected.
    let from = runner.calls().len();
    http.recover(&a).await.unwrap();
    assert_eq!(
        host.calls().last().unwrap(),
        &format!("rules 7000: {}", sets(&[(&[8080], PATCH)]))
    );
    assert!(
        restores(&runner, from)
            .join("\n")
            .contains("--dports 8080 -j")
    );
    assert!(!host.calls().contains(&"stop proxy 7000".to_owned()));
    // The last one takes the redirect and the proxy.
    let from = runner.calls().len();
    http.recover(&c).await.unwrap();
    assert_eq!(count(&runner.calls()[from..], "-X FAULTLINE-HTTP"), 1);
    assert_eq!(host.calls().last().unwrap(), "stop proxy 7000");
    assert!(journal.list().unwrap().0.is_empty());
    assert_eq!(
        http.recover(&c).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

/// After an agent crash the proxy's control channel is gone: the first record recovered ends
/// every experiment of its pod (the redirect once, the proxy once), the others find nothing
/// left to do.
#[tokio::test]
async fn a_crash_with_two_experiments_in_a_pod_recovers_both_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let runner = runner();
    let http = service(&journal, &host, &runner);
    for (rules, ports) in [(ABORT, &[8080u32][..]), (DELAY, &[9090])] {
        http.apply(
            CONTAINER,
            sent(rules),
            &spec(rules, ports),
            Placement::Beside,
        )
        .await
        .unwrap();
    }
    drop(http);
    host.refuse_rules
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let from = runner.calls().len();
    let outcomes = recover_left_over(service(&journal, &host, &runner), &journal).await;
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
    assert_eq!(count(&runner.calls()[from..], "-X FAULTLINE-HTTP"), 1);
    assert_eq!(count(&host.calls(), "stop proxy 7000"), 1);
    assert!(journal.list().unwrap().0.is_empty());
}

/// A proxy that dies ends every experiment it served; an experiment that cannot be added
/// (the proxy does not take the rules) leaves the pod as it was or, when even that fails,
/// ends the pod's experiments: never a redirect to a proxy that does not serve it.
#[tokio::test]
async fn a_dead_proxy_ends_every_experiment_it_served_and_a_failed_add_leaves_no_half_state() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let runner = runner();
    let http = service(&journal, &host, &runner);
    for (rules, ports) in [(ABORT, &[8080u32][..]), (DELAY, &[9090])] {
        http.apply(
            CONTAINER,
            sent(rules),
            &spec(rules, ports),
            Placement::Beside,
        )
        .await
        .unwrap();
    }
    let from = runner.calls().len();
    let tx = host.exits.lock().unwrap().remove(&7000).unwrap();
    tx.send("killed".into()).unwrap();
    for _ in 0..500 {
        if ids(&http).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(ids(&http).is_empty());
    assert_eq!(count(&runner.calls()[from..], "-X FAULTLINE-HTTP"), 1);

    http.apply(
        CONTAINER,
        sent(ABORT),
        &spec(ABORT, &[8080]),
        Placement::Beside,
    )
    .await
    .unwrap();
    host.refuse_rules
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = http
        .apply(
            CONTAINER,
            sent(DELAY),
            &spec(DELAY, &[9090]),
            Placement::Beside,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err}");
    assert!(ids(&http).is_empty());
    assert_eq!(host.calls().last().unwrap(), "stop proxy 7000");
}

/// Chaos Mesh's controller merges a pod's HTTPChaos itself (PodHttpChaos: each HTTPChaos's
/// rule appended in the order they came, every rule carrying its port in the selector, the
/// proxy ports the union) and sends the whole set in every ApplyHttpChaos; when the last one
/// goes, it sends `[]` and no ports. Over that wire the pod gets exactly the set sent: the
/// same experiment changed live, and any experiment of ours there ended.
#[tokio::test]
async fn the_chaos_mesh_wire_gives_the_pod_exactly_the_set_it_sends() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let host = Arc::new(FakeHost::default());
    let runner = runner();
    let http = service(&journal, &host, &runner);
    let both = r#"[{"target": "Request", "selector": {"port": 8080, "path": "/a"}, "actions": {"abort": true}},
                   {"target": "Request", "selector": {"port": 9090, "path": "/b"}, "actions": {"delay": "1s"}}]"#;
    let only_b = r#"[{"target": "Request", "selector": {"port": 9090, "path": "/b"}, "actions": {"delay": "1s"}}]"#;
    let whole = |rules: &'static str, ports: &'static [u32]| {
        let http = Arc::clone(&http);
        async move {
            http.apply(
                CONTAINER,
                sent(rules),
                &spec(rules, ports),
                Placement::WholePod,
            )
            .await
        }
    };
    let pod = id_of(whole(both, &[9090, 8080]).await.unwrap());
    assert_eq!(
        host.calls().last().unwrap(),
        &format!("rules 7000: {}", sets(&[(&[9090, 8080], both)]))
    );
    // One HTTPChaos deleted: the set without its rule, the same experiment, live.
    let from = runner.calls().len();
    assert_eq!(id_of(whole(only_b, &[9090]).await.unwrap()), pod);
    assert_eq!(
        host.calls().last().unwrap(),
        &format!("rules 7000: {}", sets(&[(&[9090], only_b)]))
    );
    assert!(
        restores(&runner, from)
            .join("\n")
            .contains("--dports 9090 -j")
    );

    // One of ours beside it is served too...
    let ours = id_of(
        http.apply(
            CONTAINER,
            sent(PATCH),
            &spec(PATCH, &[8080]),
            Placement::Beside,
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        host.calls().last().unwrap(),
        &format!(
            "rules 7000: {}",
            sets(&[(&[9090], only_b), (&[8080], PATCH)])
        )
    );
    // ...until Chaos Mesh's next set, which is all the pod then has.
    assert_eq!(id_of(whole(only_b, &[9090]).await.unwrap()), pod);
    assert_eq!(ids(&http), std::slice::from_ref(&pod));
    assert_eq!(
        host.calls().last().unwrap(),
        &format!("rules 7000: {}", sets(&[(&[9090], only_b)]))
    );
    assert!(http.recover(&ours).await.is_err());

    // The last HTTPChaos gone: `[]` and no ports ends it all.
    let from = runner.calls().len();
    assert_eq!(whole("[]", &[]).await.unwrap(), Applied::Removed);
    assert_eq!(count(&runner.calls()[from..], "-X FAULTLINE-HTTP"), 1);
    assert_eq!(host.calls().last().unwrap(), "stop proxy 7000");
    assert!(journal.list().unwrap().0.is_empty());
}
