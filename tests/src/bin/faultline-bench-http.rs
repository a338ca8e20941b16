//! What HTTPChaos's proxy and DNSChaos's responder cost when they change nothing, against
//! direct, on the testbed with the real agent and CLI:
//!
//! - HTTP: `testbed::http_fixture`'s server in one pod, Debian's `wrk` in another (run in its
//!   network namespace), `GET /hello` (6 bytes) over kept-alive connections: one connection
//!   (per-request latency, p50/p99) and 16 connections (throughput). "Proxy" is `faultline attack
//!   http` with a rule on a path nobody asks for, so every request goes through the proxy and no
//!   rule acts.
//! - DNS: Debian's dnsmasq on the testbed bridge as the pod's resolver; sequential A queries
//!   over UDP from the pod: direct, through the responder when the name is not covered (relayed
//!   to dnsmasq) and when it is (`error`: the responder answers SERVFAIL itself).
//!
//! Direct and faulted runs alternate, so drift hits both. Prints markdown for docs/benchmarks.md.
//!
//! `cargo build --release -p faultline-agent -p faultline-injector -p faultline-http-chaos
//! -p faultline-dns-responder -p faultline-tests --bins && sudo target/release/faultline-bench-http [RUNS [http|dns]]`

#[path = "../bench_support.rs"]
mod bench_support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench_support::{LocalAgent, Result, binary};
use testbed::http_fixture::{HttpServer, in_netns};
use testbed::{Pod, PodSpec, Testbed};

const HTTP_PORT: u16 = 8080;
const WRK_SECONDS: u32 = 5;
const QUERIES: usize = 2000;
/// A name dnsmasq serves.
const NAME: &str = "db.example.com";

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    if !nix::unistd::geteuid().is_root() {
        eprintln!("faultline-bench-http: run as root (it starts containerd)");
        std::process::exit(1);
    }
    let testbed = match Testbed::start() {
        Ok(tb) => tb,
        Err(e) => {
            eprintln!("faultline-bench-http: the testbed did not start: {e}");
            std::process::exit(1);
        }
    };
    let part = std::env::args().nth(2);
    let outcome = bench(&testbed, runs.max(1), part.as_deref());
    let teardown = testbed.shutdown();
    if let Err(e) = outcome {
        eprintln!("faultline-bench-http: {e}");
        std::process::exit(1);
    }
    if let Err(e) = teardown {
        eprintln!("faultline-bench-http: teardown: {e}");
        std::process::exit(1);
    }
}

fn cli(agent: &LocalAgent, args: &[&str]) -> Result<String> {
    let out = Command::new(binary("faultline")?)
        .arg("--socket")
        .arg(agent.socket())
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "faultline {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A table row: its name, the direct and proxied columns of a run, the figure, its unit.
type Row<'a> = (&'a str, usize, usize, &'a dyn Fn(&Wrk) -> f64, &'a str);

/// What one wrk run reports.
#[derive(Clone, Copy, Debug)]
struct Wrk {
    requests_per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// wrk's latency figures: `101.00us`, `1.20ms`, `2.00s`.
fn wrk_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

fn wrk(client: &Pod, url: &str, connections: u32) -> Result<Wrk> {
    let threads = connections.min(2);
    let out = Command::new("nsenter")
        .args(["-t", &client.sandbox_pid.to_string(), "-n", "wrk"])
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{WRK_SECONDS}s"), "--latency", url])
        .output()
        .map_err(|e| format!("wrk (scripts/setup.sh installs it): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("Socket errors") || text.contains("Non-2xx") {
        return Err(format!(
            "wrk {url} failed or saw errors: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let field = |prefix: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let parse = || -> Option<Wrk> {
        Some(Wrk {
            requests_per_s: field("Requests/sec:")?.parse().ok()?,
            p50: wrk_duration(&field("50%")?)?,
            p99: wrk_duration(&field("99%")?)?,
        })
    };
    parse().ok_or_else(|| format!("wrk's output not understood: {text}").into())
}

/// dnsmasq on the bridge's gateway address, answering NAME and nothing else.
struct Upstream(Child);

impl Upstream {
    fn start(address: Ipv4Addr) -> Result<Upstream> {
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
                "--log-facility=-",
            ])
            .arg(format!("--listen-address={address}"))
            .arg(format!("--host-record={NAME},10.44.0.7"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dnsmasq (scripts/setup.sh installs dnsmasq-base): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        // Bound once the address is taken (an address the host lacks fails otherwise).
        while UdpSocket::bind((address, 53))
            .is_err_and(|e| e.kind() != std::io::ErrorKind::AddrInUse)
            || UdpSocket::bind((address, 53)).is_ok()
        {
            if Instant::now() > deadline {
                return Err(format!("dnsmasq did not bind {address}:53").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Upstream(child))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(32 + name.len());
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// Sequential A queries for NAME from the pod's network namespace: sorted round trips, every
/// answer checked (its id, and the rcode `want`).
fn dns_rtts(pod: &Pod, server: Ipv4Addr, want_rcode: u8) -> Result<Vec<Duration>> {
    let handle = in_netns(pod.sandbox_pid, move || {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.connect(SocketAddr::from((server, 53)))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut rtts = Vec::with_capacity(QUERIES);
        let mut answer = [0u8; 512];
        for i in 0..QUERIES {
            let id = i as u16;
            let packet = query(id, NAME);
            let start = Instant::now();
            socket.send(&packet)?;
            loop {
                let n = socket.recv(&mut answer)?;
                if n >= 12 && answer[..2] == id.to_be_bytes() {
                    break;
                }
            }
            rtts.push(start.elapsed());
            let rcode = answer[3] & 0x0f;
            if answer[2] & 0x80 == 0 || rcode != want_rcode {
                // Say whether it comes right by itself (and when), then fail.
                let mut later = Vec::new();
                for _ in 0..20 {
                    std::thread::sleep(Duration::from_millis(100));
                    socket.send(&query(0xfff0, NAME))?;
                    let n = socket.recv(&mut answer)?;
                    later.push(if n >= 12 { answer[3] & 0x0f } else { 255 });
                }
                return Err(std::io::Error::other(format!(
                    "query {i}: rcode {rcode}, expected {want_rcode}; the same socket then, every 100 ms: {later:?}"
                )));
            }
        }
        rtts.sort();
        Ok(rtts)
    });
    Ok(handle.join().map_err(|_| "the DNS client panicked")??)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// "median (min–max)" of a list of ratios.
fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2} ({:.2}–{:.2})", median(v.to_vec()), min, max)
}

/// `faulted / direct`, run by run.
fn ratio(direct: &[f64], faulted: &[f64]) -> Vec<f64> {
    direct.iter().zip(faulted).map(|(d, f)| f / d).collect()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bench(tb: &Testbed, runs: usize, part: Option<&str>) -> Result<()> {
    let agent = LocalAgent::start(tb, "bench-http-agent")?;
    if part != Some("dns") {
        bench_http(tb, &agent, runs)?;
        println!();
    }
    if part != Some("http") {
        bench_dns(tb, &agent, runs)?;
    }
    Ok(())
}

fn bench_http(tb: &Testbed, agent: &LocalAgent, runs: usize) -> Result<()> {
    let server_pod = tb.run_pod(PodSpec::new("bench-http-server").shell("sleep 100000"))?;
    let client_pod = tb.run_pod(PodSpec::new("bench-http-client").shell("sleep 100000"))?;
    let server_ip = server_pod.ipv4().ok_or("the server pod has no IP")?;
    let server = HttpServer::start_in_netns(server_pod.sandbox_pid, HTTP_PORT)?;
    let url = format!("http://{server_ip}:{HTTP_PORT}/hello");
    let container = server_pod.container_uri();
    let attack = [
        "attack",
        "http",
        "--container",
        container.as_str(),
        "--port",
        "8080",
        "--path",
        "/never-asked",
        "--abort",
    ];

    // HTTP: per run, direct then through the proxy, one connection and sixteen.
    let mut http: Vec<[Wrk; 4]> = Vec::new();
    let mut proxy_status = String::new();
    for _ in 0..runs {
        let direct_1 = wrk(&client_pod, &url, 1)?;
        let direct_16 = wrk(&client_pod, &url, 16)?;
        proxy_status = cli(agent, &attack)?;
        let proxy_1 = wrk(&client_pod, &url, 1)?;
        let proxy_16 = wrk(&client_pod, &url, 16)?;
        cli(agent, &["recover", "--all"])?;
        http.push([direct_1, proxy_1, direct_16, proxy_16]);
    }
    let direct_after = wrk(&client_pod, &url, 1)?;
    drop(server);

    println!("proxy: {}", proxy_status.trim().replace('\n', " | "));
    println!();
    println!(
        "HTTP, `GET /hello` (6 bytes), wrk {WRK_SECONDS} s per run, {runs} runs, medians (min–max over runs):"
    );
    println!();
    println!("| | direct | through the proxy | proxy / direct |");
    println!("|---|---|---|---|");
    let col =
        |i: usize, f: &dyn Fn(&Wrk) -> f64| -> Vec<f64> { http.iter().map(|r| f(&r[i])).collect() };
    let rows: [Row; 4] = [
        ("1 connection, latency p50", 0, 1, &|w| us(w.p50), "µs"),
        ("1 connection, latency p99", 0, 1, &|w| us(w.p99), "µs"),
        (
            "1 connection, requests/s",
            0,
            1,
            &|w| w.requests_per_s,
            "/s",
        ),
        (
            "16 connections, requests/s",
            2,
            3,
            &|w| w.requests_per_s,
            "/s",
        ),
    ];
    for (name, d, p, f, unit) in rows {
        let (direct, proxied) = (col(d, f), col(p, f));
        println!(
            "| {name} | {:.0} {unit} | {:.0} {unit} | {} |",
            median(direct.clone()),
            median(proxied.clone()),
            spread(&ratio(&direct, &proxied))
        );
    }
    let p50_added: Vec<f64> = http.iter().map(|r| us(r[1].p50) - us(r[0].p50)).collect();
    println!();
    println!(
        "Added per request (1 connection, p50): {:.0} µs median; direct again after the last recovery: p50 {:.0} µs, {:.0} requests/s.",
        median(p50_added),
        us(direct_after.p50),
        direct_after.requests_per_s
    );
    tb.remove_pod(&server_pod)?;
    tb.remove_pod(&client_pod)?;
    Ok(())
}

fn bench_dns(tb: &Testbed, agent: &LocalAgent, runs: usize) -> Result<()> {
    let gateway = Ipv4Addr::from(u32::from(tb.subnet().network()) + 1);
    // The pod first: CNI gives the bridge its gateway address with the first pod.
    let dns_pod = tb.run_pod(
        PodSpec::new("bench-dns")
            .shell("sleep 100000")
            .dns_server(gateway.to_string()),
    )?;
    let upstream = Upstream::start(gateway)?;
    let dns_container = dns_pod.container_uri();
    let mut dns: Vec<[Vec<Duration>; 3]> = Vec::new();
    for run in 0..runs {
        let phase = |name: &'static str| {
            move |e: Box<dyn std::error::Error>| -> Box<dyn std::error::Error> {
                format!("DNS run {run}, {name}: {e}").into()
            }
        };
        let direct = dns_rtts(&dns_pod, gateway, 0).map_err(phase("direct"))?;
        cli(
            agent,
            &[
                "attack",
                "dns",
                "--container",
                &dns_container,
                "--action",
                "error",
                "--pattern",
                "*.not-asked.invalid",
            ],
        )?;
        let relayed = dns_rtts(&dns_pod, gateway, 0).map_err(phase("relayed"))?;
        cli(agent, &["recover", "--all"])?;
        cli(
            agent,
            &[
                "attack",
                "dns",
                "--container",
                &dns_container,
                "--action",
                "error",
                "--pattern",
                "*.example.com",
            ],
        )?;
        let answered = dns_rtts(&dns_pod, gateway, 2).map_err(phase("answered"))?;
        cli(agent, &["recover", "--all"])?;
        dns.push([direct, relayed, answered]);
    }
    drop(upstream);
    println!(
        "DNS, {QUERIES} sequential A queries for {NAME} over UDP per run, {runs} runs, medians (min–max over runs):"
    );
    println!();
    println!("| | p50 | p99 | p50 / direct | p99 / direct |");
    println!("|---|---|---|---|---|");
    for (name, i) in [
        ("direct to dnsmasq", 0),
        ("through the responder, relayed (name not covered)", 1),
        ("answered by the responder (`error`, SERVFAIL)", 2),
    ] {
        let p50: Vec<f64> = dns.iter().map(|r| us(percentile(&r[i], 50))).collect();
        let p99: Vec<f64> = dns.iter().map(|r| us(percentile(&r[i], 99))).collect();
        let d50: Vec<f64> = dns.iter().map(|r| us(percentile(&r[0], 50))).collect();
        let d99: Vec<f64> = dns.iter().map(|r| us(percentile(&r[0], 99))).collect();
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {} | {} |",
            median(p50.clone()),
            median(p99.clone()),
            spread(&ratio(&d50, &p50)),
            spread(&ratio(&d99, &p99))
        );
    }
    tb.remove_pod(&dns_pod)?;
    Ok(())
}
