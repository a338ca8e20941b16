//! Chaos Mesh's controller-manager driving a faultline agent, as it would in a cluster where
//! deploy/overlays/chaos-mesh replaced chaos-daemon: the certificates are shaped as Chaos Mesh's
//! Helm chart makes them (a CA; the daemon's certificate for chaos-daemon.chaos-mesh.org and
//! localhost; the controller's for controller-manager.chaos-mesh.org), the agent admits only
//! that controller, the client checks the server name chaos-daemon.chaos-mesh.org, and every
//! request is what Chaos Mesh's controllers build (the facts are cited at each request):
//! - IOChaos: the PodIOChaos controller marshals the actions of every IOChaos on the volume
//!   (controllers/podiochaos, chaosimpl/iochaos), `null` once none is left;
//! - NetworkChaos: the PodNetworkChaos controller sends FlushIPSets, SetIptablesChains then
//!   SetTcs with the whole state of the pod at every reconcile (controllers/podnetworkchaos),
//!   ipset and chain names made by its CompressName;
//! - StressChaos: Stressors.Normalize's strings plus the user's options, then CancelStressors
//!   with the instance uids;
//! - PodChaos container-kill and the PID lookup: ContainerKill with action KILL,
//!   ContainerGetPid with action GETPID.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use testbed::{Pod, PodSpec, Testbed, Volume};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::Story;
use crate::agent_support::{eventually, fault_mounts, runtime};
use crate::network::{Server, connects, echo_rtt, idle_pod, in_pod, ip, network_state};
use crate::stress::{pod_cgroup, running};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "chaos_mesh::iochaos_as_its_controller_marshals_it_then_null",
            iochaos,
        ),
        (
            "chaos_mesh::podnetworkchaos_ipsets_chains_tcs_then_updates_then_empty",
            network,
        ),
        (
            "chaos_mesh::stresschaos_normalize_strings_then_cancel",
            stress,
        ),
        (
            "chaos_mesh::container_get_pid_and_kill_take_their_own_actions",
            container,
        ),
        (
            "chaos_mesh::kinds_not_yet_decode_and_answer_unimplemented_by_name",
            not_yet,
        ),
    ]
}

/// The server name Chaos Mesh's controller checks (pkg/grpc: ChaosDaemonServerName).
const DAEMON_NAME: &str = "chaos-daemon.chaos-mesh.org";
/// The identity of Chaos Mesh's controller-manager (its Helm chart's client certificate).
const CONTROLLER_NAME: &str = "controller-manager.chaos-mesh.org";

/// Certificates as Chaos Mesh's Helm chart generates them (genSignedCert with the common name
/// and the SANs localhost and the name).
struct HelmPki {
    dir: PathBuf,
    ca_pem: String,
    controller: (String, String),
    ours: (String, String),
}

fn signed(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), name.to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl HelmPki {
    fn create(tb: &Testbed, name: &str) -> anyhow::Result<HelmPki> {
        let dir = tb.base_dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "chaos-mesh-ca");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let daemon = signed(&ca, DAEMON_NAME)?;
        // The Secret chaos-mesh-daemon-certs: ca.crt, tls.crt, tls.key.
        std::fs::write(dir.join("ca.crt"), ca.pem())?;
        std::fs::write(dir.join("tls.crt"), &daemon.0)?;
        std::fs::write(dir.join("tls.key"), &daemon.1)?;
        Ok(HelmPki {
            dir,
            ca_pem: ca.pem(),
            controller: signed(&ca, CONTROLLER_NAME)?,
            ours: signed(&ca, "faultline-controller.faultline.svc")?,
        })
    }
}

/// `faultline-agent serve` as deploy/overlays/chaos-mesh runs it (the Secret's files, the one
/// admitted identity), on a loopback port; stopped by PID (SIGTERM) when dropped.
struct ChaosMeshAgent {
    child: Child,
    port: u16,
    state_dir: PathBuf,
    log: PathBuf,
}

impl ChaosMeshAgent {
    fn start(tb: &Testbed, pki: &HelmPki, name: &str) -> anyhow::Result<ChaosMeshAgent> {
        let base = tb.base_dir().join(name);
        std::fs::create_dir_all(&base)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = base.join("agent.log");
        let state_dir = base.join("state");
        let child = Command::new(crate::binaries::path("faultline-agent")?)
            .arg("--containerd-socket")
            .arg(tb.containerd_socket())
            .arg("serve")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg("--http-listen=off")
            .arg(format!("--cert={}", pki.dir.join("tls.crt").display()))
            .arg(format!("--key={}", pki.dir.join("tls.key").display()))
            .arg(format!("--ca={}", pki.dir.join("ca.crt").display()))
            .arg(format!("--allowed-client={CONTROLLER_NAME}"))
            .arg(format!(
                "--unix-socket={}",
                base.join("agent.sock").display()
            ))
            .arg("--insecure-unix-plaintext")
            .arg(format!("--state-dir={}", state_dir.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut agent = ChaosMeshAgent {
            child,
            port,
            state_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = agent.child.try_wait()? {
                bail!("the agent exited ({status}): {}", agent.log_text());
            }
            if Instant::now() > deadline {
                bail!("the agent did not start listening: {}", agent.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(agent)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn journal(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir.join("journal"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A pb.ChaosDaemon client as Chaos Mesh's controller makes one: the chart's CA, its
    /// client certificate, the server name chaos-daemon.chaos-mesh.org.
    async fn client(
        &self,
        pki: &HelmPki,
        identity: &(String, String),
    ) -> anyhow::Result<ChaosDaemonClient<Channel>> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name(DAEMON_NAME)
            .identity(Identity::from_pem(&identity.0, &identity.1));
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", self.port))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .context("connecting to the agent")?;
        Ok(ChaosDaemonClient::new(channel))
    }
}

impl Drop for ChaosMeshAgent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// An agent of the chaos-mesh overlay and a client of Chaos Mesh's controller; a client with
/// faultline's own controller identity is refused.
fn setup(
    tb: &Testbed,
    name: &str,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(ChaosMeshAgent, ChaosDaemonClient<Channel>)> {
    let pki = HelmPki::create(tb, &format!("pki-{name}"))?;
    let agent = ChaosMeshAgent::start(tb, &pki, &format!("agent-{name}"))?;
    let daemon = rt.block_on(agent.client(&pki, &pki.controller))?;
    // Admitted, this request would be answered NOT_FOUND; refused, it never gets an answer.
    let stranger = rt.block_on(async {
        let mut other = agent.client(&pki, &pki.ours).await?;
        Ok::<_, anyhow::Error>(
            other
                .container_get_pid(pb::ContainerRequest {
                    action: Some(pb::ContainerAction {
                        action: pb::container_action::Action::Getpid as i32,
                    }),
                    container_id: "containerd://0123456789abcdef0123456789abcdef".into(),
                })
                .await,
        )
    });
    if let Ok(answer) = &stranger {
        ensure!(
            answer
                .as_ref()
                .is_err_and(|s| !matches!(s.code(), Code::NotFound | Code::InvalidArgument)),
            "the agent admitted an identity other than {CONTROLLER_NAME}: {answer:?}"
        );
    }
    Ok((agent, daemon))
}

// ---------------------------------------------------------------------------------------------
// IOChaos

/// Every 20 ms the workload appends a line to /data/journal and logs the outcome to /out/log
/// (a volume the fault does not touch). The subshell catches the error of the open as well as
/// of the write (the shell reports a failed redirection on its own stderr).
const IO_WORKLOAD: &str = "i=0; while true; do i=$((i+1)); \
    if ( echo \"line $i\" >> /data/journal ) 2>/out/err; then echo \"$i ok\" >> /out/log; \
    else echo \"$i FAIL $(cat /out/err)\" >> /out/log; fi; sleep 0.02; done";

fn io_log(out: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(out.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether, after line `skip`, the workload's last three writes succeeded.
fn io_healthy(out: &std::path::Path, skip: usize) -> bool {
    eventually(Duration::from_secs(10), || {
        let log = io_log(out);
        log.len() >= skip + 3 && log[log.len() - 3..].iter().all(|l| l.ends_with(" ok"))
    })
}

/// What the PodIOChaos controller sends as `actions`: `json.Marshal` of the IOChaosAction list,
/// fields in the struct's order (type, the inline filter path/methods/percent, faults, latency,
/// the inline attrOverride, mistake, source); an IOChaos of any action carries
/// `faults: [{errno: <spec.errno>, weight: 1}]`, errno 0 when the action is not a fault.
const IO_FAULT: &str = r#"{"type":"fault","path":"/data/**","percent":100,"faults":[{"errno":5,"weight":1}],"source":"default/io-eio"}"#;
const IO_LATENCY: &str = r#"{"type":"latency","path":"/data/slow/**","methods":["read"],"percent":100,"faults":[{"errno":0,"weight":1}],"latency":"10ms","source":"default/io-slow"}"#;

fn iochaos(tb: &Testbed) -> anyhow::Result<()> {
    let rt = runtime()?;
    let (agent, mut daemon) = setup(tb, "cm-io", &rt)?;
    let data = tb.host_dir("cm-io-data")?;
    let out = tb.host_dir("cm-io-out")?;
    let pod = tb.run_pod(
        PodSpec::new("cm-io")
            .shell(IO_WORKLOAD)
            .volume(Volume::host_dir(&data, "/data"))
            .volume(Volume::host_dir(&out, "/out")),
    )?;
    ensure!(io_healthy(&out, 0), "the workload never ran");
    // The first reconcile: status.pid and startTime are still 0.
    let apply = |actions: &str, instance: i64, start_time: i64| pb::ApplyIoChaosRequest {
        actions: actions.to_owned(),
        volume: "/data".into(),
        container_id: pod.container_uri(),
        instance,
        start_time,
        enter_ns: true,
        instance_uid: String::new(),
    };

    let mark = io_log(&out).len();
    let first = rt
        .block_on(daemon.apply_io_chaos(apply(&format!("[{IO_FAULT}]"), 0, 0)))?
        .into_inner();
    ensure!(first.instance > 0 && first.start_time > 0, "{first:?}");
    let mut seen = None;
    ensure!(
        eventually(Duration::from_secs(10), || {
            seen = io_log(&out)
                .into_iter()
                .skip(mark)
                .find(|l| l.contains("FAIL") && l.contains("Input/output error"));
            seen.is_some()
        }),
        "the pod never saw EIO: {:?}",
        io_log(&out).iter().rev().take(3).collect::<Vec<_>>()
    );
    eprintln!("chaos_mesh::io: the pod saw {:?}", seen.unwrap_or_default());

    // A second IOChaos on the same volume: the PodIOChaos holds both; the controller sends
    // both, with the instance and start time the first answer gave.
    let both = rt
        .block_on(daemon.apply_io_chaos(apply(
            &format!("[{IO_FAULT},{IO_LATENCY}]"),
            first.instance,
            first.start_time,
        )))?
        .into_inner();
    ensure!(
        both.instance_uid == first.instance_uid,
        "an update started a new experiment: {both:?} after {first:?}"
    );
    let mark = io_log(&out).len();
    ensure!(
        eventually(Duration::from_secs(10), || {
            io_log(&out).iter().skip(mark).any(|l| l.contains("FAIL"))
        }),
        "the fault went away with the update"
    );
    // The fault's IOChaos is deleted: only the latency on /data/slow remains.
    rt.block_on(daemon.apply_io_chaos(apply(
        &format!("[{IO_LATENCY}]"),
        both.instance,
        both.start_time,
    )))?;
    let mark = io_log(&out).len();
    ensure!(
        io_healthy(&out, mark),
        "the pod still fails after the fault was removed"
    );
    ensure!(
        fault_mounts(pod.pid).len() == 1,
        "{:?}",
        fault_mounts(pod.pid)
    );

    // None left: json.Marshal of a nil slice.
    let last = rt
        .block_on(daemon.apply_io_chaos(apply("null", both.instance, both.start_time)))?
        .into_inner();
    ensure!(last.instance == 0, "{last:?}");
    ensure!(
        fault_mounts(pod.pid).is_empty(),
        "mounts left: {:?}",
        fault_mounts(pod.pid)
    );
    ensure!(agent.journal().is_empty(), "journal: {:?}", agent.journal());
    let mark = io_log(&out).len();
    ensure!(
        io_healthy(&out, mark),
        "the pod is not healthy after recovery"
    );
    tb.remove_pod(&pod)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// NetworkChaos

/// Names as the controller's CompressName makes them: the first 5 characters of the
/// NetworkChaos' name, "_", the first characters of the SHA-256 (hex) of the rest, "_", the
/// postfix, 27 characters in all for ipsets, 21 (INPUT) or 20 (OUTPUT) for chains. Here for
/// NetworkChaos "partition-b" (postfix tgt) and "delay-c" (postfix "ne"+"tgt" for netem).
const PART_NET: &str = "parti_ca861bde5b645_net_tgt";
const PART_NETPORT: &str = "parti_ca861bde5_netport_tgt";
const PART_SET: &str = "parti_ca861bde5b645_set_tgt";
const PART_OUTPUT: &str = "OUTPUT/parti_ca861bde5b645_";
const PART_INPUT: &str = "INPUT/parti_ca861bde5b6450_";
const DELAY_NET: &str = "delay_0c3603e13e2_net_netgt";
const DELAY_NETPORT: &str = "delay_0c3603e_netport_netgt";
const DELAY_SET: &str = "delay_0c3603e13e2_set_netgt";

/// ipset.BuildIPSets + BuildSetIPSet for one NetworkChaos with one target pod: a hash:net set
/// of the pods' /32s, a hash:net,port set of external targets with ports (none here), and a
/// list:set of both.
fn target_sets(net: &str, netport: &str, set: &str, target: std::net::Ipv4Addr) -> Vec<pb::IpSet> {
    vec![
        pb::IpSet {
            name: net.into(),
            cidrs: vec![format!("{target}/32")],
            r#type: "hash:net".into(),
            ..Default::default()
        },
        pb::IpSet {
            name: netport.into(),
            r#type: "hash:net,port".into(),
            ..Default::default()
        },
        pb::IpSet {
            name: set.into(),
            set_names: vec![net.into(), netport.into()],
            r#type: "list:set".into(),
            ..Default::default()
        },
    ]
}

/// One reconcile of the PodNetworkChaos of `pod`: FlushIPSets, SetIptablesChains, SetTcs, each
/// with the whole state, for the container of the pod's first container status.
fn reconcile(
    rt: &tokio::runtime::Runtime,
    daemon: &mut ChaosDaemonClient<Channel>,
    pod: &Pod,
    ipsets: Vec<pb::IpSet>,
    chains: Vec<pb::Chain>,
    tcs: Vec<pb::Tc>,
) -> anyhow::Result<()> {
    rt.block_on(daemon.flush_ip_sets(pb::IpSetsRequest {
        ipsets,
        container_id: pod.container_uri(),
        enter_ns: true,
        pod_uid: pod.uid.clone(),
    }))
    .context("FlushIPSets")?;
    rt.block_on(daemon.set_iptables_chains(pb::IptablesChainsRequest {
        chains,
        container_id: pod.container_uri(),
        enter_ns: true,
        pod_uid: pod.uid.clone(),
    }))
    .context("SetIptablesChains")?;
    rt.block_on(daemon.set_tcs(pb::TcsRequest {
        tcs,
        container_id: pod.container_uri(),
        enter_ns: true,
        pod_uid: pod.uid.clone(),
    }))
    .context("SetTcs")?;
    Ok(())
}

/// The partition's chain (SetIptables: target DROP, the list:set of the targets).
fn drop_chain(name: &str, direction: pb::chain::Direction) -> pb::Chain {
    pb::Chain {
        name: name.into(),
        direction: direction as i32,
        ipsets: vec![PART_SET.into()],
        target: "DROP".into(),
        ..Default::default()
    }
}

/// netem.FromDelay: latency, jitter and correlation as the NetworkChaos gives them (the CRD's
/// defaults: jitter "0ms", correlation "0"), filtered by the list:set of the targets.
fn delay_tc(latency: &str) -> pb::Tc {
    pb::Tc {
        r#type: pb::tc::Type::Netem as i32,
        netem: Some(pb::Netem {
            time: latency.into(),
            jitter: "0ms".into(),
            delay_corr: 0.0,
            ..Default::default()
        }),
        ipset: DELAY_SET.into(),
        ..Default::default()
    }
}

fn network(tb: &Testbed) -> anyhow::Result<()> {
    let rt = runtime()?;
    let (agent, mut daemon) = setup(tb, "cm-net", &rt)?;
    let a = idle_pod(tb, "cm-net-a")?;
    let b = idle_pod(tb, "cm-net-b")?;
    let c = idle_pod(tb, "cm-net-c")?;
    let (a_ip, b_ip, c_ip) = (ip(&a)?, ip(&b)?, ip(&c)?);
    let servers = (Server::start(&a)?, Server::start(&b)?, Server::start(&c)?);
    let before = network_state(&a)?;
    ensure!(
        connects(&a, b_ip)? && connects(&a, c_ip)? && connects(&b, a_ip)?,
        "no baseline connectivity"
    );
    let base_c = echo_rtt(&a, c_ip)?;
    let all_sets = || {
        let mut sets = target_sets(PART_NET, PART_NETPORT, PART_SET, b_ip);
        sets.extend(target_sets(DELAY_NET, DELAY_NETPORT, DELAY_SET, c_ip));
        sets
    };

    // NetworkChaos partition-b (direction to, target b) and delay-c (100ms, target c) on a:
    // six ipsets, one chain, one tc, at once.
    reconcile(
        &rt,
        &mut daemon,
        &a,
        all_sets(),
        vec![drop_chain(PART_OUTPUT, pb::chain::Direction::Output)],
        vec![delay_tc("100ms")],
    )?;
    ensure!(!connects(&a, b_ip)?, "a still reaches b");
    ensure!(connects(&a, c_ip)?, "a no longer reaches c");
    let rtt_c = echo_rtt(&a, c_ip)?;
    eprintln!("chaos_mesh::network: a -> c RTT {base_c:?} -> {rtt_c:?} with delay-c 100ms");
    ensure!(
        rtt_c >= Duration::from_millis(100),
        "RTT to c is {rtt_c:?} under a 100ms delay"
    );

    // Updates: partition-b becomes direction both (a second chain), delay-c 200ms.
    reconcile(
        &rt,
        &mut daemon,
        &a,
        all_sets(),
        vec![
            drop_chain(PART_OUTPUT, pb::chain::Direction::Output),
            drop_chain(PART_INPUT, pb::chain::Direction::Input),
        ],
        vec![delay_tc("200ms")],
    )?;
    ensure!(
        !connects(&a, b_ip)? && !connects(&b, a_ip)?,
        "the partition is not both ways"
    );
    let rtt_c = echo_rtt(&a, c_ip)?;
    ensure!(
        rtt_c >= Duration::from_millis(200),
        "RTT to c is {rtt_c:?} under a 200ms delay"
    );

    // delay-c is deleted: its ipsets and its tc go, the partition stays.
    reconcile(
        &rt,
        &mut daemon,
        &a,
        target_sets(PART_NET, PART_NETPORT, PART_SET, b_ip),
        vec![
            drop_chain(PART_OUTPUT, pb::chain::Direction::Output),
            drop_chain(PART_INPUT, pb::chain::Direction::Input),
        ],
        vec![],
    )?;
    let qdiscs = in_pod(&a, &["tc", "qdisc", "show", "dev", "eth0"])?;
    ensure!(!qdiscs.contains("netem"), "netem left: {qdiscs}");
    ensure!(
        !connects(&a, b_ip)? && connects(&a, c_ip)?,
        "the partition did not stay alone"
    );

    // partition-b is deleted too: the PodNetworkChaos is empty.
    reconcile(&rt, &mut daemon, &a, vec![], vec![], vec![])?;
    ensure!(
        connects(&a, b_ip)? && connects(&b, a_ip)? && connects(&a, c_ip)?,
        "connectivity is not back"
    );
    let after = network_state(&a)?;
    ensure!(
        before == after,
        "the pod's network differs:\nbefore:\n{before}\nafter:\n{after}"
    );
    let sets_left = in_pod(&a, &["ipset", "list", "-n"])?;
    ensure!(sets_left.trim().is_empty(), "ipsets left: {sets_left}");
    ensure!(agent.journal().is_empty(), "journal: {:?}", agent.journal());
    drop(servers);
    for pod in [&a, &b, &c] {
        tb.remove_pod(pod)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// StressChaos

/// Stressors.Normalize: " --cpu-load-slice 10 --cpu-method sqrt", " --cpu N", " --cpu-load P"
/// (load set), then " OPTION " per user option; memory " --workers N", " --size S", then the
/// options.
fn normalize_cpu(workers: u32, load: u32, options: &[&str]) -> String {
    let mut s = format!(" --cpu-load-slice 10 --cpu-method sqrt --cpu {workers} --cpu-load {load}");
    for o in options {
        s.push_str(&format!(" {o} "));
    }
    s
}

fn normalize_memory(workers: u32, size: &str, options: &[&str]) -> String {
    let mut s = format!(" --workers {workers} --size {size}");
    for o in options {
        s.push_str(&format!(" {o} "));
    }
    s
}

fn stress(tb: &Testbed) -> anyhow::Result<()> {
    const MIB: u64 = 1 << 20;
    let rt = runtime()?;
    let (agent, mut daemon) = setup(tb, "cm-stress", &rt)?;
    let pod = tb.run_pod(PodSpec::new("cm-stress").cpu_request(1000))?;
    let cgroup = pod_cgroup(&pod)?;
    let request = |cpu: String, memory: String| pb::ExecStressRequest {
        scope: pb::exec_stress_request::Scope::Pod as i32,
        target: pod.container_uri(),
        cpu_stressors: cpu,
        enter_ns: true,
        memory_stressors: memory,
        oom_score_adj: 0,
    };
    let pids = || {
        let mut pids = cgroup.pids();
        pids.sort_unstable();
        pids
    };
    let pod_pids = pids();

    // Bad input first: nothing may start, not even the valid half.
    for (cpu, memory, says) in [
        (
            normalize_cpu(1, 50, &["--timeout 600", "--hdd 1"]),
            normalize_memory(1, "16MiB", &[]),
            "cpuStressors: unsupported option \"--hdd\"",
        ),
        (
            normalize_cpu(1, 50, &["--cpu-method hanoi"]),
            String::new(),
            "cpuStressors: --cpu-method \"hanoi\": unknown method",
        ),
        (
            normalize_cpu(1, 50, &[]),
            normalize_memory(1, "16MiB", &["--vm-method nope"]),
            "memoryStressors: --vm-method \"nope\": unknown method",
        ),
    ] {
        let status = rt
            .block_on(daemon.exec_stressors(request(cpu.clone(), memory)))
            .unwrap_err();
        ensure!(
            status.code() == Code::InvalidArgument && status.message().contains(says),
            "{cpu:?}: {status:?}"
        );
        ensure!(
            agent.journal().is_empty(),
            "{cpu:?} left {:?}",
            agent.journal()
        );
        ensure!(
            pids() == pod_pids,
            "{cpu:?} left processes in the pod: {:?}",
            pids()
        );
    }

    // A StressChaos with both stressors: workers 1 load 30 plus the docs' options; memory
    // workers 1 size 48MiB plus stress-ng's vm options.
    let mem_before = cgroup.memory_usage_bytes()?;
    let cpu_before = cgroup.cpu_usage_ns()?;
    let response = rt
        .block_on(daemon.exec_stressors(request(
            normalize_cpu(1, 30, &["--timeout 600", "--metrics-brief"]),
            normalize_memory(1, "48MiB", &["--vm-keep", "--vm-hang 0", "--oomable"]),
        )))?
        .into_inner();
    let cpu_pid: u32 = response.cpu_instance.parse()?;
    let memory_pid: u32 = response.memory_instance.parse()?;
    ensure!(
        !response.cpu_instance_uid.is_empty() && !response.memory_instance_uid.is_empty(),
        "{response:?}"
    );
    ensure!(
        cgroup.pids().contains(&cpu_pid) && cgroup.pids().contains(&memory_pid),
        "the stressors are not in the pod cgroup: {:?}",
        cgroup.pids()
    );
    let mut grown = 0;
    ensure!(
        eventually(Duration::from_secs(10), || {
            grown = cgroup
                .memory_usage_bytes()
                .unwrap_or(mem_before)
                .saturating_sub(mem_before);
            grown >= 44 * MIB
        }),
        "the pod's memory grew by only {} MiB",
        grown / MIB
    );
    ensure!(
        eventually(Duration::from_secs(10), || {
            cgroup.cpu_usage_ns().unwrap_or(0) > cpu_before + 100_000_000
        }),
        "the pod was charged no CPU"
    );
    eprintln!(
        "chaos_mesh::stress: cpu stressor {cpu_pid} and memory stressor {memory_pid} in the pod, memory +{} MiB",
        grown / MIB
    );

    rt.block_on(daemon.cancel_stressors(pb::CancelStressRequest {
        cpu_instance: response.cpu_instance.clone(),
        cpu_start_time: response.cpu_start_time,
        memory_instance: response.memory_instance.clone(),
        memory_start_time: response.memory_start_time,
        cpu_instance_uid: response.cpu_instance_uid.clone(),
        memory_instance_uid: response.memory_instance_uid.clone(),
    }))?;
    ensure!(
        !running(cpu_pid) && !running(memory_pid),
        "a stressor survived its cancel"
    );
    ensure!(pids() == pod_pids, "{:?}", pids());
    ensure!(agent.journal().is_empty(), "journal: {:?}", agent.journal());
    let mut after = 0;
    ensure!(
        eventually(Duration::from_secs(5), || {
            after = cgroup.memory_usage_bytes().unwrap_or(u64::MAX);
            after < mem_before + 16 * MIB
        }),
        "the pod still holds {} MiB more than before",
        after.saturating_sub(mem_before) / MIB
    );
    // The controller may cancel again (a retried reconcile): not an error.
    rt.block_on(daemon.cancel_stressors(pb::CancelStressRequest {
        cpu_instance_uid: response.cpu_instance_uid.clone(),
        ..Default::default()
    }))?;

    // stress-ng's --timeout (Chaos Mesh's examples use it): the stressor ends by itself, and
    // the controller's CancelStressors at the end of the experiment still succeeds.
    let timed = rt
        .block_on(daemon.exec_stressors(request(
            normalize_cpu(1, 10, &["--timeout 2s"]),
            String::new(),
        )))?
        .into_inner();
    let timed_pid: u32 = timed.cpu_instance.parse()?;
    ensure!(
        eventually(Duration::from_secs(15), || !running(timed_pid)),
        "the stressor outlived its --timeout 2s"
    );
    ensure!(
        eventually(Duration::from_secs(5), || agent.journal().is_empty()),
        "journal: {:?}",
        agent.journal()
    );
    rt.block_on(daemon.cancel_stressors(pb::CancelStressRequest {
        cpu_instance_uid: timed.cpu_instance_uid.clone(),
        ..Default::default()
    }))?;
    ensure!(pids() == pod_pids, "{:?}", pids());
    tb.remove_pod(&pod)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PodChaos container-kill and ContainerGetPid

fn container_request(pod: &Pod, action: pb::container_action::Action) -> pb::ContainerRequest {
    pb::ContainerRequest {
        action: Some(pb::ContainerAction {
            action: action as i32,
        }),
        container_id: pod.container_uri(),
    }
}

fn container(tb: &Testbed) -> anyhow::Result<()> {
    use pb::container_action::Action;
    let rt = runtime()?;
    let (agent, mut daemon) = setup(tb, "cm-kill", &rt)?;
    let pod = tb.run_pod(PodSpec::new("cm-kill"))?;

    let pid = rt
        .block_on(daemon.container_get_pid(container_request(&pod, Action::Getpid)))?
        .into_inner()
        .pid;
    ensure!(
        pid == pod.pid,
        "ContainerGetPid said {pid}, the task is {}",
        pod.pid
    );

    // chaos-daemon refuses the other action, before touching the container.
    let status = rt
        .block_on(daemon.container_kill(container_request(&pod, Action::Getpid)))
        .unwrap_err();
    ensure!(
        status.code() == Code::InvalidArgument
            && status
                .message()
                .contains("ContainerKill takes only action KILL"),
        "{status:?}"
    );
    let status = rt
        .block_on(daemon.container_get_pid(container_request(&pod, Action::Kill)))
        .unwrap_err();
    ensure!(
        status.code() == Code::InvalidArgument
            && status
                .message()
                .contains("ContainerGetPid takes only action GETPID"),
        "{status:?}"
    );
    ensure!(
        running(pod.pid) && pod.task_state()?.status == "RUNNING",
        "a refused request hurt the container"
    );

    rt.block_on(daemon.container_kill(container_request(&pod, Action::Kill)))?;
    let mut state = None;
    ensure!(
        eventually(Duration::from_secs(5), || {
            state = pod.container_state().ok();
            state.as_ref().is_some_and(|(s, _)| s == "CONTAINER_EXITED")
        }),
        "CRI does not report the container exited: {state:?}"
    );
    let (_, exit_code) = state.context("no CRI state")?;
    ensure!(exit_code == 137, "exited with {exit_code}, not by SIGKILL");
    ensure!(!running(pod.pid), "the container's process lives on");
    ensure!(
        agent.log_text().contains("container killed"),
        "{}",
        agent.log_text()
    );
    tb.remove_pod(&pod)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Kinds faultline does not inject yet

/// Their messages decode and the answer is UNIMPLEMENTED naming the kind and the alternative,
/// with nothing changed. (TimeChaos, HTTPChaos and DNSChaos are served: see time_chaos.rs,
/// http.rs and dns.rs.)
fn not_yet(tb: &Testbed) -> anyhow::Result<()> {
    let rt = runtime()?;
    let (agent, mut daemon) = setup(tb, "cm-notyet", &rt)?;
    let pod = tb.run_pod(PodSpec::new("cm-notyet"))?;
    let container_id = pod.container_uri();
    let answers = rt.block_on(async {
        vec![
            (
                "BlockChaos",
                daemon
                    .apply_block_chaos(pb::ApplyBlockChaosRequest {
                        container_id: container_id.clone(),
                        volume_path: "/dev/sda".into(),
                        action: pb::apply_block_chaos_request::Action::Delay as i32,
                        delay: Some(pb::BlockDelaySpec {
                            delay: 1_000_000,
                            correlation: 0.0,
                            jitter: 0,
                        }),
                        enter_ns: true,
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "BlockChaos",
                daemon
                    .recover_block_chaos(pb::RecoverBlockChaosRequest { injection_id: 1 })
                    .await
                    .map(|_| ()),
            ),
            (
                "JVMChaos",
                daemon
                    .install_jvm_rules(pb::InstallJvmRulesRequest {
                        container_id: container_id.clone(),
                        rule: "RULE r".into(),
                        port: 9288,
                        enter_ns: true,
                    })
                    .await
                    .map(|_| ()),
            ),
            (
                "JVMChaos",
                daemon
                    .uninstall_jvm_rules(pb::UninstallJvmRulesRequest {
                        container_id: container_id.clone(),
                        rule: "RULE r".into(),
                        port: 9288,
                        enter_ns: true,
                    })
                    .await
                    .map(|_| ()),
            ),
        ]
    });
    for (kind, answer) in answers {
        let status = answer
            .err()
            .with_context(|| format!("{kind}: answered OK"))?;
        ensure!(
            status.code() == Code::Unimplemented
                && status.message().contains(&format!("({kind})"))
                && status.message().contains("nothing was changed"),
            "{kind}: {status:?}"
        );
    }
    ensure!(agent.journal().is_empty(), "journal: {:?}", agent.journal());
    ensure!(running(pod.pid), "the container was hurt");
    tb.remove_pod(&pod)?;
    Ok(())
}
