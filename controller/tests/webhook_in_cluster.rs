//! The webhook's in-cluster mode against a fake API server: it lists and watches the Namespaces,
//! the template ConfigMaps (the controller's namespace, template labels) and the config
//! ConfigMaps (every namespace, config labels); it is ready once all three are read; a template
//! changed or a config deleted through the watch applies to the next request, no restart.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use controller::webhook::config::Settings;
use controller::webhook::sources::{self, Manifests};
use controller::webhook::template::GoTemplates;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::StreamBody;
use http_body_util::combinators::UnsyncBoxBody as BoxBody;
use hyper::body::Frame;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Events = mpsc::UnboundedSender<Value>;

/// The API server: lists from the manifests, watches that stay open and carry the events
/// sent on each resource's channel. Records every request's path and query.
struct FakeApi {
    manifests: Manifests,
    /// path → receiver of that watch's events (taken by the first watch of the path).
    watches: Mutex<HashMap<String, mpsc::UnboundedReceiver<Value>>>,
    requests: Mutex<Vec<String>>,
}

fn body(bytes: Vec<u8>) -> BoxBody<Bytes, Infallible> {
    BoxBody::new(http_body_util::Full::new(Bytes::from(bytes)))
}

impl FakeApi {
    fn list(&self, path: &str, query: &str) -> Value {
        let selector = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("labelSelector="))
            .map(|s| s.replace("%2F", "/").replace("%3D", "="));
        let items: Vec<Value> = if path == "/api/v1/namespaces" {
            self.manifests
                .namespaces
                .values()
                .map(|ns| with_kind(ns.as_ref(), "Namespace"))
                .collect()
        } else {
            let namespace = path
                .strip_prefix("/api/v1/namespaces/")
                .and_then(|rest| rest.strip_suffix("/configmaps"));
            self.manifests
                .config_maps
                .iter()
                .filter(|cm| namespace.is_none() || cm.metadata.namespace.as_deref() == namespace)
                .filter(|cm| match &selector {
                    Some(sel) => sel.split(',').all(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        cm.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(k))
                            .map(String::as_str)
                            == Some(v)
                    }),
                    None => true,
                })
                .map(|cm| with_kind(cm, "ConfigMap"))
                .collect()
        };
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
    }

    fn respond(self: &Arc<Self>, request: &Request<Body>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        self.requests.lock().push(format!("{path}?{query}"));
        if !query.split('&').any(|kv| kv == "watch=true") {
            return Response::new(body(serde_json::to_vec(&self.list(&path, &query)).unwrap()));
        }
        let events = self.watches.lock().remove(&path);
        let stream = futures::stream::unfold(events, |events| async move {
            match events {
                Some(mut rx) => {
                    let event = rx.recv().await?;
                    let mut line = serde_json::to_vec(&event).unwrap();
                    line.push(b'\n');
                    Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
                        Some(rx),
                    ))
                }
                // A watch with nothing to say stays open.
                None => futures::future::pending().await,
            }
        });
        Response::new(BoxBody::new(StreamBody::new(stream.boxed())))
    }
}

fn with_kind<T: serde::Serialize>(object: &T, kind: &str) -> Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["apiVersion"] = json!("v1");
    value["kind"] = json!(kind);
    value
}

fn fake_api() -> (Arc<FakeApi>, Events, Events, kube::Client) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook/manifests");
    let manifests = sources::read_manifests(&dir).expect("manifests");
    let (templates_tx, templates_rx) = mpsc::unbounded_channel();
    let (configs_tx, configs_rx) = mpsc::unbounded_channel();
    let api = Arc::new(FakeApi {
        manifests,
        watches: Mutex::new(HashMap::from([
            (
                "/api/v1/namespaces/faultline/configmaps".to_owned(),
                templates_rx,
            ),
            ("/api/v1/configmaps".to_owned(), configs_rx),
        ])),
        requests: Mutex::new(Vec::new()),
    });
    let service_api = api.clone();
    let service = tower::service_fn(move |request: Request<Body>| {
        let response = service_api.respond(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    (
        api,
        templates_tx,
        configs_tx,
        kube::Client::new(service, "default"),
    )
}

/// The decoded patch of the response to the tikv review, or its warnings.
fn inject(webhook: &controller::webhook::Webhook) -> Result<String, Value> {
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook/reviews/tikv-template.json"),
    )
    .unwrap();
    let out: Value = serde_json::from_slice(&webhook.review(&body).unwrap()).unwrap();
    match out["response"]["patch"].as_str() {
        Some(patch) => Ok(String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap(),
        )
        .unwrap()),
        None => Err(out["response"]["warnings"].clone()),
    }
}

/// Polls until `check` holds (a watch event is applied asynchronously); fails after 20 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn watched_configmaps_and_namespaces_decide_and_a_change_applies_without_restart() {
    let (api, templates, configs, client) = fake_api();
    let cluster = sources::in_cluster(client, Arc::new(GoTemplates), Settings::default());
    let watch = tokio::spawn(cluster.watch);
    tokio::time::timeout(Duration::from_secs(20), cluster.ready)
        .await
        .expect("ready once the three lists are read");
    let webhook = cluster.webhook;
    eventually("the listed template and config inject", || {
        inject(&webhook).is_ok_and(|p| p.contains("-addr=:65533"))
    })
    .await;

    // The lists and watches asked for what the settings say.
    let requests = api.requests.lock().clone();
    for (path, selector) in [
        ("/api/v1/namespaces?", ""),
        (
            "/api/v1/namespaces/faultline/configmaps?",
            "labelSelector=app.kubernetes.io%2Fcomponent%3Dtemplate",
        ),
        (
            "/api/v1/configmaps?",
            "labelSelector=app.kubernetes.io%2Fcomponent%3Dwebhook",
        ),
    ] {
        for kind in ["list", "watch"] {
            assert!(
                requests.iter().any(|r| r.starts_with(path)
                    && r.contains(selector)
                    && r.contains("watch=true") == (kind == "watch")),
                "no {kind} {path} {selector}: {requests:#?}"
            );
        }
    }

    // The template edited: the next pod gets the new sidecar.
    let mut template = with_kind(
        api.manifests
            .config_maps
            .iter()
            .find(|cm| cm.metadata.name.as_deref() == Some("chaosfs-sidecar"))
            .unwrap(),
        "ConfigMap",
    );
    let source = template["data"]["data"]
        .as_str()
        .unwrap()
        .replace("65533", "65500");
    template["data"]["data"] = json!(source);
    template["metadata"]["resourceVersion"] = json!("2");
    templates
        .send(json!({"type": "MODIFIED", "object": template}))
        .unwrap();
    eventually("the edited template injects", || {
        inject(&webhook).is_ok_and(|p| p.contains("-addr=:65500"))
    })
    .await;

    // The config deleted: the pod is let through, with the reason.
    let mut config = with_kind(
        api.manifests
            .config_maps
            .iter()
            .find(|cm| cm.metadata.name.as_deref() == Some("chaosfs-tikv"))
            .unwrap(),
        "ConfigMap",
    );
    config["metadata"]["resourceVersion"] = json!("3");
    configs
        .send(json!({"type": "DELETED", "object": config}))
        .unwrap();
    eventually("the deleted config is unknown", || {
        inject(&webhook).is_err_and(|w| {
            w[0].as_str().is_some_and(|w| {
                w.contains("config \"chaosfs-tikv\"") && w.contains("is not defined")
            })
        })
    })
    .await;
    watch.abort();
}
