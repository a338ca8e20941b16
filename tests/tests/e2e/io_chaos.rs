//! IO chaos end to end: a controller (or the CLI) drives a real agent, which mounts the fault
//! filesystem over a pod's volume; the pod's own process sees the fault, and none after
//! recovery, with every byte it wrote intact.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use testbed::{Pod, PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, eventually, fault_mounts, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "io::fault_then_live_update_then_recovery_over_mtls",
            fault_update_recover,
        ),
        (
            "io::a_file_held_open_is_faulted_after_a_rule_update",
            held_file_rule_update,
        ),
        ("io::mtls_refuses_unknown_clients", mtls_refuses),
        (
            "io::agent_crash_with_its_injector_is_recovered_from_the_journal",
            agent_crash,
        ),
        (
            "io::a_workload_sees_no_enotconn_across_an_agent_sigkill_and_restart",
            no_enotconn_across_agent_restart,
        ),
        (
            "io::killed_injector_is_cleaned_up_by_the_agent",
            injector_killed,
        ),
        ("io::bad_input_leaves_no_partial_state", bad_input),
        (
            "io::cli_attack_with_duration_recovers_by_itself",
            cli_duration,
        ),
    ]
}

/// Every 20 ms the workload appends "line N" to /data/journal and reads the file back, and
/// logs both outcomes to /out/log (a volume the fault does not touch).
const WORKLOAD: &str = "i=0; while true; do i=$((i+1)); \
    if echo \"line $i\" >> /data/journal 2>/out/werr; then w=ok; else w=\"FAIL $(cat /out/werr)\"; fi; \
    if cat /data/journal > /dev/null 2>/out/rerr; then r=ok; else r=\"FAIL $(cat /out/rerr)\"; fi; \
    echo \"$i write:$w read:$r\" >> /out/log; sleep 0.02; done";

/// How busybox reports EIO.
const EIO_TEXT: &str = "Input/output error";

struct Workload {
    pod: Pod,
    data: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Workload {
    fn start(tb: &Testbed, name: &str) -> anyhow::Result<Workload> {
        let data = tb.host_dir(&format!("{name}-data"))?;
        let out = tb.host_dir(&format!("{name}-out"))?;
        std::fs::write(data.join("before"), "written before the experiment\n")?;
        let pod = tb.run_pod(
            PodSpec::new(name)
                .shell(WORKLOAD)
                .volume(Volume::host_dir(&data, "/data"))
                .volume(Volume::host_dir(&out, "/out")),
        )?;
        let workload = Workload { pod, data, out };
        ensure!(
            workload
                .wait_for_line(0, |l| l.contains("write:ok read:ok"))
                .is_some(),
            "the workload never ran"
        );
        Ok(workload)
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.out.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let log = self.log();
        log[log.len().saturating_sub(n)..].to_vec()
    }

    /// The first log line after the first `skip` that satisfies `pred`, within 10 s.
    fn wait_for_line(&self, skip: usize, pred: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        eventually(Duration::from_secs(10), || {
            found = self.log().into_iter().skip(skip).find(|l| pred(l));
            found.is_some()
        });
        found
    }

    /// After `skip`, three successive clean iterations: the workload is healthy again.
    fn wait_healthy(&self, skip: usize) -> anyhow::Result<()> {
        let ok = eventually(Duration::from_secs(10), || {
            let log = self.log();
            log.len() >= skip + 3
                && log[log.len() - 3..]
                    .iter()
                    .all(|l| l.ends_with("write:ok read:ok"))
        });
        ensure!(
            ok,
            "the workload did not recover; last lines: {:?}",
            self.log().iter().rev().take(5).collect::<Vec<_>>()
        );
        Ok(())
    }

    /// Every line whose write the workload saw succeed is in the host volume, in order, and
    /// nothing else is; the file from before the experiment is untouched.
    fn assert_data_intact(&self) -> anyhow::Result<()> {
        let written: BTreeSet<u64> = self
            .log()
            .iter()
            .filter(|l| l.contains(" write:ok"))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        let journal = std::fs::read_to_string(self.data.join("journal"))?;
        let stored: Vec<u64> = journal
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect();
        let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
        // The last write may have landed after the last log line was read.
        let missing: Vec<_> = written.difference(&stored_set).collect();
        ensure!(
            missing.is_empty(),
            "writes the workload saw succeed are missing from the volume: {missing:?}"
        );
        ensure!(
            stored.windows(2).all(|w| w[0] < w[1]),
            "the journal is out of order or duplicated"
        );
        let before = std::fs::read_to_string(self.data.join("before"))?;
        ensure!(
            before == "written before the experiment\n",
            "the file from before changed: {before:?}"
        );
        Ok(())
    }
}

/// Opens /data/held once, at start, and every 20 ms appends a line through that descriptor,
/// logging the outcome to /out/log.
const HELD_WRITER: &str = "exec 3>>/data/held; i=0; while true; do i=$((i+1)); \
    if echo \"line $i\" >&3 2>/out/err; then w=ok; else w=\"FAIL $(cat /out/err)\"; fi; \
    echo \"$i held:$w\" >> /out/log; sleep 0.02; done";

/// Issue 25's agent-mode hole: an experiment starts with a rule elsewhere in the volume (the
/// handover moves the pod's open file onto the fault mount, where no rule matches it), then
/// Chaos Mesh's controller updates the volume's rules (a second IOChaos). Once the update
/// returns, the file the pod has held open all along must get the fault (it used to stay in
/// kernel passthrough, out of reach); after recovery its writes succeed again.
fn held_file_rule_update(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-held"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-held")?;
    let data = tb.host_dir("held-data")?;
    let out = tb.host_dir("held-out")?;
    let pod = tb.run_pod(
        PodSpec::new("held-writer")
            .shell(HELD_WRITER)
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
    let line_after = |skip: usize, what: &str| -> Option<String> {
        let mut found = None;
        eventually(Duration::from_secs(10), || {
            found = log().into_iter().skip(skip).find(|l| l.contains(what));
            found.is_some()
        });
        found
    };
    ensure!(line_after(0, "held:ok").is_some(), "the writer never ran");
    let rt = runtime()?;
    let (mut daemon, _api) = rt.block_on(agent.controller(&pki))?;
    let container = pod.container_uri();

    let elsewhere = r#"[{"type":"fault","path":"/data/other/**","percent":100,"faults":[{"errno":5,"weight":1}]}]"#;
    rt.block_on(daemon.apply_io_chaos(apply("/data", &container, elsewhere)))?;
    let mark = log().len();
    ensure!(
        line_after(mark + 3, "held:ok").is_some(),
        "writes failed under a rule elsewhere: {:?}",
        log().iter().rev().take(5).collect::<Vec<_>>()
    );

    rt.block_on(daemon.apply_io_chaos(apply("/data", &container, &fault_actions(5))))?;
    let mark = log().len();
    let failed = line_after(mark, "held:FAIL").with_context(|| {
        format!(
            "the held file escaped the updated rules: {:?}",
            log().iter().rev().take(5).collect::<Vec<_>>()
        )
    })?;
    ensure!(failed.contains(EIO_TEXT), "{failed}");

    rt.block_on(daemon.apply_io_chaos(apply("/data", &container, "")))?;
    let mark = log().len();
    ensure!(
        line_after(mark + 1, "held:ok").is_some(),
        "writes did not recover: {:?}",
        log().iter().rev().take(5).collect::<Vec<_>>()
    );
    ensure!(fault_mounts(pod.pid).is_empty(), "mounts left");
    Ok(())
}

fn fault_actions(errno: i32) -> String {
    format!(
        r#"[{{"type":"fault","path":"/data/**","percent":100,"faults":[{{"errno":{errno},"weight":1}}]}}]"#
    )
}

fn apply(volume: &str, container: &str, actions: &str) -> pb::ApplyIoChaosRequest {
    pb::ApplyIoChaosRequest {
        actions: actions.into(),
        volume: volume.into(),
        container_id: container.into(),
        enter_ns: true,
        ..Default::default()
    }
}

/// Whether `pid` runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
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

fn fault_update_recover(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-io"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-io")?;
    let w = Workload::start(tb, "io-loop")?;
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    // The agent keeps a spare injector; the injection is given to it.
    let spare = agent.wait_for_spare_injector()?;

    let mark = w.log().len();
    let response = rt
        .block_on(daemon.apply_io_chaos(apply("/data", &w.pod.container_uri(), &fault_actions(5))))?
        .into_inner();
    ensure!(
        response.instance > 0 && !response.instance_uid.is_empty(),
        "response {response:?}"
    );
    ensure!(
        Some(spare) == u32::try_from(response.instance).ok(),
        "the injection did not go to the spare {spare}: {response:?}"
    );
    ensure!(
        eventually(Duration::from_secs(5), || agent
            .spare_injector()
            .is_some_and(|next| next != spare)),
        "no new spare after the injection"
    );
    let failed = w
        .wait_for_line(mark, |l| l.contains("write:FAIL") && l.contains(EIO_TEXT))
        .with_context(|| format!("the pod never saw EIO: {:?}", w.tail(5)))?;
    ensure!(
        failed.contains("write:FAIL") && failed.contains("read:FAIL"),
        "{failed}"
    );
    let mounts = fault_mounts(w.pod.pid);
    ensure!(mounts.len() == 1, "fault mounts in the pod: {mounts:?}");
    ensure!(
        journal_records(&agent).len() == 1,
        "journal: {:?}",
        journal_records(&agent)
    );

    // A latency rule replaces the fault, live: same mount, no more errors.
    let latency = r#"[{"type":"latency","path":"/data/**","percent":100,"latency":"5ms","methods":["read"]}]"#;
    let updated = rt
        .block_on(daemon.apply_io_chaos(apply("/data", &w.pod.container_uri(), latency)))?
        .into_inner();
    ensure!(
        updated.instance_uid == response.instance_uid,
        "an update started a new experiment"
    );
    let mark = w.log().len();
    w.wait_healthy(mark)?;
    ensure!(
        fault_mounts(w.pod.pid) == mounts,
        "the update remounted: {:?}",
        fault_mounts(w.pod.pid)
    );
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(
        listed.experiments.len() == 1 && listed.experiments[0].rules.contains("latency"),
        "{listed:?}"
    );

    // Empty actions recover: the mount is gone, the journal empty, the data intact.
    let recovered = rt
        .block_on(daemon.apply_io_chaos(apply("/data", &w.pod.container_uri(), "")))?
        .into_inner();
    ensure!(recovered.instance == 0, "{recovered:?}");
    ensure!(
        fault_mounts(w.pod.pid).is_empty(),
        "mounts left: {:?}",
        fault_mounts(w.pod.pid)
    );
    ensure!(
        journal_records(&agent).is_empty(),
        "journal: {:?}",
        journal_records(&agent)
    );
    let mark = w.log().len();
    w.wait_healthy(mark)?;
    w.assert_data_intact()?;
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(listed.experiments.is_empty(), "{listed:?}");
    tb.remove_pod(&w.pod)?;
    Ok(())
}

fn mtls_refuses(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-mtls"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-mtls")?;
    let rt = runtime()?;
    let health = |client: Option<&crate::agent_support::Pem>| -> anyhow::Result<()> {
        rt.block_on(async {
            let channel = agent.channel(&pki.ca_pem, client).await?;
            faultline_proto::agent::v1::agent_client::AgentClient::new(channel)
                .health(api::HealthRequest {})
                .await?;
            Ok(())
        })
    };
    for (who, client) in [
        ("no certificate", None),
        ("a certificate from another CA", Some(&pki.rogue)),
        (
            "a valid certificate of a foreign identity",
            Some(&pki.stranger),
        ),
    ] {
        if health(client).is_ok() {
            bail!("a client with {who} got in");
        }
    }
    health(Some(&pki.controller)).context("the controller was refused")?;
    ensure!(
        agent.log_text().contains("not allowed"),
        "the refusal is not logged: {}",
        agent.log_text()
    );
    Ok(())
}

fn agent_crash(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-crash"))?;
    let mut agent = AgentProcess::start(tb, &pki, "agent-crash")?;
    let w = Workload::start(tb, "crash-loop")?;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    let mark = w.log().len();
    let started = rt
        .block_on(daemon.apply_io_chaos(apply("/data", &w.pod.container_uri(), &fault_actions(5))))?
        .into_inner();
    w.wait_for_line(mark, |l| l.contains(EIO_TEXT))
        .with_context(|| format!("the pod never saw EIO: {:?}", w.tail(5)))?;

    // The agent and its injector die together (a node-wide OOM kill): nothing is left to
    // adopt, the next agent recovers from the journal.
    let spare = agent
        .spare_injector()
        .context("the agent keeps no spare injector")?;
    agent.kill()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started.instance as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    ensure!(
        journal_records(&agent).len() == 1,
        "the journal lost the experiment"
    );
    // Its spare ends with it (its control channel closed), and the next agent removes the
    // spare's socket.
    ensure!(
        eventually(Duration::from_secs(5), || !running(spare)),
        "the dead agent's spare injector {spare} still runs"
    );
    agent.spawn()?;
    ensure!(
        eventually(Duration::from_secs(5), || fault_mounts(w.pod.pid)
            .is_empty()),
        "the restarted agent left the mount: {:?}",
        fault_mounts(w.pod.pid)
    );
    // Its socket goes once the new agent is up (it clears them before taking requests).
    let dead_agents_spares = || {
        let new_agent = agent.pid().unwrap_or_default();
        std::fs::read_dir(agent.state_dir.join("injectors"))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| {
                        name.starts_with("spare-")
                            && !name.starts_with(&format!("spare-{new_agent}-"))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    ensure!(
        eventually(Duration::from_secs(5), || dead_agents_spares().is_empty()),
        "a spare socket of the dead agent is left: {:?}",
        dead_agents_spares()
    );
    let mark = w.log().len();
    w.wait_healthy(mark)?;
    ensure!(
        journal_records(&agent).is_empty(),
        "journal: {:?}",
        journal_records(&agent)
    );
    let out = agent.cli(&["list"])?;
    ensure!(
        out.status.success() && out.stdout.is_empty(),
        "faultline list: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        agent
            .log_text()
            .contains("recovered an IO fault left by a previous run"),
        "{}",
        agent.log_text()
    );
    w.assert_data_intact()?;
    tb.remove_pod(&w.pod)?;
    Ok(())
}

/// How busybox reports ENOTCONN (a FUSE mount whose server is gone).
const ENOTCONN_TEXT: &str = "not connected";

/// Issue 23: a rollout or an OOM kill of the agent must not break a pod. A workload writes and
/// reads a faulted volume every 20 ms (reads fail with EIO, writes pass) while the agent is
/// SIGKILLed, stays down a second, and starts again on the same state directory: every read
/// all along gets the injected EIO, none gets ENOTCONN; the new agent holds the experiment
/// (listed, recovered by Chaos Mesh's empty ApplyIOChaos), and afterwards nothing is faulted
/// and every write is on disk.
fn no_enotconn_across_agent_restart(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-adopt"))?;
    let mut agent = AgentProcess::start(tb, &pki, "agent-adopt")?;
    let w = Workload::start(tb, "adopt-loop")?;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    let reads_fail = r#"[{"type":"fault","path":"/data/**","percent":100,"methods":["read"],"faults":[{"errno":5,"weight":1}]}]"#;
    let mark = w.log().len();
    let started = rt
        .block_on(daemon.apply_io_chaos(apply("/data", &w.pod.container_uri(), reads_fail)))?
        .into_inner();
    w.wait_for_line(mark, |l| {
        l.contains("write:ok read:FAIL") && l.contains(EIO_TEXT)
    })
    .with_context(|| format!("the pod never saw the read fault: {:?}", w.tail(5)))?;
    let before_kill = w.log().len();

    agent.kill()?;
    std::thread::sleep(Duration::from_secs(1));
    agent.spawn()?;
    // Long enough for a start-up recovery (or adoption) to have run, and well beyond.
    std::thread::sleep(Duration::from_secs(2));
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    let across: Vec<String> = w.log().into_iter().skip(before_kill).collect();
    let enotconn = across.iter().filter(|l| l.contains(ENOTCONN_TEXT)).count();
    let unfaulted = across
        .iter()
        .filter(|l| !(l.contains("read:FAIL") && l.contains(EIO_TEXT)))
        .count();
    eprintln!(
        "agent SIGKILL + 1 s down + restart: {} workload iterations, {enotconn} saw ENOTCONN, {unfaulted} not faulted",
        across.len()
    );
    ensure!(across.len() >= 20, "the workload stalled: {across:?}");
    ensure!(
        enotconn == 0,
        "{enotconn} of {} iterations saw ENOTCONN across the restart: {:?}",
        across.len(),
        across
            .iter()
            .filter(|l| l.contains(ENOTCONN_TEXT))
            .take(3)
            .collect::<Vec<_>>()
    );
    ensure!(
        unfaulted == 0,
        "{unfaulted} of {} iterations were not faulted across the restart (the fault must stay in force): {:?}",
        across.len(),
        across.iter().rev().take(3).collect::<Vec<_>>()
    );
    ensure!(
        listed.experiments.len() == 1 && listed.experiments[0].id == started.instance_uid,
        "the new agent does not hold the experiment: {listed:?}"
    );
    ensure!(
        agent
            .log_text()
            .contains("adopted an IO fault left by a previous run"),
        "{}",
        agent.log_text()
    );

    // Chaos Mesh's recovery: empty actions, to the agent that did not start it.
    rt.block_on(daemon.apply_io_chaos(apply("/data", &w.pod.container_uri(), "")))?;
    ensure!(
        fault_mounts(w.pod.pid).is_empty(),
        "mounts left: {:?}",
        fault_mounts(w.pod.pid)
    );
    ensure!(
        journal_records(&agent).is_empty(),
        "journal: {:?}",
        journal_records(&agent)
    );
    let mark = w.log().len();
    w.wait_healthy(mark)?;
    let after: Vec<String> = w.log().into_iter().skip(mark).collect();
    ensure!(
        !after.iter().any(|l| l.contains(ENOTCONN_TEXT)),
        "ENOTCONN after recovery: {after:?}"
    );
    let injector = format!("/proc/{}", started.instance);
    ensure!(
        eventually(Duration::from_secs(2), || !std::path::Path::new(&injector)
            .exists()),
        "the injector {} outlived its recovery",
        started.instance
    );
    w.assert_data_intact()?;
    tb.remove_pod(&w.pod)?;
    Ok(())
}

fn injector_killed(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-kill"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-kill")?;
    let w = Workload::start(tb, "kill-loop")?;
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    // A spare that died before its injection: the injection starts an injector of its own.
    let spare = agent.wait_for_spare_injector()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(spare as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    // Reaped by the agent, its parent (until then it looks alive to anyone reading /proc).
    ensure!(
        eventually(Duration::from_secs(5), || !std::path::Path::new(&format!(
            "/proc/{spare}"
        ))
        .exists()),
        "the killed spare {spare} was not reaped"
    );
    let mark = w.log().len();
    let response = rt
        .block_on(daemon.apply_io_chaos(apply("/data", &w.pod.container_uri(), &fault_actions(5))))?
        .into_inner();
    ensure!(
        u32::try_from(response.instance).ok() != Some(spare),
        "the injection went to the dead spare: {response:?}"
    );
    w.wait_for_line(mark, |l| l.contains(EIO_TEXT))
        .with_context(|| format!("the pod never saw EIO: {:?}", w.tail(5)))?;
    ensure!(
        agent.log_text().contains("the spare injector had exited"),
        "{}",
        agent.log_text()
    );
    let injector = nix::unistd::Pid::from_raw(response.instance as i32);
    nix::sys::signal::kill(injector, nix::sys::signal::Signal::SIGKILL)?;
    ensure!(
        eventually(Duration::from_secs(2), || fault_mounts(w.pod.pid)
            .is_empty()),
        "the agent did not unmount after the injector died: {:?}",
        fault_mounts(w.pod.pid)
    );
    let mark = w.log().len();
    w.wait_healthy(mark)?;
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(listed.experiments.is_empty(), "{listed:?}");
    ensure!(
        journal_records(&agent).is_empty(),
        "journal: {:?}",
        journal_records(&agent)
    );
    w.assert_data_intact()?;
    tb.remove_pod(&w.pod)?;
    Ok(())
}

fn bad_input(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-bad"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-bad")?;
    let data = tb.host_dir("bad-data")?;
    let pod = tb.run_pod(PodSpec::new("bad-input").volume(Volume::host_dir(&data, "/data")))?;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    let container = pod.container_uri();
    let unknown = "containerd://0123456789abcdef0123456789abcdef";
    // Inside the pod, /data/escape -> / : a harmless-looking volume path that is the container's
    // root once resolved. A FUSE mount there used to take the whole pod down with it.
    std::os::unix::fs::symlink("/", data.join("escape"))?;
    for (request, code, says) in [
        (
            apply("/data/escape", &container, &fault_actions(5)),
            tonic::Code::FailedPrecondition,
            "container's root directory",
        ),
        (
            apply("/proc", &container, &fault_actions(5)),
            tonic::Code::FailedPrecondition,
            "proc filesystem",
        ),
        (
            apply("/data", unknown, &fault_actions(5)),
            tonic::Code::NotFound,
            "0123456789abcdef0123456789abcdef",
        ),
        (
            apply("/nope", &container, &fault_actions(5)),
            tonic::Code::NotFound,
            "/nope",
        ),
        (
            apply("/../etc", &container, &fault_actions(5)),
            tonic::Code::InvalidArgument,
            "'..'",
        ),
        (
            apply("/data", &container, "[{"),
            tonic::Code::InvalidArgument,
            "actions",
        ),
        (
            apply(
                "/data",
                &container,
                r#"[{"type":"explode","path":"/data/**"}]"#,
            ),
            tonic::Code::InvalidArgument,
            "type",
        ),
        (
            apply(
                "/data",
                &container,
                r#"[{"type":"fault","percent":150,"faults":[{"errno":5}]}]"#,
            ),
            tonic::Code::InvalidArgument,
            "percent",
        ),
        (
            apply(
                "/data",
                &container,
                r#"[{"type":"fault","faults":[{"errno":"five"}]}]"#,
            ),
            tonic::Code::InvalidArgument,
            "errno",
        ),
        (
            apply("/data", "containerd://bad/id", &fault_actions(5)),
            tonic::Code::InvalidArgument,
            "bad/id",
        ),
        (
            // Issue 23: a bound with a name, before anything is spent on the actions.
            apply("/data", &container, &many_actions(1025)),
            tonic::Code::InvalidArgument,
            "1025 actions; one volume takes at most 1024",
        ),
    ] {
        let status = rt
            .block_on(daemon.apply_io_chaos(request.clone()))
            .unwrap_err();
        ensure!(status.code() == code, "{request:?}: {status:?}");
        ensure!(
            status.message().contains(says),
            "{request:?}: the message does not name {says:?}: {}",
            status.message()
        );
        ensure!(
            fault_mounts(pod.pid).is_empty(),
            "a refused request left a mount"
        );
        ensure!(
            journal_records(&agent).is_empty(),
            "a refused request left a journal record"
        );
    }

    // Concurrent calls for the same container: one wins, the others are refused, not mixed.
    let results = rt.block_on(async {
        let calls = (0..3).map(|_| {
            let mut client = daemon.clone();
            let request = apply("/data", &container, &fault_actions(5));
            async move { client.apply_io_chaos(request).await }
        });
        futures::future::join_all(calls).await
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let aborted: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    ensure!(ok >= 1, "no call succeeded: {results:?}");
    ensure!(
        !aborted.is_empty(),
        "concurrent calls were not refused: {results:?}"
    );
    for status in &aborted {
        ensure!(
            status.code() == tonic::Code::Aborted && status.message().contains("in progress"),
            "{status:?}"
        );
    }
    ensure!(
        fault_mounts(pod.pid).len() == 1,
        "mounts: {:?}",
        fault_mounts(pod.pid)
    );
    ensure!(
        journal_records(&agent).len() == 1,
        "journal: {:?}",
        journal_records(&agent)
    );
    rt.block_on(daemon.apply_io_chaos(apply("/data", &container, "[]")))?;
    ensure!(
        fault_mounts(pod.pid).is_empty() && journal_records(&agent).is_empty(),
        "recovery left state"
    );

    // Issue 23: 1,024 long actions (over 300 KiB) reach the injector whole; on its command
    // line they failed with E2BIG (an argument holds at most 128 KiB).
    let actions = many_actions(1024);
    ensure!(actions.len() > 300 * 1024, "{} bytes", actions.len());
    let before = agent.rss_kib();
    rt.block_on(daemon.apply_io_chaos(apply("/data", &container, &actions)))?;
    ensure!(fault_mounts(pod.pid).len() == 1, "not mounted");
    rt.block_on(daemon.apply_io_chaos(apply("/data", &container, "[]")))?;
    ensure!(
        fault_mounts(pod.pid).is_empty() && journal_records(&agent).is_empty(),
        "recovery left state"
    );

    // Issue 23: four requests of 20,000 actions once took the agent from 14 MB to 646 MB for
    // good. Now they are refused before their actions are parsed, and the largest accepted
    // ones are given back: after four of each, the agent holds no more than a few MiB more.
    // About 116 bytes each, as in the report (5,000 were 579 KiB): 2.3 MB, under gRPC's 4 MiB.
    let huge = format!(
        "[{}]",
        (0..20_000)
            .map(|i| format!(
                r#"{{"type":"latency","path":"/data/{}/{i:05}/**","latency":"1ms"}}"#,
                "d".repeat(56)
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    ensure!(
        huge.len() > 2_000_000 && huge.len() < 4 << 20,
        "{} bytes",
        huge.len()
    );
    let after_one = agent.rss_kib();
    for _ in 0..4 {
        let refused = rt
            .block_on(daemon.apply_io_chaos(apply("/data", &container, &huge)))
            .unwrap_err();
        ensure!(
            refused.code() == tonic::Code::InvalidArgument,
            "{refused:?}"
        );
    }
    let after_refused = agent.rss_kib();
    for _ in 0..4 {
        rt.block_on(daemon.apply_io_chaos(apply("/data", &container, &actions)))?;
        rt.block_on(daemon.apply_io_chaos(apply("/data", &container, "[]")))?;
    }
    let after = agent.rss_kib();
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "io: agent RSS {:.1} MiB before the large requests, {:.1} after one 1,024-action cycle, {:.1} after 4 × 20,000 refused, {:.1} after 4 more cycles",
        mib(before),
        mib(after_one),
        mib(after_refused),
        mib(after)
    );
    ensure!(
        before > 0 && after < before + 24 * 1024,
        "the agent kept {} KiB after the large requests (from {before} KiB)",
        after.saturating_sub(before)
    );
    ensure!(
        fault_mounts(pod.pid).is_empty() && journal_records(&agent).is_empty(),
        "recovery left state"
    );
    tb.remove_pod(&pod)?;
    Ok(())
}

/// `n` latency actions on paths no file has, each about 300 bytes.
fn many_actions(n: usize) -> String {
    let long = "d".repeat(250);
    let actions: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"type":"latency","path":"/data/{long}/{i}/**","latency":"1ms"}}"#))
        .collect();
    format!("[{}]", actions.join(","))
}

fn cli_duration(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-cli"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-cli")?;
    let w = Workload::start(tb, "cli-loop")?;
    let container = w.pod.container_uri();
    let dry = agent.cli(&[
        "attack",
        "io",
        "--container",
        &container,
        "--path",
        "/data",
        "--errno",
        "5",
        "--dry-run",
    ])?;
    ensure!(
        dry.status.success(),
        "dry run: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&dry.stdout).contains("would mount"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    ensure!(fault_mounts(w.pod.pid).is_empty(), "a dry run mounted");

    let bad = agent.cli(&[
        "attack",
        "io",
        "--container",
        &container,
        "--path",
        "/data",
        "--errno",
        "5",
        "--percent",
        "101",
    ])?;
    ensure!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("percent"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let mark = w.log().len();
    let attack = agent.cli(&[
        "attack",
        "io",
        "--container",
        &container,
        "--path",
        "/data",
        "--errno",
        "5",
        "--methods",
        "write",
        "--duration",
        "1s",
    ])?;
    ensure!(
        attack.status.success(),
        "attack: {}",
        String::from_utf8_lossy(&attack.stderr)
    );
    let failed = w
        .wait_for_line(mark, |l| l.contains("write:FAIL"))
        .context("the pod never saw the fault")?;
    ensure!(
        failed.contains("read:ok"),
        "only writes were to fail: {failed}"
    );
    let listed = agent.cli(&["list"])?;
    ensure!(
        String::from_utf8_lossy(&listed.stdout).contains(&container),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    ensure!(
        eventually(Duration::from_secs(5), || fault_mounts(w.pod.pid)
            .is_empty()),
        "the experiment outlived its duration"
    );
    let mark = w.log().len();
    w.wait_healthy(mark)?;
    w.assert_data_intact()?;
    tb.remove_pod(&w.pod)?;
    Ok(())
}
