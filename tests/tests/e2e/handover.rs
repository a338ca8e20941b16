//! Handover end to end: processes in a testbed pod that opened their files (or their working
//! directory, or a shared mapping) under the volume *before* the experiment see the fault from
//! their next use after ApplyIOChaos returns, and recover after it, with the same descriptor
//! numbers, offsets and addresses; only they are stopped, and their registers are intact.
//!
//! The pod runs `handover/tests/programs/holder.c` (built static here: busybox images have no
//! libc). Its files are runs of 4-byte tokens (`O000O001..`), so each read says at what offset
//! it landed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use testbed::{Pod, PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, eventually, fault_mounts, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "handover::a_file_opened_before_sees_eio_then_reads_on_from_the_same_offset",
            open_file_story,
        ),
        (
            "handover::cwd_and_shared_mmap_see_the_fault_and_recover",
            cwd_and_mmap_story,
        ),
        (
            "handover::seccomp_and_no_handover_leave_files_alone_with_a_report",
            left_alone_story,
        ),
        (
            "handover::after_an_agent_crash_the_journal_moves_files_back",
            agent_crash_story,
        ),
        (
            "handover::a_thread_stuck_in_an_uninterruptible_read_leaves_its_process_untouched",
            stuck_thread_story,
        ),
        (
            "handover::of_300_idle_processes_none_is_woken",
            idle_processes_story,
        ),
    ]
}

fn tokens() -> String {
    (0..20_000).map(|i| format!("O{:03}", i % 1000)).collect()
}

/// Builds the holder into a host directory the pods mount at /tools.
fn tools(tb: &Testbed) -> anyhow::Result<PathBuf> {
    let dir = tb.host_dir("handover-tools")?;
    let bin = dir.join("holder");
    if !bin.exists() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../handover/tests/programs/holder.c");
        let out = Command::new("cc")
            .args(["-O2", "-static", "-mno-red-zone", "-o"])
            .arg(&bin)
            .arg(&src)
            .output()
            .context("running cc (gcc, installed by scripts/setup.sh)")?;
        ensure!(
            out.status.success(),
            "building holder: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dir)
}

struct HolderPod {
    pod: Pod,
    out: PathBuf,
}

impl HolderPod {
    fn start(tb: &Testbed, name: &str, script: &str) -> anyhow::Result<HolderPod> {
        let data = tb.host_dir(&format!("{name}-data"))?;
        let out = tb.host_dir(&format!("{name}-out"))?;
        let slow = tb.host_dir(&format!("{name}-slow"))?;
        std::fs::write(slow.join("x"), tokens())?;
        std::fs::create_dir_all(data.join("dir"))?;
        std::fs::write(data.join("f"), tokens())?;
        std::fs::write(data.join("dir/f"), tokens())?;
        std::fs::write(data.join("m"), tokens())?;
        let pod = tb.run_pod(
            PodSpec::new(name)
                .shell(script)
                .volume(Volume::host_dir(&data, "/data"))
                .volume(Volume::host_dir(&out, "/out"))
                .volume(Volume::host_dir(&slow, "/slow"))
                .volume(Volume::host_dir(tools(tb)?, "/tools").readonly()),
        )?;
        Ok(HolderPod { pod, out })
    }

    fn lines(&self, log: &str) -> Vec<String> {
        std::fs::read_to_string(self.out.join(log))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Lines of `log` whose use started after `t` (monotonic ns), once there are `n`.
    fn lines_after(&self, log: &str, t: u64, n: usize) -> anyhow::Result<Vec<String>> {
        let mut found = Vec::new();
        eventually(Duration::from_secs(10), || {
            found = self
                .lines(log)
                .into_iter()
                .filter(|l| num(l, "t") > t)
                .collect();
            found.len() >= n
        });
        ensure!(
            found.len() >= n,
            "{log}: only {} lines after the mark: {found:?} (last: {:?})",
            found.len(),
            self.lines(log).last()
        );
        Ok(found)
    }
}

fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
}

fn num(line: &str, key: &str) -> u64 {
    value(line, key).parse().unwrap_or(0)
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
        .unwrap_or(0)
}

fn read_fault() -> String {
    r#"[{"type":"fault","path":"/data/**","percent":100,"methods":["read"],"faults":[{"errno":5,"weight":1}]}]"#.into()
}

/// A fault on every method (Chaos Mesh's default when `methods` is empty): the handover's own
/// lookup and open must not be refused by it.
fn every_method_fault() -> String {
    r#"[{"type":"fault","path":"/data/**","percent":100,"faults":[{"errno":5,"weight":1}]}]"#.into()
}

fn apply(container: &str, actions: &str) -> pb::ApplyIoChaosRequest {
    apply_on("/data", container, actions)
}

fn apply_on(volume: &str, container: &str, actions: &str) -> pb::ApplyIoChaosRequest {
    pb::ApplyIoChaosRequest {
        actions: actions.into(),
        volume: volume.into(),
        container_id: container.into(),
        enter_ns: true,
        ..Default::default()
    }
}

fn open_file_story(tb: &Testbed) -> anyhow::Result<()> {
    let tools = tools(tb)?;
    drop(tools);
    let pki = Pki::create(&tb.base_dir().join("pki-handover-fd"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-handover-fd")?;
    // Two idle processes that hold nothing under /data, a register checker, the reader.
    let h = HolderPod::start(
        tb,
        "handover-fd",
        "sleep 100000 & sleep 100000 & /tools/holder regs /data/f /out/regs & \
         exec /tools/holder fd /data/f /out/fd",
    )?;
    ensure!(
        eventually(Duration::from_secs(10), || h.lines("fd").len() >= 3
            && !h.lines("regs").is_empty()),
        "the holders never ran: {:?}",
        h.lines("fd")
    );
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    let fd = value(&h.lines("fd")[0], "fd").to_owned();

    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), &every_method_fault())))?;
    let applied = monotonic_ns();
    let before: Vec<String> = h
        .lines("fd")
        .into_iter()
        .filter(|l| num(l, "t") <= applied)
        .collect();
    let last_ok = before
        .iter()
        .rev()
        .find(|l| value(l, "r") == "OK")
        .context("no read before")?;
    let faulted = h.lines_after("fd", applied, 3)?;
    ensure!(
        faulted.iter().all(|l| value(l, "r") == "E5"),
        "a read after ApplyIOChaos returned did not fail with EIO: {faulted:?}"
    );
    ensure!(
        faulted
            .iter()
            .all(|l| value(l, "pos") == value(last_ok, "pos")),
        "the offset moved: before {last_ok}, after {faulted:?}"
    );

    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    let report = listed
        .experiments
        .first()
        .and_then(|e| e.handover.clone())
        .context("no handover report")?;
    // The reader's fd; the register checker's fd, cwd and mapping.
    ensure!(
        report.enabled
            && report.fds == 2
            && report.cwds == 1
            && report.mappings == 1
            && report.stopped == 2,
        "{report:?}"
    );
    // The shell's two sleeps were looked at but never stopped.
    ensure!(report.scanned >= 4, "{report:?}");

    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), "")))?;
    let recovered = monotonic_ns();
    ensure!(
        fault_mounts(h.pod.pid).is_empty(),
        "mounts left: {:?}",
        fault_mounts(h.pod.pid)
    );
    let after = h.lines_after("fd", recovered, 3)?;
    ensure!(
        after.iter().all(|l| value(l, "r") == "OK"),
        "{after:?}\nagent log:\n{}",
        agent.log_text()
    );
    // From where it left off: over the whole log, the successful reads are consecutive
    // tokens (nothing skipped, nothing read twice), and the fault sits between two of them.
    let all = h.lines("fd");
    let tokens: Vec<u64> = all
        .iter()
        .filter(|l| value(l, "r") == "OK")
        .filter_map(|l| value(l, "data").strip_prefix('O')?.parse().ok())
        .collect();
    ensure!(
        tokens.windows(2).all(|w| w[1] == (w[0] + 1) % 1000),
        "reads were lost or repeated: {tokens:?}"
    );
    let first_fault = all
        .iter()
        .position(|l| value(l, "r") == "E5")
        .context("no fault")?;
    let last_fault = all
        .iter()
        .rposition(|l| value(l, "r") == "E5")
        .context("no fault")?;
    ensure!(
        all[first_fault..=last_fault]
            .iter()
            .all(|l| value(l, "r") == "E5"),
        "a read succeeded while the fault was in force: {:?}",
        &all[first_fault..=last_fault]
    );
    ensure!(
        all.iter().all(|l| value(l, "fd") == fd),
        "the fd number changed"
    );
    // The register checker sat in a 200 ms blocking read through both handovers; its reads
    // that started before and ended after each one checked every register.
    h.lines_after("regs", recovered, 1)?;
    let regs = h.lines("regs");
    ensure!(
        regs.iter().all(|l| value(l, "r") == "REGS_OK"),
        "registers: {regs:?}"
    );
    tb.remove_pod(&h.pod)?;
    Ok(())
}

fn cwd_and_mmap_story(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-handover-cwd"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-handover-cwd")?;
    let h = HolderPod::start(
        tb,
        "handover-cwd",
        "/tools/holder cwd /data/dir /out/cwd & exec /tools/holder mmap /data/m /out/mmap",
    )?;
    ensure!(
        eventually(Duration::from_secs(10), || h.lines("cwd").len() >= 3
            && h.lines("mmap").len() >= 3),
        "the holders never ran"
    );
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), &read_fault())))?;
    let applied = monotonic_ns();
    let cwd = h.lines_after("cwd", applied, 3)?;
    ensure!(cwd.iter().all(|l| value(l, "r") == "E5"), "cwd: {cwd:?}");
    let mmap = h.lines_after("mmap", applied, 3)?;
    ensure!(
        mmap.iter().all(|l| value(l, "r") == "SIGBUS"),
        "mmap: {mmap:?}"
    );
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    let report = listed
        .experiments
        .first()
        .and_then(|e| e.handover.clone())
        .context("no report")?;
    ensure!(report.cwds == 1 && report.mappings == 1, "{report:?}");

    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), "")))?;
    let recovered = monotonic_ns();
    ensure!(fault_mounts(h.pod.pid).is_empty(), "mounts left");
    let cwd = h.lines_after("cwd", recovered, 3)?;
    ensure!(
        cwd.iter()
            .all(|l| value(l, "r") == "OK" && value(l, "data") == "O000"),
        "cwd: {cwd:?}"
    );
    let mmap = h.lines_after("mmap", recovered, 3)?;
    ensure!(
        mmap.iter()
            .all(|l| value(l, "r") == "OK" && value(l, "data") == "O000"),
        "mmap: {mmap:?}"
    );
    let mmap_lines = h.lines("mmap");
    let addresses: std::collections::BTreeSet<&str> =
        mmap_lines.iter().map(|l| value(l, "pos")).collect();
    ensure!(addresses.len() == 1, "the mapping moved: {addresses:?}");
    tb.remove_pod(&h.pod)?;
    Ok(())
}

fn left_alone_story(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-handover-left"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-handover-left")?;
    let h = HolderPod::start(
        tb,
        "handover-left",
        "exec /tools/holder seccomp /data/f /out/seccomp",
    )?;
    ensure!(
        eventually(Duration::from_secs(10), || h.lines("seccomp").len() >= 3),
        "the holder never ran"
    );
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), &read_fault())))?;
    let applied = monotonic_ns();
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    let report = listed
        .experiments
        .first()
        .and_then(|e| e.handover.clone())
        .context("no report")?;
    ensure!(report.fds == 0 && report.stopped == 1, "{report:?}");
    let skip = report
        .skipped
        .iter()
        .find(|s| s.what.starts_with("fd "))
        .context("no skip reported")?;
    ensure!(
        skip.reason.contains("seccomp") && skip.reason.contains("not permitted"),
        "{skip:?}"
    );
    // Not moved, not harmed: it goes on reading its original file.
    let lines = h.lines_after("seccomp", applied, 3)?;
    ensure!(lines.iter().all(|l| value(l, "r") == "OK"), "{lines:?}");
    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), "")))?;

    // --no-handover (faultline.agent.v1): a file opened before is left on the original.
    let started = rt
        .block_on(api.start_io_experiment(api::StartIoExperimentRequest {
            container_id: h.pod.container_uri(),
            volume: "/data".into(),
            actions: read_fault(),
            no_handover: true,
            ..Default::default()
        }))?
        .into_inner();
    ensure!(started.plan.contains("handover: off"), "{}", started.plan);
    let t = monotonic_ns();
    let lines = h.lines_after("seccomp", t, 3)?;
    ensure!(lines.iter().all(|l| value(l, "r") == "OK"), "{lines:?}");
    rt.block_on(api.recover(api::RecoverRequest {
        id: started.id,
        all: false,
    }))?;
    ensure!(fault_mounts(h.pod.pid).is_empty(), "mounts left");
    tb.remove_pod(&h.pod)?;
    Ok(())
}

/// The agent and its injector are SIGKILLed with a file handed over (the reader gets ENOTCONN;
/// an injector that outlives the agent alone is adopted instead, see `io::`); the restarted
/// agent's journal recovery unmounts and moves the file back, and the reader goes on from
/// where it was, with the same descriptor.
fn agent_crash_story(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-handover-crash"))?;
    let mut agent = AgentProcess::start(tb, &pki, "agent-handover-crash")?;
    let h = HolderPod::start(
        tb,
        "handover-crash",
        "exec /tools/holder fd /data/f /out/fd",
    )?;
    ensure!(
        eventually(Duration::from_secs(10), || h.lines("fd").len() >= 3),
        "the holder never ran"
    );
    let fd = value(&h.lines("fd")[0], "fd").to_owned();
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    let started = rt
        .block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), &read_fault())))?
        .into_inner();
    let applied = monotonic_ns();
    let faulted = h.lines_after("fd", applied, 2)?;
    ensure!(faulted.iter().all(|l| value(l, "r") == "E5"), "{faulted:?}");

    agent.kill()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started.instance as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    agent.spawn()?;
    ensure!(
        eventually(Duration::from_secs(5), || fault_mounts(h.pod.pid)
            .is_empty()),
        "the restarted agent left the mount: {:?}",
        fault_mounts(h.pod.pid)
    );
    ensure!(
        eventually(Duration::from_secs(5), || agent
            .log_text()
            .contains("handed back to the original directory")),
        "{}",
        agent.log_text()
    );
    let recovered = monotonic_ns();
    let after = h.lines_after("fd", recovered, 3)?;
    ensure!(after.iter().all(|l| value(l, "r") == "OK"), "{after:?}");
    let all = h.lines("fd");
    ensure!(
        all.iter().all(|l| value(l, "fd") == fd),
        "the fd number changed"
    );
    let tokens: Vec<u64> = all
        .iter()
        .filter(|l| value(l, "r") == "OK")
        .filter_map(|l| value(l, "data").strip_prefix('O')?.parse().ok())
        .collect();
    ensure!(
        tokens.windows(2).all(|w| w[1] == (w[0] + 1) % 1000),
        "reads were lost or repeated: {tokens:?}"
    );
    tb.remove_pod(&h.pod)?;
    Ok(())
}

/// A process holds /data/f while one of its threads sits in a FUSE read of /slow/x that a
/// latency fault delays by 8 s: a FUSE request, once interrupted, waits for its reply
/// uninterruptibly, so that thread cannot be stopped. The handover for /data gives up on the
/// process after its stop timeout, says so, and leaves it running and untraced.
fn stuck_thread_story(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-handover-stuck"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-handover-stuck")?;
    let h = HolderPod::start(
        tb,
        "handover-stuck",
        "exec /tools/holder stuck /data/f /out/fd",
    )?;
    ensure!(
        eventually(Duration::from_secs(10), || h.lines("fd").len() >= 3
            && h.lines("fd.slow").len() >= 3),
        "the holder never ran"
    );
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    let container = h.pod.container_uri();
    let latency =
        r#"[{"type":"latency","path":"/slow/**","percent":100,"latency":"8s","methods":["read"]}]"#;
    rt.block_on(daemon.apply_io_chaos(apply_on("/slow", &container, latency)))?;
    // The slow thread is now in a read that takes 8 s.
    let slow_applied = monotonic_ns();
    std::thread::sleep(Duration::from_millis(300));
    let slow_started = h
        .lines("fd.slow")
        .iter()
        .filter(|l| num(l, "t") > slow_applied)
        .count();
    ensure!(
        slow_started == 0,
        "the slow read was not slow: {:?}",
        h.lines("fd.slow").last()
    );

    rt.block_on(daemon.apply_io_chaos(apply(&container, &read_fault())))?;
    let applied = monotonic_ns();
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    let report = listed
        .experiments
        .iter()
        .find(|e| e.volume == "/data")
        .and_then(|e| e.handover.clone())
        .context("no report")?;
    ensure!(report.fds == 0, "{report:?}");
    let skip = report
        .skipped
        .iter()
        .find(|s| s.what == "process")
        .with_context(|| format!("not reported: {report:?}"))?;
    ensure!(skip.reason.contains("did not stop within"), "{skip:?}");
    // Left running (its main thread reads its original file on) and traced by no one.
    let lines = h.lines_after("fd", applied, 3)?;
    ensure!(lines.iter().all(|l| value(l, "r") == "OK"), "{lines:?}");
    for task in std::fs::read_dir(format!("/proc/{}/task", h.pod.pid))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        ensure!(
            status.contains("TracerPid:\t0\n"),
            "a thread is still traced: {status}"
        );
    }

    rt.block_on(daemon.apply_io_chaos(apply(&container, "")))?;
    rt.block_on(daemon.apply_io_chaos(apply_on("/slow", &container, "")))?;
    ensure!(
        fault_mounts(h.pod.pid).is_empty(),
        "mounts left: {:?}",
        fault_mounts(h.pod.pid)
    );
    // The slow thread's read ended when its rule went, and it goes on.
    let recovered = monotonic_ns();
    let slow = h.lines_after("fd.slow", recovered, 2)?;
    ensure!(slow.iter().all(|l| value(l, "r") == "OK0"), "{slow:?}");
    tb.remove_pod(&h.pod)?;
    Ok(())
}

/// Context switches of every `sleep` in the mount namespace of `pid`, by PID: a process that
/// was stopped (seized and interrupted) was woken, which counts; one left alone was not.
fn idle_switches(pid: u32) -> anyhow::Result<std::collections::BTreeMap<u32, String>> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))?;
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{p}/ns/mnt"))
            .ok()
            .as_ref()
            != Some(&ns)
        {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        if !status.starts_with("Name:\tsleep") {
            continue;
        }
        let switches: Vec<&str> = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .collect();
        out.insert(p, switches.join(" "));
    }
    Ok(out)
}

/// A container with 300 idle processes and one reader: only the reader is stopped (the idle
/// ones are not even woken: their context switch counts do not move), and it sees the fault.
fn idle_processes_story(tb: &Testbed) -> anyhow::Result<()> {
    const IDLE: usize = 300;
    let pki = Pki::create(&tb.base_dir().join("pki-handover-idle"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-handover-idle")?;
    let h = HolderPod::start(
        tb,
        "handover-idle",
        &format!(
            "i=0; while [ $i -lt {IDLE} ]; do sleep 100000 & i=$((i+1)); done; \
             exec /tools/holder fd /data/f /out/fd"
        ),
    )?;
    ensure!(
        eventually(Duration::from_secs(20), || h.lines("fd").len() >= 3),
        "the holder never ran"
    );
    // The shell's children may still be turning into `sleep`.
    let mut before = Default::default();
    eventually(Duration::from_secs(20), || {
        before = idle_switches(h.pod.pid).unwrap_or_default();
        before.len() == IDLE
    });
    ensure!(before.len() == IDLE, "{} idle processes", before.len());
    // Asleep for good: their counts no longer move by themselves.
    std::thread::sleep(Duration::from_millis(200));
    before = idle_switches(h.pod.pid)?;
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(agent.controller(&pki))?;
    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), &read_fault())))?;
    let applied = monotonic_ns();
    let faulted = h.lines_after("fd", applied, 2)?;
    ensure!(faulted.iter().all(|l| value(l, "r") == "E5"), "{faulted:?}");
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    let report = listed
        .experiments
        .first()
        .and_then(|e| e.handover.clone())
        .context("no report")?;
    ensure!(
        report.stopped == 1 && report.fds == 1 && report.scanned as usize > IDLE,
        "{report:?}"
    );
    let after = idle_switches(h.pod.pid)?;
    let woken: Vec<u32> = before
        .iter()
        .filter(|(p, s)| after.get(p) != Some(s))
        .map(|(p, _)| *p)
        .collect();
    ensure!(woken.is_empty(), "idle processes were woken: {woken:?}");
    rt.block_on(daemon.apply_io_chaos(apply(&h.pod.container_uri(), "")))?;
    ensure!(fault_mounts(h.pod.pid).is_empty(), "mounts left");
    tb.remove_pod(&h.pod)?;
    Ok(())
}
