//! A mocked Kubernetes API that keeps state: objects created, read, listed (by label), patched
//! (merge and JSON patch, `/status` too), deleted (held while they have finalizers, as the API
//! server does); events kept; pod logs answered from what the test sets. For scenarios where
//! the reconciler makes many requests whose order is not the point (Workflow), the test runs
//! passes and asserts the state, instead of scripting every request.
//!
//! Self-contained (std, http, kube, serde_json, json-patch): the end-to-end workflow story
//! includes this file too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// std's Mutex, poisoning ignored (a failing test fails anyway).
pub struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }
    pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The time (RFC 3339) stamped on creations and deletions.
pub type Now = Box<dyn Fn() -> String + Send + Sync>;

/// (collection path without namespace, e.g. "apis/chaos.faultline.dev/v1alpha1/iochaos", namespace, name)
type Key = (String, String, String);

pub struct Store {
    objects: Mutex<BTreeMap<Key, Value>>,
    pub events: Mutex<Vec<Value>>,
    pub logs: Mutex<BTreeMap<String, String>>,
    now: Now,
    version: AtomicU64,
}

/// The parts of a request path.
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *segs.first()? {
        "api" => (segs[..2].join("/"), &segs[2..]),
        "apis" => (segs[..3].join("/"), &segs[3..]),
        _ => return None,
    };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(Target {
        collection: format!("{prefix}/{}", rest.first()?),
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        sub: rest.get(2).map(|s| (*s).to_owned()),
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &http::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => !labels[term].is_null(),
        })
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": if code < 300 { "Success" } else { "Failure" },
        "reason": reason, "message": message, "code": code})
}

impl Store {
    pub fn new(now: Now) -> Store {
        Store {
            objects: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            logs: Mutex::new(BTreeMap::new()),
            now,
            version: AtomicU64::new(1),
        }
    }

    fn stamp(&self, obj: &mut Value) {
        let v = self.version.fetch_add(1, Ordering::SeqCst);
        obj["metadata"]["resourceVersion"] = json!(v.to_string());
    }

    /// Answers one request.
    pub async fn serve(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let Some(t) = parse_path(uri.path()) else {
            return respond(404, &status_body(404, "NotFound", uri.path()));
        };
        if t.collection.ends_with("/events") {
            self.events.lock().push(body.clone());
            return respond(201, &body);
        }
        let ns = t.namespace.clone().unwrap_or_default();
        let mut objects = self.objects.lock();
        match (method, t.name.clone(), t.sub.as_deref()) {
            (Method::GET, None, _) => {
                let selector = query(&uri, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|((c, n, _), o)| {
                        *c == t.collection
                            && (t.namespace.is_none() || *n == ns)
                            && labels_match(o, &selector)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                respond(
                    200,
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (Method::GET, Some(name), Some("log")) => {
                let text = self.logs.lock().get(&name).cloned().unwrap_or_default();
                Response::builder()
                    .status(200)
                    .body(Body::from(text.into_bytes()))
                    .expect("response")
            }
            (Method::GET, Some(name), _) => {
                match objects.get(&(t.collection.clone(), ns, name.clone())) {
                    Some(o) => respond(200, o),
                    None => respond(
                        404,
                        &status_body(404, "NotFound", &format!("{name} not found")),
                    ),
                }
            }
            (Method::POST, _, _) => {
                let mut obj = body;
                let name = match obj["metadata"]["name"].as_str() {
                    Some(n) => n.to_owned(),
                    None => {
                        let base = obj["metadata"]["generateName"]
                            .as_str()
                            .unwrap_or("x")
                            .to_owned();
                        format!("{base}{}", self.version.load(Ordering::SeqCst))
                    }
                };
                let key = (t.collection.clone(), ns.clone(), name.clone());
                if objects.contains_key(&key) {
                    return respond(409, &status_body(409, "AlreadyExists", &name));
                }
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["namespace"] = json!(ns);
                obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                obj["metadata"]["creationTimestamp"] = json!((self.now)());
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
                self.stamp(&mut obj);
                objects.insert(key, obj.clone());
                respond(201, &obj)
            }
            (Method::PATCH, Some(name), sub) => {
                let key = (t.collection.clone(), ns, name.clone());
                let Some(obj) = objects.get_mut(&key) else {
                    return respond(404, &status_body(404, "NotFound", &name));
                };
                if content_type.contains("json-patch") {
                    // As the API server (evanphx/json-patch): testing a missing path for null
                    // passes (kube's finalizer helper does that on an object without finalizers).
                    let mut body = body;
                    if let Some(ops) = body.as_array_mut() {
                        ops.retain(|op| {
                            !(op["op"] == "test"
                                && op["value"].is_null()
                                && op["path"]
                                    .as_str()
                                    .is_some_and(|p| obj.pointer(p).is_none()))
                        });
                    }
                    let patch: json_patch::Patch = match serde_json::from_value(body) {
                        Ok(p) => p,
                        Err(e) => {
                            return respond(400, &status_body(400, "BadRequest", &e.to_string()));
                        }
                    };
                    if let Err(e) = json_patch::patch(obj, &patch) {
                        return respond(422, &status_body(422, "Invalid", &e.to_string()));
                    }
                } else if sub == Some("status") {
                    merge(&mut obj["status"], &body["status"]);
                } else {
                    merge(obj, &body);
                }
                self.stamp(obj);
                let out = obj.clone();
                let gone = !out["metadata"]["deletionTimestamp"].is_null()
                    && out["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(Vec::is_empty);
                if gone {
                    objects.remove(&key);
                }
                respond(200, &out)
            }
            (Method::DELETE, Some(name), _) => {
                let key = (t.collection.clone(), ns, name.clone());
                let Some(obj) = objects.get_mut(&key) else {
                    return respond(404, &status_body(404, "NotFound", &name));
                };
                if obj["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
                {
                    if obj["metadata"]["deletionTimestamp"].is_null() {
                        obj["metadata"]["deletionTimestamp"] = json!((self.now)());
                    }
                    self.stamp(obj);
                    return respond(200, obj);
                }
                objects.remove(&key);
                respond(200, &status_body(200, "", "deleted"))
            }
            (method, _, _) => respond(405, &status_body(405, "MethodNotAllowed", method.as_str())),
        }
    }

    /// The objects of a collection ("workflownodes", "iochaos", "pods"...) in a namespace.
    pub fn list(&self, plural: &str, namespace: &str) -> Vec<Value> {
        self.objects
            .lock()
            .iter()
            .filter(|((c, n, _), _)| c.ends_with(&format!("/{plural}")) && n == namespace)
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.list(plural, namespace)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    /// Puts an object as a test sets it up (or changes it behind the controller's back).
    pub fn put(&self, collection: &str, namespace: &str, mut obj: Value) {
        let name = obj["metadata"]["name"].as_str().expect("a name").to_owned();
        obj["metadata"]["namespace"] = json!(namespace);
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{name}"));
        }
        self.stamp(&mut obj);
        self.objects
            .lock()
            .insert((collection.to_owned(), namespace.to_owned(), name), obj);
    }

    /// Merges into a stored object (e.g. a pod's status as the kubelet would write it).
    pub fn update(&self, plural: &str, namespace: &str, name: &str, patch: Value) {
        let mut objects = self.objects.lock();
        let obj = objects
            .iter_mut()
            .find(|((c, n, m), _)| {
                c.ends_with(&format!("/{plural}")) && n == namespace && m == name
            })
            .map(|(_, o)| o)
            .unwrap_or_else(|| panic!("no {plural} {name}"));
        merge(obj, &patch);
    }
}
