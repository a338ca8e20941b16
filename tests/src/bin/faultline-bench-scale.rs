//! Scale benchmark (measures, does not judge): N testbed pods on one node under chaos at once,
//! driven through one real agent over `pb.ChaosDaemon` as Chaos Mesh's controller calls it.
//! Per round, for each N:
//! 1. N concurrent ApplyIOChaos (an EIO fault on each pod's volume), each timed from its own
//!    send to its own return; every pod's read must then fail with EIO;
//! 2. N concurrent SetTcs (netem delay 10 ms: the NFQUEUE path on kernels without sch_netem);
//! 3. both recovered, concurrently (2N requests at once);
//! 4. the leftovers checked: no fault mount in any pod, qdiscs, iptables rules and ipsets as
//!    before, no helper process left under the agent.
//!
//! Memory is taken with every fault in force: the agent's RSS and PSS, and the RSS and PSS of
//! every process under it (injectors; netem's NFQUEUE path is a thread of the agent). PSS
//! (`/proc/PID/smaps_rollup`) shares the pages processes have in common (the injector's code)
//! between them, so the sum is what the node really spends. CPU is read from a CPU accounting
//! cgroup the agent is moved into: it holds every helper the agent starts, exited ones included
//! (per-process times are counted in ticks, and an injector's start takes a few ms).
//!
//! Usage: faultline-bench-scale [--rounds R] [N ...]   (as root; default 3 rounds of 1 10 50)

#[path = "../bench_support.rs"]
mod bench_support;

use std::process::Command;
use std::time::{Duration, Instant};

use bench_support::{CpuCgroup, LocalAgent, Result, descendants, entries, pss_kib, rss_kib};
use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use testbed::{Pod, PodSpec, Testbed, Volume};

type Daemon = ChaosDaemonClient<tonic::transport::Channel>;

/// Chaos Mesh's chaos-daemon DaemonSet asks for this much memory by default (helm values:
/// `chaosDaemon.resources.requests.memory: 256Mi`).
const CHAOS_MESH_REQUEST_MIB: f64 = 256.0;

const FAULT: &str =
    r#"[{"type":"fault","path":"/data/**","percent":100,"faults":[{"errno":5,"weight":1}]}]"#;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut rounds = 3usize;
    let mut sizes = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args.next().ok_or("--rounds needs a number")?.parse()?;
        } else {
            sizes.push(arg.parse::<usize>()?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![1, 10, 50];
    }
    if rounds == 0 || sizes.contains(&0) {
        return Err("rounds and pod counts must be at least 1".into());
    }
    let tb = Testbed::start()?;
    let result = bench(&tb, rounds, &sizes);
    tb.shutdown()?;
    result
}

/// What one pod looks like with no fault: compared after each recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodBaseline {
    qdiscs: u64,
    rules: u64,
    ipsets: u64,
}

fn bench(tb: &Testbed, rounds: usize, sizes: &[usize]) -> Result<()> {
    let most = sizes.iter().copied().max().unwrap_or(1);
    let started = Instant::now();
    let mut pods = Vec::with_capacity(most);
    for i in 0..most {
        let data = tb.host_dir(&format!("scale-{i}"))?;
        std::fs::write(data.join("f"), "data\n")?;
        pods.push(tb.run_pod(
            PodSpec::new(format!("scale-{i}")).volume(Volume::host_dir(&data, "/data")),
        )?);
    }
    eprintln!("{most} pods up in {:.1?}", started.elapsed());
    let baselines = pods.iter().map(pod_baseline).collect::<Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for &n in sizes {
        // A fresh agent for each N: its idle footprint is the baseline of that N.
        let agent = LocalAgent::start(tb, &format!("scale-agent-{n}"))?;
        // The agent and every helper it starts (exited ones too) in a CPU cgroup of their own:
        // per-process times are counted in ticks, and an injector's start is a few ms.
        let cgroup = CpuCgroup::enter(
            agent.pid(),
            &format!("faultline-bench-scale-{}-{n}", std::process::id()),
        )?;
        let daemon = ChaosDaemonClient::new(rt.block_on(agent.channel())?);
        let pods = &pods[..n];
        // One warm-up cycle on one pod: what the agent starts once is not per fault.
        rt.block_on(round(&daemon, agent.pid(), &cgroup, &pods[..1]))?;
        std::thread::sleep(Duration::from_millis(300));
        let mut of_n = Vec::new();
        for i in 0..rounds {
            let idle = Footprint::take(agent.pid(), &cgroup)?;
            let mut r = rt.block_on(round(&daemon, agent.pid(), &cgroup, pods))?;
            r.idle = idle;
            r.leftovers = leftovers(agent.pid(), idle.threads, pods, &baselines[..n])?;
            r.after = Footprint::take(agent.pid(), &cgroup)?;
            eprintln!(
                "N={n} round {}: IO inject max {:.1?}, total {:.1?}, left behind: {}",
                i + 1,
                r.io_inject.iter().max().copied().unwrap_or_default(),
                r.total,
                if r.leftovers.is_empty() {
                    "nothing".into()
                } else {
                    r.leftovers.join("; ")
                }
            );
            of_n.push(r);
        }
        drop(daemon);
        drop(agent);
        drop(cgroup);
        results.push((n, of_n));
    }
    report(&results, rounds);
    Ok(())
}

/// One process tree's footprint: the agent, and every process under it.
#[derive(Clone, Copy, Debug, Default)]
struct Footprint {
    agent_rss: u64,
    agent_pss: u64,
    threads: u64,
    helpers: u64,
    helpers_rss: u64,
    helpers_pss: u64,
    /// CPU time of the agent and every helper it started (live or exited), ns.
    cpu_ns: u64,
}

impl Footprint {
    fn take(agent: u32, cgroup: &CpuCgroup) -> Result<Footprint> {
        let helpers = descendants(agent);
        Ok(Footprint {
            agent_rss: rss_kib(agent),
            agent_pss: pss_kib(agent),
            threads: entries(format!("/proc/{agent}/task")),
            helpers: helpers.len() as u64,
            helpers_rss: helpers.iter().map(|p| rss_kib(*p)).sum(),
            helpers_pss: helpers.iter().map(|p| pss_kib(*p)).sum(),
            cpu_ns: cgroup.usage_ns()?,
        })
    }

    fn total_pss(&self) -> u64 {
        self.agent_pss + self.helpers_pss
    }

    /// CPU (ms) the agent and its helpers spent from `earlier` to this one.
    fn cpu_ms_since(&self, earlier: &Footprint) -> f64 {
        self.cpu_ns.saturating_sub(earlier.cpu_ns) as f64 / 1e6
    }
}

/// One round at one N.
#[derive(Debug, Default)]
struct Round {
    io_inject: Vec<Duration>,
    io_wall: Duration,
    net_inject: Vec<Duration>,
    net_wall: Duration,
    recover: Vec<Duration>,
    recover_wall: Duration,
    total: Duration,
    idle: Footprint,
    with_io: Footprint,
    with_both: Footprint,
    after: Footprint,
    leftovers: Vec<String>,
}

fn io_request(pod: &Pod, actions: &str) -> pb::ApplyIoChaosRequest {
    pb::ApplyIoChaosRequest {
        actions: actions.into(),
        volume: "/data".into(),
        container_id: pod.container_uri(),
        enter_ns: true,
        ..Default::default()
    }
}

fn tc_request(pod: &Pod, delay: bool) -> pb::TcsRequest {
    let tcs = if delay {
        vec![pb::Tc {
            r#type: pb::tc::Type::Netem as i32,
            netem: Some(pb::Netem {
                time: "10ms".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    pb::TcsRequest {
        tcs,
        container_id: pod.container_uri(),
        enter_ns: true,
        pod_uid: pod.uid.clone(),
    }
}

/// Sends one request per pod at once; each one's own latency, and the time until the last.
async fn all_at_once<F, Fut>(
    daemon: &Daemon,
    pods: &[Pod],
    call: F,
) -> Result<(Vec<Duration>, Duration)>
where
    F: Fn(Daemon, Pod) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), tonic::Status>> + Send + 'static,
{
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for pod in pods {
        let fut = call(daemon.clone(), pod.clone());
        let name = pod.name.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            fut.await
                .map(|()| t.elapsed())
                .map_err(|s| format!("{name}: {}: {}", s.code(), s.message()))
        });
    }
    let mut took = Vec::with_capacity(pods.len());
    while let Some(done) = tasks.join_next().await {
        took.push(done??);
    }
    Ok((took, t0.elapsed()))
}

async fn apply_io(
    mut daemon: Daemon,
    pod: Pod,
    actions: &'static str,
) -> std::result::Result<(), tonic::Status> {
    daemon
        .apply_io_chaos(io_request(&pod, actions))
        .await
        .map(|_| ())
}

async fn set_tcs(
    mut daemon: Daemon,
    pod: Pod,
    delay: bool,
) -> std::result::Result<(), tonic::Status> {
    daemon.set_tcs(tc_request(&pod, delay)).await.map(|_| ())
}

/// Whether a read of the pod's file fails with EIO (walked in the pod's own mount namespace).
fn fails_with_eio(pod: &Pod) -> bool {
    std::fs::read(format!("/proc/{}/root/data/f", pod.pid))
        .is_err_and(|e| e.raw_os_error() == Some(nix::errno::Errno::EIO as i32))
}

/// Inject IO on every pod at once, then a delay on every pod at once, then recover all at once.
async fn round(daemon: &Daemon, agent: u32, cgroup: &CpuCgroup, pods: &[Pod]) -> Result<Round> {
    let mut r = Round::default();
    let t0 = Instant::now();
    (r.io_inject, r.io_wall) = all_at_once(daemon, pods, |d, p| apply_io(d, p, FAULT)).await?;
    let not_faulted: Vec<&str> = pods
        .iter()
        .filter(|p| !fails_with_eio(p))
        .map(|p| p.name.as_str())
        .collect();
    if !not_faulted.is_empty() {
        return Err(format!("no EIO in force after ApplyIOChaos returned: {not_faulted:?}").into());
    }
    r.with_io = Footprint::take(agent, cgroup)?;
    (r.net_inject, r.net_wall) = all_at_once(daemon, pods, |d, p| set_tcs(d, p, true)).await?;
    r.with_both = Footprint::take(agent, cgroup)?;
    let t_recover = Instant::now();
    let (io, net) = tokio::join!(
        all_at_once(daemon, pods, |d, p| apply_io(d, p, "")),
        all_at_once(daemon, pods, |d, p| set_tcs(d, p, false)),
    );
    r.recover = io?.0;
    r.recover.extend(net?.0);
    r.recover_wall = t_recover.elapsed();
    r.total = t0.elapsed();
    Ok(r)
}

/// What one pod has with no fault in force.
fn pod_baseline(pod: &Pod) -> Result<PodBaseline> {
    let mut rules = 0;
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        rules += in_pod(pod, &[save])?
            .lines()
            .filter(|l| l.starts_with("-A") || (l.starts_with(':') && !l.ends_with(']')))
            .count() as u64;
    }
    Ok(PodBaseline {
        qdiscs: in_pod(pod, &["tc", "qdisc", "show"])?.lines().count() as u64,
        rules,
        ipsets: in_pod(pod, &["ipset", "list", "-n"])?.lines().count() as u64,
    })
}

/// A tool in the pod's network namespace (through the sandbox, which holds it).
fn in_pod(pod: &Pod, tool: &[&str]) -> Result<String> {
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(pod.sandbox_pid.to_string())
        .arg("-n")
        .args(tool)
        .output()?;
    if !out.status.success() {
        return Err(format!("{tool:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything a recovered round left behind (empty: nothing).
fn leftovers(
    agent: u32,
    idle_threads: u64,
    pods: &[Pod],
    baselines: &[PodBaseline],
) -> Result<Vec<String>> {
    let mut left = Vec::new();
    // Helpers end after their recovery returns (an injector exits once unmounted): give
    // the last ones a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !descendants(agent).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let helpers = descendants(agent);
    if !helpers.is_empty() {
        left.push(format!("helper processes {helpers:?}"));
    }
    // The runtime's blocking threads (which waited on helpers) end after 10 s idle.
    let deadline = Instant::now() + Duration::from_secs(15);
    while entries(format!("/proc/{agent}/task")) > idle_threads && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let threads = entries(format!("/proc/{agent}/task"));
    if threads > idle_threads {
        left.push(format!("agent threads {idle_threads} → {threads}"));
    }
    for (pod, before) in pods.iter().zip(baselines) {
        let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", pod.pid))?;
        if mountinfo.contains("fuse.faultline") {
            left.push(format!("{}: a fault mount", pod.name));
        }
        let now = pod_baseline(pod)?;
        if now != *before {
            left.push(format!("{}: {before:?} → {now:?}", pod.name));
        }
    }
    Ok(left)
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Signed difference in MiB (memory can go down between two samples).
fn delta_mib(after: u64, before: u64) -> f64 {
    (after as f64 - before as f64) / 1024.0
}

fn report(results: &[(usize, Vec<Round>)], rounds: usize) {
    let single = results.iter().find(|(n, _)| *n == 1).map(|(_, rs)| {
        let mut all: Vec<Duration> = rs.iter().flat_map(|r| r.io_inject.clone()).collect();
        quantile(&mut all, 0.5)
    });
    println!(
        "Latency ({rounds} rounds; p50 / max over every request of every round; wall: median round)\n"
    );
    println!(
        "| pods | ApplyIOChaos p50 | max | max / 1-pod p50 | all IO in force | SetTcs p50 | max | all delays in force | recover p50 | max | all recovered | round total |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, rs) in results {
        let mut io: Vec<Duration> = rs.iter().flat_map(|r| r.io_inject.clone()).collect();
        let mut net: Vec<Duration> = rs.iter().flat_map(|r| r.net_inject.clone()).collect();
        let mut rec: Vec<Duration> = rs.iter().flat_map(|r| r.recover.clone()).collect();
        let wall = |f: fn(&Round) -> Duration| {
            let mut w: Vec<Duration> = rs.iter().map(f).collect();
            quantile(&mut w, 0.5)
        };
        let io_max = quantile(&mut io, 1.0);
        let ratio = single.map_or("-".to_string(), |s| {
            format!("{:.1}×", io_max.as_secs_f64() / s.as_secs_f64())
        });
        println!(
            "| {n} | {:.1?} | {:.1?} | {ratio} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} |",
            quantile(&mut io, 0.5),
            io_max,
            wall(|r| r.io_wall),
            quantile(&mut net, 0.5),
            quantile(&mut net, 1.0),
            wall(|r| r.net_wall),
            quantile(&mut rec, 0.5),
            quantile(&mut rec, 1.0),
            wall(|r| r.recover_wall),
            wall(|r| r.total),
        );
    }
    println!();
    println!(
        "Memory with every fault in force (the round with the most; MiB; PSS shares common pages between processes)\n"
    );
    println!(
        "| pods | agent idle RSS / PSS | agent + N IO faults RSS / PSS | injectors | their RSS / PSS | + N delays: agent RSS / PSS | all (agent + helpers) PSS | per IO fault (PSS) | per delay (PSS) | per fault, both kinds | vs 256 Mi |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, rs) in results {
        let Some(r) = rs.iter().max_by_key(|r| r.with_both.total_pss()) else {
            continue;
        };
        let (idle, io, both) = (r.idle, r.with_io, r.with_both);
        let per_io = (delta_mib(io.agent_pss, idle.agent_pss) + mib(io.helpers_pss)) / *n as f64;
        let per_delay = delta_mib(both.total_pss(), io.total_pss()) / *n as f64;
        let per_fault = delta_mib(both.total_pss(), idle.agent_pss) / (2 * n) as f64;
        println!(
            "| {n} | {:.1} / {:.1} | {:.1} / {:.1} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.0} % |",
            mib(idle.agent_rss),
            mib(idle.agent_pss),
            mib(io.agent_rss),
            mib(io.agent_pss),
            io.helpers,
            mib(io.helpers_rss),
            mib(io.helpers_pss),
            mib(both.agent_rss),
            mib(both.agent_pss),
            mib(both.total_pss()),
            per_io,
            per_delay,
            per_fault,
            100.0 * mib(both.total_pss()) / CHAOS_MESH_REQUEST_MIB,
        );
    }
    println!();
    println!(
        "CPU per pod and phase (ms of user + system time of the agent and every helper it started — injectors, iptables — from its cgroup; median round)\n"
    );
    println!(
        "| pods | IO inject | delay inject | recover both | whole round, per fault | whole round |"
    );
    println!("|---|---|---|---|---|---|");
    for (n, rs) in results {
        let median = |f: &dyn Fn(&Round) -> f64| {
            let mut v: Vec<f64> = rs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let per_pod = *n as f64;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            median(&|r| r.with_io.cpu_ms_since(&r.idle)) / per_pod,
            median(&|r| r.with_both.cpu_ms_since(&r.with_io)) / per_pod,
            median(&|r| r.after.cpu_ms_since(&r.with_both)) / per_pod,
            median(&|r| r.after.cpu_ms_since(&r.idle)) / (2.0 * per_pod),
            median(&|r| r.after.cpu_ms_since(&r.idle)),
        );
    }
    println!();
    let dirty: Vec<String> = results
        .iter()
        .flat_map(|(n, rs)| {
            rs.iter()
                .enumerate()
                .filter(|(_, r)| !r.leftovers.is_empty())
                .map(move |(i, r)| format!("N={n} round {}: {}", i + 1, r.leftovers.join("; ")))
        })
        .collect();
    if dirty.is_empty() {
        println!(
            "every round recovered: no fault mount, qdisc, iptables rule, ipset or helper process left, agent threads back to idle"
        );
    } else {
        println!("LEFT BEHIND: {}", dirty.join(" | "));
    }
}
