//! Soak benchmark (measures, does not judge): one real agent driven through N inject/recover
//! cycles of each fault kind against one testbed pod, over `pb.ChaosDaemon` as Chaos Mesh's
//! controller calls it — IO (ApplyIOChaos fault, then empty), network (SetTcs netem delay,
//! then empty; the NFQUEUE path on kernels without sch_netem), stress (ExecStressors of one CPU
//! worker, then CancelStressors). Before and after each kind it takes the footprint of the
//! agent (RSS, open fds, threads, child processes) and of the pod (mounts, qdiscs, iptables
//! rules of both backends, ipsets, cgroups under the pod's): nothing may grow. It prints the
//! p50/p99/max of each inject and recover round trip and the footprint table.
//!
//! Then the kinds whose helpers live in the pod: time (SetTimeOffset +1 day on CLOCK_REALTIME,
//! then RecoverTimeOffset: the vDSO of the pod's processes patched and restored), HTTP
//! (ApplyHttpChaos with an abort rule on port 8080, then the empty request: a proxy process
//! and its redirect rules), DNS (faultline.agent.v1 StartDnsExperiment "error" for
//! `*.example.com`, then Recover by id: a responder process and its redirect rules; Chaos
//! Mesh's SetDNSServer only rewrites resolv.conf).
//!
//! Usage: faultline-soak [CYCLES [KIND ...]]   (as root; default 1000 of every kind: IO
//! network stress time HTTP DNS; prints Markdown)

#[path = "../bench_support.rs"]
mod bench_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_support::{LocalAgent, Result, entries, rss_kib};
use faultline_proto::agent::v1 as api;
use faultline_proto::agent::v1::agent_client::AgentClient;
use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use testbed::{Pod, PodSpec, Testbed, Volume};

type Daemon = ChaosDaemonClient<tonic::transport::Channel>;
type Api = AgentClient<tonic::transport::Channel>;

const KINDS: [&str; 6] = ["IO", "network", "stress", "time", "HTTP", "DNS"];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cycles: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let mut kinds = Vec::new();
    for arg in args {
        let Some(kind) = KINDS.iter().find(|k| k.eq_ignore_ascii_case(&arg)) else {
            return Err(format!("unknown kind {arg}: one of {KINDS:?}").into());
        };
        kinds.push(*kind);
    }
    if kinds.is_empty() {
        kinds = KINDS.to_vec();
    }
    let tb = Testbed::start()?;
    let result = soak(&tb, cycles, &kinds);
    tb.shutdown()?;
    result
}

/// Counts that must not grow over the cycles.
type Footprint = BTreeMap<&'static str, u64>;

fn footprint(agent: u32, pod: &Pod, journal: &std::path::Path) -> Result<Footprint> {
    let mut f = Footprint::new();
    f.insert("agent journal records", entries(journal));
    // A time fault maps a page into the pod's processes and patches their vDSO; recovery
    // must take the page away again.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", pod.pid))?;
    f.insert("pod process mappings", maps.lines().count() as u64);
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

/// Processes whose parent is `pid` (injectors, stressors, helpers), but the spare injector.
fn children_of(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| bench_support::status_field(*child, "PPid:") == Some(u64::from(pid)))
        .filter(|child| !bench_support::is_spare_injector(*child))
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

fn soak(tb: &Testbed, cycles: usize, names: &[&'static str]) -> Result<()> {
    let data = tb.host_dir("soak-data")?;
    std::fs::write(data.join("f"), "data\n")?;
    let pod = tb.run_pod(
        PodSpec::new("soak")
            .volume(Volume::host_dir(&data, "/data"))
            .cpu_request(1000)
            // DNS relays what no pattern covers to the pod's nameserver: the testbed's gateway
            // (nothing need answer there for inject and recover).
            .dns_server(std::net::Ipv4Addr::from(u32::from(tb.subnet().network()) + 1).to_string()),
    )?;
    let agent = LocalAgent::start(tb, "soak-agent")?;
    let journal = tb.base_dir().join("soak-agent-state").join("journal");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let channel = rt.block_on(agent.channel())?;
    let mut clients = Clients {
        daemon: ChaosDaemonClient::new(channel.clone()),
        api: AgentClient::new(channel),
    };
    let started = Instant::now();
    let mut kinds = Vec::new();
    for &name in names {
        // A few cycles first: what the agent starts once (a queue thread, a pool) is not growth.
        for _ in 0..5 {
            cycle(&rt, &mut clients, &pod, name)?;
        }
        std::thread::sleep(Duration::from_millis(500));
        let before = footprint(agent.pid(), &pod, &journal)?;
        let (mut inject, mut recover) = (Vec::new(), Vec::new());
        for i in 0..cycles {
            let (i_took, r_took) = cycle(&rt, &mut clients, &pod, name)?;
            inject.push(i_took);
            recover.push(r_took);
            if (i + 1) % 100 == 0 {
                eprintln!("{name}: {} cycles", i + 1);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        // The runtime's blocking threads (which waited on helpers) end after 10 s idle: a
        // thread still there after that is one more than before.
        let deadline = Instant::now() + Duration::from_secs(15);
        while entries(format!("/proc/{}/task", agent.pid())) > before["agent threads"]
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let after = footprint(agent.pid(), &pod, &journal)?;
        kinds.push(Kind {
            name,
            inject,
            recover,
            before,
            after,
        });
    }
    let total = started.elapsed();
    drop(clients);
    drop(agent);
    tb.remove_pod(&pod)?;
    report(&mut kinds, cycles, total);
    Ok(())
}

/// Both of the agent's services, on one connection.
struct Clients {
    daemon: Daemon,
    api: Api,
}

fn cycle(
    rt: &tokio::runtime::Runtime,
    clients: &mut Clients,
    pod: &Pod,
    kind: &str,
) -> Result<(Duration, Duration)> {
    let daemon = &mut clients.daemon;
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
        "stress" => {
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
        "time" => {
            // As Chaos Mesh's controller sends it: the experiment's uid and the container.
            let time = |sec| pb::TimeRequest {
                container_id: pod.container_uri(),
                sec,
                nsec: 0,
                clk_ids_mask: 1, // CLOCK_REALTIME
                uid: "5d8c3b7e-2f4a-4e1b-9c6d-7a8b9c0d1e2f".into(),
                pod_container_name: format!("{}:{}", pod.name, pod.container_name),
            };
            rt.block_on(daemon.set_time_offset(time(86_400)))?;
            inject_took = t0.elapsed();
            let t1 = Instant::now();
            rt.block_on(daemon.recover_time_offset(time(0)))?;
            Ok((inject_took, t1.elapsed()))
        }
        "HTTP" => {
            let http = |rules: &str, ports: Vec<u32>| pb::ApplyHttpChaosRequest {
                rules: rules.into(),
                proxy_ports: ports,
                container_id: pod.container_uri(),
                enter_ns: true,
                ..Default::default()
            };
            let abort = r#"[{"target":"Request","selector":{"port":8080,"path":"/abort"},"actions":{"abort":true}}]"#;
            let applied = rt
                .block_on(daemon.apply_http_chaos(http(abort, vec![8080])))?
                .into_inner();
            inject_took = t0.elapsed();
            if applied.status_code != 200 {
                return Err(format!("ApplyHttpChaos: {applied:?}").into());
            }
            let t1 = Instant::now();
            rt.block_on(daemon.apply_http_chaos(http("", vec![])))?;
            Ok((inject_took, t1.elapsed()))
        }
        "DNS" => {
            let started = rt
                .block_on(
                    clients
                        .api
                        .start_dns_experiment(api::StartDnsExperimentRequest {
                            container_id: pod.container_uri(),
                            action: "error".into(),
                            patterns: vec!["*.example.com".into()],
                            duration_ms: 0,
                        }),
                )?
                .into_inner();
            inject_took = t0.elapsed();
            let t1 = Instant::now();
            let recovered = rt
                .block_on(clients.api.recover(api::RecoverRequest {
                    id: started.id.clone(),
                    all: false,
                }))?
                .into_inner();
            if !recovered.problems.is_empty() {
                return Err(format!("DNS recovery: {:?}", recovered.problems).into());
            }
            Ok((inject_took, t1.elapsed()))
        }
        other => Err(format!("no such kind: {other}").into()),
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
