//! The control plane as the agent and a sidecar user see it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::TcpStream;

use super::*;
use crate::fault_rules::{Method, RuleStore, SleepOutcome};

#[derive(Default)]
struct FakeFs {
    mounted: AtomicBool,
    passthrough: Mutex<Vec<String>>,
    file_io: Mutex<crate::fs::FileIo>,
}

impl FsStatus for FakeFs {
    fn mounted(&self) -> bool {
        self.mounted.load(Ordering::SeqCst)
    }

    fn open_passthrough_files(&self) -> Vec<String> {
        self.passthrough.lock().clone()
    }

    fn file_io(&self) -> crate::fs::FileIo {
        *self.file_io.lock()
    }
}

fn control_plane() -> (Arc<ControlPlane>, Arc<FakeFs>) {
    let fs = Arc::new(FakeFs::default());
    fs.mounted.store(true, Ordering::SeqCst);
    let rules = Arc::new(RuleStore::new("/data"));
    let context = ControlContext::new(rules, Arc::clone(&fs) as Arc<dyn FsStatus>);
    (Arc::new(ControlPlane::new(context).unwrap()), fs)
}

/// The agent's end of a line transport.
struct LineClient {
    writer: tokio::io::WriteHalf<DuplexStream>,
    reader: BufReader<tokio::io::ReadHalf<DuplexStream>>,
    next_id: u64,
}

impl LineClient {
    async fn send_raw(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    async fn read_response(&mut self) -> Value {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(read > 0, "the transport closed instead of answering");
        serde_json::from_str(&line).unwrap()
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let request =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.send_raw(&request.to_string()).await;
        let response = self.read_response().await;
        assert_eq!(response["id"], json!(self.next_id), "{response}");
        response
    }
}

fn serve_over_duplex(
    plane: &Arc<ControlPlane>,
) -> (LineClient, tokio::task::JoinHandle<LinesEnded>) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server);
    let (client_read, client_write) = tokio::io::split(client);
    let plane = Arc::clone(plane);
    let task =
        tokio::spawn(async move { plane.serve_lines(server_read, server_write).await.unwrap() });
    let client = LineClient {
        writer: client_write,
        reader: BufReader::new(client_read),
        next_id: 0,
    };
    (client, task)
}

#[tokio::test]
async fn agent_updates_reads_counters_and_recovers_over_a_line_stream() {
    let (plane, _fs) = control_plane();
    let (mut agent, served) = serve_over_duplex(&plane);
    let rules = Arc::clone(plane.context().rules());

    // chaos-daemon's Go client sends the actions as the single positional parameter.
    let actions = json!([{
        "type": "fault", "path": "/data/**", "methods": ["read"], "percent": 100,
        "faults": [{"errno": 5, "weight": 1}], "source": "default/io-fault"
    }]);
    let updated = agent.call("update", json!([actions])).await;
    assert_eq!(updated["result"]["generation"], 1, "{updated}");
    assert_eq!(updated["result"]["ruleCount"], 1);

    // The filesystem evaluates three reads and one open.
    for _ in 0..3 {
        assert_eq!(
            rules.evaluate(Method::Read, Path::new("a.txt")).errno,
            Some(5)
        );
    }
    assert_eq!(rules.evaluate(Method::Open, Path::new("a.txt")).errno, None);

    // The agent sends empty objects as params where a method takes none.
    let status = agent.call("get_status", json!({})).await["result"].clone();
    assert_eq!(status["ready"], true);
    assert_eq!(status["mountPoint"], "/data");
    assert_eq!(status["generation"], 1);
    assert_eq!(status["ruleCount"], 1);
    assert_eq!(status["rules"][0]["matched"], 3);
    assert_eq!(status["rules"][0]["injected"], 3);
    assert_eq!(status["rules"][0]["source"], "default/io-fault");

    // A 1-hour latency sleeping in a FUSE worker thread ends when recovery starts.
    agent
        .call("update", json!([[{"type": "latency", "latency": "1h"}]]))
        .await;
    let injection = rules.evaluate(Method::Read, Path::new("a.txt"));
    let sleeper = {
        let rules = Arc::clone(&rules);
        std::thread::spawn(move || rules.sleep(injection.delay.unwrap(), injection.generation))
    };

    let recovered = agent.call("recover", json!({})).await;
    assert_eq!(recovered["result"]["recovering"], true, "{recovered}");
    assert_eq!(sleeper.join().unwrap(), SleepOutcome::CutShort);
    assert!(rules.is_empty());
    tokio::time::timeout(
        Duration::from_secs(10),
        plane.context().recovery().requested(),
    )
    .await
    .expect("the binary is told to recover");
    assert_eq!(served.await.unwrap(), LinesEnded::Recovered);
}

#[tokio::test]
async fn update_accepts_the_three_param_shapes() {
    let (plane, _fs) = control_plane();
    let (mut agent, _served) = serve_over_duplex(&plane);
    let action = json!({"type": "latency", "latency": "10ms"});

    let positional = agent.call("update", json!([[action, action]])).await;
    assert_eq!(positional["result"]["ruleCount"], 2, "{positional}");
    let bare = agent.call("update", json!([action])).await;
    assert_eq!(bare["result"]["ruleCount"], 1, "{bare}");
    let named = agent
        .call("update", json!({"actions": [action, action, action]}))
        .await;
    assert_eq!(named["result"]["ruleCount"], 3, "{named}");
    let cleared = agent.call("update", json!([])).await;
    assert_eq!(cleared["result"]["ruleCount"], 0, "{cleared}");
    assert_eq!(cleared["result"]["generation"], 4);

    let nonsense = agent.call("update", json!({"rules": []})).await;
    assert_eq!(nonsense["error"]["code"], -32602, "{nonsense}");
}

#[tokio::test]
async fn refused_update_names_the_field_and_keeps_the_rules() {
    let (plane, _fs) = control_plane();
    let (mut agent, _served) = serve_over_duplex(&plane);
    agent
        .call(
            "update",
            json!([[{"type": "fault", "faults": [{"errno": 5}]}]]),
        )
        .await;

    let refused = agent
        .call(
            "update",
            json!([[{"type": "latency", "latency": "1ms"}, {"type": "fault", "percent": 150, "faults": [{"errno": 5}]}]]),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert_eq!(
        refused["error"]["message"],
        "actions[1].percent: 150 is out of range 0..=100"
    );
    assert_eq!(
        refused["error"]["data"],
        json!({"index": 1, "field": "percent"})
    );

    let not_a_number = agent
        .call(
            "update",
            json!([[{"type": "fault", "faults": [{"errno": "five"}]}]]),
        )
        .await;
    assert_eq!(
        not_a_number["error"]["message"],
        "actions[0].faults[0].errno: invalid type: string \"five\", expected i64"
    );

    let status = agent.call("get_status", json!([])).await;
    assert_eq!(status["result"]["generation"], 1);
    assert_eq!(status["result"]["rules"][0]["type"], "fault");
}

#[tokio::test]
async fn lines_that_are_not_requests_get_json_rpc_errors() {
    let (plane, _fs) = control_plane();
    let (mut agent, _served) = serve_over_duplex(&plane);

    agent
        .send_raw("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ")
        .await;
    let parse_error = agent.read_response().await;
    assert_eq!(parse_error["error"]["code"], -32700, "{parse_error}");
    assert_eq!(parse_error["id"], Value::Null);

    agent
        .send_raw("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get_status\"}]")
        .await;
    assert_eq!(agent.read_response().await["error"]["code"], -32600);

    agent.send_raw("{\"hello\": \"world\"}").await;
    assert_eq!(agent.read_response().await["error"]["code"], -32600);

    let unknown = agent.call("explode", json!([])).await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    // Blank lines are skipped; a notification runs without an answer.
    agent.send_raw("").await;
    agent
        .send_raw(r#"{"jsonrpc":"2.0","method":"update","params":[[{"type":"latency","latency":"1ms"}]]}"#)
        .await;
    let status = agent.call("get_status", json!([])).await;
    assert_eq!(status["result"]["ruleCount"], 1, "{status}");
}

#[tokio::test]
async fn input_end_ends_the_line_transport() {
    let (plane, _fs) = control_plane();
    let (agent, served) = serve_over_duplex(&plane);
    drop(agent);
    assert_eq!(served.await.unwrap(), LinesEnded::EndOfInput);
    assert!(!plane.context().recovery().is_requested());
}

#[tokio::test]
async fn no_rules_after_recovery() {
    let (plane, fs) = control_plane();
    let context = plane.context();
    let report = context.recover();
    assert!(report.recovering);
    let refused = context.update(&json!([{"type": "latency", "latency": "1ms"}]));
    assert!(
        matches!(refused, Err(UpdateError::Recovering)),
        "{refused:?}"
    );
    assert!(context.rules().is_empty());

    let status = context.status();
    assert!(status.recovering);
    assert!(!status.ready);
    fs.mounted.store(false, Ordering::SeqCst);
    assert!(!context.status().mounted);
    // Recovering twice is harmless.
    assert!(context.recover().recovering);
}

#[tokio::test]
async fn files_open_in_passthrough_that_new_rules_cannot_reach_are_reported() {
    let (plane, fs) = control_plane();
    *fs.file_io.lock() = crate::fs::FileIo::Passthrough;
    *fs.passthrough.lock() = vec!["db/wal.log".into(), "cache/x".into()];
    let context = plane.context();
    let report = context
        .update(&json!([
            {"type": "fault", "path": "/data/db/**", "methods": ["write"], "faults": [{"errno": 28}]},
            {"type": "attrOverride", "path": "/data/cache/*", "perm": 0},
        ]))
        .unwrap();
    // An attribute override never needs the daemon for data, so cache/x is reachable.
    assert_eq!(
        report.unreachable_open_files,
        [Path::new("/data/db/wal.log")]
    );
    // Said loudly, with the file, the reason and the way out.
    assert_eq!(report.warnings.len(), 1, "{report:?}");
    let warning = &report.warnings[0];
    for part in [
        "NOT FAULTED: 1 open file(s)",
        "/data/db/wal.log",
        "file-io mode passthrough",
        "--file-io reachable",
    ] {
        assert!(warning.contains(part), "{part:?} missing in {warning}");
    }
    assert_eq!(context.status().warnings, report.warnings);
    assert_eq!(context.status().file_io, "passthrough");
    let status = context.status();
    assert_eq!(
        status.open_passthrough_files,
        [Path::new("/data/db/wal.log"), Path::new("/data/cache/x")]
    );
    assert_eq!(
        status.unreachable_open_files,
        [Path::new("/data/db/wal.log")]
    );
}

/// A minimal HTTP/1.1 client: one POST, `Connection: close`, the JSON body back.
async fn http_post(addr: std::net::SocketAddr, body: &Value) -> Value {
    http_post_as(addr, body, Some("application/json")).await
}

/// The same with another `Content-Type` header, or none.
async fn http_post_as(
    addr: std::net::SocketAddr,
    body: &Value,
    content_type: Option<&str>,
) -> Value {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let content_type = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("an HTTP response within 10 s")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_headers, body) = response.split_once("\r\n\r\n").unwrap();
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn sidecar_mode_serves_the_same_methods_over_http() {
    let (plane, _fs) = control_plane();
    let http = plane
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = http.local_addr();

    let updated = http_post(
        addr,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "update",
                "params": [[{"type": "latency", "path": "/data/**", "latency": "50ms", "percent": 50}]]}),
    )
    .await;
    assert_eq!(updated["result"]["generation"], 1, "{updated}");

    let status = http_post(
        addr,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "get_status"}),
    )
    .await;
    assert_eq!(status["result"]["rules"][0]["type"], "latency", "{status}");
    assert_eq!(status["result"]["rules"][0]["percent"], 50);

    let recovered = http_post(
        addr,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "recover"}),
    )
    .await;
    assert_eq!(recovered["result"]["recovering"], true, "{recovered}");
    assert!(plane.context().recovery().is_requested());
    http.stop().await;
}

/// `curl -d BODY URL` (the documented call) sends `application/x-www-form-urlencoded`; other
/// clients send `text/plain` or nothing. The endpoint speaks only JSON-RPC, so each is read
/// as JSON, and a body that is not JSON gets JSON-RPC's parse error, not an HTTP refusal.
#[tokio::test]
async fn a_json_body_is_taken_whatever_its_content_type_says() {
    let (plane, _fs) = control_plane();
    let http = plane
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = http.local_addr();
    for (id, content_type) in [
        Some("application/x-www-form-urlencoded"),
        None,
        Some("text/plain"),
        Some("application/json; charset=utf-8"),
    ]
    .into_iter()
    .enumerate()
    {
        let status = http_post_as(
            addr,
            &json!({"jsonrpc": "2.0", "id": id, "method": "get_status"}),
            content_type,
        )
        .await;
        assert_eq!(
            status["result"]["ready"], true,
            "{content_type:?}: {status}"
        );
    }
    let not_json = {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\nConnection: close\r\n\r\na=b&c")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    assert!(not_json.contains("-32700"), "{not_json}");
    http.stop().await;
}

#[tokio::test]
async fn binding_a_taken_port_names_the_address() {
    let (plane, _fs) = control_plane();
    let first = plane
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let error = plane.serve_http(first.local_addr()).await.unwrap_err();
    assert!(
        error.to_string().contains(&first.local_addr().to_string()),
        "{error}"
    );
}
