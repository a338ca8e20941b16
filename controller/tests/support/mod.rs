//! A mocked Kubernetes API server (tower-test) that plays a scripted list of requests and
//! answers, asserting each request's method, path and query in order, and that no request
//! comes after the last; a recording double of the agents; a fixed clock.

#![allow(dead_code)]

pub mod store;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use controller::agent::{AgentCall, AgentError, AgentReply, Agents};
use controller::metrics::Metrics;
use controller::reconcile::{Clock, Context, Settings};
use futures::future::BoxFuture;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use parking_lot::Mutex;
use rand::SeedableRng;
use serde_json::Value;
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

pub type Check = Box<dyn Fn(&Value) + Send>;

/// One expected request and the answer to it.
pub struct Expect {
    pub method: Method,
    /// Path and query, exactly.
    pub uri: String,
    pub status: u16,
    pub answer: Value,
    pub check: Option<Check>,
    /// Match `uri` as a prefix (names the server or the recorder makes up).
    pub prefix: bool,
}

pub fn expect(method: Method, uri: impl Into<String>, answer: Value) -> Expect {
    Expect {
        method,
        uri: uri.into(),
        status: 200,
        answer,
        check: None,
        prefix: false,
    }
}

impl Expect {
    /// Asserts something of the request body (JSON).
    pub fn body(mut self, check: impl Fn(&Value) + Send + 'static) -> Expect {
        self.check = Some(Box::new(check));
        self
    }

    pub fn prefix(mut self) -> Expect {
        self.prefix = true;
        self
    }

    pub fn status(mut self, status: u16) -> Expect {
        self.status = status;
        self
    }
}

pub fn not_found(method: Method, uri: impl Into<String>) -> Expect {
    expect(
        method,
        uri,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "not found", "reason": "NotFound", "code": 404}),
    )
    .status(404)
}

type MockHandle = Handle<Request<Body>, Response<Body>>;

pub struct ApiServer {
    handle: Arc<tokio::sync::Mutex<MockHandle>>,
}

/// A running script.
pub struct Playing {
    task: JoinHandle<Seen>,
    handle: Arc<tokio::sync::Mutex<MockHandle>>,
}

/// What the server saw: every request as "METHOD uri" with its JSON body.
pub type Seen = Vec<(String, Value)>;

impl ApiServer {
    /// Plays the script; the task ends with the requests it saw.
    pub fn play(&self, script: Vec<Expect>) -> Playing {
        let shared = self.handle.clone();
        let task = tokio::spawn(async move {
            let mut handle = shared.lock().await;
            let mut seen = Vec::new();
            for (i, step) in script.into_iter().enumerate() {
                let next =
                    tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
                let Ok(Some((request, respond))) = next else {
                    panic!(
                        "request {i} never came: expected {} {}\nseen so far:\n{}",
                        step.method,
                        step.uri,
                        describe(&seen)
                    );
                };
                let method = request.method().clone();
                let uri = request.uri().to_string();
                let bytes = request
                    .into_body()
                    .collect()
                    .await
                    .expect("request body")
                    .to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                seen.push((format!("{method} {uri}"), body.clone()));
                let uri_matches = if step.prefix {
                    uri.starts_with(&step.uri)
                } else {
                    uri == step.uri
                };
                assert!(
                    method == step.method && uri_matches,
                    "request {i}: expected {} {}, got {method} {uri}\nbody: {body}\nseen:\n{}",
                    step.method,
                    step.uri,
                    describe(&seen)
                );
                if let Some(check) = &step.check {
                    check(&body);
                }
                let answer = if step.answer.is_null() {
                    body.clone()
                } else {
                    step.answer.clone()
                };
                respond.send_response(
                    Response::builder()
                        .status(step.status)
                        .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                        .expect("response"),
                );
            }
            seen
        });
        Playing {
            task,
            handle: self.handle.clone(),
        }
    }
}

fn describe(seen: &Seen) -> String {
    seen.iter()
        .map(|(r, _)| format!("  {r}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for the script to finish and asserts nothing else was asked.
pub async fn finished(playing: Playing) -> Seen {
    let seen = tokio::time::timeout(Duration::from_secs(10), playing.task)
        .await
        .expect("the scenario finished in time")
        .expect("the scenario's assertions hold");
    let mut handle = playing.handle.lock().await;
    if let Ok(Some((extra, _))) =
        tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await
    {
        panic!(
            "unexpected request after the scenario: {} {}\nseen:\n{}",
            extra.method(),
            extra.uri(),
            describe(&seen)
        );
    }
    seen
}

/// The agents, recorded; answers given in order (default: an empty success).
#[derive(Default)]
pub struct FakeAgents {
    pub calls: Mutex<Vec<(String, AgentCall)>>,
    pub answers: Mutex<VecDeque<Result<AgentReply, AgentError>>>,
}

impl FakeAgents {
    pub fn answer(&self, answer: Result<AgentReply, AgentError>) {
        self.answers.lock().push_back(answer);
    }

    pub fn take_calls(&self) -> Vec<(String, AgentCall)> {
        std::mem::take(&mut *self.calls.lock())
    }
}

impl Agents for FakeAgents {
    fn call<'a>(
        &'a self,
        node: &'a str,
        call: AgentCall,
    ) -> BoxFuture<'a, Result<AgentReply, AgentError>> {
        self.calls.lock().push((node.to_owned(), call));
        let answer = self
            .answers
            .lock()
            .pop_front()
            .unwrap_or(Ok(AgentReply::default()));
        Box::pin(async move { answer })
    }
}

pub struct FixedClock(pub Mutex<Timestamp>);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        *self.0.lock()
    }
}

impl FixedClock {
    pub fn set(&self, rfc3339: &str) {
        *self.0.lock() = rfc3339.parse().expect("a time");
    }
}

pub struct TestBed {
    pub ctx: Arc<Context>,
    pub server: ApiServer,
    pub agents: Arc<FakeAgents>,
    pub clock: Arc<FixedClock>,
}

pub const T0: &str = "2026-11-24T12:00:00Z";

pub fn testbed() -> TestBed {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let agents = Arc::new(FakeAgents::default());
    let clock = Arc::new(FixedClock(Mutex::new(T0.parse().expect("time"))));
    let mut ctx = Context::new(
        client,
        kube::runtime::events::Reporter {
            controller: "faultline-controller".into(),
            instance: Some("test".into()),
        },
        Arc::new(Metrics::new()),
        agents.clone(),
        Settings::default(),
    );
    ctx.clock = clock.clone();
    ctx.rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(1));
    TestBed {
        ctx: Arc::new(ctx),
        server: ApiServer {
            handle: Arc::new(tokio::sync::Mutex::new(handle)),
        },
        agents,
        clock,
    }
}

/// Runs a reconcile with a time limit: a request the script does not answer would block it.
pub async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("the reconcile finished (did it make a request the script lacks?)")
}

/// A context served by a stateful mocked API ([`store::Store`]).
pub struct StoreBed {
    pub ctx: Arc<Context>,
    pub store: Arc<store::Store>,
    pub agents: Arc<FakeAgents>,
    pub clock: Arc<FixedClock>,
}

pub fn store_testbed() -> StoreBed {
    let clock = Arc::new(FixedClock(Mutex::new(T0.parse().expect("time"))));
    let stamp = clock.clone();
    let store = Arc::new(store::Store::new(Box::new(move || stamp.now().to_string())));
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let serving = store.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            send.send_response(serving.serve(request).await);
        }
    });
    let client = kube::Client::new(service, "default");
    let agents = Arc::new(FakeAgents::default());
    let mut ctx = Context::new(
        client,
        kube::runtime::events::Reporter {
            controller: "faultline-controller".into(),
            instance: Some("test".into()),
        },
        Arc::new(Metrics::new()),
        agents.clone(),
        Settings::default(),
    );
    ctx.clock = clock.clone();
    ctx.rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(1));
    StoreBed {
        ctx: Arc::new(ctx),
        store,
        agents,
        clock,
    }
}
