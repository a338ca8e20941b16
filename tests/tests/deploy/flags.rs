//! No drift between the manifests and the binaries: in every overlay, the agent DaemonSet and
//! the controller Deployment pass only flags the binaries print in `--help`, in the form they
//! take, and their ports, probes, mounts and paths agree with those flags' values (or defaults).

use std::collections::BTreeMap;

use yaml_serde::Value;

use crate::help::{self, Flag};
use crate::{faultline_overlays, list, object, overlays, render, run, text};

/// What the issue asks the agent to hold when it is not privileged.
const AGENT_CAPABILITIES: [&str; 8] = [
    "SYS_ADMIN",
    "NET_ADMIN",
    "NET_RAW",
    "SYS_PTRACE",
    "KILL",
    "MKNOD",
    "SYS_CHROOT",
    "IPC_LOCK",
];

/// The Secret keys `faultline-controller certs` and cert-manager write, per flag.
const TLS_FILES: [(&str, &str); 3] = [("cert", "tls.crt"), ("key", "tls.key"), ("ca", "ca.crt")];

/// One container of a workload, its arguments read against a binary's flags.
struct Invocation<'a> {
    pod: &'a Value,
    container: &'a Value,
    positional: Vec<String>,
    given: Vec<(String, Option<String>)>,
    flags: BTreeMap<String, Flag>,
    errors: Vec<String>,
}

impl<'a> Invocation<'a> {
    fn new(workload: &'a Value, flags: BTreeMap<String, Flag>) -> Invocation<'a> {
        Invocation::of(workload, 0, flags)
    }

    /// The container at `index` of the workload's pod.
    fn of(workload: &'a Value, index: usize, flags: BTreeMap<String, Flag>) -> Invocation<'a> {
        let pod = &workload["spec"]["template"]["spec"];
        let container = &list(&pod["containers"])[index];
        let words: Vec<String> = list(&container["args"])
            .iter()
            .map(|a| text(a).to_owned())
            .collect();
        let (positional, given) = help::args(&words);
        let mut inv = Invocation {
            pod,
            container,
            positional,
            given,
            flags,
            errors: Vec::new(),
        };
        inv.check_flags_exist();
        inv
    }

    fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    fn check_flags_exist(&mut self) {
        let mut seen = BTreeMap::new();
        for (name, value) in self.given.clone() {
            match self.flags.get(&name) {
                None => self.error(format!("--{name}: the binary has no such flag")),
                Some(flag) if flag.takes_value != value.is_some() => self.error(format!(
                    "--{name}: the binary {} a value, the manifest {}",
                    if flag.takes_value {
                        "takes"
                    } else {
                        "takes no"
                    },
                    if value.is_some() {
                        "gives one"
                    } else {
                        "gives none"
                    }
                )),
                Some(_) => {}
            }
            *seen.entry(name).or_insert(0) += 1;
        }
        for (name, count) in seen {
            if count > 1 && name != "allowed-client" {
                self.error(format!("--{name} is given {count} times"));
            }
        }
    }

    fn given(&self, name: &str) -> bool {
        self.given.iter().any(|(n, _)| n == name)
    }

    /// The value the binary runs with: the manifest's, or the binary's default.
    fn value(&self, name: &str) -> Option<String> {
        self.given
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
            .or_else(|| self.flags.get(name).and_then(|f| f.default.clone()))
    }

    fn volume(&self, name: &str) -> Option<&'a Value> {
        list(&self.pod["volumes"])
            .iter()
            .find(|v| v["name"] == name)
    }

    /// The mount that holds `path` (the longest mountPath it is in), and its volume.
    fn mount_of(&self, path: &str) -> Option<(&'a Value, &'a Value)> {
        list(&self.container["volumeMounts"])
            .iter()
            .filter(|m| {
                let mount = text(&m["mountPath"]).trim_end_matches('/');
                path == mount || path.starts_with(&format!("{mount}/"))
            })
            .max_by_key(|m| text(&m["mountPath"]).len())
            .and_then(|m| Some((m, self.volume(text(&m["name"]))?)))
    }

    fn port(&self, name: &str) -> Option<u16> {
        list(&self.container["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
    }

    /// The TLS files are in a read-only Secret mount, under the names the Secret has.
    fn check_tls_files(&mut self) {
        if !TLS_FILES.iter().all(|(flag, _)| self.given(flag)) {
            self.error("--cert, --key and --ca must all be given".into());
            return;
        }
        for (flag, key) in TLS_FILES {
            let path = self.value(flag).unwrap_or_default();
            match self.mount_of(&path) {
                Some((mount, volume)) if volume["secret"].is_mapping() => {
                    let expected = format!("{}/{key}", text(&mount["mountPath"]));
                    if path != expected {
                        self.error(format!("--{flag}={path}: the Secret's key is {expected}"));
                    }
                    if mount["readOnly"] != true {
                        self.error(format!("--{flag}: the Secret mount is not readOnly"));
                    }
                }
                _ => self.error(format!("--{flag}={path} is not in a Secret mount")),
            }
        }
    }

    /// `path` is a hostPath volume of `kind` mounted at the same path.
    fn check_host_path(&mut self, what: &str, path: &str, kinds: &[&str]) {
        match self.mount_of(path) {
            Some((mount, volume))
                if text(&mount["mountPath"]) == path && volume["hostPath"].is_mapping() =>
            {
                let host = &volume["hostPath"];
                if host["path"] != path {
                    self.error(format!(
                        "{what} {path} is mounted from the host's {:?}",
                        host["path"]
                    ));
                }
                let kind = host["type"].as_str().unwrap_or_default();
                if !kinds.contains(&kind) {
                    self.error(format!(
                        "{what} {path}: hostPath type {kind:?}, not {kinds:?}"
                    ));
                }
            }
            _ => self.error(format!(
                "{what} {path} is not a hostPath mount at that path"
            )),
        }
    }

    /// A named container port serves `addr`'s port, and the probes use it.
    fn check_listen(&mut self, flag: &str, port_name: &str) -> Option<u16> {
        let addr = self.value(flag).unwrap_or_default();
        let Some(port) = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
        else {
            self.error(format!("--{flag}={addr}: no port"));
            return None;
        };
        if self.port(port_name) != Some(port) {
            self.error(format!(
                "--{flag}={addr}, but container port {port_name} is {:?}",
                self.port(port_name)
            ));
        }
        Some(port)
    }

    fn check_probes(&mut self, http_port: Option<u16>) {
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &self.container[probe]["httpGet"];
            if get["path"] != "/healthz" {
                self.error(format!("{probe}: path {:?}, not /healthz", get["path"]));
            }
            let port = match &get["port"] {
                Value::String(name) => self.port(name),
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                _ => None,
            };
            if port.is_none() || port != http_port {
                self.error(format!(
                    "{probe}: port {:?} is not the HTTP port {http_port:?}",
                    get["port"]
                ));
            }
        }
    }

    fn finish(self, what: &str) -> Vec<String> {
        self.errors
            .into_iter()
            .map(|e| format!("{what}: {e}"))
            .collect()
    }
}

fn overlay_name(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn the_agent_daemonset_agrees_with_the_agents_flags() {
    let flags = help::parse(&run("faultline-agent", &["serve", "--help"]));
    assert!(
        flags.contains_key("state-dir") && flags.contains_key("listen"),
        "{flags:?}"
    );
    let cli_socket = help::parse(&run("faultline", &["--help"]))
        .get("socket")
        .and_then(|f| f.default.clone())
        .expect("the CLI's --socket default");
    let mut errors = Vec::new();
    for overlay in overlays() {
        let objects = render(&overlay);
        let ds = object(&objects, "DaemonSet", "faultline-agent");
        let mut agent = Invocation::new(ds, flags.clone());
        let pod = agent.pod;
        if pod["hostPID"] != true {
            agent.error("hostPID is not true".into());
        }
        if !list(&pod["tolerations"])
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null())
        {
            agent.error("no toleration of every taint: the agent must run on every node".into());
        }
        if agent.container["command"] != Value::from(vec!["/usr/local/bin/faultline-agent"]) {
            agent.error("command is not /usr/local/bin/faultline-agent".into());
        }
        if agent.positional != ["serve"] {
            agent.error(format!("subcommand {:?}, not serve", agent.positional));
        }
        agent.check_tls_files();

        let grpc = agent.check_listen("listen", "grpc");
        let http = agent.check_listen("http-listen", "http");
        agent.check_probes(http);
        // Chaos Mesh's controller finds agents through the Service chaos-daemon.
        let service_name = if overlay.ends_with("chaos-mesh") {
            "chaos-daemon"
        } else {
            "faultline-agent"
        };
        let service = object(&objects, "Service", service_name);
        if service["spec"]["clusterIP"] != "None" {
            agent.error("the agents' Service is not headless".into());
        }
        let grpc_port = list(&service["spec"]["ports"])
            .iter()
            .find(|p| p["name"] == "grpc");
        match grpc_port {
            Some(p) if p["port"].as_u64() == grpc.map(u64::from) => {}
            _ => agent.error(format!(
                "the Service's grpc port is not the agent's {grpc:?}"
            )),
        }

        let state_dir = agent.value("state-dir").unwrap_or_default();
        agent.check_host_path(
            "--state-dir",
            &state_dir,
            &["DirectoryOrCreate", "Directory"],
        );
        let runtime = agent.value("runtime").unwrap_or_default();
        let socket_flag = match runtime.as_str() {
            "containerd" => "containerd-socket",
            "cri-o" | "docker" => "cri-socket",
            other => {
                agent.error(format!("--runtime={other}"));
                "cri-socket"
            }
        };
        match agent.value(socket_flag) {
            Some(socket) => agent.check_host_path(
                &format!("--{socket_flag} (runtime {runtime})"),
                &socket,
                &["Socket"],
            ),
            None => agent.error(format!("runtime {runtime} without --{socket_flag}")),
        }
        agent.check_host_path("the FUSE device", "/dev/fuse", &["CharDevice"]);

        match agent.value("unix-socket") {
            Some(socket) => {
                if !agent.given("insecure-unix-plaintext") {
                    agent.error("--unix-socket without --insecure-unix-plaintext".into());
                }
                if socket != cli_socket {
                    agent.error(format!(
                        "--unix-socket={socket}, the faultline CLI's default is {cli_socket}"
                    ));
                }
                let dir = socket.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
                match agent.mount_of(&socket) {
                    Some((m, v)) if text(&m["mountPath"]) == dir && v["emptyDir"].is_mapping() => {}
                    _ => agent.error(format!(
                        "--unix-socket={socket}: {dir} is not a pod-local emptyDir mount"
                    )),
                }
            }
            None => agent.error("no --unix-socket for the CLI".into()),
        }

        let security = &agent.container["securityContext"];
        let added: Vec<&str> = list(&security["capabilities"]["add"])
            .iter()
            .map(text)
            .collect();
        if security["privileged"] != true && !AGENT_CAPABILITIES.iter().all(|c| added.contains(c)) {
            agent.error(format!(
                "neither privileged nor the capabilities {AGENT_CAPABILITIES:?} (has {added:?})"
            ));
        }
        if agent.container["resources"]["requests"]["memory"].is_null() {
            agent.error("no memory request".into());
        }
        errors.extend(agent.finish(&format!("{} agent", overlay_name(&overlay))));
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}

#[test]
fn the_controller_deployment_agrees_with_the_controllers_flags() {
    let flags = help::parse(&run("faultline-controller", &["run", "--help"]));
    assert!(flags.contains_key("agent-server-name"), "{flags:?}");
    let mut errors = Vec::new();
    for overlay in faultline_overlays() {
        let objects = render(&overlay);
        let deployment = object(&objects, "Deployment", "faultline-controller");
        let mut controller = Invocation::new(deployment, flags.clone());
        if deployment["spec"]["replicas"] != 2 {
            controller.error("not 2 replicas".into());
        }
        if controller.container["command"]
            != Value::from(vec!["/usr/local/bin/faultline-controller"])
        {
            controller.error("command is not /usr/local/bin/faultline-controller".into());
        }
        if controller.positional != ["run"] {
            controller.error(format!("subcommand {:?}, not run", controller.positional));
        }
        controller.check_tls_files();
        // Every address it listens on is a declared container port, and the probes use one.
        let listens: Vec<u16> = controller
            .given
            .iter()
            .filter_map(|(_, v)| v.as_deref()?.rsplit_once(':')?.1.parse().ok())
            .collect();
        let declared: Vec<u16> = list(&controller.container["ports"])
            .iter()
            .filter_map(|p| p["containerPort"].as_u64()?.try_into().ok())
            .collect();
        for port in &listens {
            if !declared.contains(port) {
                controller.error(format!("listens on {port}, which is no container port"));
            }
        }
        controller.check_probes(controller.port("http"));
        check_controller_finds_agents(&mut controller, &objects);
        errors.extend(controller.finish(&format!("{} controller", overlay_name(&overlay))));
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}

/// What the controller is told about the agents and its Lease is what the manifests have: the
/// agents' headless Service with the named gRPC port, the Role's namespace for the Lease, and,
/// where cert-manager makes the certificates, names that match both ends.
fn check_controller_finds_agents(controller: &mut Invocation<'_>, objects: &[Value]) {
    let value = |name: &str| controller.value(name).unwrap_or_default();
    let (namespace, service, port_name) = (
        value("agent-namespace"),
        value("agent-service"),
        value("agent-port-name"),
    );
    let (lease, server_name) = (value("lease"), value("agent-server-name"));
    let agents = object(objects, "DaemonSet", "faultline-agent");
    if agents["metadata"]["namespace"] != namespace.as_str() {
        controller.error(format!(
            "--agent-namespace={namespace}, the agents run in {:?}",
            agents["metadata"]["namespace"]
        ));
    }
    match objects.iter().find(|o| {
        o["kind"] == "Service"
            && o["metadata"]["name"] == service.as_str()
            && o["metadata"]["namespace"] == namespace.as_str()
    }) {
        Some(svc) => {
            let pod_labels = &agents["spec"]["template"]["metadata"]["labels"];
            let selects = svc["spec"]["selector"]
                .as_mapping()
                .is_some_and(|sel| sel.iter().all(|(k, v)| &pod_labels[k] == v));
            let has_port = list(&svc["spec"]["ports"])
                .iter()
                .any(|p| p["name"] == port_name.as_str());
            if !selects || !has_port || svc["spec"]["clusterIP"] != "None" {
                controller.error(format!(
                    "Service {namespace}/{service}: headless {}, selects the agents {selects}, port {port_name} {has_port}",
                    svc["spec"]["clusterIP"] == "None"
                ));
            }
        }
        None => controller.error(format!(
            "--agent-service={service} (namespace {namespace}) is not in the manifests"
        )),
    }
    let lease_namespace = lease.split_once('/').map(|(ns, _)| ns.to_owned());
    let granted = objects.iter().any(|o| {
        o["kind"] == "Role"
            && lease_namespace.as_deref() == o["metadata"]["namespace"].as_str()
            && list(&o["rules"]).iter().any(|r| {
                list(&r["resources"]).iter().any(|x| x == "leases")
                    && ["get", "create", "update"]
                        .iter()
                        .all(|verb| list(&r["verbs"]).iter().any(|v| v == *verb))
            })
    });
    if lease != "off" && !granted {
        controller.error(format!(
            "--lease={lease}: no Role grants get, create and update on leases there"
        ));
    }
    // cert-manager: the agents' certificate carries the name the controller checks, the
    // controller's carries the identity the agents admit.
    let allowed: Vec<String> =
        list(&list(&agents["spec"]["template"]["spec"]["containers"])[0]["args"])
            .iter()
            .filter_map(|a| text(a).strip_prefix("--allowed-client="))
            .map(str::to_owned)
            .collect();
    for certificate in objects.iter().filter(|o| o["kind"] == "Certificate") {
        let names: Vec<&str> = list(&certificate["spec"]["dnsNames"])
            .iter()
            .map(text)
            .collect();
        match certificate["spec"]["secretName"].as_str() {
            Some("faultline-agent-tls") if !names.contains(&server_name.as_str()) => controller
                .error(format!(
                    "the agents' Certificate has {names:?}, not --agent-server-name={server_name}"
                )),
            Some("faultline-controller-tls")
                if !names.iter().any(|n| allowed.iter().any(|a| a == n)) =>
            {
                controller.error(format!(
                    "the controller's Certificate has {names:?}, the agents admit {allowed:?}"
                ))
            }
            _ => {}
        }
    }
}

/// The sidecar webhook, in every overlay: the controller pods' `webhook` container passes only
/// flags `faultline-controller webhook --help` has; its port is the one the Service targets and
/// the Service's is the one the MutatingWebhookConfiguration calls, on the path the server
/// serves; its certificate is in the webhook Secret's mount; the configuration has the failure
/// policy, side effects, timeout, review versions and namespace selection documented, excluding
/// the namespace the webhook is told is its own; the ClusterRole lets it watch what it reads;
/// and the configuration `faultline-controller certs` writes (with its caBundle) is the one in
/// the manifests.
#[test]
fn the_webhook_container_service_and_configuration_agree_with_the_webhooks_flags() {
    let flags = help::parse(&run("faultline-controller", &["webhook", "--help"]));
    assert!(
        flags.contains_key("tls-cert") && flags.contains_key("manifests"),
        "{flags:?}"
    );
    let certs_output = run("faultline-controller", &["certs"]);
    let from_certs: Vec<Value> = yaml_serde::Deserializer::from_str(&certs_output)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let mut certs_config = from_certs
        .iter()
        .find(|o: &&Value| o["kind"] == "MutatingWebhookConfiguration")
        .expect("certs writes the MutatingWebhookConfiguration")
        .clone();
    let ca_bundle = certs_config["webhooks"][0]["clientConfig"]
        .as_mapping_mut()
        .and_then(|c| c.remove("caBundle"));
    assert!(ca_bundle.is_some(), "certs sets no caBundle");

    let mut errors = Vec::new();
    for overlay in faultline_overlays() {
        let objects = render(&overlay);
        let deployment = object(&objects, "Deployment", "faultline-controller");
        let containers = list(&deployment["spec"]["template"]["spec"]["containers"]);
        let Some(index) = containers.iter().position(|c| c["name"] == "webhook") else {
            errors.push(format!("{}: no webhook container", overlay_name(&overlay)));
            continue;
        };
        let mut webhook = Invocation::of(deployment, index, flags.clone());
        if webhook.container["command"] != Value::from(vec!["/usr/local/bin/faultline-controller"])
        {
            webhook.error("command is not /usr/local/bin/faultline-controller".into());
        }
        if webhook.positional != ["webhook"] {
            webhook.error(format!("subcommand {:?}, not webhook", webhook.positional));
        }
        if webhook.given("manifests") {
            webhook.error("--manifests: the in-cluster webhook must watch the API".into());
        }
        for flag in ["tls-cert", "tls-key"] {
            let path = webhook.value(flag).unwrap_or_default();
            match webhook.mount_of(&path) {
                Some((mount, volume))
                    if volume["secret"]["secretName"] == "faultline-webhook-tls"
                        && mount["readOnly"] == true => {}
                _ => webhook.error(format!(
                    "--{flag}={path} is not in the read-only faultline-webhook-tls Secret mount"
                )),
            }
        }
        let port = webhook.check_listen("listen", "webhook");
        webhook.check_probes(port);
        for probe in ["readinessProbe", "livenessProbe"] {
            if webhook.container[probe]["httpGet"]["scheme"] != "HTTPS" {
                webhook.error(format!("{probe} is not HTTPS"));
            }
        }
        let namespace = webhook.value("namespace").unwrap_or_default();
        if deployment["metadata"]["namespace"] != namespace.as_str() {
            webhook.error(format!(
                "--namespace={namespace}, the Deployment is in {:?}",
                deployment["metadata"]["namespace"]
            ));
        }

        let config = object(
            &objects,
            "MutatingWebhookConfiguration",
            "faultline-webhook",
        );
        let hooks = list(&config["webhooks"]);
        if hooks.len() != 1 {
            webhook.error(format!("{} webhooks, not 1", hooks.len()));
        }
        let hook = &hooks[0];
        for (field, want) in [
            ("failurePolicy", Value::from("Ignore")),
            ("sideEffects", Value::from("None")),
            ("timeoutSeconds", Value::from(5)),
            ("admissionReviewVersions", Value::from(vec!["v1"])),
        ] {
            if hook[field] != want {
                webhook.error(format!("{field} is {:?}, not {want:?}", hook[field]));
            }
        }
        if hook["namespaceSelector"]["matchLabels"]["admission-webhook"] != "enabled" {
            webhook.error("namespaceSelector does not require admission-webhook=enabled".into());
        }
        let excluded: Vec<&str> = list(&hook["namespaceSelector"]["matchExpressions"])
            .iter()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .flat_map(|e| list(&e["values"]).iter().map(text))
            .collect();
        for ns in ["kube-system", "kube-public", namespace.as_str()] {
            if !excluded.contains(&ns) {
                webhook.error(format!("namespace {ns} is not excluded ({excluded:?})"));
            }
        }
        let rule = &list(&hook["rules"])[0];
        if rule["operations"] != Value::from(vec!["CREATE"])
            || rule["resources"] != Value::from(vec!["pods"])
        {
            webhook.error(format!("rules {:?}: not pod CREATE", hook["rules"]));
        }
        let service_ref = &hook["clientConfig"]["service"];
        if service_ref["path"] != "/inject" {
            webhook.error(format!(
                "path {:?}, the server serves /inject",
                service_ref["path"]
            ));
        }
        match objects.iter().find(|o| {
            o["kind"] == "Service"
                && o["metadata"]["name"] == service_ref["name"]
                && o["metadata"]["namespace"] == service_ref["namespace"]
        }) {
            Some(svc) => {
                let ports = list(&svc["spec"]["ports"]);
                match ports.iter().find(|p| p["port"] == service_ref["port"]) {
                    Some(p) if p["targetPort"] == "webhook" => {}
                    _ => webhook.error(format!(
                        "Service {:?} has no port {:?} targeting the webhook port",
                        service_ref["name"], service_ref["port"]
                    )),
                }
                let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
                let selects = svc["spec"]["selector"]
                    .as_mapping()
                    .is_some_and(|sel| sel.iter().all(|(k, v)| &pod_labels[k] == v));
                if !selects {
                    webhook.error("the webhook Service does not select the controller pods".into());
                }
            }
            None => webhook.error(format!(
                "the configuration calls Service {:?}, which is not in the manifests",
                service_ref["name"]
            )),
        }

        let watched = objects.iter().any(|o| {
            o["kind"] == "ClusterRole"
                && list(&o["rules"]).iter().any(|r| {
                    ["configmaps", "namespaces"]
                        .iter()
                        .all(|x| list(&r["resources"]).iter().any(|v| v == *x))
                        && ["get", "list", "watch"]
                            .iter()
                            .all(|verb| list(&r["verbs"]).iter().any(|v| v == *verb))
                })
        });
        if !watched {
            webhook.error(
                "no ClusterRole lets it get, list and watch configmaps and namespaces".into(),
            );
        }

        // What `certs` writes is the manifests' configuration; under cert-manager, the
        // cainjector annotation names the webhook's Certificate, which carries the Service's name.
        let mut rendered = config.clone();
        let injected_from = rendered["metadata"]
            .as_mapping_mut()
            .and_then(|m| m.remove("annotations"))
            .map(|a| a["cert-manager.io/inject-ca-from"].clone());
        if rendered != certs_config {
            webhook.error(format!(
                "the MutatingWebhookConfiguration differs from the one `certs` writes:\n{}\nvs\n{}",
                yaml_serde::to_string(&rendered).unwrap_or_default(),
                yaml_serde::to_string(&certs_config).unwrap_or_default()
            ));
        }
        let certificate = objects.iter().find(|o| {
            o["kind"] == "Certificate" && o["spec"]["secretName"] == "faultline-webhook-tls"
        });
        match (certificate, injected_from) {
            (None, None) => {}
            (Some(cert), Some(from)) => {
                let want = format!(
                    "{}/{}",
                    text(&cert["metadata"]["namespace"]),
                    text(&cert["metadata"]["name"])
                );
                if from != want.as_str() {
                    webhook.error(format!(
                        "inject-ca-from {from:?}, the Certificate is {want}"
                    ));
                }
                let name = format!(
                    "{}.{}.svc",
                    text(&service_ref["name"]),
                    text(&service_ref["namespace"])
                );
                if !list(&cert["spec"]["dnsNames"])
                    .iter()
                    .any(|n| n == name.as_str())
                {
                    webhook.error(format!("the webhook's Certificate does not name {name}"));
                }
            }
            (Some(_), None) => webhook.error(
                "cert-manager makes the webhook certificate but nothing injects its CA".into(),
            ),
            (None, Some(_)) => {
                webhook.error("a cainjector annotation without a webhook Certificate".into())
            }
        }
        errors.extend(webhook.finish(&format!("{} webhook", overlay_name(&overlay))));
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}
