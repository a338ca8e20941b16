//! Webhook latency and throughput on loopback with TLS: `faultline-controller webhook` in
//! offline mode (the golden tests' manifests), sent the TiKV pod's AdmissionReview (an
//! injection: the template's config looked up, the patch built, serialized and base64-encoded).
//!
//! `cargo bench -p faultline-controller --bench webhook [-- --rate 1000 --seconds 10
//! --connections 8]`
//! 1. Open loop: requests dispatched at a fixed rate over keep-alive connections (round robin),
//!    latency from dispatch to the whole response (queueing behind a busy connection counts).
//! 2. Closed loop: every connection sends its next request as soon as the last one returns,
//!    for the highest rate the machine gives.
//!    The same against `GET /healthz` (no work at all) is the control: what loopback, TLS,
//!    HTTP and scheduling cost by themselves on this machine.
//! 3. The webhook's own work per review (parse, decide, patch, serialize), in process, no TLS
//!    or HTTP: what the latency costs beyond the transport.

#[path = "../tests/support/webhook_client.rs"]
mod webhook_client;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use webhook_client::{Client, SERVER_NAME, certs, connect, start};

struct Options {
    rate: u64,
    seconds: u64,
    connections: usize,
}

fn options() -> Options {
    let mut o = Options {
        rate: 1000,
        seconds: 10,
        connections: 8,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse::<u64>().ok();
        match pair[0].as_str() {
            "--rate" => o.rate = value().unwrap_or(o.rate),
            "--seconds" => o.seconds = value().unwrap_or(o.seconds),
            "--connections" => o.connections = value().map_or(o.connections, |v| v.max(1) as usize),
            _ => {}
        }
    }
    o
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn clients(addr: std::net::SocketAddr, ca: &str, n: usize) -> Vec<Client> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(connect(addr, ca, SERVER_NAME).await.expect("connect"));
    }
    out
}

async fn check(client: &mut Client, body: &Bytes) {
    let (status, reply) = client
        .post("/inject", body.clone())
        .await
        .expect("a response");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
    assert!(v["response"]["patch"].is_string(), "not an injection: {v}");
}

/// Fixed-rate dispatch; the latencies and the achieved rate. With no body, `GET /healthz`.
async fn open_loop(
    conns: Vec<Client>,
    body: Option<Bytes>,
    rate: u64,
    total: u64,
) -> (Vec<Duration>, f64) {
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for mut client in conns {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(dispatched) = rx.recv().await {
                let status = match &body {
                    Some(body) => {
                        client
                            .post("/inject", body.clone())
                            .await
                            .expect("a response")
                            .0
                    }
                    None => client.get("/healthz").await.expect("a response"),
                };
                assert_eq!(status, 200);
                latencies.push(dispatched.elapsed());
            }
            latencies
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let _ = senders[i as usize % senders.len()].send(Instant::now());
    }
    drop(senders);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("connection task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    (all, total as f64 / elapsed)
}

async fn closed_loop(conns: Vec<Client>, body: Bytes, for_: Duration) -> f64 {
    let deadline = Instant::now() + for_;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut client in conns {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (status, _) = client
                    .post("/inject", body.clone())
                    .await
                    .expect("a response");
                assert_eq!(status, 200);
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("connection task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// `Webhook::review` alone, `n` times: its latencies, sorted.
fn in_process(manifests: &Path, body: &[u8], n: usize) -> Vec<Duration> {
    let webhook = controller::webhook::sources::offline(
        &controller::webhook::template::GoTemplates,
        controller::webhook::Settings::default(),
        manifests,
    )
    .expect("manifests");
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let out = webhook.review(body).expect("a review");
        latencies.push(start.elapsed());
        assert!(out.len() > 100);
    }
    latencies.sort_unstable();
    latencies
}

fn main() {
    let o = options();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let body = Bytes::from(
        std::fs::read(root.join("tests/webhook/reviews/tikv-template.json")).expect("review"),
    );
    let work = in_process(&root.join("tests/webhook/manifests"), &body, 20_000);
    println!(
        "in process: Webhook::review p50 {}, p99 {} (20000 reviews, one thread)",
        micros(percentile(&work, 50.0)),
        micros(percentile(&work, 99.0))
    );
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let certs = certs();
    let server = start(
        Path::new(env!("CARGO_BIN_EXE_faultline-controller")),
        &root.join("tests/webhook/manifests"),
        tls_dir.path(),
        &certs,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut conns = clients(server.addr, &certs.ca_pem, o.connections).await;
        for c in &mut conns {
            check(c, &body).await;
        }
        // Warm-up: a second at the same rate, not counted.
        let (_, _) = open_loop(conns, Some(body.clone()), o.rate, o.rate).await;
        println!(
            "open loop: {} requests per row at {} req/s target over {} TLS connections ({} bytes per review)",
            o.rate * o.seconds,
            o.rate,
            o.connections,
            body.len()
        );
        println!("| request | achieved req/s | p50 | p90 | p99 | p99.9 | max |");
        println!("|---|---|---|---|---|---|---|");
        for (what, request) in [
            ("POST /inject (TiKV pod, injected)", Some(body.clone())),
            ("GET /healthz (control)", None),
        ] {
            let conns = clients(server.addr, &certs.ca_pem, o.connections).await;
            let (mut latencies, achieved) =
                open_loop(conns, request, o.rate, o.rate * o.seconds).await;
            latencies.sort_unstable();
            println!(
                "| {what} | {:.0} | {} | {} | {} | {} | {} |",
                achieved,
                micros(percentile(&latencies, 50.0)),
                micros(percentile(&latencies, 90.0)),
                micros(percentile(&latencies, 99.0)),
                micros(percentile(&latencies, 99.9)),
                micros(latencies.last().copied().unwrap_or_default()),
            );
        }
        let conns = clients(server.addr, &certs.ca_pem, o.connections).await;
        let max = closed_loop(conns, body.clone(), Duration::from_secs(5)).await;
        println!(
            "closed loop: {max:.0} req/s over {} connections",
            o.connections
        );
    });
    drop(server);
}
