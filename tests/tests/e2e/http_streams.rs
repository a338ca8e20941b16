//! The HTTP proxy on the wire: a 100 MiB answer streamed through it (the proxy's peak memory
//! stays far below the body, the client's bytes hash as the server's), a chunked answer still
//! chunked at the client, and one kept-alive connection serving request after request across
//! live rule changes without being dropped. The server is `testbed::http_fixture` in the
//! server pod's network namespace; the client runs in another pod's.

use std::net::SocketAddr;

use anyhow::{Context, ensure};
use faultline_proto::pb;
use testbed::Testbed;
use testbed::http_fixture::{Answer, Client, HttpServer, in_netns, pattern_sha256};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![(
        "http::a_100_mib_answer_streams_chunked_stays_chunked_keep_alive_survives_rule_changes",
        streams,
    )]
}

const PORT: u16 = 8080;
const BIG: u64 = 100 << 20;

/// Selects the big and the chunked answers (a header added, the body untouched).
const MARK_BODIES: &str = r#"[
  {"target": "Response", "selector": {"port": 8080, "path": "/bytes/*"}, "actions": {"patch": {"headers": [["X-Chaos", "bytes"]]}}},
  {"target": "Response", "selector": {"port": 8080, "path": "/chunked/*"}, "actions": {"patch": {"headers": [["X-Chaos", "chunked"]]}}}
]"#;

/// The same, plus the kept-alive path.
const MARK_ALL: &str = r#"[
  {"target": "Response", "selector": {"port": 8080, "path": "/bytes/*"}, "actions": {"patch": {"headers": [["X-Chaos", "bytes"]]}}},
  {"target": "Response", "selector": {"port": 8080, "path": "/chunked/*"}, "actions": {"patch": {"headers": [["X-Chaos", "chunked"]]}}},
  {"target": "Response", "selector": {"port": 8080, "path": "/kept/*"}, "actions": {"patch": {"headers": [["X-Chaos", "kept"]]}}}
]"#;

/// The peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: i64) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

fn streams(tb: &Testbed) -> anyhow::Result<()> {
    let pki = Pki::create(&tb.base_dir().join("pki-http-streams"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-http-streams")?;
    let server_pod = crate::network::idle_pod(tb, "http-streams-server")?;
    let client_pod = crate::network::idle_pod(tb, "http-streams-client")?;
    let server = HttpServer::start_in_netns(server_pod.sandbox_pid, PORT)?;
    let to = SocketAddr::from((server_pod.ipv4().context("no IP")?, PORT));
    let client_pid = client_pod.sandbox_pid;
    // A connection opened in the client pod stays in its network namespace wherever it is used.
    let connect = move || -> anyhow::Result<Client> {
        in_netns(client_pid, move || Client::connect(to))
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
            .context("connecting from the client pod")
    };
    let get = |path: &str| -> anyhow::Result<Answer> { Ok(connect()?.get(path)?) };
    ensure!(get("/hello")?.status == 200, "the server does not answer");

    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(agent.controller(&pki))?;
    let mut apply = |rules: &str, ports: Vec<u32>| -> anyhow::Result<pb::ApplyHttpChaosResponse> {
        Ok(rt
            .block_on(daemon.apply_http_chaos(pb::ApplyHttpChaosRequest {
                rules: rules.into(),
                proxy_ports: ports,
                container_id: server_pod.container_uri(),
                enter_ns: true,
                ..Default::default()
            }))?
            .into_inner())
    };
    let applied = apply(MARK_BODIES, vec![PORT.into()])?;
    ensure!(
        applied.status_code == 200 && applied.instance > 0,
        "{applied:?}"
    );
    let proxy = applied.instance;

    // 100 MiB through the proxy: every byte as sent, and never held whole.
    let before = peak_rss_kib(proxy)?;
    let big = get(&format!("/bytes/{BIG}"))?;
    let after = peak_rss_kib(proxy)?;
    eprintln!(
        "http streams: proxy peak RSS {before} KiB before, {after} KiB after a {} MiB answer",
        BIG >> 20
    );
    ensure!(
        big.header("x-chaos") == Some("bytes"),
        "not through the proxy: {:?}",
        big.headers
    );
    ensure!(
        big.status == 200 && big.body_len == BIG && big.body_sha256 == pattern_sha256(BIG),
        "the body changed on the way: {} bytes, sha256 {}",
        big.body_len,
        big.body_sha256
    );
    ensure!(
        !big.chunked && big.header("content-length") == Some(&BIG.to_string()),
        "the length was not kept: {:?}",
        big.headers
    );
    ensure!(
        after < 32 * 1024,
        "the proxy's peak RSS reached {after} KiB for a {} MiB answer: buffered, not streamed",
        BIG >> 20
    );

    // A chunked answer reaches the client chunked.
    let chunked = get("/chunked/5")?;
    ensure!(chunked.header("x-chaos") == Some("chunked"), "{chunked:?}");
    ensure!(
        chunked.chunked && chunked.header("content-length").is_none(),
        "not chunked at the client: {:?}",
        chunked.headers
    );
    ensure!(
        chunked.small_body == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n",
        "{:?}",
        String::from_utf8_lossy(&chunked.small_body)
    );

    // One kept-alive connection across two live rule changes: never dropped, and each answer
    // under the rules in force when it was asked.
    let mut kept = connect()?;
    let first = kept.get("/kept/1")?;
    ensure!(
        first.status == 200 && first.header("x-chaos").is_none(),
        "{first:?}"
    );
    let upstream_connections = server.accepted();
    let changed = apply(MARK_ALL, vec![PORT.into()])?;
    ensure!(changed.instance_uid == applied.instance_uid, "{changed:?}");
    let second = kept
        .get("/kept/2")
        .context("the kept-alive connection after a rule change")?;
    ensure!(
        second.header("x-chaos") == Some("kept"),
        "the new rule is not in force on the open connection: {second:?}"
    );
    apply(MARK_BODIES, vec![PORT.into()])?;
    let third = kept
        .get("/kept/3")
        .context("the kept-alive connection after a second change")?;
    ensure!(third.header("x-chaos").is_none(), "{third:?}");
    let big_again = kept.get("/bytes/1000000")?;
    ensure!(
        big_again.body_sha256 == pattern_sha256(1_000_000),
        "{big_again:?}"
    );
    ensure!(
        server.accepted() == upstream_connections,
        "the proxy reconnected upstream ({} connections, was {upstream_connections})",
        server.accepted()
    );
    drop(kept);

    let removed = apply("", vec![])?;
    ensure!(removed.status_code == 200, "{removed:?}");
    let direct = get("/bytes/1000")?;
    ensure!(
        direct.header("x-chaos").is_none() && direct.body_sha256 == pattern_sha256(1000),
        "{direct:?}"
    );
    drop(server);
    drop(agent);
    tb.remove_pod(&server_pod)?;
    tb.remove_pod(&client_pod)?;
    Ok(())
}
