//! Network chaos end to end: a controller drives a real agent over mTLS against CNI pods of the
//! testbed. Traffic is measured from inside the pods' network namespaces (a thread that joins
//! the namespace, so the probe needs nothing in the busybox image) and only ever between testbed
//! pods. This kernel has no sch_netem: netem faults take the userspace NFQUEUE path, chosen by
//! the agent and reported; tbf is native.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use testbed::{Pod, PodSpec, Testbed};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "network::delay_loss_duplicate_corrupt_via_nfqueue_then_baseline",
            netem_faults,
        ),
        ("network::bandwidth_then_baseline", bandwidth),
        ("network::filtered_faults_hit_only_their_targets", filtered),
        ("network::partition_spares_a_third_pod", partition),
        ("network::agent_crash_is_recovered_from_the_journal", crash),
        (
            "network::a_dead_container_is_recovered_through_its_sandbox",
            dead_container,
        ),
        ("network::bad_input_leaves_no_partial_state", bad_input),
        (
            "network::large_and_failing_ipset_requests_leave_nothing_behind",
            ipset_limits,
        ),
        ("network::cli_attack_with_duration_recovers_by_itself", cli),
    ]
}

const PORT: u16 = 7100;
const UDP_PORT: u16 = 7101;

pub(crate) fn idle_pod(tb: &Testbed, name: &str) -> anyhow::Result<Pod> {
    Ok(tb.run_pod(PodSpec::new(name).shell("sleep 100000"))?)
}

pub(crate) fn ip(pod: &Pod) -> anyhow::Result<Ipv4Addr> {
    pod.ipv4().context("the pod has no IP")
}

/// Runs `work` on a thread inside the network namespace of `pid`.
fn in_netns<T: Send + 'static>(
    pid: u32,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        drop(ns);
        work()
    })
}

fn join<T>(h: std::thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("a probe thread panicked"))?
}

/// A TCP server in a pod: echoes what it reads; answers "done <bytes>" after a client's EOF.
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub(crate) fn start(pod: &Pod) -> anyhow::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = in_netns(pod.pid, move || {
            let listener = TcpListener::bind(("0.0.0.0", PORT))?;
            listener.set_nonblocking(true)?;
            let _ = tx.send(());
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        std::thread::spawn(move || -> std::io::Result<()> {
                            conn.set_nonblocking(false)?;
                            conn.set_nodelay(true)?;
                            conn.set_read_timeout(Some(Duration::from_secs(30)))?;
                            let mut buf = vec![0u8; 64 * 1024];
                            let mut total = 0usize;
                            loop {
                                let n = conn.read(&mut buf)?;
                                if n == 0 {
                                    conn.write_all(format!("done {total}").as_bytes())?;
                                    return Ok(());
                                }
                                total += n;
                                if n <= 16 {
                                    conn.write_all(&buf[..n])?; // an echo probe
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            Ok(())
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("the TCP server did not start")?;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fastest of 10 one-byte echoes over an established TCP connection, from `from` to `to`:
/// a delay fault sets a floor under every round trip, and the minimum is what other stories
/// running on the same two cores disturb least.
pub(crate) fn echo_rtt(from: &Pod, to: Ipv4Addr) -> anyhow::Result<Duration> {
    join(in_netns(from.pid, move || {
        let mut conn =
            TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), Duration::from_secs(5))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut samples = Vec::new();
        let mut byte = [0u8; 1];
        for i in 0..10u8 {
            let start = Instant::now();
            conn.write_all(&[i])?;
            conn.read_exact(&mut byte)?;
            samples.push(start.elapsed());
        }
        samples.sort();
        Ok(samples[0])
    }))
}

/// Sends `bytes` over TCP and returns how long until the server had them all.
fn transfer(from: &Pod, to: Ipv4Addr, bytes: usize) -> anyhow::Result<Duration> {
    join(in_netns(from.pid, move || {
        let mut conn =
            TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        let data = vec![0x5au8; bytes];
        let start = Instant::now();
        conn.write_all(&data)?;
        conn.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        let elapsed = start.elapsed();
        ensure!(
            answer == format!("done {bytes}"),
            "the server answered {answer:?}"
        );
        Ok(elapsed)
    }))
}

/// Whether a TCP connection from `from` to `to` opens within a second.
pub(crate) fn connects(from: &Pod, to: Ipv4Addr) -> anyhow::Result<bool> {
    join(in_netns(from.pid, move || {
        Ok(
            TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), Duration::from_secs(1))
                .is_ok(),
        )
    }))
}

/// What a UDP receiver saw.
#[derive(Debug, Default)]
struct UdpTally {
    received: usize,
    distinct: usize,
}

/// Sends `count` numbered 512-byte datagrams from `from` to `to` (paced, 50 µs apart) and
/// counts what arrives (the receiver stops 1 s after the last datagram).
fn udp_burst(from: &Pod, to: &Pod, count: u32) -> anyhow::Result<UdpTally> {
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = in_netns(to.pid, move || {
        let socket = UdpSocket::bind(("0.0.0.0", UDP_PORT))?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        // Room for the whole burst: on a loaded host the receiver thread can be off the CPU
        // for tens of milliseconds, and the default buffer (~170 datagrams of this size)
        // would drop what the fault did not.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &(16 << 20))
            .context("SO_RCVBUFFORCE on the receiver")?;
        let _ = tx.send(());
        let mut seen: HashMap<u32, usize> = HashMap::new();
        let mut buf = [0u8; 2048];
        let mut started = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match socket.recv(&mut buf) {
                Ok(n) if n >= 4 => {
                    started = true;
                    let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    *seen.entry(seq).or_default() += 1;
                }
                Ok(_) => {}
                Err(_) if started => break,
                Err(_) => {}
            }
        }
        Ok(UdpTally {
            received: seen.values().sum(),
            distinct: seen.len(),
        })
    });
    rx.recv_timeout(Duration::from_secs(5))
        .context("the UDP receiver did not start")?;
    let to_ip = ip(to)?;
    join(in_netns(from.pid, move || {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        let mut datagram = [0x42u8; 512];
        for seq in 0..count {
            datagram[..4].copy_from_slice(&seq.to_be_bytes());
            socket.send_to(&datagram, (to_ip, UDP_PORT))?;
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    }))?;
    join(receiver)
}

/// UDP datagrams a pod's stack dropped for a bad checksum.
fn udp_checksum_errors(pod: &Pod) -> anyhow::Result<u64> {
    let snmp = std::fs::read_to_string(format!("/proc/{}/net/snmp", pod.pid))?;
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    ensure!(udp.len() == 2, "no Udp lines in snmp");
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    let at = names
        .iter()
        .position(|n| *n == "InCsumErrors")
        .context("no InCsumErrors")?;
    Ok(values[at].parse()?)
}

/// Runs a host tool inside the pod's network namespace.
pub(crate) fn in_pod(pod: &Pod, tool: &[&str]) -> anyhow::Result<String> {
    // The sandbox's process: it holds the namespace even while the container is down.
    let out = Command::new("nsenter")
        .arg("-t")
        .arg(pod.sandbox_pid.to_string())
        .arg("-n")
        .args(tool)
        .output()?;
    ensure!(
        out.status.success(),
        "{tool:?} in the pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pod's qdiscs and iptables rules (both backends), with counters and comments left out:
/// what recovery must give back. A table holding only built-in chains with ACCEPT policies and
/// no rule is no filtering at all: once instantiated (by us or anyone) the legacy backend keeps
/// it, so it counts as absent.
pub(crate) fn network_state(pod: &Pod) -> anyhow::Result<String> {
    let mut state = in_pod(pod, &["tc", "qdisc", "show"])?;
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        let text = in_pod(pod, &[save])?;
        let mut table = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.find(" [") {
                Some(at) if line.starts_with(':') => &line[..at],
                _ => line,
            };
            table.push(line.to_owned());
            if line == "COMMIT" {
                let empty = table.iter().all(|l| {
                    l.starts_with('*')
                        || l == "COMMIT"
                        || (l.starts_with(':') && l.ends_with(" ACCEPT"))
                });
                if !empty {
                    state.push_str(&format!("{save}:\n{}\n", table.join("\n")));
                }
                table.clear();
            }
        }
    }
    Ok(state)
}

fn netem(f: impl FnOnce(&mut pb::Netem)) -> pb::Tc {
    let mut n = pb::Netem::default();
    f(&mut n);
    pb::Tc {
        r#type: pb::tc::Type::Netem as i32,
        netem: Some(n),
        ..Default::default()
    }
}

fn tcs(pod: &Pod, tcs: Vec<pb::Tc>) -> pb::TcsRequest {
    pb::TcsRequest {
        tcs,
        container_id: pod.container_uri(),
        enter_ns: true,
        pod_uid: pod.uid.clone(),
    }
}

struct Bed {
    pki: Pki,
    agent: AgentProcess,
    a: Pod,
    b: Pod,
}

impl Bed {
    fn new(tb: &Testbed, name: &str) -> anyhow::Result<Bed> {
        let pki = Pki::create(&tb.base_dir().join(format!("pki-{name}")))?;
        let agent = AgentProcess::start(tb, &pki, &format!("agent-{name}"))?;
        let a = idle_pod(tb, &format!("{name}-a"))?;
        let b = idle_pod(tb, &format!("{name}-b"))?;
        Ok(Bed { pki, agent, a, b })
    }

    fn journal_is_empty(&self) -> bool {
        std::fs::read_dir(self.agent.state_dir.join("journal"))
            .map(|d| d.flatten().count() == 0)
            .unwrap_or(true)
    }

    fn remove(self, tb: &Testbed) -> anyhow::Result<()> {
        drop(self.agent);
        tb.remove_pod(&self.a)?;
        tb.remove_pod(&self.b)?;
        Ok(())
    }
}

fn netem_faults(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-netem")?;
    let (a, b) = (&bed.a, &bed.b);
    let b_ip = ip(b)?;
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let _server = Server::start(b)?;
    let before = network_state(a)?;
    let base_rtt = echo_rtt(a, b_ip)?;

    // Delay 100 ms, no jitter: the echo round trip rises by 100 ms ± 10%.
    rt.block_on(daemon.set_tcs(tcs(a, vec![netem(|n| n.time = "100ms".into())])))?;
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(listed.experiments.len() == 1, "{listed:?}");
    let status = &listed.experiments[0].injector_status;
    ensure!(
        status.contains("userspace NFQUEUE") && status.contains("kernel refused netem"),
        "the path is reported: {status}"
    );
    let delayed = echo_rtt(a, b_ip)?;
    let rise = delayed.saturating_sub(base_rtt);
    eprintln!(
        "network: echo RTT {base_rtt:?} -> {delayed:?} (+{rise:?}) with delay 100ms; {status}"
    );
    ensure!(
        (Duration::from_millis(90)..=Duration::from_millis(110)).contains(&rise),
        "RTT rose by {rise:?} (from {base_rtt:?} to {delayed:?}), expected 100 ms ± 10%"
    );

    // Loss 50%: 40-60% of 1000 datagrams arrive.
    rt.block_on(daemon.set_tcs(tcs(a, vec![netem(|n| n.loss = 50.0)])))?;
    let tally = udp_burst(a, b, 1000)?;
    eprintln!("network: loss 50% -> {tally:?} of 1000");
    ensure!(
        (400..=600).contains(&tally.distinct),
        "{tally:?} arrived of 1000"
    );

    // Duplicate 50%: about half arrive twice.
    rt.block_on(daemon.set_tcs(tcs(a, vec![netem(|n| n.duplicate = 50.0)])))?;
    let tally = udp_burst(a, b, 1000)?;
    let extra = tally.received - tally.distinct;
    eprintln!("network: duplicate 50% -> {tally:?} of 1000 ({extra} copies)");
    ensure!(
        tally.distinct >= 990,
        "duplication lost datagrams: {tally:?}"
    );
    ensure!((400..=600).contains(&extra), "{extra} duplicates of 1000");

    // Corrupt 50%: the receiver's stack drops about half for their checksum.
    let csum_before = udp_checksum_errors(b)?;
    rt.block_on(daemon.set_tcs(tcs(a, vec![netem(|n| n.corrupt = 50.0)])))?;
    let tally = udp_burst(a, b, 1000)?;
    let bad = udp_checksum_errors(b)? - csum_before;
    eprintln!("network: corrupt 50% -> {tally:?} of 1000, {bad} checksum errors at the receiver");
    ensure!((400..=600).contains(&tally.distinct), "{tally:?}");
    ensure!((300..=600).contains(&bad), "{bad} checksum errors");

    // Recovery: an empty request; everything back to the baseline.
    rt.block_on(daemon.set_tcs(tcs(a, vec![])))?;
    let after_rtt = echo_rtt(a, b_ip)?;
    let tally = udp_burst(a, b, 1000)?;
    let after = network_state(a)?;
    eprintln!("network: recovered: RTT {after_rtt:?}, {tally:?} of 1000");
    ensure!(
        after_rtt < base_rtt + Duration::from_millis(10),
        "RTT {after_rtt:?} vs {base_rtt:?}"
    );
    ensure!(
        tally.distinct >= 990 && tally.received == tally.distinct,
        "{tally:?}"
    );
    ensure!(
        before == after,
        "the pod's network differs:\nbefore:\n{before}\nafter:\n{after}"
    );
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(listed.experiments.is_empty(), "{listed:?}");
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    drop(_server);
    bed.remove(tb)
}

fn bandwidth(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-bw")?;
    let (a, b) = (&bed.a, &bed.b);
    let b_ip = ip(b)?;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let _server = Server::start(b)?;
    let before = network_state(a)?;
    let base = transfer(a, b_ip, 256 * 1024)?;

    let tbf = pb::Tc {
        r#type: pb::tc::Type::Bandwidth as i32,
        tbf: Some(pb::Tbf {
            rate: "1mbit".into(),
            limit: 20_000,
            buffer: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.block_on(daemon.set_tcs(tcs(a, vec![tbf])))?;
    let shown = in_pod(a, &["tc", "qdisc", "show", "dev", "eth0"])?;
    ensure!(
        shown.contains("qdisc tbf 1: root") && shown.contains("rate 1Mbit"),
        "{shown}"
    );
    let limited = transfer(a, b_ip, 256 * 1024)?;
    eprintln!("network: 256 KiB in {base:?}, with 1mbit in {limited:?}");
    ensure!(
        limited >= Duration::from_millis(1800),
        "256 KiB took {limited:?} at 1mbit"
    );

    rt.block_on(daemon.set_tcs(tcs(a, vec![])))?;
    let after = transfer(a, b_ip, 256 * 1024)?;
    eprintln!("network: recovered: 256 KiB in {after:?}");
    ensure!(
        after < Duration::from_millis(500),
        "throughput not back: {after:?}"
    );
    let now = network_state(a)?;
    ensure!(
        before == now,
        "the pod's network differs:\nbefore:\n{before}\nafter:\n{now}"
    );
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    drop(_server);
    bed.remove(tb)
}

/// A delay (userspace, an NFQUEUE rule matching an ipset) and a bandwidth limit (tbf under a
/// prio band, fed by an iptables CLASSIFY rule) for traffic to B only: C is untouched.
fn filtered(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-filter")?;
    let c = idle_pod(tb, "net-filter-c")?;
    let (a, b) = (&bed.a, &bed.b);
    let (b_ip, c_ip) = (ip(b)?, ip(&c)?);
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let _server_b = Server::start(b)?;
    let _server_c = Server::start(&c)?;
    let before = network_state(a)?;
    let (base_b, base_c) = (echo_rtt(a, b_ip)?, echo_rtt(a, c_ip)?);

    let (sets, _) = partition_requests(a, b_ip);
    rt.block_on(daemon.flush_ip_sets(sets.clone()))?;
    let mut delay = netem(|n| n.time = "100ms".into());
    delay.ipset = "e2e-peers".into();
    let limit = pb::Tc {
        r#type: pb::tc::Type::Bandwidth as i32,
        tbf: Some(pb::Tbf {
            rate: "1mbit".into(),
            limit: 20_000,
            buffer: 10_000,
            ..Default::default()
        }),
        ipset: "e2e-peers".into(),
        ..Default::default()
    };
    rt.block_on(daemon.set_tcs(tcs(a, vec![delay, limit])))?;
    let shown = in_pod(a, &["tc", "qdisc", "show", "dev", "eth0"])?;
    // prio as Chaos Mesh builds it, or htb where the kernel has no prio (this one).
    ensure!(
        (shown.contains("qdisc prio 1: root") || shown.contains("qdisc htb 1: root"))
            && shown.contains("qdisc tbf 2: parent 1:4"),
        "{shown}"
    );
    let (rtt_b, rtt_c) = (echo_rtt(a, b_ip)?, echo_rtt(a, c_ip)?);
    let to_b = transfer(a, b_ip, 256 * 1024)?;
    let to_c = transfer(a, c_ip, 256 * 1024)?;
    eprintln!(
        "network: filtered to {b_ip}: RTT {base_b:?} -> {rtt_b:?}, 256 KiB in {to_b:?}; \
         {c_ip}: RTT {base_c:?} -> {rtt_c:?}, 256 KiB in {to_c:?}"
    );
    let rise = rtt_b.saturating_sub(base_b);
    ensure!(
        (Duration::from_millis(90)..=Duration::from_millis(110)).contains(&rise),
        "RTT to the target rose by {rise:?}"
    );
    ensure!(
        to_b >= Duration::from_millis(1800),
        "256 KiB to the target took {to_b:?}"
    );
    ensure!(
        rtt_c < base_c + Duration::from_millis(10),
        "the other pod got slower: {rtt_c:?}"
    );
    ensure!(
        to_c < Duration::from_millis(500),
        "the other pod got throttled: {to_c:?}"
    );

    rt.block_on(daemon.set_tcs(tcs(a, vec![])))?;
    let mut no_sets = sets;
    no_sets.ipsets.clear();
    rt.block_on(daemon.flush_ip_sets(no_sets))?;
    let after = network_state(a)?;
    ensure!(
        before == after,
        "the pod's network differs:\nbefore:\n{before}\nafter:\n{after}"
    );
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    drop((_server_b, _server_c));
    tb.remove_pod(&c)?;
    bed.remove(tb)
}

fn partition_requests(a: &Pod, target: Ipv4Addr) -> (pb::IpSetsRequest, pb::IptablesChainsRequest) {
    (
        pb::IpSetsRequest {
            ipsets: vec![pb::IpSet {
                name: "e2e-peers".into(),
                cidrs: vec![format!("{target}/32")],
                ..Default::default()
            }],
            container_id: a.container_uri(),
            enter_ns: true,
            pod_uid: a.uid.clone(),
        },
        pb::IptablesChainsRequest {
            chains: vec![pb::Chain {
                name: "OUTPUT/e2e".into(),
                direction: pb::chain::Direction::Output as i32,
                ipsets: vec!["e2e-peers".into()],
                target: "DROP".into(),
                ..Default::default()
            }],
            container_id: a.container_uri(),
            enter_ns: true,
            pod_uid: a.uid.clone(),
        },
    )
}

fn partition(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-part")?;
    let c = idle_pod(tb, "net-part-c")?;
    let (a, b) = (&bed.a, &bed.b);
    let (b_ip, c_ip) = (ip(b)?, ip(&c)?);
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let _server_b = Server::start(b)?;
    let _server_c = Server::start(&c)?;
    let before = network_state(a)?;
    ensure!(
        connects(a, b_ip)? && connects(a, c_ip)?,
        "no baseline connectivity"
    );

    let (sets, chains) = partition_requests(a, b_ip);
    rt.block_on(daemon.flush_ip_sets(sets.clone()))?;
    rt.block_on(daemon.set_iptables_chains(chains.clone()))?;
    // The same request again changes nothing (no duplicate jumps).
    rt.block_on(daemon.set_iptables_chains(chains.clone()))?;
    let rules = in_pod(a, &["iptables-save"])?;
    let rules = rules + &in_pod(a, &["iptables-legacy-save"])?;
    ensure!(
        rules.matches("-A OUTPUT -j CHAOS-OUTPUT").count() == 1,
        "one jump expected:\n{rules}"
    );
    ensure!(
        !connects(a, b_ip)?,
        "the partitioned pod is still reachable"
    );
    ensure!(connects(a, c_ip)?, "the third pod is not reachable");
    eprintln!("network: partition: {b_ip} unreachable, {c_ip} reachable");

    // Recovery, as Chaos Mesh does it: empty chains, then empty sets.
    let mut no_chains = chains;
    no_chains.chains.clear();
    rt.block_on(daemon.set_iptables_chains(no_chains))?;
    let mut no_sets = sets;
    no_sets.ipsets.clear();
    rt.block_on(daemon.flush_ip_sets(no_sets))?;
    ensure!(connects(a, b_ip)?, "not reachable after recovery");
    let after = network_state(a)?;
    ensure!(
        before == after,
        "the pod's network differs:\nbefore:\n{before}\nafter:\n{after}"
    );
    let sets_left = in_pod(a, &["ipset", "list", "-n"])?;
    ensure!(sets_left.trim().is_empty(), "ipsets left: {sets_left}");
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    drop((_server_b, _server_c));
    tb.remove_pod(&c)?;
    bed.remove(tb)
}

fn crash(tb: &Testbed) -> anyhow::Result<()> {
    let mut bed = Bed::new(tb, "net-crash")?;
    let b_ip = ip(&bed.b)?;
    let rt = runtime()?;
    let before = network_state(&bed.a)?;
    {
        let (mut daemon, _) = rt.block_on(bed.agent.controller(&bed.pki))?;
        rt.block_on(daemon.set_tcs(tcs(&bed.a, vec![netem(|n| n.time = "200ms".into())])))?;
        let (sets, chains) = partition_requests(&bed.a, b_ip);
        rt.block_on(daemon.flush_ip_sets(sets))?;
        rt.block_on(daemon.set_iptables_chains(chains))?;
    }
    ensure!(network_state(&bed.a)? != before, "nothing was applied");
    bed.agent.kill()?;
    // The agent is gone: its queue rules bypass to the kernel, so traffic is not stuck.
    bed.agent.spawn()?;
    let after = network_state(&bed.a)?;
    ensure!(
        before == after,
        "not recovered from the journal:\nbefore:\n{before}\nafter:\n{after}"
    );
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    let log = bed.agent.log_text();
    ensure!(
        log.contains("recovered a network fault left by a previous run"),
        "{log}"
    );
    bed.remove(tb)
}

/// The fault belongs to the pod (its sandbox's namespace): when the container dies, the same
/// experiment is still found and recovered through the sandbox by the pod's UID.
fn dead_container(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-dead")?;
    let a = &bed.a;
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let before = network_state(a)?;
    let tbf = pb::Tc {
        r#type: pb::tc::Type::Bandwidth as i32,
        tbf: Some(pb::Tbf {
            rate: "1mbit".into(),
            limit: 20_000,
            buffer: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.block_on(daemon.set_tcs(tcs(a, vec![tbf.clone(), netem(|n| n.time = "10ms".into())])))?;
    let first = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{}", a.pid)).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // An update while the container is down reaches the same experiment.
    rt.block_on(daemon.set_tcs(tcs(a, vec![tbf])))?;
    let second = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(
        first.experiments.len() == 1
            && second.experiments.len() == 1
            && first.experiments[0].id == second.experiments[0].id,
        "{first:?} then {second:?}"
    );
    rt.block_on(daemon.set_tcs(tcs(a, vec![])))?;
    let after = network_state(a)?;
    ensure!(
        before == after,
        "the pod's network differs:\nbefore:\n{before}\nafter:\n{after}"
    );
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    bed.remove(tb)
}

fn bad_input(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-bad")?;
    let a = &bed.a;
    let rt = runtime()?;
    let (mut daemon, mut api) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let before = network_state(a)?;
    let tbf = |rate: &str| pb::Tc {
        r#type: pb::tc::Type::Bandwidth as i32,
        tbf: Some(pb::Tbf {
            rate: rate.into(),
            limit: 20_000,
            buffer: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut unknown_device = netem(|n| n.time = "10ms".into());
    unknown_device.device = "eth9".into();
    let cases: Vec<(&str, pb::TcsRequest, tonic::Code, &str)> = vec![
        (
            "an unparsable duration",
            tcs(a, vec![netem(|n| n.time = "soon".into())]),
            tonic::Code::InvalidArgument,
            "tcs[0].netem.time",
        ),
        (
            "an unparsable rate",
            tcs(a, vec![tbf("fast")]),
            tonic::Code::InvalidArgument,
            "tcs[0].tbf.rate",
        ),
        (
            "a percentage over 100",
            tcs(a, vec![netem(|n| n.loss = 150.0)]),
            tonic::Code::InvalidArgument,
            "tcs[0].netem.loss",
        ),
        (
            "a negative percentage",
            tcs(a, vec![netem(|n| n.corrupt = -5.0)]),
            tonic::Code::InvalidArgument,
            "tcs[0].netem.corrupt",
        ),
        // A valid rule first: nothing of it may stay when the second one fails.
        (
            "an unknown device",
            tcs(a, vec![tbf("1mbit"), unknown_device]),
            tonic::Code::InvalidArgument,
            "device eth9 does not exist",
        ),
    ];
    for (what, request, code, text) in cases {
        let err = match rt.block_on(daemon.set_tcs(request)) {
            Ok(_) => bail!("{what} was accepted"),
            Err(status) => status,
        };
        eprintln!("network: {what}: {:?} {}", err.code(), err.message());
        ensure!(
            err.code() == code && err.message().contains(text),
            "{what}: {err:?}"
        );
    }
    // The kernel path forced on a kernel without sch_netem: refused, nothing left.
    let forced = rt
        .block_on(
            api.start_network_experiment(api::StartNetworkExperimentRequest {
                container_id: a.container_uri(),
                pod_uid: a.uid.clone(),
                tcs: vec![netem(|n| n.time = "10ms".into())],
                netem_path: "kernel".into(),
                ..Default::default()
            }),
        )
        .err()
        .context("netem in the kernel was accepted by a kernel without it")?;
    eprintln!(
        "network: the kernel path forced: {:?} {}",
        forced.code(),
        forced.message()
    );
    ensure!(
        forced.code() == tonic::Code::FailedPrecondition && forced.message().contains("netem"),
        "{forced:?}"
    );
    let host = tb.run_pod(
        PodSpec::new("net-bad-host")
            .host_network()
            .shell("sleep 100000"),
    )?;
    let err = rt
        .block_on(daemon.set_tcs(tcs(&host, vec![netem(|n| n.time = "10ms".into())])))
        .err()
        .context("a host-network pod was accepted")?;
    eprintln!(
        "network: a host-network pod: {:?} {}",
        err.code(),
        err.message()
    );
    ensure!(
        err.code() == tonic::Code::FailedPrecondition && err.message().contains("hostNetwork"),
        "{err:?}"
    );
    let after = network_state(a)?;
    ensure!(
        before == after,
        "partial state left:\nbefore:\n{before}\nafter:\n{after}"
    );
    let listed = rt
        .block_on(api.list_experiments(api::ListExperimentsRequest {}))?
        .into_inner();
    ensure!(listed.experiments.is_empty(), "{listed:?}");
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    tb.remove_pod(&host)?;
    bed.remove(tb)
}

fn sets_request(pod: &Pod, ipsets: Vec<pb::IpSet>) -> pb::IpSetsRequest {
    pb::IpSetsRequest {
        ipsets,
        container_id: pod.container_uri(),
        enter_ns: true,
        pod_uid: pod.uid.clone(),
    }
}

fn hosts(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("10.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 255, i & 255))
        .collect()
}

/// Sets beyond the kernel's default size, a chain on a set the pod lacks, an unknown target and a
/// restore the kernel refuses: each is a named answer, and nothing of ours stays in the pod
/// (a failed restore used to leave its temporary set there for good).
fn ipset_limits(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-sets")?;
    let a = &bed.a;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let before = network_state(a)?;

    // 100,000 entries: past the kernel's default maxelem (65,536), within ours.
    let big = pb::IpSet {
        name: "e2e-big".into(),
        cidrs: hosts(100_000),
        ..Default::default()
    };
    rt.block_on(daemon.flush_ip_sets(sets_request(a, vec![big.clone()])))?;
    let listed = in_pod(a, &["ipset", "-t", "list", "e2e-big"])?;
    ensure!(
        listed.contains("Number of entries: 100000"),
        "the set is not whole:\n{listed}"
    );

    let chain = |set: &str, target: &str| pb::IptablesChainsRequest {
        chains: vec![pb::Chain {
            name: "OUTPUT/e2e".into(),
            direction: pb::chain::Direction::Output as i32,
            ipsets: vec![set.into()],
            target: target.into(),
            ..Default::default()
        }],
        container_id: a.container_uri(),
        enter_ns: true,
        pod_uid: a.uid.clone(),
    };
    let refused = |what: &str, answer: Result<tonic::Response<()>, tonic::Status>, field: &str| {
        let err = match answer {
            Ok(_) => bail!("{what} was accepted"),
            Err(status) => status,
        };
        eprintln!("network: {what}: {:?} {}", err.code(), err.message());
        ensure!(
            err.code() == tonic::Code::InvalidArgument && err.message().contains(field),
            "{what}: {err:?}"
        );
        Ok(())
    };
    refused(
        "a chain on a set the pod lacks",
        rt.block_on(daemon.set_iptables_chains(chain("e2e-missing", "DROP")))
            .map(|r| r.map(|_| ())),
        "chains[0].ipsets[0]: no ipset e2e-missing",
    )?;
    refused(
        "an unknown target",
        rt.block_on(daemon.set_iptables_chains(chain("e2e-big", "NO-SUCH-CHAIN")))
            .map(|r| r.map(|_| ())),
        "chains[0].target: unknown target NO-SUCH-CHAIN",
    )?;
    let too_big = pb::IpSet {
        name: "e2e-huge".into(),
        cidrs: hosts(262_145),
        ..Default::default()
    };
    refused(
        "a set past the entry limit",
        rt.block_on(daemon.flush_ip_sets(sets_request(a, vec![too_big])))
            .map(|r| r.map(|_| ())),
        "ipsets[0].cidrs: 262145 entries",
    )?;

    // A set of the same name, made by someone else: not ours to fill, swap or destroy.
    in_pod(a, &["ipset", "create", "e2e-taken", "hash:ip"])?;
    in_pod(a, &["ipset", "add", "e2e-taken", "10.99.0.1"])?;
    let taken = pb::IpSet {
        name: "e2e-taken".into(),
        cidrs: hosts(10),
        ..Default::default()
    };
    let err = rt
        .block_on(daemon.flush_ip_sets(sets_request(a, vec![big.clone(), taken])))
        .err()
        .context("a set over another's was accepted")?;
    eprintln!(
        "network: a set over another's: {:?} {}",
        err.code(),
        err.message()
    );
    ensure!(
        err.code() == tonic::Code::FailedPrecondition && err.message().contains("e2e-taken"),
        "{err:?}"
    );
    let theirs = in_pod(a, &["ipset", "list", "e2e-taken"])?;
    ensure!(
        theirs.contains("Type: hash:ip") && theirs.contains("10.99.0.1"),
        "the other set was changed:\n{theirs}"
    );
    // A list:set whose member is missing: the restore would fail halfway, after its temporary
    // set was made; refused first, and nothing of ours is left over either way.
    let list = pb::IpSet {
        name: "e2e-list".into(),
        r#type: "list:set".into(),
        set_names: vec!["e2e-nope".into()],
        ..Default::default()
    };
    refused(
        "a list:set on a missing set",
        rt.block_on(daemon.flush_ip_sets(sets_request(a, vec![big.clone(), list])))
            .map(|r| r.map(|_| ())),
        "ipsets[1].set_names[0]: no ipset e2e-nope",
    )?;
    let names = in_pod(a, &["ipset", "list", "-n"])?;
    ensure!(
        !names.contains("fltmp-"),
        "a temporary set stayed:\n{names}"
    );
    ensure!(
        names.lines().any(|l| l == "e2e-big"),
        "the earlier set was lost:\n{names}"
    );

    // Recovery as Chaos Mesh sends it: no sets.
    rt.block_on(daemon.flush_ip_sets(sets_request(a, Vec::new())))?;
    in_pod(a, &["ipset", "destroy", "e2e-taken"])?;
    let names = in_pod(a, &["ipset", "list", "-n"])?;
    ensure!(names.trim().is_empty(), "ipsets left: {names}");
    let after = network_state(a)?;
    ensure!(
        before == after,
        "the pod's network differs:\nbefore:\n{before}\nafter:\n{after}"
    );
    ensure!(bed.journal_is_empty(), "the journal keeps a record");
    bed.remove(tb)
}

fn cli(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "net-cli")?;
    let a = &bed.a;
    let b_ip = ip(&bed.b)?;
    let before = network_state(a)?;
    let out = bed.agent.cli(&[
        "attack",
        "network",
        "partition",
        "--container",
        &a.container_uri(),
        "--pod-uid",
        &a.uid,
        "--ip",
        &b_ip.to_string(),
        "--duration",
        "2s",
    ])?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{text}");
    eprintln!("network: CLI: {}", text.trim());
    let listed = bed.agent.cli(&["list"])?;
    ensure!(
        String::from_utf8_lossy(&listed.stdout).contains("network"),
        "{listed:?}"
    );
    let _server = Server::start(&bed.b)?;
    ensure!(!connects(a, b_ip)?, "the partition is not in force");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bed.journal_is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(bed.journal_is_empty(), "not recovered after its duration");
    ensure!(connects(a, b_ip)?, "not reachable after the duration");
    ensure!(
        before == network_state(a)?,
        "the pod's network differs after the duration"
    );
    // A dry run validates and resolves, and changes nothing.
    let out = bed.agent.cli(&[
        "attack",
        "network",
        "delay",
        "--container",
        &a.container_uri(),
        "--latency",
        "50ms",
        "--dry-run",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success() && text.contains("dry run"), "{text}");
    ensure!(
        bed.journal_is_empty() && before == network_state(a)?,
        "a dry run changed something"
    );
    // Bad input through the CLI: a clear message, a failing exit.
    let out = bed.agent.cli(&[
        "attack",
        "network",
        "loss",
        "--container",
        &a.container_uri(),
        "--percent",
        "150",
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("tcs[0].netem.loss"),
        "{err}"
    );
    drop(_server);
    bed.remove(tb)
}
