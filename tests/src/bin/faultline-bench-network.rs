//! What the userspace netem path (NFQUEUE) costs by itself: two testbed pods, TCP echo latency
//! and bulk throughput from one to the other, natively and with a netem rule that does nothing
//! (delay 0) forced onto the NFQUEUE path, through the real agent and CLI. Prints a markdown
//! table for docs/benchmarks.md. All traffic stays between the testbed's pods.
//!
//! `cargo build --workspace && sudo target/debug/faultline-bench-network` (use --release builds
//! for numbers worth quoting).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use testbed::{Pod, PodSpec, Testbed};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PORT: u16 = 7200;
const PINGS: usize = 2000;
const BULK: usize = 64 << 20;
const RUNS: usize = 3;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("faultline-bench-network: run as root (it starts containerd)");
        std::process::exit(1);
    }
    let testbed = match Testbed::start() {
        Ok(tb) => tb,
        Err(e) => {
            eprintln!("faultline-bench-network: the testbed did not start: {e}");
            std::process::exit(1);
        }
    };
    let outcome = bench(&testbed);
    let teardown = testbed.shutdown();
    if let Err(e) = outcome {
        eprintln!("faultline-bench-network: {e}");
        std::process::exit(1);
    }
    if let Err(e) = teardown {
        eprintln!("faultline-bench-network: teardown: {e}");
        std::process::exit(1);
    }
}

fn binary(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .ok_or("no binary directory")?
        .join(name);
    if !path.exists() {
        return Err(format!("{} is missing: cargo build --workspace", path.display()).into());
    }
    Ok(path)
}

/// Runs `work` on a thread inside the network namespace of `pid`.
fn in_netns<T: Send + 'static>(
    pid: u32,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let handle = std::thread::spawn(move || -> std::io::Result<T> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::other)?;
        drop(ns);
        work()
    });
    Ok(handle.join().map_err(|_| "a probe thread panicked")??)
}

/// Echoes small reads, swallows large ones, answers "done" at EOF.
fn serve(pod: &Pod, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let pid = pod.pid;
    std::thread::spawn(move || {
        let _ = in_netns(pid, move || {
            let listener = TcpListener::bind(("0.0.0.0", PORT))?;
            listener.set_nonblocking(true)?;
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                std::thread::spawn(move || -> std::io::Result<()> {
                    conn.set_nonblocking(false)?;
                    conn.set_nodelay(true)?;
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = conn.read(&mut buf)?;
                        if n == 0 {
                            return conn.write_all(b"done");
                        }
                        if n <= 16 {
                            conn.write_all(&buf[..n])?;
                        }
                    }
                });
            }
            Ok(())
        });
    })
}

struct Sample {
    rtt_p50: Duration,
    rtt_p99: Duration,
    mbit_per_s: f64,
}

fn measure(from: &Pod, to: Ipv4Addr) -> Result<Sample> {
    let rtts = in_netns(from.pid, move || {
        let mut conn = TcpStream::connect(SocketAddr::from((to, PORT)))?;
        conn.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        let mut rtts = Vec::with_capacity(PINGS);
        for i in 0..PINGS {
            let start = Instant::now();
            conn.write_all(&[i as u8])?;
            conn.read_exact(&mut byte)?;
            rtts.push(start.elapsed());
        }
        Ok(rtts)
    })?;
    let mut rtts = rtts;
    rtts.sort();
    let elapsed = in_netns(from.pid, move || {
        let mut conn = TcpStream::connect(SocketAddr::from((to, PORT)))?;
        let chunk = vec![0x5au8; 256 * 1024];
        let start = Instant::now();
        let mut sent = 0;
        while sent < BULK {
            conn.write_all(&chunk)?;
            sent += chunk.len();
        }
        conn.shutdown(std::net::Shutdown::Write)?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer)?;
        Ok(start.elapsed())
    })?;
    Ok(Sample {
        rtt_p50: rtts[rtts.len() / 2],
        rtt_p99: rtts[rtts.len() * 99 / 100],
        mbit_per_s: BULK as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
    })
}

fn median(samples: &[Sample]) -> Sample {
    let pick = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Sample {
        rtt_p50: Duration::from_secs_f64(pick(
            samples.iter().map(|s| s.rtt_p50.as_secs_f64()).collect(),
        )),
        rtt_p99: Duration::from_secs_f64(pick(
            samples.iter().map(|s| s.rtt_p99.as_secs_f64()).collect(),
        )),
        mbit_per_s: pick(samples.iter().map(|s| s.mbit_per_s).collect()),
    }
}

struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn start_agent(tb: &Testbed) -> Result<Agent> {
    let dir = tb.base_dir().join("bench-network-agent");
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("agent.sock");
    let child = Command::new(binary("faultline-agent")?)
        .arg("--containerd-socket")
        .arg(tb.containerd_socket())
        .arg("serve")
        .arg("--unix-socket")
        .arg(&socket)
        .args(["--insecure-unix-plaintext", "--http-listen", "off"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log"))?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err("the agent did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Agent { child, socket })
}

fn cli(agent: &Agent, args: &[&str]) -> Result<String> {
    let out = Command::new(binary("faultline")?)
        .arg("--socket")
        .arg(&agent.socket)
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

fn bench(tb: &Testbed) -> Result<()> {
    let a = tb.run_pod(PodSpec::new("bench-net-a").shell("sleep 100000"))?;
    let b = tb.run_pod(PodSpec::new("bench-net-b").shell("sleep 100000"))?;
    let b_ip: Ipv4Addr = b.ipv4().ok_or("pod b has no IP")?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(&b, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(100));
    let agent = start_agent(tb)?;

    let native: Vec<Sample> = (0..RUNS)
        .map(|_| measure(&a, b_ip))
        .collect::<Result<_>>()?;
    let status = cli(
        &agent,
        &[
            "attack",
            "network",
            "delay",
            "--container",
            &a.container_uri(),
            "--pod-uid",
            &a.uid,
            "--latency",
            "0ms",
            "--netem-path",
            "userspace",
        ],
    )?;
    let queued: Vec<Sample> = (0..RUNS)
        .map(|_| measure(&a, b_ip))
        .collect::<Result<_>>()?;
    let listed = cli(&agent, &["list"])?;
    cli(&agent, &["recover", "--all"])?;
    // A rule that may copy packets takes them segmented, checksums filled in (no GSO).
    cli(
        &agent,
        &[
            "attack",
            "network",
            "duplicate",
            "--container",
            &a.container_uri(),
            "--pod-uid",
            &a.uid,
            "--percent",
            "0.0001",
            "--netem-path",
            "userspace",
        ],
    )?;
    let segmented: Vec<Sample> = (0..RUNS)
        .map(|_| measure(&a, b_ip))
        .collect::<Result<_>>()?;
    cli(&agent, &["recover", "--all"])?;
    let after: Vec<Sample> = (0..RUNS)
        .map(|_| measure(&a, b_ip))
        .collect::<Result<_>>()?;

    let (n, q, g, r) = (
        median(&native),
        median(&queued),
        median(&segmented),
        median(&after),
    );
    println!("agent: {}", status.trim().replace('\n', " | "));
    println!("list: {}", listed.trim().replace('\n', " | "));
    println!();
    println!("| path | echo RTT p50 | echo RTT p99 | TCP throughput |");
    println!("|---|---|---|---|");
    for (name, s) in [
        ("native (no fault)", &n),
        ("NFQUEUE, netem delay 0 (GSO packets whole)", &q),
        ("NFQUEUE, duplicate 0.0001% (segmented)", &g),
        ("native again (recovered)", &r),
    ] {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.0} Mbit/s |",
            s.rtt_p50.as_secs_f64() * 1e6,
            s.rtt_p99.as_secs_f64() * 1e6,
            s.mbit_per_s
        );
    }
    println!();
    println!(
        "NFQUEUE cost: +{:.1} µs per round trip (p50), throughput {:.0}% of native ({PINGS} echoes and {} MiB per run, median of {RUNS} runs)",
        (q.rtt_p50.as_secs_f64() - n.rtt_p50.as_secs_f64()) * 1e6,
        q.mbit_per_s / n.mbit_per_s * 100.0,
        BULK >> 20
    );
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    drop(agent);
    tb.remove_pod(&a)?;
    tb.remove_pod(&b)?;
    Ok(())
}
