//! TimeChaos end to end: long-lived programs in a testbed pod read CLOCK_REALTIME through the
//! vDSO every 100 ms (`timeshift/tests/programs/clock_reader.c`, one dynamically linked, one
//! static) and log it next to what the system call says (which no vDSO patch changes), so
//! every line tells the shift it saw. The agent shifts them over mTLS (SetTimeOffset, as Chaos
//! Mesh's controller calls it) or through the CLI, and puts them back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use faultline_proto::pb;
use testbed::{Pod, PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, eventually, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "time::readers_see_plus_one_day_then_the_true_time_and_a_process_started_later_is_shifted",
            plus_one_day_story,
        ),
        (
            "time::cli_shifts_realtime_and_monotonic_when_both_are_in_the_mask",
            cli_both_clocks_story,
        ),
        (
            "time::an_agent_sigkill_and_restart_puts_every_process_back",
            agent_crash_story,
        ),
    ]
}

const DAY_NS: i128 = 86_400_000_000_000;
const SECOND_NS: i128 = 1_000_000_000;

fn build(args: &[&str], out: &Path) -> anyhow::Result<()> {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../timeshift/tests/programs/clock_reader.c");
    let result = Command::new("cc")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(&src)
        .output()
        .context("running cc (gcc, installed by scripts/setup.sh)")?;
    ensure!(
        result.status.success(),
        "building {}: {}",
        out.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    Ok(())
}

/// The readers in a host directory the pods mount at /tools: `reader-static`, and
/// `reader-dynamic` with its own glibc and loader beside it (busybox images have no libc).
fn tools(tb: &Testbed) -> anyhow::Result<PathBuf> {
    let dir = tb.host_dir("time-tools")?;
    if !dir.join("reader-static").exists() {
        build(&["-O2", "-pthread", "-static"], &dir.join("reader-static"))?;
    }
    if !dir.join("reader-dynamic").exists() {
        for (from, name) in [
            ("/lib64/ld-linux-x86-64.so.2", "ld-linux-x86-64.so.2"),
            ("/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6"),
        ] {
            std::fs::copy(std::fs::canonicalize(from)?, dir.join(name))?;
        }
        build(
            &[
                "-O2",
                "-pthread",
                "-Wl,--dynamic-linker=/tools/ld-linux-x86-64.so.2",
                "-Wl,-rpath=/tools",
            ],
            &dir.join("reader-dynamic"),
        )?;
    }
    Ok(dir)
}

#[derive(Debug, Clone)]
struct Line {
    t: i128,
    pid: i128,
    rt: i128,
    rt_sys: i128,
    mono: i128,
    mono_sys: i128,
}

impl Line {
    fn parse(text: &str) -> Option<Line> {
        let get = |key: &str| -> Option<i128> {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        Some(Line {
            t: get("t")?,
            pid: get("pid")?,
            rt: get("rt")?,
            rt_sys: get("rt_sys")?,
            mono: get("mono")?,
            mono_sys: get("mono_sys")?,
        })
    }
    fn rt_shift(&self) -> i128 {
        self.rt - self.rt_sys
    }
    fn mono_shift(&self) -> i128 {
        self.mono - self.mono_sys
    }
}

fn near(actual: i128, expected: i128) -> bool {
    (actual - expected).abs() < SECOND_NS
}

/// CLOCK_MONOTONIC now, as the readers' `t` (no time namespace: the host's is theirs).
fn mark() -> i128 {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    i128::from(now.tv_sec()) * SECOND_NS + i128::from(now.tv_nsec())
}

fn host_realtime() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

struct ReaderPod {
    pod: Pod,
    out: PathBuf,
}

impl ReaderPod {
    /// Both readers from the start; `late` (static) once /out/go exists.
    fn start(tb: &Testbed, name: &str) -> anyhow::Result<ReaderPod> {
        let out = tb.host_dir(&format!("{name}-out"))?;
        let pod = tb.run_pod(
            PodSpec::new(name)
                .shell(
                    "/tools/reader-dynamic loop /out/dynamic & /tools/reader-static loop /out/static & \
                     while [ ! -e /out/go ]; do sleep 0.1; done; \
                     exec /tools/reader-static loop /out/late",
                )
                .volume(Volume::host_dir(&out, "/out"))
                .volume(Volume::host_dir(tools(tb)?, "/tools").readonly()),
        )?;
        let r = ReaderPod { pod, out };
        ensure!(
            eventually(Duration::from_secs(10), || r.lines("dynamic").len() >= 2
                && r.lines("static").len() >= 2),
            "the readers never ran: dynamic {:?}, static {:?}",
            r.lines("dynamic"),
            r.lines("static")
        );
        Ok(r)
    }

    fn lines(&self, log: &str) -> Vec<Line> {
        std::fs::read_to_string(self.out.join(log))
            .unwrap_or_default()
            .lines()
            .filter_map(Line::parse)
            .collect()
    }

    /// `n` lines of `log` read after `t`.
    fn after(&self, log: &str, t: i128, n: usize) -> anyhow::Result<Vec<Line>> {
        let mut found = Vec::new();
        eventually(Duration::from_secs(10), || {
            found = self.lines(log).into_iter().filter(|l| l.t > t).collect();
            found.len() >= n
        });
        ensure!(
            found.len() >= n,
            "{log}: only {} lines after the mark",
            found.len()
        );
        Ok(found)
    }

    /// Every reader's lines after `t` show `rt` and `mono` shifts (± 1 s).
    fn expect(&self, logs: &[&str], t: i128, rt: i128, mono: i128) -> anyhow::Result<()> {
        for log in logs {
            let lines = self.after(log, t, 3)?;
            ensure!(
                lines
                    .iter()
                    .all(|l| near(l.rt_shift(), rt) && near(l.mono_shift(), mono)),
                "{log}: expected a CLOCK_REALTIME shift of {rt} ns and CLOCK_MONOTONIC {mono} \
                 ns, read {:?}",
                lines
                    .iter()
                    .map(|l| (l.rt_shift(), l.mono_shift()))
                    .collect::<Vec<_>>()
            );
        }
        Ok(())
    }
}

fn request(pod: &ReaderPod, uid: &str, sec: i64, mask: u64) -> pb::TimeRequest {
    pb::TimeRequest {
        container_id: pod.pod.container_uri(),
        sec,
        nsec: 0,
        clk_ids_mask: mask,
        uid: uid.into(),
        pod_container_name: format!("{}:main", pod.pod.name),
    }
}

fn plus_one_day_story(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-time-day"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-time-day")?;
    let r = ReaderPod::start(tb, "time-day")?;
    let before = mark();
    r.expect(&["dynamic", "static"], before, 0, 0)?;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    let uid = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    rt.block_on(daemon.set_time_offset(request(&r, uid, 86_400, 1)))?;
    let shifted = mark();
    // Every line read after the call returned: +1 day on CLOCK_REALTIME, CLOCK_MONOTONIC
    // (not in the mask) unshifted.
    r.expect(&["dynamic", "static"], shifted, DAY_NS, 0)?;

    // A process started in the container now (the shell forks and execs it) is shifted by the
    // agent's watcher: its lines are shifted from some point on, and stay shifted.
    std::fs::write(r.out.join("go"), b"")?;
    ensure!(
        eventually(Duration::from_secs(10), || {
            let late = r.lines("late");
            late.len() >= 4
                && late[late.len() - 3..]
                    .iter()
                    .all(|l| near(l.rt_shift(), DAY_NS))
        }),
        "the process started after the shift was not shifted: {:?}",
        r.lines("late")
            .iter()
            .map(|l| l.rt_shift())
            .collect::<Vec<_>>()
    );
    let late = r.lines("late");
    let first_shifted = late
        .iter()
        .position(|l| near(l.rt_shift(), DAY_NS))
        .unwrap_or(late.len());
    ensure!(
        late[first_shifted..]
            .iter()
            .all(|l| near(l.rt_shift(), DAY_NS)),
        "the late process went back and forth: {late:?}"
    );
    eprintln!(
        "time: the late process read {first_shifted} unshifted line(s) (100 ms apart) before \
         the watcher shifted it"
    );

    rt.block_on(daemon.recover_time_offset(pb::TimeRequest {
        sec: 0,
        clk_ids_mask: 0,
        ..request(&r, uid, 0, 0)
    }))?;
    let recovered = mark();
    r.expect(&["dynamic", "static", "late"], recovered, 0, 0)?;
    // And that is the true time, as the host tells it (± 1 s).
    let last = r.after("static", recovered, 3)?;
    let newest = last.last().context("no line")?;
    ensure!(
        (host_realtime() - newest.rt).abs() < 2 * SECOND_NS,
        "CLOCK_REALTIME in the pod {} vs the host {}",
        newest.rt,
        host_realtime()
    );
    // The same uid again is no error and changes nothing.
    rt.block_on(daemon.recover_time_offset(request(&r, uid, 0, 0)))?;
    let pids: std::collections::BTreeSet<i128> = r.lines("dynamic").iter().map(|l| l.pid).collect();
    ensure!(pids.len() == 1, "the dynamic reader restarted: {pids:?}");
    tb.remove_pod(&r.pod)?;
    Ok(())
}

fn cli_both_clocks_story(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-time-cli"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-time-cli")?;
    let r = ReaderPod::start(tb, "time-cli")?;
    let container = r.pod.container_uri();
    let out = agent.cli(&[
        "attack",
        "time",
        "--container",
        &container,
        "--offset",
        "-5m",
        "--clocks",
        "CLOCK_REALTIME,CLOCK_MONOTONIC",
    ])?;
    ensure!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout)?.trim().to_owned();
    let shifted = mark();
    r.expect(
        &["dynamic", "static"],
        shifted,
        -300 * SECOND_NS,
        -300 * SECOND_NS,
    )?;
    let list = agent.cli(&["list"])?;
    let listed = String::from_utf8_lossy(&list.stdout);
    ensure!(listed.contains(&id), "{listed}");
    // Updating the same experiment: only CLOCK_REALTIME now, +1h.
    let out = agent.cli(&[
        "attack",
        "time",
        "--container",
        &container,
        "--offset",
        "1h",
        "--id",
        &id,
    ])?;
    ensure!(out.status.success(), "{out:?}");
    let updated = mark();
    r.expect(&["dynamic", "static"], updated, 3600 * SECOND_NS, 0)?;
    // Bad input names the field, changes nothing.
    let bad = agent.cli(&[
        "attack",
        "time",
        "--container",
        &container,
        "--offset",
        "1d",
    ])?;
    ensure!(!bad.status.success(), "{bad:?}");
    ensure!(
        String::from_utf8_lossy(&bad.stderr).contains("offset"),
        "{bad:?}"
    );
    let out = agent.cli(&["recover", &id])?;
    ensure!(out.status.success(), "{out:?}");
    let recovered = mark();
    r.expect(&["dynamic", "static"], recovered, 0, 0)?;
    tb.remove_pod(&r.pod)?;
    Ok(())
}

fn agent_crash_story(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-time-crash"))?;
    let mut agent = AgentProcess::start(tb, &pki, "agent-time-crash")?;
    let r = ReaderPod::start(tb, "time-crash")?;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    rt.block_on(daemon.set_time_offset(request(&r, "crash-1", 86_400, 1)))?;
    let shifted = mark();
    r.expect(&["dynamic", "static"], shifted, DAY_NS, 0)?;
    // A process started meanwhile is shifted by the watcher, then the agent dies.
    std::fs::write(r.out.join("go"), b"")?;
    ensure!(
        eventually(Duration::from_secs(10), || r
            .lines("late")
            .last()
            .is_some_and(|l| near(l.rt_shift(), DAY_NS))),
        "the late process was not shifted"
    );
    agent.kill()?;
    let journal = agent.state_dir.join("journal");
    ensure!(
        std::fs::read_dir(&journal)?.count() == 1,
        "no journal record for the shift"
    );
    agent.spawn()?;
    let restarted = mark();
    r.expect(&["dynamic", "static", "late"], restarted, 0, 0)?;
    ensure!(
        eventually(Duration::from_secs(5), || std::fs::read_dir(&journal)
            .map(|d| d.count() == 0)
            .unwrap_or(false)),
        "the journal keeps the record: {}",
        agent.log_text()
    );
    ensure!(
        agent.log_text().contains("time recovered"),
        "{}",
        agent.log_text()
    );
    tb.remove_pod(&r.pod)?;
    Ok(())
}
