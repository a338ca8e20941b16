//! `faultline`: the command line of a node agent (like chaosd): attack, list, recover.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use agent::client::{ClientTls, connect_tls, connect_unix};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use faultline_proto::agent::v1 as api;
use faultline_proto::agent::v1::agent_client::AgentClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

#[path = "faultline/network.rs"]
mod network;

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "Inject and recover faults through a faultline agent"
)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Connection {
    /// The agent's local unix socket.
    #[arg(long, global = true, default_value = "/run/faultline/agent.sock")]
    socket: PathBuf,
    /// Reach the agent over mTLS instead, e.g. https://10.0.0.5:31767.
    #[arg(long, global = true, requires_all = ["cert", "key", "ca"])]
    addr: Option<String>,
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// The agent certificate's DNS name.
    #[arg(long, global = true, default_value = "faultline-agent")]
    server_name: String,
}

#[derive(Subcommand)]
enum Command {
    /// Inject a fault.
    Attack {
        #[command(subcommand)]
        kind: Attack,
    },
    /// List active experiments.
    List,
    /// Recover an experiment (or all of them).
    Recover {
        /// The experiment id.
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// The agent's health and versions.
    Health,
}

#[derive(Subcommand)]
enum Attack {
    /// IO faults on a container's volume.
    Io(Box<IoAttack>),
    /// Network faults on a pod's traffic: delay, loss, duplicate, corrupt, reorder, bandwidth,
    /// partition.
    Network(Box<network::NetworkAttack>),
    /// Shift the clocks a container's processes read (through the vDSO), also of processes
    /// started in it later.
    Time(Box<TimeAttack>),
    /// CPU and/or memory stress charged to a container's (or its pod's) cgroups.
    Stress(Box<StressAttack>),
    /// SIGKILL every process of a container, through its runtime.
    Kill(KillAttack),
    /// DNS faults on a pod: a responder in its network namespace fails (`error`) or fakes
    /// (`random`) the lookups of the names the patterns cover; the rest resolve as before.
    Dns(DnsAttack),
    /// HTTP faults on a pod's server ports: a proxy in its network namespace aborts, delays,
    /// replaces or patches the selected requests or responses.
    Http(Box<HttpAttack>),
}

#[derive(Args)]
struct HttpAttack {
    /// The container: containerd://ID, cri-o://ID, docker://ID or a bare ID (its pod is hit).
    #[arg(long)]
    container: String,
    /// A port of the pod whose incoming traffic goes through the proxy (repeat).
    #[arg(long = "port", required = true)]
    ports: Vec<u32>,
    /// Request or Response.
    #[arg(long, default_value = "Request")]
    target: String,
    /// Only this path (glob: `*`, `?`).
    #[arg(long)]
    path: Option<String>,
    /// Only this method.
    #[arg(long)]
    method: Option<String>,
    /// Only responses with this status (Response target).
    #[arg(long)]
    code: Option<u16>,
    /// Close the connection without an answer.
    #[arg(long)]
    abort: bool,
    /// Delay (a Go duration, e.g. 400ms).
    #[arg(long)]
    delay: Option<String>,
    /// Replace the status (Response target).
    #[arg(long)]
    replace_code: Option<u16>,
    /// Replace the body with this text.
    #[arg(long)]
    replace_body: Option<String>,
    /// Add a header, NAME=VALUE (repeat).
    #[arg(long = "patch-header")]
    patch_headers: Vec<String>,
    /// The whole rules JSON (Chaos Mesh's tproxy format) instead of the flags above.
    #[arg(long, conflicts_with_all = ["path", "method", "code", "abort", "delay", "replace_code", "replace_body", "patch_headers"])]
    rules: Option<String>,
    /// HTTPS: the certificate (PEM) the proxy shows clients on these ports.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// HTTPS: its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// HTTPS: the CA (PEM) the real server is verified with (default: the Web PKI roots).
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// Recover by itself after this long (e.g. 30s).
    #[arg(long)]
    duration: Option<humantime::Duration>,
}

impl HttpAttack {
    /// Chaos Mesh's tls JSON from the PEM files given (empty: none).
    fn tls(&self) -> anyhow::Result<String> {
        use base64::Engine;
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(String::new());
        };
        let item = |path: &std::path::Path| -> anyhow::Result<serde_json::Value> {
            let pem =
                std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(serde_json::json!({
                "type": "Contents",
                "value": base64::engine::general_purpose::STANDARD.encode(pem),
            }))
        };
        let mut tls = serde_json::json!({"cert_file": item(cert)?, "key_file": item(key)?});
        if let Some(ca) = &self.tls_ca {
            tls["ca_file"] = item(ca)?;
        }
        Ok(tls.to_string())
    }
}

impl HttpAttack {
    /// One rule from the flags, in Chaos Mesh's format (checked by the same parser the agent
    /// uses before anything is sent).
    fn rules(&self) -> anyhow::Result<String> {
        if let Some(rules) = &self.rules {
            return Ok(rules.clone());
        }
        let mut selector = serde_json::Map::new();
        if let Some(path) = &self.path {
            selector.insert("path".into(), path.clone().into());
        }
        if let Some(method) = &self.method {
            selector.insert("method".into(), method.clone().into());
        }
        if let Some(code) = self.code {
            selector.insert("code".into(), code.into());
        }
        let mut actions = serde_json::Map::new();
        if self.abort {
            actions.insert("abort".into(), true.into());
        }
        if let Some(delay) = &self.delay {
            actions.insert("delay".into(), delay.clone().into());
        }
        let mut replace = serde_json::Map::new();
        if let Some(code) = self.replace_code {
            replace.insert("code".into(), code.into());
        }
        if let Some(body) = &self.replace_body {
            replace.insert(
                "body".into(),
                serde_json::json!({"type": "TEXT", "value": body}),
            );
        }
        if !replace.is_empty() {
            actions.insert("replace".into(), replace.into());
        }
        let headers = self
            .patch_headers
            .iter()
            .map(|h| {
                h.split_once('=')
                    .map(|(k, v)| serde_json::json!([k, v]))
                    .ok_or_else(|| anyhow::anyhow!("--patch-header {h:?}: NAME=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !headers.is_empty() {
            actions.insert("patch".into(), serde_json::json!({"headers": headers}));
        }
        Ok(serde_json::json!([{
            "target": self.target,
            "selector": selector,
            "actions": actions,
        }])
        .to_string())
    }
}

#[derive(Args)]
struct DnsAttack {
    /// The container: containerd://ID, cri-o://ID, docker://ID or a bare ID (its pod is hit).
    #[arg(long)]
    container: String,
    /// error (lookups fail with SERVFAIL) or random (a random address).
    #[arg(long, default_value = "error")]
    action: String,
    /// A domain pattern (repeat or comma-separate): `?` one character, `*` any run, e.g.
    /// '*.example.com'. None: every name.
    #[arg(long = "pattern", value_delimiter = ',')]
    patterns: Vec<String>,
    /// Recover by itself after this long (e.g. 30s).
    #[arg(long)]
    duration: Option<humantime::Duration>,
}

#[derive(Args)]
struct StressAttack {
    /// The container: containerd://ID, cri-o://ID, docker://ID or a bare ID.
    #[arg(long)]
    container: String,
    /// Charge the stressors to the container's pod cgroup instead of the container's.
    #[arg(long)]
    pod: bool,
    /// CPU workers (0 = one per CPU).
    #[arg(long)]
    cpu_workers: Option<u32>,
    /// Load of each CPU worker, in percent of one CPU (0-100).
    #[arg(long)]
    cpu_load: Option<u32>,
    /// Memory to hold, in total: e.g. 256MiB, 1G, or 50% of the cgroup's limit.
    #[arg(long)]
    memory_size: Option<String>,
    /// Memory workers (threads sharing the size).
    #[arg(long, requires = "memory_size")]
    memory_workers: Option<u32>,
    /// Take this long to reach the memory size (e.g. 10s).
    #[arg(long, requires = "memory_size")]
    memory_growth: Option<humantime::Duration>,
    /// Raw CPU options instead of the flags above (stress-ng style: "--cpu 2 --cpu-load 50").
    #[arg(long, conflicts_with_all = ["cpu_workers", "cpu_load"])]
    cpu_stressors: Option<String>,
    /// Raw memory options instead of the flags above ("--size 256MiB" or "--vm 1 --vm-bytes 1G").
    #[arg(long, conflicts_with_all = ["memory_size", "memory_workers", "memory_growth"])]
    memory_stressors: Option<String>,
    /// The stressors' oom_score_adj (-1000 to 1000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    oom_score_adj: i32,
    /// Recover by itself after this long (e.g. 30s, 5m).
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// Validate and print the plan; start nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct TimeAttack {
    /// containerd://ID, cri-o://ID, docker://ID or a bare ID.
    #[arg(long)]
    container: String,
    /// A signed Go duration: -5m, 24h, -1.5s.
    #[arg(long, allow_hyphen_values = true)]
    offset: String,
    /// Comma-separated clock names (default CLOCK_REALTIME).
    #[arg(long, value_delimiter = ',')]
    clocks: Vec<String>,
    /// Update the offset of this running time experiment instead of starting one.
    #[arg(long)]
    id: Option<String>,
    /// Recover by itself after this long (e.g. 30s).
    #[arg(long)]
    duration: Option<humantime::Duration>,
    #[arg(long)]
    dry_run: bool,
}

impl StressAttack {
    /// The option strings the agent parses (and validates: the CLI passes numbers through, so
    /// a bad load is refused by the agent with the same words as for any client).
    fn stressors(&self) -> anyhow::Result<(String, String)> {
        let cpu = match (&self.cpu_stressors, self.cpu_workers, self.cpu_load) {
            (Some(raw), _, _) => raw.clone(),
            (None, None, None) => String::new(),
            (None, workers, load) => {
                let mut options = format!("--cpu {}", workers.unwrap_or(1));
                if let Some(load) = load {
                    options.push_str(&format!(" --cpu-load {load}"));
                }
                options
            }
        };
        let memory = match (&self.memory_stressors, &self.memory_size) {
            (Some(raw), _) => raw.clone(),
            (None, None) => String::new(),
            (None, Some(size)) => {
                let mut options = format!("--size {size}");
                if let Some(workers) = self.memory_workers {
                    options.push_str(&format!(" --workers {workers}"));
                }
                if let Some(growth) = self.memory_growth {
                    options.push_str(&format!(" --time {growth}"));
                }
                options
            }
        };
        if cpu.trim().is_empty() && memory.trim().is_empty() {
            bail!(
                "no stressor given: use --cpu-workers/--cpu-load, --memory-size, --cpu-stressors or --memory-stressors"
            );
        }
        Ok((cpu, memory))
    }
}

#[derive(Args)]
struct KillAttack {
    /// The container: containerd://ID, cri-o://ID, docker://ID or a bare ID.
    #[arg(long)]
    container: String,
    /// Resolve the container and print what would be done; kill nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct IoAttack {
    /// The container: containerd://ID, cri-o://ID, docker://ID or a bare ID.
    #[arg(long)]
    container: String,
    /// The volume path inside the container.
    #[arg(long)]
    path: String,
    /// Files the faults apply to (glob; `**` crosses directories). Default: the whole volume.
    #[arg(long)]
    file: Option<String>,
    /// Operations to affect, comma-separated (e.g. read,write,open). Default: all.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Share of matching operations affected, 1-100.
    #[arg(long, default_value_t = 100)]
    percent: u32,
    /// Fail operations with this errno (e.g. 5 = EIO).
    #[arg(long)]
    errno: Option<i32>,
    /// Delay operations by this long (e.g. 50ms).
    #[arg(long)]
    latency: Option<String>,
    /// Report this permission (octal, e.g. 444).
    #[arg(long)]
    attr_perm: Option<String>,
    /// Report this size.
    #[arg(long)]
    attr_size: Option<u64>,
    /// Report this owner uid.
    #[arg(long)]
    attr_uid: Option<u32>,
    /// Report this owner gid.
    #[arg(long)]
    attr_gid: Option<u32>,
    /// Report this link count.
    #[arg(long)]
    attr_nlink: Option<u32>,
    /// Corrupt read data: zero or random.
    #[arg(long)]
    mistake_filling: Option<String>,
    /// Corrupted regions per operation.
    #[arg(long, default_value_t = 1)]
    mistake_max_occurrences: u32,
    /// Longest corrupted region, in bytes.
    #[arg(long, default_value_t = 1)]
    mistake_max_length: u32,
    /// Raw Chaos Mesh IOChaos actions JSON instead of the flags above.
    #[arg(long, conflicts_with_all = ["errno", "latency", "attr_perm", "mistake_filling"])]
    actions: Option<String>,
    /// Recover by itself after this long (e.g. 30s, 5m).
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// Validate and print the plan; inject nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not hand files, working directories and mappings that processes opened before the
    /// experiment over to the fault mount (only opens made after it see the fault).
    #[arg(long)]
    no_handover: bool,
}

impl IoAttack {
    fn actions(&self) -> anyhow::Result<String> {
        if let Some(raw) = &self.actions {
            return Ok(raw.clone());
        }
        let glob = self
            .file
            .clone()
            .unwrap_or_else(|| format!("{}/**", self.path.trim_end_matches('/')));
        let base = |kind: &str| {
            let mut action = json!({"type": kind, "path": glob, "percent": self.percent});
            if !self.methods.is_empty() {
                action["methods"] = json!(self.methods);
            }
            action
        };
        let mut actions = Vec::new();
        if let Some(errno) = self.errno {
            let mut a = base("fault");
            a["faults"] = json!([{"errno": errno, "weight": 1}]);
            actions.push(a);
        }
        if let Some(latency) = &self.latency {
            let mut a = base("latency");
            a["latency"] = json!(latency);
            actions.push(a);
        }
        let mut attr = serde_json::Map::new();
        if let Some(perm) = &self.attr_perm {
            let perm = u32::from_str_radix(perm.trim_start_matches("0o"), 8)
                .with_context(|| format!("--attr-perm {perm:?}: expected octal like 444"))?;
            attr.insert("perm".into(), json!(perm));
        }
        for (name, value) in [
            ("size", self.attr_size.map(Value::from)),
            ("uid", self.attr_uid.map(Value::from)),
            ("gid", self.attr_gid.map(Value::from)),
            ("nlink", self.attr_nlink.map(Value::from)),
        ] {
            if let Some(value) = value {
                attr.insert(name.into(), value);
            }
        }
        if !attr.is_empty() {
            let mut a = base("attrOverride");
            a["attr"] = Value::Object(attr);
            actions.push(a);
        }
        if let Some(filling) = &self.mistake_filling {
            let mut a = base("mistake");
            a["mistake"] = json!({"filling": filling, "maxOccurrences": self.mistake_max_occurrences, "maxLength": self.mistake_max_length});
            actions.push(a);
        }
        if actions.is_empty() {
            bail!(
                "no fault given: use --errno, --latency, --attr-*, --mistake-filling or --actions"
            );
        }
        Ok(Value::Array(actions).to_string())
    }
}

async fn channel(connection: &Connection) -> anyhow::Result<Channel> {
    Ok(match &connection.addr {
        Some(addr) => {
            let (Some(cert), Some(key), Some(ca)) =
                (&connection.cert, &connection.key, &connection.ca)
            else {
                bail!("--addr needs --cert, --key and --ca");
            };
            let tls = ClientTls {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                server_name: connection.server_name.clone(),
            };
            connect_tls(addr, &tls).await?
        }
        None => connect_unix(&connection.socket).await?,
    })
}

fn explain(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut client = AgentClient::new(channel(&cli.connection).await?);
    let client = &mut client;
    match cli.command {
        Command::Attack { kind } => match kind {
            Attack::Io(attack) => attack_io(client, *attack).await,
            Attack::Stress(attack) => attack_stress(client, *attack).await,
            Attack::Kill(attack) => attack_kill(client, attack).await,
            Attack::Network(attack) => attack_network(client, *attack).await,
            Attack::Dns(attack) => attack_dns(client, attack).await,
            Attack::Http(attack) => attack_http(client, *attack).await,
            Attack::Time(attack) => attack_time(client, *attack).await,
        },
        Command::List => list(client).await,
        Command::Recover { id, all } => recover(client, id, all).await,
        Command::Health => health(client).await,
    }
}

type Client = AgentClient<Channel>;

async fn attack_io(client: &mut Client, attack: IoAttack) -> anyhow::Result<()> {
    let request = api::StartIoExperimentRequest {
        container_id: attack.container.clone(),
        volume: attack.path.clone(),
        actions: attack.actions()?,
        duration_ms: attack
            .duration
            .map(|d| Duration::from(d).as_millis() as u64)
            .unwrap_or(0),
        dry_run: attack.dry_run,
        no_handover: attack.no_handover,
    };
    let response = client
        .start_io_experiment(request)
        .await
        .map_err(explain)?
        .into_inner();
    if attack.dry_run {
        println!("dry run: {}", response.plan);
    } else {
        println!("{}", response.id);
        eprintln!("{}", response.plan);
    }
    Ok(())
}

async fn attack_time(client: &mut Client, attack: TimeAttack) -> anyhow::Result<()> {
    let response = client
        .start_time_experiment(api::StartTimeExperimentRequest {
            container_id: attack.container.clone(),
            offset: attack.offset.clone(),
            clock_ids: attack.clocks.clone(),
            duration_ms: attack
                .duration
                .map(|d| Duration::from(d).as_millis() as u64)
                .unwrap_or(0),
            dry_run: attack.dry_run,
            id: attack.id.clone().unwrap_or_default(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    if attack.dry_run {
        println!("dry run: {}", response.plan);
    } else {
        println!("{}", response.id);
        eprintln!("{}", response.plan);
    }
    Ok(())
}

async fn attack_stress(client: &mut Client, attack: StressAttack) -> anyhow::Result<()> {
    let (cpu_stressors, memory_stressors) = attack.stressors()?;
    let response = client
        .start_stress_experiment(api::StartStressExperimentRequest {
            container_id: attack.container.clone(),
            pod_scope: attack.pod,
            cpu_stressors,
            memory_stressors,
            oom_score_adj: attack.oom_score_adj,
            duration_ms: attack
                .duration
                .map(|d| Duration::from(d).as_millis() as u64)
                .unwrap_or(0),
            dry_run: attack.dry_run,
        })
        .await
        .map_err(explain)?
        .into_inner();
    if attack.dry_run {
        println!("dry run: {}", response.plan);
    } else {
        for instance in &response.instances {
            println!("{}", instance.id);
            eprintln!(
                "{} stressor pid {}: {} in {}",
                instance.kind,
                instance.pid,
                instance.summary,
                instance.cgroups.join(", ")
            );
        }
    }
    Ok(())
}

async fn attack_kill(client: &mut Client, attack: KillAttack) -> anyhow::Result<()> {
    let response = client
        .kill_container(api::KillContainerRequest {
            container_id: attack.container.clone(),
            dry_run: attack.dry_run,
        })
        .await
        .map_err(explain)?
        .into_inner();
    if attack.dry_run {
        println!("dry run: {}", response.plan);
    } else {
        println!("{}", response.plan);
    }
    Ok(())
}

async fn attack_network(client: &mut Client, attack: network::NetworkAttack) -> anyhow::Result<()> {
    let request = attack.request()?;
    let dry_run = request.dry_run;
    let response = client
        .start_network_experiment(request)
        .await
        .map_err(explain)?
        .into_inner();
    if dry_run {
        println!("dry run: {}", response.plan);
    } else if response.id.is_empty() {
        println!("{}", response.plan);
    } else {
        println!("{}\n{}\n{}", response.id, response.plan, response.status);
    }
    Ok(())
}

async fn attack_dns(client: &mut Client, attack: DnsAttack) -> anyhow::Result<()> {
    // Checked here too, so a typo is named before anything is sent.
    dns_responder::ResponderSpec::parse(&attack.action, &attack.patterns)?;
    let response = client
        .start_dns_experiment(api::StartDnsExperimentRequest {
            container_id: attack.container.clone(),
            action: attack.action.clone(),
            patterns: attack.patterns.clone(),
            duration_ms: attack
                .duration
                .map(|d| Duration::from(d).as_millis() as u64)
                .unwrap_or(0),
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!("{}", response.id);
    eprintln!("{}", response.plan);
    Ok(())
}

async fn attack_http(client: &mut Client, attack: HttpAttack) -> anyhow::Result<()> {
    let rules = attack.rules()?;
    let tls = attack.tls()?;
    http_chaos::HttpChaosSpec::parse(&rules, &attack.ports, &tls)?;
    let response = client
        .start_http_experiment(api::StartHttpExperimentRequest {
            container_id: attack.container.clone(),
            rules,
            proxy_ports: attack.ports.clone(),
            tls,
            duration_ms: attack
                .duration
                .map(|d| Duration::from(d).as_millis() as u64)
                .unwrap_or(0),
        })
        .await
        .map_err(explain)?
        .into_inner();
    println!("{}", response.id);
    eprintln!("{}", response.plan);
    Ok(())
}

async fn list(client: &mut Client) -> anyhow::Result<()> {
    let response = client
        .list_experiments(api::ListExperimentsRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    if response.experiments.is_empty() {
        eprintln!("no active experiments");
    }
    for e in response.experiments {
        let deadline = if e.deadline_unix_ms > 0 {
            format!(
                "until {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(e.deadline_unix_ms as u64)
                )
            )
        } else {
            "until recovered".into()
        };
        println!(
            "{}\t{}\t{}\t{}\tpid {}\tsince {}\t{}\n\trules: {}\n\thelper: {}",
            e.id,
            e.kind,
            e.container_id,
            e.volume,
            e.target_pid,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(e.since_unix_ms as u64)
            ),
            deadline,
            e.rules,
            e.injector_status
        );
        if let Some(h) = e.handover.as_ref().filter(|h| h.enabled) {
            println!(
                "\thandover: {} fds, {} cwds, {} mappings moved; {} of {} processes stopped (longest {} µs)",
                h.fds, h.cwds, h.mappings, h.stopped, h.scanned, h.longest_stop_us
            );
            for skip in &h.skipped {
                println!(
                    "\t  skipped pid {} {}: {}",
                    skip.pid, skip.what, skip.reason
                );
            }
        }
    }
    Ok(())
}

async fn recover(client: &mut Client, id: Option<String>, all: bool) -> anyhow::Result<()> {
    let request = match (id, all) {
        (Some(id), false) => api::RecoverRequest { id, all: false },
        (None, true) => api::RecoverRequest {
            id: String::new(),
            all: true,
        },
        _ => bail!("give an experiment id or --all"),
    };
    let response = client.recover(request).await.map_err(explain)?.into_inner();
    for id in &response.recovered {
        println!("recovered {id}");
    }
    for problem in &response.problems {
        eprintln!("not recovered: {problem}");
    }
    if !response.problems.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

async fn health(client: &mut Client) -> anyhow::Result<()> {
    let h = client
        .health(api::HealthRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    println!(
        "serving: {}\nversion: {}\nkernel: {}\nfuse passthrough: {}\nnetem: {}\nactive experiments: {}",
        h.serving, h.version, h.kernel, h.fuse_passthrough, h.netem, h.active_experiments
    );
    Ok(())
}
