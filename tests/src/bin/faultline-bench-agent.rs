//! Agent latency benchmark (not a test: it measures, it does not judge). On a testbed pod, with
//! the real agent driven over its gRPC API (pb.ChaosDaemon ApplyIOChaos, as Chaos Mesh's
//! controller calls it):
//! - inject: from ApplyIOChaos returning to the first operation that fails with EIO;
//! - update: from sending a new rule set (fault → no-op latency rule) to its return, and to the
//!   first operation that succeeds again;
//! - recover: ApplyIOChaos with no actions, until it returns (the mount is gone by then);
//! - the agent's resident memory while idle and while serving one experiment;
//! - whether the fault is in force the moment ApplyIOChaos returns: one read by this thread
//!   right after the return (the probe's timestamps cannot say it: a read that started before
//!   the return and failed is stamped when it ends, and a busy machine delays the probe).
//!
//! The probe is a host thread reading `/proc/PID/root/data/probe` in a tight loop: that path is
//! walked in the pod's own mount namespace, so it sees exactly what the pod sees.
//!
//! Then the same rounds again with no reader in the pod (inject and recover round trips only).
//!
//! Usage: faultline-bench-agent [ROUNDS]   (as root; prints a Markdown table)

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use testbed::{PodSpec, Testbed, Volume};

#[path = "../bench_support.rs"]
mod bench_support;

use bench_support::{LocalAgent, Result, rss_kib};

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let tb = Testbed::start()?;
    let result = bench(&tb, rounds);
    tb.shutdown()?;
    result
}

/// Nanoseconds since `epoch` of the first read that failed / succeeded after being armed.
struct Probe {
    epoch: Instant,
    armed_for_failure: AtomicBool,
    armed_for_success: AtomicBool,
    first_failure_ns: AtomicU64,
    first_success_ns: AtomicU64,
    stop: AtomicBool,
}

fn probe_loop(probe: Arc<Probe>, path: PathBuf) {
    let mut buf = [0u8; 64];
    while !probe.stop.load(Ordering::Relaxed) {
        let ok = std::fs::File::open(&path)
            .and_then(|mut f| f.read(&mut buf))
            .is_ok();
        let now = probe.epoch.elapsed().as_nanos() as u64;
        if !ok && probe.armed_for_failure.swap(false, Ordering::AcqRel) {
            probe.first_failure_ns.store(now, Ordering::Release);
        }
        if ok && probe.armed_for_success.swap(false, Ordering::AcqRel) {
            probe.first_success_ns.store(now, Ordering::Release);
        }
    }
}

/// Whether opening and reading `path` fails with EIO now.
fn fails_with_eio(path: &std::path::Path) -> bool {
    let mut buf = [0u8; 64];
    std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .is_err_and(|e| e.raw_os_error() == Some(5))
}

fn wait_for(cell: &AtomicU64, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let v = cell.swap(0, Ordering::AcqRel);
        if v != 0 {
            return Some(v);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    None
}

fn bench(tb: &Testbed, rounds: usize) -> Result<()> {
    let data = tb.host_dir("bench-data")?;
    std::fs::write(data.join("probe"), "probe\n")?;
    let pod = tb.run_pod(PodSpec::new("bench").volume(Volume::host_dir(&data, "/data")))?;
    let agent = LocalAgent::start(tb, "bench-agent")?;
    eprintln!("agent up; {rounds} rounds");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let channel = rt.block_on(agent.channel())?;
    let mut client = ChaosDaemonClient::new(channel);
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = rss_kib(agent.pid());

    let probe = Arc::new(Probe {
        epoch: Instant::now(),
        armed_for_failure: AtomicBool::new(false),
        armed_for_success: AtomicBool::new(false),
        first_failure_ns: AtomicU64::new(0),
        first_success_ns: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let probe_path = PathBuf::from(format!("/proc/{}/root/data/probe", pod.pid));
    let probe_thread = {
        let probe = Arc::clone(&probe);
        let path = probe_path.clone();
        std::thread::spawn(move || probe_loop(probe, path))
    };

    let request = |actions: &str| pb::ApplyIoChaosRequest {
        actions: actions.into(),
        volume: "/data".into(),
        container_id: pod.container_uri(),
        enter_ns: true,
        ..Default::default()
    };
    let fault =
        r#"[{"type":"fault","path":"/data/**","percent":100,"faults":[{"errno":5,"weight":1}]}]"#;
    let harmless = r#"[{"type":"latency","path":"/data/nothing-here","latency":"1ms"}]"#;
    let (mut inject_rpc, mut inject_seen, mut update_rpc, mut update_seen, mut recover_rpc) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut busy_rss = 0;
    let mut in_force_on_return = 0;
    for _ in 0..rounds {
        probe.armed_for_failure.store(true, Ordering::Release);
        let t0 = Instant::now();
        let sent = probe.epoch.elapsed().as_nanos() as u64;
        rt.block_on(client.apply_io_chaos(request(fault)))?;
        inject_rpc.push(t0.elapsed());
        if fails_with_eio(&probe_path) {
            in_force_on_return += 1;
        }
        let seen = wait_for(&probe.first_failure_ns, Duration::from_secs(5))
            .ok_or("the probe never saw the fault")?;
        inject_seen.push(Duration::from_nanos(seen.saturating_sub(sent)));
        busy_rss = busy_rss.max(rss_kib(agent.pid()));

        probe.armed_for_success.store(true, Ordering::Release);
        let t1 = Instant::now();
        let sent = probe.epoch.elapsed().as_nanos() as u64;
        rt.block_on(client.apply_io_chaos(request(harmless)))?;
        update_rpc.push(t1.elapsed());
        let seen = wait_for(&probe.first_success_ns, Duration::from_secs(5))
            .ok_or("the probe never saw the update")?;
        update_seen.push(Duration::from_nanos(seen.saturating_sub(sent)));

        let t2 = Instant::now();
        rt.block_on(client.apply_io_chaos(request("")))?;
        recover_rpc.push(t2.elapsed());
        if std::fs::read_to_string(format!("/proc/{}/mountinfo", pod.pid))?
            .contains("fuse.faultline")
        {
            return Err("the fault mount outlived recovery".into());
        }
    }
    probe.stop.store(true, Ordering::Release);
    let _ = probe_thread.join();
    // The same again with no reader in the pod: on two cores the probe's tight loop (and the
    // FUSE workers answering it) keeps one core busy through every injection.
    let (mut quiet_inject_rpc, mut quiet_recover_rpc) = (Vec::new(), Vec::new());
    let mut quiet_in_force = 0;
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        rt.block_on(client.apply_io_chaos(request(fault)))?;
        quiet_inject_rpc.push(t0.elapsed());
        if fails_with_eio(&probe_path) {
            quiet_in_force += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
        let t1 = Instant::now();
        rt.block_on(client.apply_io_chaos(request("")))?;
        quiet_recover_rpc.push(t1.elapsed());
    }
    let after_rss = rss_kib(agent.pid());
    drop(client);
    drop(agent);
    tb.remove_pod(&pod)?;

    println!("| measure ({rounds} rounds) | median | p90 | max |");
    println!("|---|---|---|---|");
    for (name, samples) in [
        (
            "ApplyIOChaos (inject: spawn injector, mount) round trip",
            &mut inject_rpc,
        ),
        (
            "inject: ApplyIOChaos sent → first EIO seen by the pod",
            &mut inject_seen,
        ),
        (
            "update: new rules RPC round trip (no remount)",
            &mut update_rpc,
        ),
        (
            "update: RPC sent → first operation under the new rules",
            &mut update_seen,
        ),
        (
            "recover: ApplyIOChaos(empty) round trip (unmounted on return)",
            &mut recover_rpc,
        ),
        (
            "no reader in the pod: ApplyIOChaos (inject) round trip",
            &mut quiet_inject_rpc,
        ),
        (
            "no reader in the pod: ApplyIOChaos(empty) (recover) round trip",
            &mut quiet_recover_rpc,
        ),
    ] {
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {name} | {:.2?} | {:.2?} | {:.2?} |",
            at(0.5),
            at(0.9),
            at(1.0)
        );
    }
    println!();
    println!(
        "the fault was in force before ApplyIOChaos returned in {in_force_on_return} of {rounds} rounds (with the reader), {quiet_in_force} of {rounds} (without)"
    );
    println!(
        "agent RSS: idle {:.1} MiB, serving one experiment {:.1} MiB, after {rounds} rounds {:.1} MiB",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0,
        after_rss as f64 / 1024.0
    );
    Ok(())
}
