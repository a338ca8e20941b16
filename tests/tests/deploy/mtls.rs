//! The story of a first install's certificates: `faultline-controller certs` writes the
//! Secrets, the agent runs with exactly the arguments and Secret files of the DaemonSet (only
//! addresses and host directories moved into a temporary directory), and the controller's own
//! mTLS client, with its Secret's files and the server name of its Deployment, gets in, as does
//! a certificate renewed under the same CA. A client of
//! another CA, a client with another identity, a client without a certificate, a client that
//! trusts another CA and a client that expects another server name all fail.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultline_proto::agent::v1::HealthRequest;
use faultline_proto::agent::v1::agent_client::AgentClient;
use serde::Deserialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use yaml_serde::Value;

use controller::agent::tls::ClientTls;

use crate::{list, object, render, root, text};

/// Secret name → key → contents.
type Secrets = BTreeMap<String, BTreeMap<String, String>>;

fn certs(args: &[&str]) -> String {
    let mut all = vec!["certs"];
    all.extend_from_slice(args);
    crate::run("faultline-controller", &all)
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The Secrets of `certs`' output (which ends with the webhook configuration).
fn secrets(yaml: &str) -> Secrets {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .filter(|doc: &Value| !text(&doc["kind"]).ends_with("WebhookConfiguration"))
        .map(|secret: Value| {
            assert_eq!(secret["kind"], "Secret");
            assert_eq!(secret["type"], "kubernetes.io/tls");
            let data = secret["data"]
                .as_mapping()
                .expect("data")
                .iter()
                .map(|(k, v)| {
                    let bytes = base64_decode(text(v));
                    (text(k).to_owned(), String::from_utf8(bytes).expect("PEM"))
                })
                .collect();
            (text(&secret["metadata"]["name"]).to_owned(), data)
        })
        .collect()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The workload's TLS Secret: its name and where it is mounted.
fn tls_secret(workload: &Value) -> (String, String) {
    let pod = &workload["spec"]["template"]["spec"];
    let volume = list(&pod["volumes"])
        .iter()
        .find(|v| v["secret"].is_mapping())
        .expect("a Secret volume");
    let mount = list(&list(&pod["containers"])[0]["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("its mount");
    (
        text(&volume["secret"]["secretName"]).to_owned(),
        text(&mount["mountPath"]).to_owned(),
    )
}

struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Agent {
    /// The DaemonSet's command line, with its Secret's files written under `dir` and its
    /// addresses and host paths moved there.
    fn start(daemonset: &Value, secret: &BTreeMap<String, String>, dir: &Path) -> Agent {
        let (_, mount_path) = tls_secret(daemonset);
        let tls_dir = dir.join("agent-tls");
        std::fs::create_dir_all(&tls_dir).unwrap();
        for (key, contents) in secret {
            std::fs::write(tls_dir.join(key), contents).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let moved = |path: &str| -> String {
            match path.strip_prefix(&mount_path) {
                Some(rest) => format!("{}{rest}", tls_dir.display()),
                None => panic!("{path} is not under the Secret mount {mount_path}"),
            }
        };
        let container = &list(&daemonset["spec"]["template"]["spec"]["containers"])[0];
        let args: Vec<String> = list(&container["args"])
            .iter()
            .map(|a| {
                let a = text(a);
                let (name, value) = a.split_once('=').unwrap_or((a, ""));
                match name {
                    "--listen" => format!("--listen=127.0.0.1:{port}"),
                    "--http-listen" => "--http-listen=off".into(),
                    "--state-dir" => format!("--state-dir={}", dir.join("state").display()),
                    "--unix-socket" => {
                        format!("--unix-socket={}", dir.join("run/agent.sock").display())
                    }
                    "--containerd-socket" | "--cri-socket" => {
                        format!("{name}={}", dir.join("runtime.sock").display())
                    }
                    "--cert" | "--key" | "--ca" => format!("{name}={}", moved(value)),
                    _ => a.to_owned(),
                }
            })
            .collect();
        let log = dir.join("agent.log");
        let child = Command::new(crate::binaries::path("faultline-agent").unwrap())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("faultline-agent starts");
        let mut agent = Agent { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("the agent exited ({status}): {}", agent.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not listen: {}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Health over mTLS as the given client; the error chain as text when refused.
    async fn health(
        &self,
        trusted_ca: &str,
        client: Option<(&str, &str)>,
        server_name: &str,
    ) -> Result<bool, String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(trusted_ca))
            .domain_name(server_name);
        if let Some((cert, key)) = client {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        self.health_with(tls).await
    }

    async fn health_with(&self, tls: ClientTlsConfig) -> Result<bool, String> {
        let chain = |e: &dyn std::error::Error| {
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        };
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", self.port))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| chain(&e))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| chain(&e))?;
        let reply = AgentClient::new(channel)
            .health(HealthRequest::default())
            .await
            .map_err(|e| chain(&e))?;
        Ok(reply.into_inner().serving)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn certs_from_the_controller_are_what_the_agent_accepts_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = |name: &str| dir.join(name).display().to_string();

    // A first install keeps its CA as files; the Secrets are signed by that CA.
    certs(&["--format", "files", "--out", &path("ca")]);
    let ca_dir = dir.join("ca");
    let (ca_cert, ca_key) = (path("ca/ca.crt"), path("ca/ca.key"));
    certs(&[
        "--ca-cert",
        &ca_cert,
        "--ca-key",
        &ca_key,
        "--out",
        &path("secrets.yaml"),
    ]);
    let secrets = secrets(&read(dir, "secrets.yaml"));
    // Another identity under the same CA, and another CA altogether.
    certs(&[
        "--ca-cert",
        &ca_cert,
        "--ca-key",
        &ca_key,
        "--controller-identity",
        "intruder.faultline.svc",
        "--format",
        "files",
        "--out",
        &path("intruder"),
    ]);
    certs(&["--format", "files", "--out", &path("rogue")]);

    let objects = render(&root().join("deploy/overlays/containerd"));
    let daemonset = object(&objects, "DaemonSet", "faultline-agent");
    let deployment = object(&objects, "Deployment", "faultline-controller");
    let (agent_secret, _) = tls_secret(daemonset);
    let (controller_secret, _) = tls_secret(deployment);
    // The agent's, the controller's, and the sidecar webhook's (the controller pods' second
    // container).
    let mut mounted: Vec<String> = [daemonset, deployment]
        .iter()
        .flat_map(|w| list(&w["spec"]["template"]["spec"]["volumes"]))
        .filter_map(|v| v["secret"]["secretName"].as_str().map(str::to_owned))
        .collect();
    mounted.sort();
    assert_eq!(
        secrets.keys().cloned().collect::<Vec<_>>(),
        mounted,
        "certs writes the Secrets the manifests mount"
    );
    assert!(mounted.contains(&agent_secret) && mounted.contains(&controller_secret));
    let controller = &secrets[&controller_secret];
    // The name the controller checks in the agent's certificate.
    let server_name = list(&list(&deployment["spec"]["template"]["spec"]["containers"])[0]["args"])
        .iter()
        .filter_map(|a| text(a).strip_prefix("--agent-server-name="))
        .next()
        .unwrap_or("faultline-agent.faultline.svc")
        .to_owned();

    let agent = Agent::start(daemonset, &secrets[&agent_secret], dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let health = |ca: &str, client: Option<(&str, &str)>, name: &str| {
        runtime.block_on(agent.health(ca, client, name))
    };
    // The controller's own client, reading the files its Secret mount holds.
    let controller_tls = dir.join("controller-tls");
    std::fs::create_dir_all(&controller_tls).unwrap();
    for (key, contents) in controller {
        std::fs::write(controller_tls.join(key), contents).unwrap();
    }
    let client = ClientTls::from_files(
        &controller_tls.join("ca.crt"),
        &controller_tls.join("tls.crt"),
        &controller_tls.join("tls.key"),
        &server_name,
    )
    .expect("the controller reads its Secret's files");
    assert_eq!(
        runtime.block_on(agent.health_with(client.config())),
        Ok(true),
        "the controller, with its Secret, gets in: {}",
        agent.log_text()
    );

    let ca = controller["ca.crt"].as_str();
    let as_controller = Some((
        controller["tls.crt"].as_str(),
        controller["tls.key"].as_str(),
    ));

    assert_eq!(
        health(ca, as_controller, &server_name),
        Ok(true),
        "the controller's Secret gets in: {}",
        agent.log_text()
    );
    let renewed = (
        read(&ca_dir, "controller.crt"),
        read(&ca_dir, "controller.key"),
    );
    assert_eq!(
        health(ca, Some((&renewed.0, &renewed.1)), &server_name),
        Ok(true),
        "a certificate renewed under the same CA gets in"
    );
    for name in [
        "faultline-agent",
        "faultline-agent.faultline.svc.cluster.local",
    ] {
        assert_eq!(
            health(ca, as_controller, name),
            Ok(true),
            "server name {name}"
        );
    }

    let rogue_dir = dir.join("rogue");
    let rogue = (
        read(&rogue_dir, "controller.crt"),
        read(&rogue_dir, "controller.key"),
    );
    let intruder_dir = dir.join("intruder");
    let intruder = (
        read(&intruder_dir, "controller.crt"),
        read(&intruder_dir, "controller.key"),
    );
    let refused = [
        (
            "a client of another CA",
            health(ca, Some((&rogue.0, &rogue.1)), &server_name),
        ),
        (
            "another identity under the same CA",
            health(ca, Some((&intruder.0, &intruder.1)), &server_name),
        ),
        ("no client certificate", health(ca, None, &server_name)),
        (
            "a client that trusts another CA",
            health(&read(&rogue_dir, "ca.crt"), as_controller, &server_name),
        ),
        (
            "a server name the agent's certificate does not carry",
            health(ca, as_controller, "faultline-agent.elsewhere.svc"),
        ),
    ];
    for (who, outcome) in refused {
        match outcome {
            Ok(serving) => panic!("{who}: let in (serving: {serving})"),
            Err(e) => eprintln!("{who}: refused: {e}"),
        }
    }
    assert!(
        agent.log_text().contains("intruder.faultline.svc"),
        "the refusal names the identity presented: {}",
        agent.log_text()
    );

    // A CA rotation: a whole new set written over both Secrets' files, as the kubelet does when
    // the Secrets change. Neither side restarts; both follow their files.
    certs(&["--out", &path("rotated.yaml")]);
    let rotated = self::secrets(&read(dir, "rotated.yaml"));
    for (secret, files) in [
        (&agent_secret, dir.join("agent-tls")),
        (&controller_secret, controller_tls.clone()),
    ] {
        for (key, contents) in &rotated[secret] {
            std::fs::write(files.join(key), contents).unwrap();
        }
    }
    // The agent checks its files at most once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        let outcome = runtime.block_on(agent.health_with(client.config()));
        if outcome == Ok(true) || Instant::now() > deadline {
            break outcome;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        outcome,
        Ok(true),
        "after a CA rotation the controller's client, unrestarted, gets in: {}",
        agent.log_text()
    );
    assert!(
        health(ca, as_controller, &server_name).is_err(),
        "after a CA rotation the old CA's client is refused"
    );
}
