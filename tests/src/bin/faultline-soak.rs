//! Soak benchmark (measures, does not judge): one real agent driven through N inject/recover
//! cycles of each fault kind against one testbed pod, over `pb.ChaosDaemon` as Chaos Mesh's
//! controller calls it — IO (ApplyIOChaos fault, then empty), network (SetTcs netem delay,
//! then empty; the NFQUEUE path on kernels without sch_netem), stress (ExecStressors of one CPU
//! worker, then CancelStressors). Before and after each kind it takes the footprint of the
//! agent (RSS, open fds, threads, child processes) and of the pod (mounts, qdiscs, iptables
//! rules of both backends, ipsets, cgroups under the pod's): nothing may grow. It prints the
//! p50/p99/max of each inject and recover round trip and the footprint table.
//!
//! Usage: faultline-soak [CYCLES]   (as root; default 1000; prints Markdown)

#[path = "../bench_support.rs"]
mod bench_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_support::{LocalAgent, Result, entries, rss_kib};
use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use testbed::{Pod, PodSpec, Testbed, Volume};

type Daemon = ChaosDaemonClient<tonic::transport::Channel>;

fn main() -> Result<()> {
    let cycles: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let tb = Testbed::start()?;
    let result = soak(&tb, cycles);
    tb.shutdown()?;
    result
}

/// Counts that must not grow over the cycles.
type Footprint = BTreeMap<&'static str, u64>;

fn footprint(agent: u32, pod: &Pod) -> Result<Footprint> {
    let mut f = Footprint::new();
    f.insert("agent RSS (KiB)", rss_kib(agent));
    f.insert("agent open fds", entries(format!("/proc/{agent}/fd")));
    f.insert("agent threads", entries(format!("/proc/{agent}/task")));
    f.insert("agent child processes", children_of(agent));
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", pod.pid))?;
    f.insert("pod mounts", mountinfo.lines().count() as u64);
    let qdiscs = in_pod(pod, &["tc", "qdisc", "show"])?;
    f.insert("pod qdiscs", qdiscs.lines().count() as u64);
    let mut rules = 0;
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        rules += in_pod(pod, &[save])?
            .lines()
            .filter(|l| l.starts_with("-A") || (l.starts_with(':') && !l.ends_with("]")))
            .count() as u64;
    }
    f.insert("pod iptables rules + chains", rules);
    let sets = in_pod(pod, &["ipset", "list", "-n"])?;
    f.insert("pod ipsets", sets.lines().count() as u64);
    f.insert("cgroups under the pod's", cgroups_under(pod));
    Ok(f)
}

/// Processes whose parent is `pid` (injectors, stressors, helpers).
fn children_of(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| bench_support::status_field(*child, "PPid:") == Some(u64::from(pid)))
        .count() as u64
}

fn cgroups_under(pod: &Pod) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| 1 + walk(&e.path()))
                .sum()
        })
    }
    pod.cgroup
        .as_ref()
        .and_then(|c| c.dir_with("cgroup.procs"))
        .map_or(0, |dir| walk(&dir))
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

/// One fault kind: inject, then recover, both as the controller sends them.
struct Kind {
    name: &'static str,
    inject: Vec<Duration>,
    recover: Vec<Duration>,
    before: Footprint,
    after: Footprint,
}

fn soak(tb: &Testbed, cycles: usize) -> Result<()> {
    let data = tb.host_dir("soak-data")?;
    std::fs::write(data.join("f"), "data\n")?;
    let pod = tb.run_pod(
        PodSpec::new("soak")
            .volume(Volume::host_dir(&data, "/data"))
            .cpu_request(1000),
    )?;
    let agent = LocalAgent::start(tb, "soak-agent")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut daemon = ChaosDaemonClient::new(rt.block_on(agent.channel())?);
    let started = Instant::now();
    let mut kinds = Vec::new();
    for name in ["IO", "network", "stress"] {
        // A few cycles first: what the agent starts once (a queue thread, a pool) is not growth.
        for _ in 0..5 {
            cycle(&rt, &mut daemon, &pod, name)?;
        }
        std::thread::sleep(Duration::from_millis(500));
        let before = footprint(agent.pid(), &pod)?;
        let (mut inject, mut recover) = (Vec::new(), Vec::new());
        for i in 0..cycles {
            let (i_took, r_took) = cycle(&rt, &mut daemon, &pod, name)?;
            inject.push(i_took);
            recover.push(r_took);
            if (i + 1) % 100 == 0 {
                eprintln!("{name}: {} cycles", i + 1);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = footprint(agent.pid(), &pod)?;
        kinds.push(Kind {
            name,
            inject,
            recover,
            before,
            after,
        });
    }
    let total = started.elapsed();
    drop(daemon);
    drop(agent);
    tb.remove_pod(&pod)?;
    report(&mut kinds, cycles, total);
    Ok(())
}

fn cycle(
    rt: &tokio::runtime::Runtime,
    daemon: &mut Daemon,
    pod: &Pod,
    kind: &str,
) -> Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let inject_took;
    match kind {
        "IO" => {
            let io = |actions: &str| pb::ApplyIoChaosRequest {
                actions: actions.into(),
                volume: "/data".into(),
                container_id: pod.container_uri(),
                enter_ns: true,
                ..Default::default()
            };
            let fault = r#"[{"type":"fault","path":"/data/**","percent":100,"faults":[{"errno":5,"weight":1}]}]"#;
            rt.block_on(daemon.apply_io_chaos(io(fault)))?;
            inject_took = t0.elapsed();
            let t1 = Instant::now();
            rt.block_on(daemon.apply_io_chaos(io("")))?;
            Ok((inject_took, t1.elapsed()))
        }
        "network" => {
            let tcs = |tcs: Vec<pb::Tc>| pb::TcsRequest {
                tcs,
                container_id: pod.container_uri(),
                enter_ns: true,
                pod_uid: pod.uid.clone(),
            };
            let delay = pb::Tc {
                r#type: pb::tc::Type::Netem as i32,
                netem: Some(pb::Netem {
                    time: "10ms".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            rt.block_on(daemon.set_tcs(tcs(vec![delay])))?;
            inject_took = t0.elapsed();
            let t1 = Instant::now();
            rt.block_on(daemon.set_tcs(tcs(vec![])))?;
            Ok((inject_took, t1.elapsed()))
        }
        _ => {
            let started = rt
                .block_on(daemon.exec_stressors(pb::ExecStressRequest {
                    scope: pb::exec_stress_request::Scope::Pod as i32,
                    target: pod.container_uri(),
                    cpu_stressors:
                        " --cpu-load-slice 10 --cpu-method sqrt --cpu 1 --cpu-load 5".into(),
                    enter_ns: true,
                    ..Default::default()
                }))?
                .into_inner();
            inject_took = t0.elapsed();
            let t1 = Instant::now();
            rt.block_on(daemon.cancel_stressors(pb::CancelStressRequest {
                cpu_instance: started.cpu_instance,
                cpu_start_time: started.cpu_start_time,
                cpu_instance_uid: started.cpu_instance_uid,
                ..Default::default()
            }))?;
            Ok((inject_took, t1.elapsed()))
        }
    }
}

fn report(kinds: &mut [Kind], cycles: usize, total: Duration) {
    println!("| kind ({cycles} cycles) | inject p50 | p99 | max | recover p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for k in kinds.iter_mut() {
        let (i, r) = (quantiles(&mut k.inject), quantiles(&mut k.recover));
        println!(
            "| {} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {:.1?} |",
            k.name, i.0, i.1, i.2, r.0, r.1, r.2
        );
    }
    println!();
    let mut header = String::from("| footprint |");
    let mut rule = String::from("|---|");
    for k in kinds.iter() {
        header.push_str(&format!(" {} before → after |", k.name));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    let keys: Vec<&str> = kinds[0].before.keys().copied().collect();
    let mut grew = Vec::new();
    for key in keys {
        let mut line = format!("| {key} |");
        for k in kinds.iter() {
            let (b, a) = (k.before[key], k.after[key]);
            line.push_str(&format!(" {b} → {a} |"));
            // RSS moves with the allocator; the counts must not move at all.
            let grown = if key.contains("RSS") {
                a > b + b / 10 + 1024
            } else {
                a > b
            };
            if grown {
                grew.push(format!("{}: {key} {b} → {a}", k.name));
            }
        }
        println!("{line}");
    }
    println!();
    println!("total {:.1?}", total);
    if grew.is_empty() {
        println!("nothing grew");
    } else {
        println!("GREW: {}", grew.join("; "));
    }
}

fn quantiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}
