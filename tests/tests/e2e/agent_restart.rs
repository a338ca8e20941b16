//! One pod, three kinds of fault at once (an IO fault on its volume, a network delay, a CPU
//! stressor), then the agent is SIGKILLed and started again on the same state directory: the
//! new agent reads its journal, adopts the injector that kept the IO fault in force, and undoes
//! the two others; the IO fault then goes with an explicit recovery.

use std::time::Duration;

use anyhow::{Context, ensure};
use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use testbed::{PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, eventually, fault_mounts, runtime};
use crate::network::network_state;
use crate::stress::running;

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![(
        "agent::after_a_crash_io_is_adopted_and_network_and_stress_are_undone",
        three_kinds_then_crash,
    )]
}

fn journal_records(agent: &AgentProcess) -> Vec<String> {
    std::fs::read_dir(agent.state_dir.join("journal"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn three_kinds_then_crash(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-three"))?;
    let mut agent = AgentProcess::start(tb, &pki, "agent-three")?;
    let data = tb.host_dir("three-data")?;
    std::fs::write(data.join("file"), "data\n")?;
    let pod = tb.run_pod(
        PodSpec::new("three")
            .shell("sleep 100000")
            .volume(Volume::host_dir(&data, "/data"))
            .pod_cgroup(),
    )?;
    let container = pod.container_uri();
    let network_before = network_state(&pod)?;
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;

    rt.block_on(daemon.apply_io_chaos(pb::ApplyIoChaosRequest {
        actions: r#"[{"type":"fault","path":"/data/**","percent":100,"faults":[{"errno":5,"weight":1}]}]"#.into(),
        volume: "/data".into(),
        container_id: container.clone(),
        enter_ns: true,
        ..Default::default()
    }))?;
    rt.block_on(daemon.set_tcs(pb::TcsRequest {
        tcs: vec![pb::Tc {
            r#type: pb::tc::Type::Netem as i32,
            netem: Some(pb::Netem {
                time: "100ms".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        container_id: container.clone(),
        enter_ns: true,
        pod_uid: pod.uid.clone(),
    }))?;
    let stress = rt
        .block_on(daemon.exec_stressors(pb::ExecStressRequest {
            scope: pb::exec_stress_request::Scope::Container as i32,
            target: container.clone(),
            enter_ns: true,
            cpu_stressors: "--cpu 1 --cpu-load 10".into(),
            ..Default::default()
        }))?
        .into_inner();
    let stressor: u32 = stress
        .cpu_instance
        .parse()
        .with_context(|| format!("cpu instance {:?}", stress.cpu_instance))?;

    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    let mut kinds: Vec<&str> = listed.experiments.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort();
    ensure!(kinds == ["io", "network", "stress"], "{listed:?}");
    ensure!(
        fault_mounts(pod.pid).len() == 1,
        "{:?}",
        fault_mounts(pod.pid)
    );
    let faulted = pod.exec_sync(&["cat", "/data/file"])?;
    ensure!(
        !faulted.success() && faulted.stderr.contains("Input/output error"),
        "the IO fault is not in force: {faulted:?}"
    );
    ensure!(network_state(&pod)? != network_before, "no network fault");
    ensure!(running(stressor), "the stressor is not running");
    ensure!(
        journal_records(&agent).len() == 3,
        "{:?}",
        journal_records(&agent)
    );

    // A crash: no recovery on the way out. The journal is all the next agent has.
    agent.kill()?;
    ensure!(
        journal_records(&agent).len() == 3,
        "{:?}",
        journal_records(&agent)
    );
    agent.spawn()?;
    let undone = || {
        network_state(&pod).is_ok_and(|s| s == network_before)
            && !running(stressor)
            && journal_records(&agent).len() == 1
    };
    ensure!(
        eventually(Duration::from_secs(10), undone),
        "left after the restart: mounts {:?}, stressor running {}, journal {:?}, network:\n{}\nbefore:\n{network_before}",
        fault_mounts(pod.pid),
        running(stressor),
        journal_records(&agent),
        network_state(&pod)?
    );
    // The IO fault stayed in force through the restart, held by the new agent now.
    ensure!(
        fault_mounts(pod.pid).len() == 1,
        "{:?}",
        fault_mounts(pod.pid)
    );
    let faulted = pod.exec_sync(&["cat", "/data/file"])?;
    ensure!(
        !faulted.success() && faulted.stderr.contains("Input/output error"),
        "the IO fault is not in force after the restart: {faulted:?}"
    );
    let log = agent.log_text();
    for what in ["a network fault", "a stressor"] {
        ensure!(
            log.contains(&format!("recovered {what} left by a previous run")),
            "{log}"
        );
    }
    ensure!(
        log.contains("adopted an IO fault left by a previous run"),
        "{log}"
    );
    // The injector's stderr went with the first agent; the new one attached to its log and
    // gets what it logged while no agent read it, then each line (issue 23).
    let from_injector = |needle: &str| {
        agent
            .log_text()
            .lines()
            .any(|l| l.contains("injector") && l.contains(needle))
    };
    ensure!(
        eventually(Duration::from_secs(5), || from_injector(
            "an agent connected to the control socket"
        ) && from_injector(
            "an agent attached to our log"
        )),
        "the adopted injector's log did not reach the new agent: {}",
        agent.log_text()
    );
    let (_, mut api) = rt.block_on(agent.controller(&pki))?;
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(
        listed.experiments.len() == 1 && listed.experiments[0].kind == "io",
        "{listed:?}"
    );
    rt.block_on(api.recover(api::RecoverRequest {
        id: String::new(),
        all: true,
    }))?;
    ensure!(
        fault_mounts(pod.pid).is_empty() && journal_records(&agent).is_empty(),
        "left after Recover(all): mounts {:?}, journal {:?}",
        fault_mounts(pod.pid),
        journal_records(&agent)
    );
    // The data is reachable again, unfaulted.
    let read = pod.exec_ok(&["cat", "/data/file"])?;
    ensure!(read == "data\n", "reading /data/file in the pod: {read:?}");
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(listed.experiments.is_empty(), "{listed:?}");
    drop(agent);
    tb.remove_pod(&pod)?;
    Ok(())
}
