//! DNS chaos end to end: an upstream DNS server (Debian's dnsmasq, started by the story on the
//! testbed bridge's gateway address) with a few records; a pod whose resolv.conf names it; busybox
//! nslookup in the pod is the client. Our DNSChaos (a responder in the pod's network namespace
//! plus a redirect) and Chaos Mesh's SetDNSServer, driven over mTLS as a controller would.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use testbed::{Pod, PodSpec, Testbed};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, eventually, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "dns::error_and_random_hit_only_the_patterns_and_recovery_is_exact",
            error_and_random,
        ),
        (
            "dns::agent_crash_keeps_the_pod_resolving_and_restart_recovers",
            agent_crash,
        ),
        (
            "dns::a_killed_responder_takes_its_redirect_with_it",
            responder_killed,
        ),
        ("dns::set_dns_server_as_chaos_mesh_sends_it", set_dns_server),
        ("dns::cli_attack_with_duration_recovers_by_itself", cli),
        (
            "dns::an_ipv6_nameserver_is_covered_through_ip6tables",
            ipv6_nameserver,
        ),
    ]
}

/// The zone the upstream serves.
const DB: (&str, Ipv4Addr) = ("db.example.com", Ipv4Addr::new(10, 44, 0, 7));
const WEB: (&str, Ipv4Addr) = ("web.example.com", Ipv4Addr::new(10, 44, 0, 9));
const API: (&str, Ipv4Addr) = ("api.other.test", Ipv4Addr::new(10, 44, 0, 8));

/// dnsmasq on the bridge's gateway address, answering the zone above and nothing else. One
/// for every story running at the same time (they share the testbed's bridge): the last one
/// to finish stops it.
struct Upstream {
    child: Child,
}

static SHARED_UPSTREAM: Mutex<Weak<Upstream>> = Mutex::new(Weak::new());

impl Upstream {
    /// Needs a pod to exist already (CNI creates the bridge, and its address, with the first).
    fn shared(tb: &Testbed) -> anyhow::Result<Arc<Upstream>> {
        let mut shared = SHARED_UPSTREAM
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        if let Some(upstream) = shared.upgrade() {
            return Ok(upstream);
        }
        // The previous one may still be on its way out: a few tries.
        let mut last = None;
        for _ in 0..20 {
            match Upstream::start(tb) {
                Ok(upstream) => {
                    let upstream = Arc::new(upstream);
                    *shared = Arc::downgrade(&upstream);
                    return Ok(upstream);
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("dnsmasq did not start")))
    }

    /// dnsmasq answering the zone's records on `address` (v4 or v6), nothing else.
    fn spawn(address: &str) -> anyhow::Result<Upstream> {
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
            "--log-facility=-",
        ])
        .arg(format!("--listen-address={address}"));
        for (name, ip) in [DB, WEB, API] {
            cmd.arg(format!("--host-record={name},{ip}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (scripts/setup.sh installs dnsmasq-base)")?;
        Ok(Upstream { child })
    }

    fn start(tb: &Testbed) -> anyhow::Result<Upstream> {
        let address = gateway(tb);
        let mut upstream = Upstream::spawn(&address.to_string())?;
        std::thread::sleep(Duration::from_millis(100));
        if let Some(status) = upstream.child.try_wait()? {
            bail!("dnsmasq exited ({status}): is {address}:53 taken?");
        }
        ensure!(
            eventually(Duration::from_secs(5), || {
                std::net::UdpSocket::bind((address, 53)).is_err()
            }),
            "dnsmasq did not bind {address}:53"
        );
        Ok(upstream)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway(tb: &Testbed) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(tb.subnet().network()) + 1)
}

fn dns_pod(tb: &Testbed, name: &str) -> anyhow::Result<Pod> {
    Ok(tb.run_pod(
        PodSpec::new(name)
            .shell("sleep 100000")
            .dns_server(gateway(tb).to_string()),
    )?)
}

/// What busybox nslookup in the pod answers for `name` (through its resolv.conf, or `server`).
enum Lookup {
    Address(Vec<Ipv4Addr>),
    Failed(String),
}

fn lookup(pod: &Pod, name: &str, server: Option<Ipv4Addr>) -> anyhow::Result<Lookup> {
    let server = server.map(|s| s.to_string());
    let mut cmd = vec!["nslookup", "-type=a", "-timeout=2", "-retry=1", name];
    if let Some(server) = &server {
        cmd.push(server);
    }
    let out = pod.exec_sync_timeout(&cmd, Duration::from_secs(20))?;
    let text = format!("{}{}", out.stdout, out.stderr);
    if !out.success() {
        return Ok(Lookup::Failed(text));
    }
    // The answer section follows the "Name:" line; the server's own address precedes it.
    let answers: Vec<Ipv4Addr> = text
        .split_once("Name:")
        .map(|(_, answer)| answer)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    if answers.is_empty() {
        return Ok(Lookup::Failed(text));
    }
    Ok(Lookup::Address(answers))
}

fn expect_exact(pod: &Pod, (name, ip): (&str, Ipv4Addr)) -> anyhow::Result<()> {
    match lookup(pod, name, None)? {
        Lookup::Address(a) if a == [ip] => Ok(()),
        Lookup::Address(a) => bail!("{name} resolved to {a:?}, expected {ip}"),
        Lookup::Failed(text) => bail!("{name} did not resolve: {text}"),
    }
}

fn expect_failed(pod: &Pod, name: &str, server: Option<Ipv4Addr>) -> anyhow::Result<()> {
    match lookup(pod, name, server)? {
        Lookup::Failed(text) => {
            ensure!(
                text.contains("SERVFAIL"),
                "{name} failed, not with SERVFAIL: {text}"
            );
            Ok(())
        }
        Lookup::Address(a) => bail!("{name} resolved to {a:?} during an error experiment"),
    }
}

fn resolv_conf(pod: &Pod) -> anyhow::Result<String> {
    pod.exec_ok(&["cat", "/etc/resolv.conf"])
        .map_err(Into::into)
}

/// Our nat chain in the pod's namespace, per backend (both are looked at: the agent detects one).
fn redirect_rules(pod: &Pod) -> anyhow::Result<String> {
    let mut all = String::new();
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        let out = Command::new("nsenter")
            .args(["-t", &pod.sandbox_pid.to_string(), "-n", save, "-t", "nat"])
            .output()?;
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(all
        .lines()
        .filter(|l| l.contains("FAULTLINE-DNS"))
        .collect::<Vec<_>>()
        .join("\n"))
}

struct Bed {
    pki: Pki,
    agent: AgentProcess,
    pod: Pod,
    _upstream: Arc<Upstream>,
    original: String,
}

impl Bed {
    fn new(tb: &Testbed, name: &str) -> anyhow::Result<Bed> {
        let pki = Pki::create(&tb.base_dir().join(format!("pki-{name}")))?;
        let agent = AgentProcess::start(tb, &pki, &format!("agent-{name}"))?;
        let pod = dns_pod(tb, name)?;
        let upstream = Upstream::shared(tb)?;
        let original = resolv_conf(&pod)?;
        ensure!(
            original.contains(&format!("nameserver {}", gateway(tb))),
            "the pod's resolv.conf does not name the upstream: {original}"
        );
        // Before any experiment every name resolves exactly.
        for record in [DB, WEB, API] {
            expect_exact(&pod, record)?;
        }
        Ok(Bed {
            pki,
            agent,
            pod,
            _upstream: upstream,
            original,
        })
    }

    fn start(&self, action: &str) -> anyhow::Result<api::StartDnsExperimentResponse> {
        let rt = runtime()?;
        let (_, mut api) = rt.block_on(self.agent.controller(&self.pki))?;
        Ok(rt
            .block_on(api.start_dns_experiment(api::StartDnsExperimentRequest {
                container_id: self.pod.container_uri(),
                action: action.into(),
                patterns: vec!["*.example.com".into()],
                duration_ms: 0,
            }))?
            .into_inner())
    }

    fn recover(&self, id: &str) -> anyhow::Result<()> {
        let rt = runtime()?;
        let (_, mut api) = rt.block_on(self.agent.controller(&self.pki))?;
        rt.block_on(api.recover(api::RecoverRequest {
            id: id.into(),
            all: false,
        }))?;
        Ok(())
    }

    /// Everything as before: exact answers, resolv.conf byte for byte, no redirect, no record.
    fn expect_pristine(&self) -> anyhow::Result<()> {
        for record in [DB, WEB, API] {
            expect_exact(&self.pod, record)?;
        }
        ensure!(
            resolv_conf(&self.pod)? == self.original,
            "resolv.conf changed"
        );
        let left = redirect_rules(&self.pod)?;
        ensure!(left.is_empty(), "redirect left in the pod: {left}");
        let journal = std::fs::read_dir(self.agent.state_dir.join("journal"))
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        ensure!(journal == 0, "{journal} journal records left");
        Ok(())
    }

    fn remove(self, tb: &Testbed) -> anyhow::Result<()> {
        drop(self.agent);
        tb.remove_pod(&self.pod)?;
        Ok(())
    }
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn error_and_random(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "dns-actions")?;
    let pod = &bed.pod;

    let started = bed.start("error")?;
    ensure!(
        started.plan.contains(&gateway(tb).to_string()),
        "{}",
        started.plan
    );
    // The covered names fail, through resolv.conf and also asked of the server directly (the
    // redirect does not depend on the application reading resolv.conf); the rest resolve.
    expect_failed(pod, DB.0, None)?;
    expect_failed(pod, WEB.0, Some(gateway(tb)))?;
    expect_exact(pod, API)?;
    ensure!(
        resolv_conf(pod)? == bed.original,
        "our DNSChaos must not touch resolv.conf"
    );
    ensure!(!redirect_rules(pod)?.is_empty(), "no redirect in the pod");
    bed.recover(&started.id)?;
    ensure!(
        !process_alive(started.responder_pid),
        "the responder outlived recovery"
    );
    bed.expect_pristine()?;

    let started = bed.start("random")?;
    for _ in 0..3 {
        match lookup(pod, DB.0, None)? {
            Lookup::Address(a) => ensure!(
                a.len() == 1 && ![DB.1, WEB.1, API.1].contains(&a[0]),
                "random answered {a:?}, an address of the zone"
            ),
            Lookup::Failed(text) => bail!("random made the lookup fail: {text}"),
        }
    }
    expect_exact(pod, API)?;
    bed.recover(&started.id)?;
    bed.expect_pristine()?;
    bed.remove(tb)
}

fn agent_crash(tb: &Testbed) -> anyhow::Result<()> {
    let mut bed = Bed::new(tb, "dns-crash")?;
    let started = bed.start("error")?;
    expect_failed(&bed.pod, DB.0, None)?;
    // SIGKILL the agent: the responder outlives it, so the pod keeps resolving (through the
    // experiment) instead of meeting a redirect into nothing.
    bed.agent.kill()?;
    ensure!(
        process_alive(started.responder_pid),
        "the responder died with the agent"
    );
    expect_failed(&bed.pod, DB.0, None)?;
    expect_exact(&bed.pod, API)?;
    // The restarted agent recovers from the journal alone.
    bed.agent.spawn()?;
    ensure!(
        eventually(Duration::from_secs(5), || !process_alive(
            started.responder_pid
        )),
        "the restarted agent left the responder running"
    );
    ensure!(
        bed.agent
            .log_text()
            .contains("recovered a DNS fault left by a previous run"),
        "{}",
        bed.agent.log_text()
    );
    bed.expect_pristine()?;
    bed.remove(tb)
}

fn responder_killed(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "dns-killed")?;
    let started = bed.start("error")?;
    expect_failed(&bed.pod, DB.0, None)?;
    // The responder is a process this story had the agent start, killed by its PID.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(started.responder_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    ensure!(
        eventually(Duration::from_secs(1), || redirect_rules(&bed.pod)
            .is_ok_and(|r| r.is_empty())),
        "the redirect outlived its responder by more than a second"
    );
    bed.expect_pristine()?;
    bed.remove(tb)
}

/// Chaos Mesh's controller sends SetDNSServer{container_id, dns_server: the chaos DNS
/// Service's ClusterIP, enable: true, enterNS: true} to inject and {enable: false, enterNS:
/// true} to recover.
fn set_dns_server(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "dns-setserver")?;
    let rt = runtime()?;
    let (mut daemon, _) = rt.block_on(bed.agent.controller(&bed.pki))?;
    let request = |dns_server: &str, enable| pb::SetDnsServerRequest {
        container_id: bed.pod.container_uri(),
        dns_server: dns_server.into(),
        enable,
        enter_ns: true,
    };
    let err = rt
        .block_on(daemon.set_dns_server(request("chaos-dns.svc", true)))
        .unwrap_err();
    ensure!(err.code() == tonic::Code::InvalidArgument, "{err:?}");
    ensure!(resolv_conf(&bed.pod)? == bed.original);

    // Chaos DNS "server": the upstream itself under another name is not needed; an address
    // nothing answers on shows the pod now asks it alone.
    let chaos_server = "192.0.2.53";
    rt.block_on(daemon.set_dns_server(request(chaos_server, true)))?;
    let rewritten = resolv_conf(&bed.pod)?;
    let expected: String = bed
        .original
        .split('\n')
        .map(|l| {
            if l.contains("nameserver") {
                format!("nameserver {chaos_server}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    ensure!(
        rewritten == expected,
        "rewritten:\n{rewritten}\nexpected:\n{expected}"
    );
    let backup = bed.pod.exec_ok(&["cat", "/etc/resolv.conf.chaos.bak"])?;
    ensure!(backup == bed.original, "the backup is not the original");
    match lookup(&bed.pod, DB.0, None)? {
        Lookup::Failed(_) => {}
        Lookup::Address(a) => bail!("resolved {a:?} through a server that does not exist"),
    }
    rt.block_on(daemon.set_dns_server(request("", false)))?;
    ensure!(
        !bed.pod
            .exec_sync(&["test", "-e", "/etc/resolv.conf.chaos.bak"])?
            .success(),
        "the backup was left behind"
    );
    bed.expect_pristine()?;
    // Recovering again is not an error (chaos-daemon: `|| true`).
    rt.block_on(daemon.set_dns_server(request("", false)))?;
    bed.expect_pristine()?;
    bed.remove(tb)
}

fn cli(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "dns-cli")?;
    let out = bed.agent.cli(&[
        "attack",
        "dns",
        "--container",
        &bed.pod.container_uri(),
        "--action",
        "error",
        "--pattern",
        "*.example.com",
        "--duration",
        "3s",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let list = bed.agent.cli(&["list"])?;
    ensure!(
        String::from_utf8_lossy(&list.stdout).contains(&id),
        "{} not listed: {}",
        id,
        String::from_utf8_lossy(&list.stdout)
    );
    expect_failed(&bed.pod, DB.0, None)?;
    ensure!(
        eventually(Duration::from_secs(10), || redirect_rules(&bed.pod)
            .is_ok_and(|r| r.is_empty())),
        "the experiment did not end after its duration"
    );
    bed.expect_pristine()?;
    // A typo is named before anything is sent.
    let out = bed.agent.cli(&[
        "attack",
        "dns",
        "--container",
        &bed.pod.container_uri(),
        "--action",
        "delay",
    ])?;
    ensure!(!out.status.success());
    ensure!(
        String::from_utf8_lossy(&out.stderr)
            .contains("action: \"delay\" is not one of error, random"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bed.remove(tb)
}

/// Our nat chain in the pod's namespace in ip6tables, per backend.
fn redirect_rules6(pod: &Pod) -> anyhow::Result<String> {
    let mut all = String::new();
    for save in ["ip6tables-legacy-save", "ip6tables-nft-save"] {
        let out = Command::new("nsenter")
            .args(["-t", &pod.sandbox_pid.to_string(), "-n", save, "-t", "nat"])
            .output()?;
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(all
        .lines()
        .filter(|l| l.contains("FAULTLINE-DNS"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Undoes what the IPv6 story added to the host, whatever happened in it.
struct BridgeAddress {
    bridge: String,
    address: String,
}

impl Drop for BridgeAddress {
    fn drop(&mut self) {
        let _ = run(
            "ip",
            &["-6", "addr", "del", &self.address, "dev", &self.bridge],
        );
    }
}

/// A pod whose only nameserver is an IPv6 address (a ULA on the testbed bridge, dnsmasq there):
/// the responder covers it (ip6tables redirect to ::1, relayed over IPv6), recovery removes it.
fn ipv6_nameserver(tb: &Testbed) -> anyhow::Result<()> {
    let v4 = tb.subnet().network().octets();
    // In its canonical text (`fd53:253::1`, not `fd53:253:0::1` when the subnet's third octet is
    // 0): the agent's plan and ip6tables-save print it so.
    let gateway6: std::net::Ipv6Addr = format!("fd53:{}:{}::1", v4[1], v4[2]).parse()?;
    let gateway6 = gateway6.to_string();
    let pod_address = format!("fd53:{}:{}::2/64", v4[1], v4[2]);
    let pki = Pki::create(&tb.base_dir().join("pki-dns-ipv6"))?;
    let agent = AgentProcess::start(tb, &pki, "agent-dns-ipv6")?;
    let pod = tb.run_pod(
        PodSpec::new("dns-ipv6")
            .shell("sleep 100000")
            .dns_server(gateway6.clone()),
    )?;
    run(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{gateway6}/64"),
            "dev",
            tb.bridge(),
            "nodad",
        ],
    )?;
    let _address = BridgeAddress {
        bridge: tb.bridge().to_owned(),
        address: format!("{gateway6}/64"),
    };
    let netns = pod.sandbox_pid.to_string();
    run(
        "nsenter",
        &[
            "-t",
            &netns,
            "-n",
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
        ],
    )?;
    run(
        "nsenter",
        &[
            "-t",
            &netns,
            "-n",
            "ip",
            "-6",
            "addr",
            "add",
            &pod_address,
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    let _upstream = Upstream::spawn(&gateway6)?;
    let original = resolv_conf(&pod)?;
    ensure!(
        original.contains(&format!("nameserver {gateway6}")),
        "{original}"
    );
    ensure!(
        eventually(Duration::from_secs(5), || matches!(
            lookup(&pod, API.0, None),
            Ok(Lookup::Address(_))
        )),
        "the pod never resolved through its IPv6 nameserver"
    );
    expect_exact(&pod, DB)?;

    let rt = runtime()?;
    let (_, mut client) = rt.block_on(agent.controller(&pki))?;
    let started = rt
        .block_on(client.start_dns_experiment(api::StartDnsExperimentRequest {
            container_id: pod.container_uri(),
            action: "error".into(),
            patterns: vec!["*.example.com".into()],
            duration_ms: 0,
        }))?
        .into_inner();
    ensure!(started.plan.contains(&gateway6), "{}", started.plan);
    let rules = redirect_rules6(&pod)?;
    ensure!(
        rules.contains(&format!("-d {gateway6}/128")),
        "no ip6tables redirect: {rules}"
    );
    expect_failed(&pod, DB.0, None)?;
    expect_exact(&pod, API)?;
    rt.block_on(client.recover(api::RecoverRequest {
        id: started.id.clone(),
        all: false,
    }))?;
    ensure!(
        !process_alive(started.responder_pid),
        "the responder outlived recovery"
    );
    for record in [DB, WEB, API] {
        expect_exact(&pod, record)?;
    }
    let left = redirect_rules6(&pod)?;
    ensure!(left.is_empty(), "ip6tables redirect left: {left}");
    ensure!(redirect_rules(&pod)?.is_empty(), "iptables redirect left");
    ensure!(resolv_conf(&pod)? == original, "resolv.conf changed");
    drop(agent);
    tb.remove_pod(&pod)?;
    Ok(())
}
