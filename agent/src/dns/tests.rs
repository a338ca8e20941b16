//! The DNS pipelines against a recording host and iptables runner: inject → crash (the
//! service is dropped) → a new service recovers from the journal alone.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use super::host::fake::FakeHost;
use super::*;
use crate::network::runner::fake::{FakeRunner, fail, ok};

const CONTAINER: &str = "containerd://app";
const PID: u32 = 42;
const ORIGINAL: &[u8] =
    b"search default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5";

/// The ids of the DNS experiments in the journal.
fn ids(dns: &DnsChaos) -> Vec<String> {
    dns.records().unwrap().into_iter().map(|r| r.id).collect()
}

/// What the agent does at start: the registry recovers whatever the journal holds.
async fn recover_left_over(
    dns: Arc<DnsChaos>,
    journal: &Journal,
) -> Vec<(String, Result<(), crate::error::AgentError>)> {
    crate::fault_kinds::Registry::new(journal.clone())
        .register(dns as Arc<dyn FaultKind>)
        .recover_left_over()
        .await
}

fn nft_runner() -> Arc<FakeRunner> {
    Arc::new(FakeRunner::new(|program, args, _| {
        match (program, args.get(4).map(String::as_str)) {
            ("iptables-legacy-save", _) => fail("not here"),
            // Nothing installed yet when removal checks.
            (_, Some("-C")) => fail("does a matching rule exist?"),
            _ => ok(""),
        }
    }))
}

struct Setup {
    _dir: tempfile::TempDir,
    journal: Journal,
    host: Arc<FakeHost>,
    runner: Arc<FakeRunner>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        Self {
            _dir: dir,
            journal,
            host: FakeHost::with_container(CONTAINER, PID, ORIGINAL),
            runner: nft_runner(),
        }
    }

    /// A service as the agent makes one at start (a new one after a "crash").
    fn service(&self) -> Arc<DnsChaos> {
        DnsChaos::new(
            self.journal.clone(),
            Arc::new(Metrics::new()),
            self.host.clone(),
            self.runner.clone(),
        )
    }

    fn resolv(&self) -> Vec<u8> {
        self.host.file(PID, resolv_conf::PATH).unwrap()
    }
}

/// chaos-daemon: enable backs resolv.conf up to /etc/resolv.conf.chaos.bak (unless a backup
/// exists) and rewrites every nameserver line; disable puts the backup back.
#[tokio::test]
async fn set_dns_server_rewrites_and_restores_byte_for_byte() {
    let s = Setup::new();
    let dns = s.service();
    dns.set_dns_server(CONTAINER, "10.0.0.53", true)
        .await
        .unwrap();
    assert_eq!(
        s.resolv(),
        b"search default.svc.cluster.local\nnameserver 10.0.0.53\nnameserver 10.0.0.53\noptions ndots:5"
    );
    assert_eq!(s.host.file(PID, resolv_conf::BACKUP).unwrap(), ORIGINAL);
    assert_eq!(ids(&dns).len(), 1);
    // A second enable (another server) keeps the first backup and the same experiment.
    dns.set_dns_server(CONTAINER, "10.0.0.54", true)
        .await
        .unwrap();
    assert!(
        String::from_utf8(s.resolv())
            .unwrap()
            .contains("nameserver 10.0.0.54\nnameserver 10.0.0.54\n")
    );
    assert_eq!(s.host.file(PID, resolv_conf::BACKUP).unwrap(), ORIGINAL);
    assert_eq!(ids(&dns).len(), 1);
    dns.set_dns_server(CONTAINER, "", false).await.unwrap();
    assert_eq!(s.resolv(), ORIGINAL);
    assert_eq!(s.host.file(PID, resolv_conf::BACKUP), None);
    assert!(ids(&dns).is_empty());
    // Disabling again is not an error and changes nothing (chaos-daemon: `|| true`).
    dns.set_dns_server(CONTAINER, "", false).await.unwrap();
    assert_eq!(s.resolv(), ORIGINAL);
}

/// chaos-daemon refuses a dns_server that net.ParseIP cannot read ("invalid DNS server
/// address"), before touching anything.
#[tokio::test]
async fn set_dns_server_refuses_a_server_that_is_not_an_ip() {
    let s = Setup::new();
    let err = s
        .service()
        .set_dns_server(CONTAINER, "dns.example.com", true)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dns_server: \"dns.example.com\" is not an IP address"
    );
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(s.resolv(), ORIGINAL);
    assert!(s.host.calls().is_empty());
    assert!(s.journal.list().unwrap().0.is_empty());
}

#[tokio::test]
async fn a_failed_rewrite_leaves_the_file_and_no_record() {
    let s = Setup::new();
    // The rewrite fails; putting the original back works.
    *s.host.fail_writes.lock().unwrap() = 1;
    let err = s
        .service()
        .set_dns_server(CONTAINER, "10.0.0.53", true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ENOSPC"), "{err}");
    assert_eq!(s.resolv(), ORIGINAL);
    assert_eq!(s.host.file(PID, resolv_conf::BACKUP), None);
    assert!(s.journal.list().unwrap().0.is_empty());

    // Neither works: the record stays for a later recovery.
    *s.host.fail_writes.lock().unwrap() = 2;
    s.service()
        .set_dns_server(CONTAINER, "10.0.0.53", true)
        .await
        .unwrap_err();
    assert_eq!(s.journal.list().unwrap().0.len(), 1);
}

#[tokio::test]
async fn a_rewritten_resolv_conf_is_restored_after_a_crash_also_through_a_restarted_container() {
    let s = Setup::new();
    s.service()
        .set_dns_server(CONTAINER, "10.0.0.53", true)
        .await
        .unwrap();
    // Crash; meanwhile the container restarted as PID 43: same pod resolv.conf (bind mount),
    // its backup gone with the old root.
    let rewritten = s.resolv();
    s.host.alive.lock().unwrap().clear();
    s.host
        .containers
        .lock()
        .unwrap()
        .insert(CONTAINER.into(), 43);
    s.host
        .files
        .lock()
        .unwrap()
        .insert((43, resolv_conf::PATH.into()), rewritten);
    let outcomes = recover_left_over(s.service(), &s.journal).await;
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
    assert_eq!(s.host.file(43, resolv_conf::PATH).unwrap(), ORIGINAL);
    assert!(s.journal.list().unwrap().0.is_empty());
}

fn error_spec(duration: Option<Duration>) -> DnsChaosSpec {
    DnsChaosSpec {
        container_id: CONTAINER.into(),
        responder: ResponderSpec::parse("error", &["*.example.com"]).unwrap(),
        duration,
    }
}

#[tokio::test]
async fn the_responder_relays_to_the_nameservers_and_is_recovered_after_a_crash() {
    let s = Setup::new();
    let started = s.service().start(&error_spec(None)).await.unwrap();
    let fd00_a: IpAddr = "fd00::a".parse().unwrap();
    assert_eq!(
        started.upstreams,
        [IpAddr::from(Ipv4Addr::new(10, 96, 0, 10)), fd00_a]
    );
    assert_eq!(started.backend, Backend::Nft);
    assert_eq!(
        s.host.calls(),
        [format!(
            "start responder {} in {PID}: error [\"*.example.com\"] via [10.96.0.10, fd00::a]",
            started.responder_pid
        )]
    );
    let restore = s
        .runner
        .calls()
        .into_iter()
        .find(|c| c.starts_with("iptables-nft-restore --noflush"))
        .unwrap();
    assert!(
        restore.contains("-d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 40053"),
        "{restore}"
    );
    // resolv.conf is not touched.
    assert_eq!(s.resolv(), ORIGINAL);
    let (records, _) = s.journal.list().unwrap();
    let dns = records[0].decode::<DnsRecord>().unwrap().fault;
    assert!(
        matches!(dns, DnsRecord::Responder { responder: Some(p), port: Some(40053), .. } if p.pid == started.responder_pid)
    );

    // Crash: the old service is gone; the responder outlives it; a new one recovers.
    let before = s.runner.calls().len();
    let outcomes = recover_left_over(s.service(), &s.journal).await;
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
    let undo: Vec<String> = s.runner.calls()[before..].to_vec();
    assert!(
        undo.iter()
            .any(|c| c.contains("-C OUTPUT -j FAULTLINE-DNS")),
        "{undo:?}"
    );
    assert!(
        undo.iter().any(|c| c.ends_with("-X FAULTLINE-DNS")),
        "{undo:?}"
    );
    assert_eq!(
        s.host.calls().last().unwrap(),
        &format!("stop responder {}", started.responder_pid)
    );
    assert!(s.journal.list().unwrap().0.is_empty());
}

/// IPv6 nameservers are covered too: relayed to (the responder is told `[addr]:53`),
/// redirected through ip6tables of the pod's backend, and removed from there at recovery.
#[tokio::test]
async fn ipv6_nameservers_are_relayed_to_and_redirected_through_ip6tables() {
    let s = Setup::new();
    s.host.files.lock().unwrap().insert(
        (PID, resolv_conf::PATH.into()),
        b"nameserver fd00:10::a\nnameserver 10.96.0.10\nnameserver ::1\n".to_vec(),
    );
    let started = s.service().start(&error_spec(None)).await.unwrap();
    let expected: Vec<IpAddr> = vec!["fd00:10::a".parse().unwrap(), "10.96.0.10".parse().unwrap()];
    assert_eq!(started.upstreams, expected);
    let restore6 = s
        .runner
        .calls()
        .into_iter()
        .find(|c| c.starts_with("ip6tables-nft-restore --noflush"))
        .expect("no ip6tables-restore");
    assert!(
        restore6
            .contains("-d fd00:10::a/128 -p udp -m udp --dport 53 -j REDIRECT --to-ports 40053"),
        "{restore6}"
    );
    let before = s.runner.calls().len();
    s.service().recover(&started.id).await.unwrap();
    let undo: Vec<String> = s.runner.calls()[before..].to_vec();
    assert!(
        undo.iter()
            .any(|c| c.starts_with("ip6tables-nft ") && c.contains("-C OUTPUT -j FAULTLINE-DNS")),
        "{undo:?}"
    );
    assert!(
        undo.iter()
            .any(|c| c.starts_with("iptables-nft ") && c.contains("-C OUTPUT -j FAULTLINE-DNS")),
        "{undo:?}"
    );
}

#[tokio::test]
async fn a_dying_responder_takes_its_redirect_with_it() {
    let s = Setup::new();
    let dns = s.service();
    let started = dns.start(&error_spec(None)).await.unwrap();
    let before = s.runner.calls().len();
    s.host.kill_responder(started.responder_pid);
    for _ in 0..500 {
        if ids(&dns).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(ids(&dns).is_empty(), "the experiment should have ended");
    assert!(
        s.runner.calls()[before..]
            .iter()
            .any(|c| c.ends_with("-X FAULTLINE-DNS"))
    );
}

#[tokio::test]
async fn refusals_leave_no_record() {
    // The node's own namespace (hostNetwork).
    let s = Setup::new();
    s.host
        .containers
        .lock()
        .unwrap()
        .insert("containerd://host".into(), 1);
    let mut spec = error_spec(None);
    spec.container_id = "containerd://host".into();
    let err = s.service().start(&spec).await.unwrap_err();
    assert!(matches!(err, DnsError::HostNetwork { .. }), "{err}");
    // Only a loopback nameserver (a stub resolver of the pod's own): nothing to stand in for.
    s.host.files.lock().unwrap().insert(
        (PID, resolv_conf::PATH.into()),
        b"nameserver ::1\nnameserver 127.0.0.53\n".to_vec(),
    );
    let err = s.service().start(&error_spec(None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("no nameserver (other than loopback)"),
        "{err}"
    );
    // An unknown container.
    let mut spec = error_spec(None);
    spec.container_id = "containerd://gone".into();
    let err = s.service().start(&spec).await.unwrap_err();
    assert!(err.to_string().starts_with("container_id: "), "{err}");
    assert!(s.journal.list().unwrap().0.is_empty());
    assert!(s.host.calls().is_empty());
}

#[tokio::test]
async fn one_responder_per_pod_and_recovery_by_id() {
    let s = Setup::new();
    let dns = s.service();
    let started = dns.start(&error_spec(None)).await.unwrap();
    // The same experiment again is the one in force; another is refused.
    assert_eq!(dns.start(&error_spec(None)).await.unwrap(), started);
    let mut other = error_spec(None);
    other.responder = ResponderSpec::parse("random", &["*.example.com"]).unwrap();
    let err = dns.start(&other).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.to_string().contains(&started.id), "{err}");
    dns.recover(&started.id).await.unwrap();
    let err = dns.recover(&started.id).await.unwrap_err();
    assert!(err.to_string().contains("no DNS experiment"), "{err}");
}

#[tokio::test]
async fn a_duration_ends_the_experiment_by_itself() {
    let s = Setup::new();
    let dns = s.service();
    dns.start(&error_spec(Some(Duration::from_millis(50))))
        .await
        .unwrap();
    for _ in 0..500 {
        if ids(&dns).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ids(&dns).is_empty());
}

/// A record journaled before the agent redesign (the old `Fault` enum tagged `"kind": "dns"`
/// around the `mode`-tagged record) is the same JSON as a `Record<DnsRecord>` now: an agent
/// upgraded over a live DNS fault still recovers it, and one written now reads the same.
#[tokio::test]
async fn a_record_of_the_previous_agent_still_decodes_and_recovers() {
    let s = Setup::new();
    let before_redesign = serde_json::json!({
        "id": "dns-1-2", "started_at_ms": 1, "deadline_ms": null,
        "container_id": CONTAINER, "target": {"pid": PID, "start_time": 1},
        "namespace_inode": 4_026_000_000_u64 + u64::from(PID),
        "fault": {"kind": "dns", "mode": "responder", "action": "error",
            "patterns": ["*.example.com"], "upstreams": ["10.96.0.10"], "backend": "Nft",
            "responder": {"pid": 4242, "start_time": 8}, "port": 40053}
    });
    let stored: StoredRecord = serde_json::from_value(before_redesign.clone()).unwrap();
    let record = stored.decode::<DnsRecord>().unwrap();
    assert!(matches!(
        record.fault,
        DnsRecord::Responder {
            action: DnsAction::Error,
            port: Some(40053),
            ..
        }
    ));
    assert_eq!(
        serde_json::to_value(record.to_stored().unwrap()).unwrap(),
        before_redesign
    );
    s.journal.write_stored(&stored).unwrap();
    let outcomes = recover_left_over(s.service(), &s.journal).await;
    assert!(outcomes.iter().all(|(_, r)| r.is_ok()), "{outcomes:?}");
    assert!(
        s.runner
            .calls()
            .iter()
            .any(|c| c.ends_with("-X FAULTLINE-DNS")),
        "the redirect is removed: {:?}",
        s.runner.calls()
    );
    assert_eq!(s.host.calls().last().unwrap(), "stop responder 4242");
    assert!(s.journal.list().unwrap().0.is_empty());
}
