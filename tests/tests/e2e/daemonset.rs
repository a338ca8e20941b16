//! The agent as its DaemonSet runs it: the image `scripts/build-images.sh` builds (here from the
//! suite's debug binaries), imported with `ctr`, run as the pod template of
//! `kubectl kustomize deploy/overlays/containerd` says (testbed::manifest_pod: privileged,
//! hostPID, its hostPath volumes, the TLS secret, the CLI's emptyDir, args, ports, probes) on
//! the testbed's containerd, whose socket stands in for the node's at the path the manifest
//! mounts it. From there it serves gRPC over mTLS on the pod IP, injects into other pods and
//! recovers, and survives a SIGKILL of its container through the journal on its hostPath.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use faultline_proto::agent::v1 as api;
use faultline_proto::agent::v1::agent_client::AgentClient;
use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use serde_json::Value;
use testbed::manifest_pod::{self, Node, Probe};
use testbed::oci_archive;
use testbed::{Pod, PodSpec, Testbed, Volume};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::Story;
use crate::agent_support::{AGENT_NAME, Pem, Pki, eventually, fault_mounts, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "daemonset::the_agent_image_runs_as_its_daemonset_and_serves_mtls",
            serves_mtls,
        ),
        (
            "daemonset::the_containerised_agent_injects_io_network_and_stress_and_recovers",
            injects_and_recovers,
        ),
        (
            "daemonset::a_sigkilled_agent_container_leaves_its_injector_serving_and_adopts_it",
            killed_and_restarted,
        ),
    ]
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/` of this build (the test binary is `target/<profile>/deps/e2e-*`).
fn target_dir() -> anyhow::Result<(PathBuf, String)> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary is not under target/<profile>/deps")?;
    let profile = profile_dir
        .file_name()
        .context("no profile directory")?
        .to_string_lossy()
        .into_owned();
    Ok((
        profile_dir.parent().context("no target dir")?.to_owned(),
        profile,
    ))
}

/// The images, built once per test process by scripts/build-images.sh from the binaries this
/// suite built (release images would mean a second, release build of everything: the script
/// makes those when run by hand), and imported into the testbed.
pub struct Images {
    pub agent: PathBuf,
}

static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
static IMAGES_LOCK: Mutex<()> = Mutex::new(());

pub fn images(tb: &Testbed) -> anyhow::Result<&'static Images> {
    let _one_at_a_time = IMAGES_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let built = IMAGES.get_or_init(|| build_and_import(tb).map_err(|e| format!("{e:#}")));
    built.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}

fn build_and_import(tb: &Testbed) -> anyhow::Result<Images> {
    let (target, profile) = target_dir()?;
    ensure!(
        profile == "debug",
        "build-images.sh --debug takes target/debug"
    );
    let out_dir = target.join("images/e2e");
    let started = Instant::now();
    let out = Command::new(root().join("scripts/build-images.sh"))
        .args(["--debug", "--out-dir"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .context("running scripts/build-images.sh")?;
    ensure!(
        out.status.success(),
        "scripts/build-images.sh --debug failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "daemonset: images built in {:.1?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let agent = out_dir.join("faultline-agent.tar");
    let started = Instant::now();
    tb.import_image(&agent)?;
    tb.import_image(&out_dir.join("faultline-controller.tar"))?;
    eprintln!(
        "daemonset: ctr images import took {:.1?}",
        started.elapsed()
    );
    Ok(Images { agent })
}

/// `kubectl kustomize deploy/overlays/containerd`, one JSON value per object.
pub fn rendered() -> anyhow::Result<Vec<Value>> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(root().join("deploy/overlays/containerd"))
        .output()
        .with_context(|| format!("running {kubectl} kustomize (scripts/setup.sh installs it)"))?;
    ensure!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut objects = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind}/{name} in the rendering"))
}

/// The agent pod of the DaemonSet on this testbed.
pub struct AgentPod {
    pub pod: Pod,
    pub pki: Pki,
    pub state_dir: PathBuf,
    pub cli_socket: PathBuf,
    pub grpc_port: u16,
    probes: Vec<Probe>,
    restarts: u32,
}

impl AgentPod {
    pub fn start(tb: &Testbed, name: &str) -> anyhow::Result<AgentPod> {
        let pki = Pki::create(&tb.base_dir().join(name).join("pki"))?;
        AgentPod::start_with(tb, name, pki)
    }

    /// With the given certificates (`pki.dir` holds `ca.pem`).
    pub fn start_with(tb: &Testbed, name: &str, pki: Pki) -> anyhow::Result<AgentPod> {
        images(tb)?;
        let objects = rendered()?;
        let daemonset = object(&objects, "DaemonSet", "faultline-agent")?;
        let base = tb.base_dir().join(name);
        std::fs::write(pki.dir.join("controller.crt"), &pki.controller.cert)?;
        std::fs::write(pki.dir.join("controller.key"), &pki.controller.key)?;
        let secret = manifest_pod::write_secret(
            &base.join("secrets"),
            "faultline-agent-tls",
            &[
                ("tls.crt", &pki.agent.cert),
                ("tls.key", &pki.agent.key),
                ("ca.crt", &pki.ca_pem),
            ],
        )?;
        // Not created here: the DaemonSet's DirectoryOrCreate does it, as on a new node.
        let state_dir = base.join("var-lib-faultline");
        let node = Node {
            name: "node-e2e".into(),
            host_paths: [
                (
                    "/run/containerd/containerd.sock".to_owned(),
                    tb.containerd_socket().to_owned(),
                ),
                ("/var/lib/faultline".to_owned(), state_dir.clone()),
            ]
            .into_iter()
            .collect(),
            secrets: [("faultline-agent-tls".to_owned(), secret)]
                .into_iter()
                .collect(),
            service_account: None,
            scratch: base.join("pod"),
        };
        let mut node = node;
        if !Path::new("/lib/modules").is_dir() {
            // This machine (a container itself) has no kernel modules directory, where every
            // real node has one: kubelet would refuse the pod (hostPath type Directory).
            let stand_in = base.join("lib-modules");
            std::fs::create_dir_all(&stand_in)?;
            node.host_paths.insert("/lib/modules".into(), stand_in);
        }
        let template = manifest_pod::from_workload(daemonset, &node)?;
        let cli_dir = template
            .empty_dirs
            .get("cli-socket")
            .context("the DaemonSet has no cli-socket emptyDir")?
            .clone();
        let grpc_port = container_port(daemonset, "grpc")?;
        let pod = tb.run_pod(template.spec.clone())?;
        let agent = AgentPod {
            pod,
            pki,
            state_dir,
            cli_socket: cli_dir.join("agent.sock"),
            grpc_port,
            probes: template.probes.clone(),
            restarts: 0,
        };
        agent.wait_ready()?;
        Ok(agent)
    }

    fn ip(&self) -> anyhow::Result<String> {
        self.pod.ip.clone().context("the agent pod has no IP")
    }

    /// Until the readiness probe passes, as kubelet would mark the pod ready; then the
    /// liveness probe must pass too.
    pub fn wait_ready(&self) -> anyhow::Result<()> {
        wait_ready(&self.ip()?, &self.probes, || self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.pod
                .log_dir
                .join(format!("{}_{}.log", self.pod.container_name, self.restarts)),
        )
        .unwrap_or_default()
    }

    /// `faultline` on the node, through the DaemonSet's CLI socket (its emptyDir).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(crate::binaries::path("faultline")?)
            .arg("--socket")
            .arg(&self.cli_socket)
            .args(args)
            .output()?)
    }

    /// `faultline` from elsewhere, over mTLS to the pod IP, with the controller's identity.
    pub fn cli_mtls(&self, args: &[&str]) -> anyhow::Result<Output> {
        let (command, rest) = args.split_first().context("no command")?;
        let (sub, rest) = if *command == "attack" {
            let (kind, rest) = rest.split_first().context("attack what")?;
            (vec![*command, *kind], rest)
        } else {
            (vec![*command], rest)
        };
        Ok(Command::new(crate::binaries::path("faultline")?)
            .args(&sub)
            .arg("--addr")
            .arg(format!("https://{}:{}", self.ip()?, self.grpc_port))
            .arg("--cert")
            .arg(self.pki.dir.join("controller.crt"))
            .arg("--key")
            .arg(self.pki.dir.join("controller.key"))
            .arg("--ca")
            .arg(self.pki.dir.join("ca.pem"))
            .args(rest)
            .output()?)
    }

    pub async fn channel(&self, client: Option<&Pem>) -> anyhow::Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pki.ca_pem))
            .domain_name(AGENT_NAME);
        if let Some(client) = client {
            tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
        }
        Ok(
            Channel::from_shared(format!("https://{}:{}", self.ip()?, self.grpc_port))?
                .tls_config(tls)?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .connect()
                .await?,
        )
    }

    pub fn journal_records(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir.join("journal"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILL of the container's process (an OOM kill, a crash), then the container started
    /// again in the same pod, as kubelet does for a DaemonSet's pod.
    fn kill_and_restart(&mut self, tb: &Testbed) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.pod.pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
        ensure!(
            eventually(Duration::from_secs(20), || self
                .pod
                .container_state()
                .is_ok_and(|(state, _)| state == "CONTAINER_EXITED")),
            "the agent container did not exit: {:?}",
            self.pod.container_state()
        );
        self.restarts += 1;
        tb.restart_main(&mut self.pod, self.restarts)?;
        self.wait_ready()
    }
}

/// Until every HTTP readiness probe of the pod passes, as kubelet would mark it ready; then
/// every HTTP liveness probe must pass too. (HTTPS probes are not run here.)
pub fn wait_ready(ip: &str, probes: &[Probe], log: impl Fn() -> String) -> anyhow::Result<()> {
    let http: Vec<&Probe> = probes.iter().filter(|p| p.scheme == "HTTP").collect();
    ensure!(
        http.iter().any(|p| p.kind == "readinessProbe"),
        "no HTTP readiness probe in {probes:?}"
    );
    for probe in http.iter().filter(|p| p.kind == "readinessProbe") {
        let mut last = String::new();
        let ready = eventually(Duration::from_secs(60), || {
            match manifest_pod::http_probe(ip, probe, Duration::from_secs(2)) {
                Ok(code) if (200..400).contains(&code) => true,
                outcome => {
                    last = format!("{outcome:?}");
                    std::thread::sleep(Duration::from_millis(200));
                    false
                }
            }
        });
        ensure!(
            ready,
            "container {} never got ready ({last}); its log: {}",
            probe.container,
            log()
        );
    }
    for probe in http.iter().filter(|p| p.kind == "livenessProbe") {
        let code = manifest_pod::http_probe(ip, probe, Duration::from_secs(2))?;
        ensure!(
            (200..400).contains(&code),
            "{} liveness probe: HTTP {code}",
            probe.container
        );
    }
    Ok(())
}

fn container_port(workload: &Value, name: &str) -> anyhow::Result<u16> {
    workload["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .map(|p| p as u16)
        .with_context(|| format!("no port {name}"))
}

fn ok(out: Output, what: &str) -> anyhow::Result<String> {
    ensure!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn serves_mtls(tb: &Testbed) -> anyhow::Result<()> {
    let images = images(tb)?;
    // The image holds what the Dockerfile's agent stage has: Debian's iptables (both backends)
    // and ipset in the base, the binaries and scripts beside each other, the entrypoint.
    let archive = oci_archive::read_archive(&images.agent)?;
    let base: Vec<&str> = archive.layers[0].iter().map(|e| e.path.as_str()).collect();
    for tool in [
        "usr/sbin/iptables-legacy",
        "usr/sbin/iptables-nft",
        "usr/sbin/ipset",
        "usr/bin/sh",
    ] {
        ensure!(base.contains(&tool), "the agent image's base has no {tool}");
    }
    ensure!(
        archive.config["Entrypoint"][0] == "/usr/local/bin/faultline-agent",
        "{}",
        archive.config
    );

    let agent = AgentPod::start(tb, "ds-mtls")?;
    // The pod is as the template says: in the host's PID namespace, privileged.
    let effective = |pid: &str| -> anyhow::Result<String> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))?
            .lines()
            .find(|l| l.starts_with("CapEff:"))
            .map(str::to_owned)
            .context("no CapEff")
    };
    let (agent_caps, root_caps) = (effective(&agent.pod.pid.to_string())?, effective("self")?);
    ensure!(
        agent_caps == root_caps,
        "the agent is not privileged: {agent_caps}, root here has {root_caps}"
    );
    let agent_pidns = std::fs::read_link(format!("/proc/{}/ns/pid", agent.pod.pid))?;
    ensure!(
        agent_pidns == std::fs::read_link("/proc/self/ns/pid")?,
        "the agent is not in the host's PID namespace"
    );
    let rt = runtime()?;
    let health = rt.block_on(async {
        let channel = agent.channel(Some(&agent.pki.controller)).await?;
        let mut client = AgentClient::new(channel);
        anyhow::Ok(client.health(api::HealthRequest {}).await?.into_inner())
    })?;
    ensure!(health.serving, "{health:?}");
    // Another identity of the same CA is refused.
    let refused = rt.block_on(async {
        let channel = agent.channel(Some(&agent.pki.stranger)).await?;
        anyhow::Ok(
            AgentClient::new(channel)
                .health(api::HealthRequest {})
                .await
                .is_err(),
        )
    });
    ensure!(
        refused.unwrap_or(true),
        "a client outside the allow-list was served"
    );
    // The CLI socket in the DaemonSet's emptyDir serves the node's `faultline`.
    ok(agent.cli(&["list"])?, "faultline list over the CLI socket")?;
    ensure!(
        agent.state_dir.is_dir(),
        "DirectoryOrCreate made no state directory"
    );
    tb.remove_pod(&agent.pod)?;
    Ok(())
}

/// A pod whose reader opened /data/book once before any fault (fd 3) and whose writer opens
/// /data/journal anew each time; outcomes go to /out.
struct Workload {
    pod: Pod,
    out: PathBuf,
}

const WORKLOAD: &str = "( exec 3</data/book; j=0; while true; do j=$((j+1)); \
    if p=$(dd bs=10 count=1 <&3 2>/out/rerr); then echo \"$j ok: $p\"; \
    else echo \"$j FAILED: $(head -n 1 /out/rerr)\"; fi >> /out/reader; sleep 0.05; done ) & \
    i=0; while true; do i=$((i+1)); \
    if echo \"line $i\" >> /data/journal 2>/out/err && tail -n 1 /data/journal > /dev/null 2>>/out/err; \
    then echo \"$i ok\"; else echo \"$i FAILED: $(tail -n 1 /out/err)\"; fi >> /out/log; sleep 0.05; done";

impl Workload {
    fn start(tb: &Testbed, name: &str) -> anyhow::Result<Workload> {
        let data = tb.host_dir(&format!("{name}-data"))?;
        let out = tb.host_dir(&format!("{name}-out"))?;
        let book: String = (1..=9999).map(|n| format!("page {n:04}\n")).collect();
        std::fs::write(data.join("book"), book)?;
        let pod = tb.run_pod(
            PodSpec::new(name)
                .container_name("app")
                .shell(WORKLOAD)
                // As kubelet places a pod: where the agent moves its helpers.
                .pod_cgroup()
                .volume(Volume::host_dir(&data, "/data"))
                .volume(Volume::host_dir(&out, "/out")),
        )?;
        let w = Workload { pod, out };
        ensure!(
            w.wait_for("reader", 0, " ok: page").is_some(),
            "the reader never read"
        );
        Ok(w)
    }

    fn lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.out.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn wait_for(&self, file: &str, skip: usize, needle: &str) -> Option<String> {
        let mut found = None;
        eventually(Duration::from_secs(15), || {
            found = self
                .lines(file)
                .into_iter()
                .skip(skip)
                .find(|l| l.contains(needle));
            found.is_some()
        });
        found
    }

    /// Three successive good lines at the end of `file`.
    fn healthy(&self, file: &str) -> bool {
        eventually(Duration::from_secs(15), || {
            let lines = self.lines(file);
            lines.len() >= 3
                && lines[lines.len() - 3..]
                    .iter()
                    .all(|l| !l.contains("FAILED"))
        })
    }
}

fn page_of(line: &str) -> Option<u32> {
    line.rsplit("page ").next()?.trim().parse().ok()
}

/// A TCP listener in a pod's network namespace (the kernel completes handshakes; nothing is
/// accepted), stopped on drop.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const PORT: u16 = 7300;

impl Listener {
    fn start(pod: &Pod) -> anyhow::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = pod.pid;
        let thread = std::thread::spawn(move || {
            let listener = (|| -> anyhow::Result<TcpListener> {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(TcpListener::bind(("0.0.0.0", PORT))?)
            })();
            let (held, reply) = match listener {
                Ok(l) => (Some(l), Ok(())),
                Err(e) => (None, Err(e.to_string())),
            };
            let _ = tx.send(reply);
            while held.is_some() && !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(held);
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("the listener did not start")?
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fastest of five TCP connects from `from` to `to`: a delay on `from`'s egress sets a
/// floor under every handshake.
fn fastest_connect(from: &Pod, to: Ipv4Addr) -> anyhow::Result<Duration> {
    let pid = from.pid;
    std::thread::spawn(move || -> anyhow::Result<Duration> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        drop(ns);
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let conn =
                TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), Duration::from_secs(5))?;
            best = best.min(start.elapsed());
            drop(conn);
        }
        Ok(best)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the connect thread panicked"))?
}

/// The pod's iptables rules (both backends) as `iptables-*-save` prints them, counters left out.
fn iptables_rules(pod: &Pod) -> anyhow::Result<String> {
    let mut rules = String::new();
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(pod.sandbox_pid.to_string())
            .arg("-n")
            .arg(save)
            .output()?;
        ensure!(out.status.success(), "{save}: {out:?}");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("-A") {
                rules.push_str(line);
                rules.push('\n');
            }
        }
    }
    Ok(rules)
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X")
    })
}

/// The cgroup path of `pid` in the hierarchy with `controller`.
fn cgroup_of(pid: u32, controller: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
}

fn injects_and_recovers(tb: &Testbed) -> anyhow::Result<()> {
    let agent = AgentPod::start(tb, "ds-faults")?;
    let w = Workload::start(tb, "ds-target")?;
    let peer = tb.run_pod(PodSpec::new("ds-peer").shell("sleep 100000"))?;

    // IO: the node's CLI through the DaemonSet's socket; the reader's descriptor from before
    // the fault is handed over and fails too; after recovery it goes on from its offset.
    let (log_mark, reader_mark) = (w.lines("log").len(), w.lines("reader").len());
    let id = ok(
        agent.cli(&[
            "attack",
            "io",
            "--container",
            &w.pod.container_uri(),
            "--path",
            "/data",
            "--errno",
            "5",
            "--methods",
            "read,write",
        ])?,
        "faultline attack io",
    )?;
    w.wait_for("log", log_mark, "FAILED")
        .with_context(|| format!("the writer never saw the fault: {}", agent.log()))?;
    w.wait_for("reader", reader_mark, "FAILED")
        .with_context(|| {
            format!(
                "the reader's held descriptor never saw the fault: {}",
                agent.log()
            )
        })?;
    let last_good = w
        .lines("reader")
        .iter()
        .filter(|l| l.contains(" ok: page"))
        .filter_map(|l| page_of(l))
        .next_back()
        .context("no good page")?;
    ok(agent.cli(&["recover", &id])?, "faultline recover")?;
    ensure!(w.healthy("log"), "the writer did not recover");
    let reader_mark = w.lines("reader").len();
    let resumed = w
        .wait_for("reader", reader_mark, " ok: page")
        .context("the reader did not recover")?;
    let first_after: Vec<String> = w
        .lines("reader")
        .into_iter()
        .skip_while(|l| !l.contains("FAILED"))
        .filter(|l| l.contains(" ok: page"))
        .collect();
    ensure!(
        first_after.first().and_then(|l| page_of(l)) == Some(last_good + 1),
        "the reader resumed at {:?}, expected page {} (its offset moved); now {resumed}; its log: {:?}",
        first_after.first(),
        last_good + 1,
        w.lines("reader")
    );
    ensure!(
        fault_mounts(w.pod.pid).is_empty(),
        "{:?}",
        fault_mounts(w.pod.pid)
    );

    // Network: a 100 ms delay on the target's egress, over mTLS from off the node.
    let peer_ip = peer.ipv4().context("the peer has no IP")?;
    let _listener = Listener::start(&peer)?;
    let rules_before = iptables_rules(&w.pod)?;
    let base = fastest_connect(&w.pod, peer_ip)?;
    let id = ok(
        agent.cli_mtls(&[
            "attack",
            "network",
            "delay",
            "--container",
            &w.pod.container_uri(),
            "--pod-uid",
            &w.pod.uid,
            "--latency",
            "100ms",
        ])?,
        "faultline attack network delay over mTLS",
    )?;
    // The experiment's ID, then what is in force.
    let id = id.split_whitespace().next().unwrap_or_default().to_owned();
    let delayed = fastest_connect(&w.pod, peer_ip)?;
    eprintln!("daemonset: connect {base:?} -> {delayed:?} with a 100 ms delay");
    ensure!(
        delayed >= Duration::from_millis(90),
        "connects took {delayed:?} with a 100 ms delay (before: {base:?}); agent: {}",
        agent.log()
    );
    ok(
        agent.cli_mtls(&["recover", &id])?,
        "faultline recover over mTLS",
    )?;
    ensure!(
        iptables_rules(&w.pod)? == rules_before,
        "the pod's rules after recovery:\n{}\nbefore:\n{rules_before}",
        iptables_rules(&w.pod)?
    );
    let after = fastest_connect(&w.pod, peer_ip)?;
    ensure!(
        after < Duration::from_millis(90),
        "connects still take {after:?}"
    );

    // Stress: Chaos Mesh's ExecStressors over mTLS; the stressor is charged to the target.
    let rt = runtime()?;
    let (response, target_cgroup) = rt.block_on(async {
        let mut daemon = ChaosDaemonClient::new(agent.channel(Some(&agent.pki.controller)).await?);
        let response = daemon
            .exec_stressors(pb::ExecStressRequest {
                scope: pb::exec_stress_request::Scope::Container as i32,
                target: w.pod.container_uri(),
                cpu_stressors: "--cpu 1 --cpu-load 10".into(),
                enter_ns: true,
                ..Default::default()
            })
            .await
            .with_context(|| format!("ExecStressors; agent: {}", agent.log()))?
            .into_inner();
        anyhow::Ok((response, cgroup_of(w.pod.pid, "cpu")))
    })?;
    let pid: u32 = response
        .cpu_instance
        .parse()
        .with_context(|| format!("{response:?}"))?;
    ensure!(
        running(pid) && cgroup_of(pid, "cpu") == target_cgroup,
        "the stressor {pid} is in {:?}, the target in {target_cgroup:?}",
        cgroup_of(pid, "cpu")
    );
    rt.block_on(async {
        let mut daemon = ChaosDaemonClient::new(agent.channel(Some(&agent.pki.controller)).await?);
        daemon
            .cancel_stressors(pb::CancelStressRequest {
                cpu_instance_uid: response.cpu_instance_uid.clone(),
                ..Default::default()
            })
            .await?;
        anyhow::Ok(())
    })?;
    ensure!(
        eventually(Duration::from_secs(10), || !running(pid)),
        "the stressor {pid} survived its cancel"
    );

    ensure!(
        ok(agent.cli(&["list"])?, "faultline list")?.is_empty(),
        "experiments left"
    );
    ensure!(
        agent.journal_records().is_empty(),
        "{:?}",
        agent.journal_records()
    );
    tb.remove_pod(&peer)?;
    tb.remove_pod(&w.pod)?;
    tb.remove_pod(&agent.pod)?;
    Ok(())
}

/// Issue 23: the agent's container is SIGKILLed (an OOM kill, a crash) while an IO fault is in
/// force. The runtime kills every process left in that container's cgroup (the agent runs in
/// the host's PID namespace), so an injector left there died with it and the pod saw ENOTCONN
/// until the next agent recovered. The injector now lives in its target's pod cgroup: it keeps
/// the fault in force, the restarted container adopts it from the journal on its hostPath, and
/// the workload never sees ENOTCONN; an explicit recovery then ends it as any other.
fn killed_and_restarted(tb: &Testbed) -> anyhow::Result<()> {
    let mut agent = AgentPod::start(tb, "ds-killed")?;
    let w = Workload::start(tb, "ds-crash")?;
    let mark = w.lines("log").len();
    ok(
        agent.cli(&[
            "attack",
            "io",
            "--container",
            &w.pod.container_uri(),
            "--path",
            "/data",
            "--errno",
            "5",
            "--methods",
            "write",
        ])?,
        "faultline attack io",
    )?;
    w.wait_for("log", mark, "FAILED")
        .context("the writer never saw the fault")?;
    let records = agent.journal_records();
    ensure!(records.len() == 1, "journal: {records:?}");
    let injector = journaled_injector(&agent, &records[0])?;
    let pod_cgroup = &w
        .pod
        .cgroup
        .as_ref()
        .context("the workload has no pod cgroup")?
        .path;
    let memberships = std::fs::read_to_string(format!("/proc/{injector}/cgroup"))?;
    ensure!(
        memberships
            .lines()
            .filter(|l| !l.starts_with("0::"))
            .all(|l| l.contains(pod_cgroup.as_str())),
        "the injector {injector} is not in the pod cgroup {pod_cgroup}: {memberships}"
    );

    agent.kill_and_restart(tb)?;
    ensure!(
        running(injector),
        "the injector {injector} died with the agent's container; the agent said: {}",
        agent.log()
    );
    ensure!(
        eventually(Duration::from_secs(10), || agent
            .log()
            .contains("IO fault adopted")),
        "the restarted agent did not adopt the injector: {}",
        agent.log()
    );
    // The fault stayed in force throughout: EIO, never a dead mount.
    let after_kill = w.lines("log").into_iter().skip(mark).collect::<Vec<_>>();
    let dead_mount: Vec<&String> = after_kill
        .iter()
        .filter(|l| l.contains("not connected"))
        .collect();
    ensure!(
        dead_mount.is_empty(),
        "the writer saw a dead mount while the agent was down: {dead_mount:?}"
    );
    let mark = w.lines("log").len();
    w.wait_for("log", mark, "Input/output error")
        .context("the fault is not in force after the adoption")?;
    ensure!(
        ok(agent.cli(&["list"])?, "faultline list")?.contains("/data"),
        "the adopted experiment is not listed"
    );

    ok(agent.cli(&["recover", "--all"])?, "faultline recover --all")?;
    ensure!(
        fault_mounts(w.pod.pid).is_empty(),
        "the mount stays after recovery: {:?}",
        fault_mounts(w.pod.pid)
    );
    ensure!(
        eventually(Duration::from_secs(5), || !running(injector)),
        "the injector {injector} outlived its recovery"
    );
    ensure!(
        w.healthy("log"),
        "the writer did not recover: {:?}",
        w.lines("log").iter().rev().take(3).collect::<Vec<_>>()
    );
    ensure!(
        agent.journal_records().is_empty(),
        "journal: {:?}",
        agent.journal_records()
    );
    ensure!(
        ok(agent.cli(&["list"])?, "faultline list")?.is_empty(),
        "experiments left"
    );
    tb.remove_pod(&w.pod)?;
    tb.remove_pod(&agent.pod)?;
    Ok(())
}

/// The injector's PID as the journal record `name` names it.
fn journaled_injector(agent: &AgentPod, name: &str) -> anyhow::Result<u32> {
    let path = agent.state_dir.join("journal").join(name);
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    record
        .pointer("/fault/injector/pid")
        .and_then(Value::as_u64)
        .and_then(|pid| u32::try_from(pid).ok())
        .with_context(|| format!("no injector in {}: {record}", path.display()))
}
