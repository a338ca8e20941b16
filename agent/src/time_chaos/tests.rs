//! The kind's lifecycle on the recording host double: inject (journal, shift, journal), crash
//! (the agent and its watcher gone, only the journal left) and the next start's recovery
//! through the registry; recovery by id of a live experiment.

use std::sync::Arc;
use std::time::Duration;

use super::engine::tests::{FakeHost, day};
use super::*;
use crate::container_runtime::{RuntimeConfig, RuntimeKind};
use crate::fault_kinds::Registry;

fn time_on(dir: &std::path::Path, host: &Arc<FakeHost>) -> Arc<TimeChaos> {
    TimeChaos::new(
        Resolver::new(RuntimeConfig::for_runtime(RuntimeKind::Containerd)),
        Journal::open(dir).unwrap(),
        Arc::new(Metrics::new()),
        Arc::clone(host) as Arc<dyn TimeHost>,
        // The watcher never makes a pass here: the test makes every change itself.
        Duration::from_secs(3600),
    )
}

fn spec(id: &str) -> TimeSpec {
    TimeSpec {
        id: id.into(),
        container_id: "containerd://c0ffee".into(),
        pod_container_name: "pod:app".into(),
        shift: day(),
        duration: None,
        dry_run: false,
    }
}

/// The agent dies: its watcher thread with it.
fn crash(time: Arc<TimeChaos>) {
    for running in time.running.lock().unwrap().values() {
        running.stop_watching();
    }
}

#[tokio::test]
async fn inject_crash_then_the_next_start_recovers_from_the_journal_alone() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::with(&[10, 11]));
    let time = time_on(dir.path(), &host);
    // The target's identity is only journaled; this test process stands in for it.
    let applied = time.start(spec("time-a"), std::process::id()).unwrap();
    assert_eq!(applied.id, "time-a");
    assert_eq!(host.state(10), Some(day()));
    assert_eq!(host.state(11), Some(day()));
    let journal = Journal::open(dir.path()).unwrap();
    let record = journal
        .get_as::<TimeRecord>("time-a")
        .unwrap()
        .expect("journaled");
    let pids: Vec<u32> = record.fault.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [10, 11]);
    // The namespace the registry's sweep checks: the target's pid namespace.
    let our_pid_ns = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/pid").unwrap().ino()
    };
    assert_eq!(record.namespace_inode, our_pid_ns);
    assert_eq!(journal.get("time-a").unwrap().unwrap().kind(), "time");
    // Listed while it runs.
    let views = FaultKind::list(time.as_ref()).await;
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].kind, "time");
    assert!(
        views[0].status.starts_with("2 processes shifted"),
        "{views:?}"
    );
    // A second experiment on the same container is refused.
    let err = time.apply(spec("time-b")).await.unwrap_err();
    assert!(
        matches!(err, AgentError::Time(TimeError::AlreadyShifted { .. })),
        "{err}"
    );

    // A shifted process forks, then the agent dies before it notices.
    host.fork(10, 12);
    crash(time);
    let restarted = time_on(dir.path(), &host);
    let registry = Registry::new(journal.clone()).register(restarted as Arc<dyn FaultKind>);
    let outcomes = registry.recover_left_over().await;
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].1.is_ok(), "{outcomes:?}");
    for pid in [10, 11, 12] {
        assert_eq!(host.state(pid), None, "pid {pid} still shifted");
    }
    assert!(journal.list().unwrap().0.is_empty());
}

#[tokio::test]
async fn recovery_by_id_stops_the_watcher_and_puts_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::with(&[10]));
    let time = time_on(dir.path(), &host);
    time.start(spec("time-a"), std::process::id()).unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let registry = Registry::new(journal.clone()).register(Arc::clone(&time) as Arc<dyn FaultKind>);
    assert_eq!(registry.ids().unwrap(), ["time-a"]);
    registry.recover("time-a").await.unwrap();
    assert_eq!(host.state(10), None);
    assert!(time.running.lock().unwrap().is_empty());
    assert!(FaultKind::list(time.as_ref()).await.is_empty());
    assert!(journal.list().unwrap().0.is_empty());
    // Gone now: RecoverTimeOffset's retry finds nothing.
    assert!(matches!(
        time.recover("time-a").await,
        Err(AgentError::UnknownExperiment(_))
    ));
}
