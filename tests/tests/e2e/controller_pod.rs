//! The controller as its Deployment runs it, driving the agent as its DaemonSet runs it: both
//! pods from `kubectl kustomize deploy/overlays/containerd` (testbed::manifest_pod), from the
//! images `scripts/build-images.sh` builds. The controller pod (both containers: the
//! controller and the sidecar webhook, non-root, read-only root filesystem, no capabilities)
//! reaches a fake Kubernetes API server over HTTPS with the service account token kubelet
//! would mount; the fake serves lists and watches, a Lease for the leader election, the target
//! pod, and an EndpointSlice naming the agent pod's IP. An IOChaos applied there is injected by
//! the controller through the agent over mTLS, checking the agent's certificate for
//! `faultline-agent.faultline.svc`; deleted, it is recovered and its finalizer removed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, ensure};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use serde_json::{Value, json};
use testbed::manifest_pod::{self, Node, ServiceAccount};
use testbed::{PodSpec, Testbed, Volume};

use crate::Story;
use crate::agent_support::{Pem, Pki, eventually, fault_mounts};
use crate::daemonset::{AgentPod, object, rendered, wait_ready};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![(
        "daemonset::the_controller_pod_drives_the_agent_pod_over_mtls_from_apply_to_deletion",
        apply_to_deletion,
    )]
}

const NODE: &str = "node-e2e";
const CHAOS: &str = "io-in-pods";

/// What the fake API server holds.
struct Objects {
    chaos: Option<Value>,
    pod: Value,
    slices: Value,
    lease: Option<Value>,
    requests: Vec<String>,
    /// Open watches: the resource (plural) and where its events go.
    watches: Vec<(String, tokio::sync::mpsc::UnboundedSender<Value>)>,
    /// Every event sent, with the resource it was for: a watch opened with the
    /// `resourceVersion` of an earlier list gets those after it first, as from an API server
    /// (the controller lists, and the IOChaos may be added before its watch arrives).
    history: Vec<(String, Value)>,
}

struct FakeApi {
    objects: Mutex<Objects>,
    version: AtomicU64,
}

impl FakeApi {
    fn lock(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_version(&self) -> String {
        (self.version.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }

    /// Sends an event to the watches of `plural`.
    fn notify(objects: &mut Objects, plural: &str, kind: &str, object: &Value) {
        let event = json!({"type": kind, "object": object});
        objects
            .watches
            .retain(|(p, tx)| p != plural || tx.send(event.clone()).is_ok());
        objects.history.push((plural.to_owned(), event));
    }

    /// The events for `plural` after `resource_version`, oldest first.
    fn events_since(objects: &Objects, plural: &str, resource_version: u64) -> Vec<Value> {
        objects
            .history
            .iter()
            .filter(|(p, event)| {
                p == plural
                    && event["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|v| v > resource_version)
            })
            .map(|(_, event)| event.clone())
            .collect()
    }

    /// Changes the IOChaos and tells the watches: MODIFIED, or DELETED once a deleted object
    /// has no finalizer left.
    fn store_chaos(&self, objects: &mut Objects, mut chaos: Value) {
        chaos["metadata"]["resourceVersion"] = json!(self.next_version());
        let gone = !chaos["metadata"]["deletionTimestamp"].is_null()
            && chaos["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if gone {
            objects.chaos = None;
            FakeApi::notify(objects, "iochaos", "DELETED", &chaos);
        } else {
            objects.chaos = Some(chaos.clone());
            FakeApi::notify(objects, "iochaos", "MODIFIED", &chaos);
        }
    }
}

fn status(code: u16, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
               "reason": if code == 404 { "NotFound" } else { "Invalid" }, "message": message}),
    )
}

/// RFC 6902 on `doc`, for the finalizer helper's patches (add, remove, replace, test).
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("not a JSON patch")? {
        let path = op["path"].as_str().ok_or("no path")?;
        let (parent_path, last) = path.rsplit_once('/').ok_or("bad path")?;
        let parent = doc
            .pointer_mut(parent_path)
            .ok_or_else(|| format!("no {parent_path}"))?;
        match op["op"].as_str() {
            Some("test") => {
                // As the API server's implementation does, a missing member tests as null.
                if doc.pointer(path).unwrap_or(&Value::Null) != &op["value"] {
                    return Err(format!("test of {path} failed"));
                }
            }
            Some("add") | Some("replace") => match parent {
                Value::Array(items) if last == "-" => items.push(op["value"].clone()),
                Value::Array(items) => {
                    let i: usize = last.parse().map_err(|_| "bad index")?;
                    if op["op"] == "add" {
                        items.insert(i.min(items.len()), op["value"].clone());
                    } else if let Some(slot) = items.get_mut(i) {
                        *slot = op["value"].clone();
                    }
                }
                Value::Object(map) => {
                    map.insert(last.to_owned(), op["value"].clone());
                }
                _ => return Err(format!("{parent_path} is no container")),
            },
            Some("remove") => match parent {
                Value::Array(items) => {
                    let i: usize = last.parse().map_err(|_| "bad index")?;
                    if i < items.len() {
                        items.remove(i);
                    }
                }
                Value::Object(map) => {
                    map.remove(last);
                }
                _ => return Err(format!("{parent_path} is no container")),
            },
            other => return Err(format!("op {other:?}")),
        }
    }
    Ok(())
}

/// RFC 7386.
fn merge_patch(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(doc), Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    doc.remove(k);
                } else {
                    merge_patch(doc.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (doc, patch) => *doc = patch.clone(),
    }
}

fn list(kind: &str, version: String, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": version}, "items": items})
}

async fn handle(
    State(api): State<Arc<FakeApi>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let watch = query
        .split('&')
        .any(|q| q == "watch=true" || q == "watch=1");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut objects = api.lock();
    objects.requests.push(format!(
        "{method} {path}{}",
        if watch { "?watch" } else { "" }
    ));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The resource (plural) a collection request is for, and the object name if any.
    let (plural, name, subresource) = match segments.as_slice() {
        ["api", "v1", "namespaces", _, plural, rest @ ..]
        | ["apis", _, _, "namespaces", _, plural, rest @ ..] => {
            (*plural, rest.first().copied(), rest.get(1).copied())
        }
        ["api", "v1", plural] | ["apis", _, _, plural] => (*plural, None, None),
        ["api", "v1", "namespaces", _] => ("namespaces", None, None),
        _ => ("", None, None),
    };
    if watch {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let since = query
            .split('&')
            .find_map(|q| q.strip_prefix("resourceVersion="))
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(since) = since {
            for event in FakeApi::events_since(&objects, plural, since) {
                let _ = tx.send(event);
            }
        }
        objects.watches.push((plural.to_owned(), tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let event = rx.recv().await?;
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let version = api.version.load(Ordering::Relaxed).to_string();
    let (code, reply) = match (method.as_str(), plural, name, subresource) {
        ("GET", "leases", Some(_), _) => match &objects.lease {
            Some(lease) => (200, lease.clone()),
            None => status(404, "no lease".into()),
        },
        ("POST", "leases", None, _) | ("PUT", "leases", Some(_), _) => {
            let mut lease = body.clone();
            lease["metadata"]["resourceVersion"] = json!(api.next_version());
            objects.lease = Some(lease.clone());
            (if method == Method::POST { 201 } else { 200 }, lease)
        }
        ("GET", "iochaos", None, _) => (
            200,
            list("IOChaos", version, objects.chaos.iter().cloned().collect()),
        ),
        ("GET", "iochaos", Some(_), _) => match &objects.chaos {
            Some(chaos) => (200, chaos.clone()),
            None => status(404, "no such IOChaos".into()),
        },
        ("PATCH", "iochaos", Some(_), sub) => match objects.chaos.clone() {
            None => status(404, "no such IOChaos".into()),
            Some(mut chaos) => {
                let patched = if content_type.contains("json-patch") {
                    json_patch(&mut chaos, &body)
                } else {
                    merge_patch(&mut chaos, &body);
                    Ok(())
                };
                match patched {
                    Err(e) => status(422, format!("patch {sub:?}: {e}")),
                    Ok(()) => {
                        api.store_chaos(&mut objects, chaos);
                        (200, objects.chaos.clone().unwrap_or_else(|| body.clone()))
                    }
                }
            }
        },
        ("GET", "pods", None, _) => (200, list("Pod", version, vec![objects.pod.clone()])),
        ("GET", "pods", Some(n), _) if objects.pod["metadata"]["name"] == n => {
            (200, objects.pod.clone())
        }
        ("PATCH", "pods", Some(n), _) if objects.pod["metadata"]["name"] == n => {
            let mut pod = objects.pod.clone();
            merge_patch(&mut pod, &body);
            objects.pod = pod.clone();
            (200, pod)
        }
        ("GET", "endpointslices", None, _) => (200, objects.slices.clone()),
        ("POST", "events", None, _) => (201, body.clone()),
        // Everything else the controller and the webhook list: nothing of it here.
        ("GET", p, None, _) if !p.is_empty() => (200, list("", version, Vec::new())),
        _ => status(404, format!("the fake API has no {method} {path}")),
    };
    drop(objects);
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A CA and its leaves for the story: the agent (as the controller dials it), the controller,
/// the API server (by IP), the webhook.
struct Certs {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Certs {
    fn new() -> anyhow::Result<Certs> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "faultline e2e cluster CA");
        Ok(Certs {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    fn leaf(&self, sans: Vec<SanType>) -> anyhow::Result<Pem> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = sans;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn dns(name: &str) -> anyhow::Result<SanType> {
    Ok(SanType::DnsName(name.try_into()?))
}

fn world_readable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(dir)? {
        std::fs::set_permissions(entry?.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

const WORKLOAD: &str = "i=0; while true; do i=$((i+1)); \
    if echo \"line $i\" 2>/out/err >> /data/journal; then w=ok; else w=\"FAIL $(cat /out/err)\"; fi; \
    echo \"$i write:$w\" >> /out/log; sleep 0.02; done";

fn apply_to_deletion(tb: &Testbed) -> anyhow::Result<()> {
    let base = tb.base_dir().join("ds-controller");
    std::fs::create_dir_all(&base)?;
    let certs = Certs::new()?;
    let ca_pem = certs.ca.pem();

    // The agent, with the certificate the controller expects of it.
    let pki_dir = base.join("agent-pki");
    std::fs::create_dir_all(&pki_dir)?;
    let agent_pem = certs.leaf(vec![
        dns("faultline-agent.faultline.svc")?,
        dns("faultline-agent")?,
    ])?;
    let controller_pem = certs.leaf(vec![dns("faultline-controller.faultline.svc")?])?;
    std::fs::write(pki_dir.join("ca.pem"), &ca_pem)?;
    let pki = Pki {
        dir: pki_dir,
        ca_pem: ca_pem.clone(),
        agent: certs.leaf(vec![
            dns("faultline-agent.faultline.svc")?,
            dns("faultline-agent")?,
        ])?,
        controller: certs.leaf(vec![dns("faultline-controller.faultline.svc")?])?,
        stranger: certs.leaf(vec![dns("someone-else.default.svc")?])?,
        rogue: certs.leaf(vec![dns("rogue.default.svc")?])?,
    };
    let pki = Pki {
        agent: agent_pem,
        ..pki
    };
    let agent = AgentPod::start_with(tb, "ds-controller-agent", pki)?;
    let agent_ip = agent.pod.ip.clone().context("the agent pod has no IP")?;

    // The target.
    let data = tb.host_dir("ctl-pod-data")?;
    let out = tb.host_dir("ctl-pod-out")?;
    let pod = tb.run_pod(
        PodSpec::new("ctl-target")
            .label("app", "ctl-target")
            .shell(WORKLOAD)
            .volume(Volume::host_dir(&data, "/data"))
            .volume(Volume::host_dir(&out, "/out")),
    )?;
    let log = || -> Vec<String> {
        std::fs::read_to_string(out.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    ensure!(
        eventually(Duration::from_secs(10), || log()
            .iter()
            .any(|l| l.ends_with("write:ok"))),
        "the workload never ran"
    );

    // The fake API server, on the testbed bridge's gateway address.
    let gateway = Ipv4Addr::from(u32::from(tb.subnet().network()) + 1);
    let api_pem = certs.leaf(vec![SanType::IpAddress(gateway.into())])?;
    let api_dir = base.join("api");
    std::fs::create_dir_all(&api_dir)?;
    std::fs::write(api_dir.join("tls.crt"), &api_pem.cert)?;
    std::fs::write(api_dir.join("tls.key"), &api_pem.key)?;
    let namespace = pod.namespace.clone();
    let api = Arc::new(FakeApi {
        objects: Mutex::new(Objects {
            chaos: None,
            pod: json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": namespace, "uid": pod.uid,
                             "labels": {"app": "ctl-target"}, "resourceVersion": "1"},
                "spec": {"nodeName": NODE, "containers": [{"name": pod.container_name}]},
                "status": {"phase": "Running", "podIP": pod.ip,
                           "containerStatuses": [{"name": pod.container_name, "containerID": pod.container_uri(),
                                                  "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}]}
            }),
            slices: json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {"resourceVersion": "1"}, "items": [{
                "metadata": {"name": "faultline-agent-x", "namespace": "faultline",
                             "labels": {"kubernetes.io/service-name": "faultline-agent"}},
                "addressType": "IPv4",
                "ports": [{"name": "grpc", "port": agent.grpc_port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [agent_ip], "nodeName": NODE, "conditions": {"ready": true}}]
            }]}),
            lease: None,
            requests: Vec::new(),
            watches: Vec::new(),
            history: Vec::new(),
        }),
        version: AtomicU64::new(10),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tls = controller::webhook::server::server_config(
        &api_dir.join("tls.crt"),
        &api_dir.join("tls.key"),
    )?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
        gateway, 0,
    ))))?;
    let api_port = listener.local_addr()?.port();
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&api));
    rt.spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let service = TowerToHyperService::new(router);
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, service) = (acceptor.clone(), service.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });

    // The controller pod, as its Deployment says, with what kubelet mounts for its service
    // account.
    let objects = rendered()?;
    let deployment = object(&objects, "Deployment", "faultline-controller")?;
    let secrets = base.join("secrets");
    let webhook_pem = certs.leaf(vec![dns("faultline-webhook.faultline.svc")?])?;
    let controller_tls = manifest_pod::write_secret(
        &secrets,
        "faultline-controller-tls",
        &[
            ("ca.crt", &ca_pem),
            ("tls.crt", &controller_pem.cert),
            ("tls.key", &controller_pem.key),
        ],
    )?;
    let webhook_tls = manifest_pod::write_secret(
        &secrets,
        "faultline-webhook-tls",
        &[
            ("tls.crt", &webhook_pem.cert),
            ("tls.key", &webhook_pem.key),
        ],
    )?;
    let account = manifest_pod::write_secret(
        &base,
        "service-account",
        &[
            ("token", "e2e-token"),
            ("ca.crt", &ca_pem),
            ("namespace", "faultline"),
        ],
    )?;
    world_readable(&account)?;
    let node = Node {
        name: NODE.into(),
        host_paths: BTreeMap::new(),
        secrets: [
            ("faultline-controller-tls".to_owned(), controller_tls),
            ("faultline-webhook-tls".to_owned(), webhook_tls),
        ]
        .into_iter()
        .collect(),
        service_account: Some(ServiceAccount {
            dir: account,
            api_host: gateway.to_string(),
            api_port,
        }),
        scratch: base.join("controller-pod"),
    };
    let template = manifest_pod::from_workload(deployment, &node)?;
    let controller_pod = tb.run_pod(template.spec.clone())?;
    let controller_log = || {
        std::fs::read_to_string(controller_pod.log_dir.join("controller_0.log")).unwrap_or_default()
    };
    wait_ready(
        controller_pod
            .ip
            .as_deref()
            .context("the controller pod has no IP")?,
        &template.probes,
        controller_log,
    )?;
    ensure!(
        eventually(Duration::from_secs(30), || api.lock().lease.is_some()),
        "the controller never took the Lease: {}",
        controller_log()
    );

    // Applied: the controller adds its finalizer, selects the pod, injects through the agent.
    let mark = log().len();
    {
        let mut objects = api.lock();
        let chaos = json!({
            "apiVersion": "chaos.faultline.dev/v1alpha1", "kind": "IOChaos",
            "metadata": {"name": CHAOS, "namespace": namespace, "uid": "chaos-uid", "generation": 1,
                         "resourceVersion": api.next_version(), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"action": "fault", "mode": "all", "errno": 5, "percent": 100, "path": "/data/**",
                     "methods": ["write", "open", "create"],
                     "selector": {"labelSelectors": {"app": "ctl-target"}},
                     "containerNames": [pod.container_name], "volumePath": "/data"}
        });
        objects.chaos = Some(chaos.clone());
        FakeApi::notify(&mut objects, "iochaos", "ADDED", &chaos);
    }
    let failed = eventually(Duration::from_secs(60), || {
        log()
            .iter()
            .skip(mark)
            .any(|l| l.contains("write:FAIL") && l.contains("Input/output error"))
    });
    ensure!(
        failed,
        "the workload never saw EIO; the controller: {}\nrequests: {:#?}",
        controller_log(),
        api.lock().requests
    );
    let injected = eventually(Duration::from_secs(30), || {
        api.lock().chaos.as_ref().is_some_and(|c| {
            c["status"]["experiment"]["containerRecords"][0]["phase"] == "Injected"
        })
    });
    ensure!(
        injected,
        "the status: {:?}",
        api.lock().chaos.as_ref().map(|c| c["status"].clone())
    );
    ensure!(
        fault_mounts(pod.pid).len() == 1,
        "{:?}",
        fault_mounts(pod.pid)
    );
    ensure!(
        agent.journal_records().len() == 1,
        "{:?}",
        agent.journal_records()
    );

    // Deleted: recovered through the agent, then the finalizer goes and so does the object.
    {
        let mut objects = api.lock();
        let mut chaos = objects.chaos.clone().context("the IOChaos is gone")?;
        chaos["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        api.store_chaos(&mut objects, chaos);
    }
    ensure!(
        eventually(Duration::from_secs(60), || api.lock().chaos.is_none()),
        "the IOChaos kept its finalizer: {:?}; the controller: {}",
        api.lock().chaos,
        controller_log()
    );
    let mark = log().len();
    let healthy = eventually(Duration::from_secs(15), || {
        let log = log();
        log.len() >= mark + 3 && log[log.len() - 3..].iter().all(|l| l.ends_with("write:ok"))
    });
    ensure!(healthy, "the workload did not recover");
    ensure!(
        fault_mounts(pod.pid).is_empty(),
        "{:?}",
        fault_mounts(pod.pid)
    );
    ensure!(
        agent.journal_records().is_empty(),
        "{:?}",
        agent.journal_records()
    );
    tb.remove_pod(&controller_pod)?;
    tb.remove_pod(&pod)?;
    tb.remove_pod(&agent.pod)?;
    rt.shutdown_background();
    Ok(())
}
