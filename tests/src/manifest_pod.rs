//! Pods from our manifests, the way kubelet runs them: the pod template of a rendered workload
//! (a DaemonSet or Deployment as `kubectl kustomize` prints it, as JSON) translated into the
//! testbed's CRI pod spec: hostPID and hostNetwork, every container with its command, args,
//! env (values and the `fieldRef`s kubelet fills in), security context (privileged,
//! runAsUser/Group, runAsNonRoot checked, readOnlyRootFilesystem, allowPrivilegeEscalation,
//! capabilities), volume mounts with their mountPropagation, and the volumes behind them:
//! hostPath (with kubelet's `type` checks and creation), secret (files with defaultMode and
//! fsGroup, as kubelet projects them), emptyDir, and the service account token kubelet mounts
//! unless `automountServiceAccountToken: false`. HTTP probes are returned for the caller to run
//! with [`http_probe`], against the pod IP as kubelet does.
//!
//! A node is not a host: hostPath paths may be mapped to stand-ins (the runtime socket is the
//! testbed's, the agent's state directory one of the test's), secrets come from directories.
//! What is not understood is an error naming the field, never silently dropped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::pod::{ContainerSpec, PodSpec, Propagation, Volume};

/// Where kubelet mounts the service account token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The node a template's pod runs on.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// `spec.nodeName`, for `fieldRef`s.
    pub name: String,
    /// hostPath paths this node has elsewhere (the path in the manifest → the stand-in).
    pub host_paths: BTreeMap<String, PathBuf>,
    /// Secrets by name: a directory holding one file per key.
    pub secrets: BTreeMap<String, PathBuf>,
    /// What kubelet mounts for the pod's service account, if the node has an API server.
    pub service_account: Option<ServiceAccount>,
    /// Where the pod's emptyDirs and projected secrets are made.
    pub scratch: PathBuf,
}

/// An API server's address and a service account's credentials (a directory with `token`,
/// `ca.crt` and `namespace`), as kubelet hands them to a pod.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub dir: PathBuf,
    pub api_host: String,
    pub api_port: u16,
}

/// An HTTP probe of a container (`httpGet`), its port resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub container: String,
    /// `livenessProbe`, `readinessProbe` or `startupProbe`.
    pub kind: String,
    pub path: String,
    pub port: u16,
    /// `HTTP` or `HTTPS`.
    pub scheme: String,
}

/// A template made ready to run.
#[derive(Debug, Clone)]
pub struct TemplatePod {
    pub spec: PodSpec,
    pub probes: Vec<Probe>,
    /// The host directory of each emptyDir, by volume name.
    pub empty_dirs: BTreeMap<String, PathBuf>,
}

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidSpec { field, reason }
}

fn text<'a>(v: &'a Value, field: &'static str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| invalid(field, format!("expected a string, got {v}")))
}

fn strings(v: &Value, field: &'static str) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| text(i, field).map(str::to_owned))
            .collect(),
        other => Err(invalid(field, format!("expected a list, got {other}"))),
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Reads the pod template of `workload` (a DaemonSet, Deployment, ...) for `node`.
pub fn from_workload(workload: &Value, node: &Node) -> Result<TemplatePod> {
    let kind = workload["kind"].as_str().unwrap_or("workload");
    let name = text(&workload["metadata"]["name"], "metadata.name")?;
    let namespace = workload["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let template = &workload["spec"]["template"];
    if template.is_null() {
        return Err(invalid(
            "spec.template",
            format!("{kind}/{name} has no pod template"),
        ));
    }
    let pod = &template["spec"];
    let mut spec = PodSpec::new(name).namespace(namespace);
    for (k, v) in template["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        spec = spec.label(k, text(v, "metadata.labels")?);
    }
    for (k, v) in template["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        spec = spec.annotation(k, text(v, "metadata.annotations")?);
    }
    if pod["hostPID"] == true {
        spec = spec.host_pid();
    }
    if pod["hostNetwork"] == true {
        spec = spec.host_network();
    }
    if pod["hostIPC"] == true {
        return Err(invalid(
            "spec.hostIPC",
            "the testbed's pods have no host IPC".into(),
        ));
    }

    std::fs::create_dir_all(&node.scratch).map_err(Error::io("creating", &node.scratch))?;
    let pod_security = &pod["securityContext"];
    let fs_group = pod_security["fsGroup"].as_u64().map(|g| g as u32);
    let mut empty_dirs = BTreeMap::new();
    let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for volume in list(&pod["volumes"]) {
        let vname = text(&volume["name"], "spec.volumes[].name")?.to_owned();
        let path = if let Some(host_path) = volume.get("hostPath") {
            host_path_volume(host_path, node)?
        } else if let Some(secret) = volume.get("secret") {
            secret_volume(secret, &vname, fs_group, node)?
        } else if volume.get("emptyDir").is_some() {
            let dir = node.scratch.join(format!("empty-dir-{vname}"));
            std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
            empty_dirs.insert(vname.clone(), dir.clone());
            dir
        } else {
            return Err(invalid(
                "spec.volumes",
                format!("volume {vname}: only hostPath, secret and emptyDir are understood"),
            ));
        };
        volumes.insert(vname, path);
    }

    let automount = pod["automountServiceAccountToken"] != false;
    let mut probes = Vec::new();
    let mut containers = Vec::new();
    for (i, c) in list(&pod["containers"]).iter().enumerate() {
        let (container, mut container_probes) =
            container(c, pod_security, &volumes, node, name, namespace, automount)?;
        probes.append(&mut container_probes);
        containers.push((i, container));
    }
    let mut containers = containers.into_iter().map(|(_, c)| c);
    let main = containers.next().ok_or_else(|| {
        invalid(
            "spec.template.spec.containers",
            format!("{kind}/{name} has none"),
        )
    })?;
    spec = spec.main_container(main);
    for sidecar in containers {
        spec = spec.sidecar(sidecar);
    }
    for c in list(&pod["initContainers"]) {
        let (init, _) = container(c, pod_security, &volumes, node, name, namespace, automount)?;
        spec = spec.init_container(init);
    }
    Ok(TemplatePod {
        spec,
        probes,
        empty_dirs,
    })
}

/// kubelet's hostPath `type` checks (and the creation of `DirectoryOrCreate`/`FileOrCreate`).
fn host_path_volume(host_path: &Value, node: &Node) -> Result<PathBuf> {
    let path = text(&host_path["path"], "hostPath.path")?;
    let local = node
        .host_paths
        .get(path)
        .cloned()
        .unwrap_or_else(|| PathBuf::from(path));
    let kind = host_path["type"].as_str().unwrap_or("");
    let meta = std::fs::metadata(&local);
    let wrong = |what: &str| {
        invalid(
            "hostPath.type",
            format!("{path} (here {}) is not {what}", local.display()),
        )
    };
    match kind {
        "" => {}
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(&local).map_err(Error::io("creating", &local))?;
                std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io("setting the mode of", &local))?;
            } else if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
                return Err(wrong("a directory"));
            }
        }
        "Directory" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => {
            return Err(wrong("a directory"));
        }
        "FileOrCreate" => {
            if meta.is_err() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&local)
                    .map_err(Error::io("creating", &local))?;
            } else if !meta.as_ref().is_ok_and(|m| m.is_file()) {
                return Err(wrong("a file"));
            }
        }
        "File" if !meta.as_ref().is_ok_and(|m| m.is_file()) => return Err(wrong("a file")),
        "Socket" if !meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => {
            return Err(wrong("a socket"));
        }
        "CharDevice" if !meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => {
            return Err(wrong("a character device"));
        }
        "Directory" | "File" | "Socket" | "CharDevice" => {}
        other => {
            return Err(invalid(
                "hostPath.type",
                format!("{path}: type {other} is not understood"),
            ));
        }
    }
    Ok(local)
}

/// The secret's keys as files in a fresh directory: mode `defaultMode` (0644 unless given),
/// group `fsGroup` if the pod has one, as kubelet projects them.
fn secret_volume(
    secret: &Value,
    volume: &str,
    fs_group: Option<u32>,
    node: &Node,
) -> Result<PathBuf> {
    let name = text(&secret["secretName"], "secret.secretName")?;
    let source = node.secrets.get(name).ok_or_else(|| {
        invalid(
            "secret.secretName",
            format!("volume {volume}: the node has no secret {name}"),
        )
    })?;
    if !secret["items"].is_null() {
        return Err(invalid(
            "secret.items",
            format!("volume {volume}: items are not understood"),
        ));
    }
    let mode = secret["defaultMode"].as_u64().unwrap_or(0o644) as u32;
    let dir = node.scratch.join(format!("secret-{volume}"));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let entries = std::fs::read_dir(source).map_err(Error::io("reading", source))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("reading", source))?;
        let to = dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to).map_err(Error::io("copying into", &to))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io("setting the mode of", &to))?;
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&to, None, Some(gid))
                .map_err(Error::io("setting the group of", &to))?;
        }
    }
    Ok(dir)
}

fn container(
    c: &Value,
    pod_security: &Value,
    volumes: &BTreeMap<String, PathBuf>,
    node: &Node,
    pod_name: &str,
    namespace: &str,
    automount: bool,
) -> Result<(ContainerSpec, Vec<Probe>)> {
    let name = text(&c["name"], "containers[].name")?;
    let mut spec = ContainerSpec::new(name)
        .image(text(&c["image"], "containers[].image")?)
        .command(strings(&c["command"], "containers[].command")?)
        .args(strings(&c["args"], "containers[].args")?);
    if let Some(sa) = node.service_account.as_ref().filter(|_| automount) {
        spec = spec
            .env("KUBERNETES_SERVICE_HOST", &sa.api_host)
            .env("KUBERNETES_SERVICE_PORT", sa.api_port.to_string())
            .volume(Volume::host_dir(&sa.dir, SERVICE_ACCOUNT_DIR).readonly());
    }
    for env in list(&c["env"]) {
        let key = text(&env["name"], "env[].name")?;
        let value = if let Some(v) = env["value"].as_str() {
            v.to_owned()
        } else if let Some(path) = env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_owned(),
                "metadata.namespace" => namespace.to_owned(),
                "spec.nodeName" => node.name.clone(),
                other => {
                    return Err(invalid(
                        "env[].valueFrom.fieldRef",
                        format!("{name}: {key} from {other} is not understood"),
                    ));
                }
            }
        } else {
            return Err(invalid(
                "env[].valueFrom",
                format!("{name}: {key}: only values and fieldRefs are understood"),
            ));
        };
        spec = spec.env(key, value);
    }
    for mount in list(&c["volumeMounts"]) {
        let vname = text(&mount["name"], "volumeMounts[].name")?;
        let host = volumes
            .get(vname)
            .ok_or_else(|| invalid("volumeMounts[].name", format!("{name}: no volume {vname}")))?;
        if !mount["subPath"].is_null() {
            return Err(invalid(
                "volumeMounts[].subPath",
                format!("{name}: subPath is not understood"),
            ));
        }
        let mut volume = Volume::host_dir(host, text(&mount["mountPath"], "mountPath")?);
        if mount["readOnly"] == true {
            volume = volume.readonly();
        }
        volume = volume.propagation(match mount["mountPropagation"].as_str() {
            None | Some("None") => Propagation::Private,
            Some("HostToContainer") => Propagation::HostToContainer,
            Some("Bidirectional") => Propagation::Bidirectional,
            Some(other) => {
                return Err(invalid(
                    "volumeMounts[].mountPropagation",
                    format!("{name}: {other}"),
                ));
            }
        });
        spec = spec.volume(volume);
    }

    // The container's securityContext over the pod's.
    let security = &c["securityContext"];
    let field = |key: &str| {
        if security[key].is_null() {
            &pod_security[key]
        } else {
            &security[key]
        }
    };
    if security["privileged"] == true {
        spec = spec.privileged();
    }
    let user = field("runAsUser").as_i64();
    let group = field("runAsGroup").as_i64();
    if field("runAsNonRoot") == true && user.is_none_or(|u| u == 0) {
        // kubelet checks the image's user when runAsUser is not given; we require it here.
        return Err(invalid(
            "securityContext.runAsNonRoot",
            format!("{name}: runAsNonRoot without a non-zero runAsUser"),
        ));
    }
    if user.is_some() || group.is_some() {
        spec = spec.run_as(user, group);
    }
    if security["readOnlyRootFilesystem"] == true {
        spec = spec.readonly_rootfs();
    }
    if security["allowPrivilegeEscalation"] == false {
        spec = spec.no_new_privs();
    }
    for cap in strings(&security["capabilities"]["add"], "capabilities.add")? {
        spec = spec.capability(cap);
    }
    for cap in strings(&security["capabilities"]["drop"], "capabilities.drop")? {
        spec = spec.drop_capability(cap);
    }

    let ports: BTreeMap<String, u16> = list(&c["ports"])
        .iter()
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                p["containerPort"].as_u64()? as u16,
            ))
        })
        .collect();
    let mut probes = Vec::new();
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let probe = &c[kind];
        if probe.is_null() {
            continue;
        }
        let get = &probe["httpGet"];
        if get.is_null() {
            return Err(invalid(
                "probe",
                format!("{name}: {kind}: only httpGet is understood"),
            ));
        }
        let port = match &get["port"] {
            Value::Number(n) => n.as_u64().map(|p| p as u16),
            Value::String(s) => ports.get(s).copied(),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(
                "probe port",
                format!("{name}: {kind}: port {} names no port", get["port"]),
            )
        })?;
        probes.push(Probe {
            container: name.to_owned(),
            kind: kind.to_owned(),
            path: get["path"].as_str().unwrap_or("/").to_owned(),
            port,
            scheme: get["scheme"].as_str().unwrap_or("HTTP").to_owned(),
        });
    }
    Ok((spec, probes))
}

/// An HTTP `httpGet` probe as kubelet runs it (plain HTTP; HTTPS is not run here): the status
/// code of `GET path` on `ip:port`. kubelet counts 200–399 as success.
pub fn http_probe(ip: &str, probe: &Probe, timeout: Duration) -> Result<u16> {
    if probe.scheme != "HTTP" {
        return Err(invalid(
            "probe scheme",
            format!("{} probes are not run here", probe.scheme),
        ));
    }
    let address = format!("{ip}:{}", probe.port);
    let err = |source| Error::Io {
        what: "probing",
        path: PathBuf::from(&address),
        source,
    };
    let socket: std::net::SocketAddr = address
        .parse()
        .map_err(|e| invalid("probe address", format!("{address}: {e}")))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, timeout).map_err(err)?;
    stream.set_read_timeout(Some(timeout)).map_err(err)?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: kube-probe/1.32\r\nConnection: close\r\n\r\n",
        probe.path
    )
    .map_err(err)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(err)?;
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::BadResponse {
            call: "HTTP probe",
            detail: reply.lines().next().unwrap_or_default().to_owned(),
        })
}

/// Writes a secret's keys as files under `dir/name` (for [`Node::secrets`]).
pub fn write_secret(dir: &Path, name: &str, keys: &[(&str, &str)]) -> Result<PathBuf> {
    let secret = dir.join(name);
    std::fs::create_dir_all(&secret).map_err(Error::io("creating", &secret))?;
    for (key, value) in keys {
        let path = secret.join(key);
        std::fs::write(&path, value).map_err(Error::io("writing", &path))?;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(scratch: &Path) -> Node {
        Node {
            name: "n1".into(),
            scratch: scratch.to_owned(),
            ..Default::default()
        }
    }

    fn workload(pod: Value) -> Value {
        serde_json::json!({
            "kind": "DaemonSet",
            "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"template": {"metadata": {"labels": {"app": "w"}}, "spec": pod}},
        })
    }

    #[test]
    fn a_template_becomes_the_pod_kubelet_would_ask_for() {
        let dir = tempdir("translate");
        let state = dir.join("state");
        let pod = workload(serde_json::json!({
            "hostPID": true,
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true},
            "containers": [{
                "name": "c", "image": "img:1", "command": ["/bin/x"], "args": ["serve"],
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "A", "value": "b"}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "state", "mountPath": "/var/lib/x", "mountPropagation": "HostToContainer"}],
            }],
            "volumes": [{"name": "state", "hostPath": {"path": state.to_str().unwrap(), "type": "DirectoryOrCreate"}}],
        }));
        let made = from_workload(&pod, &node(&dir)).expect("translates");
        assert!(state.is_dir(), "DirectoryOrCreate creates");
        let spec = &made.spec;
        assert!(spec.host_pid);
        assert_eq!(spec.namespace, "ns");
        let c = &spec.main;
        assert_eq!((c.run_as_user, c.run_as_group), (Some(65532), Some(65532)));
        assert!(c.readonly_rootfs && c.no_new_privs);
        assert_eq!(c.drop_capabilities, ["ALL"]);
        assert!(c.env.contains(&("NODE".into(), "n1".into())));
        assert_eq!(c.volumes[0].propagation, Propagation::HostToContainer);
        assert_eq!(made.probes[0].port, 8080);
        assert_eq!(made.probes[0].path, "/healthz");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_kubelet_would_refuse_or_we_do_not_understand_is_an_error_naming_it() {
        let dir = tempdir("refuse");
        let cases = [
            (
                serde_json::json!({"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "v", "hostPath": {"path": "/nonexistent-dir-x", "type": "Directory"}}]}),
                "is not a directory",
            ),
            (
                serde_json::json!({"securityContext": {"runAsNonRoot": true},
                    "containers": [{"name": "c", "image": "i"}]}),
                "runAsNonRoot",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "v", "configMap": {"name": "x"}}]}),
                "only hostPath, secret and emptyDir",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "image": "i",
                    "readinessProbe": {"httpGet": {"port": "nope"}}}]}),
                "names no port",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "image": "i",
                    "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]}]}),
                "status.hostIP",
            ),
        ];
        for (pod, expected) in cases {
            let err = from_workload(&workload(pod.clone()), &node(&dir)).expect_err(expected);
            assert!(err.to_string().contains(expected), "{pod}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("manifest-pod-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
