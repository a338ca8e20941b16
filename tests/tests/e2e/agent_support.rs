//! Running the real agent for a story: its own certificates (a CA, the agent's server
//! certificate, client certificates of several kinds), its process (stopped by PID when the
//! story ends), and gRPC clients over mTLS.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use faultline_proto::agent::v1::agent_client::AgentClient;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use testbed::Testbed;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const AGENT_NAME: &str = "faultline-agent";
pub const CONTROLLER: &str = "faultline-controller.faultline.svc";

/// A certificate and key in PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A CA and what it signed, written under a directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub agent: Pem,
    pub controller: Pem,
    pub stranger: Pem,
    pub rogue: Pem,
}

fn new_ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, sans: Vec<SanType>) -> anyhow::Result<Pem> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = sans;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

impl Pki {
    pub fn create(dir: &Path) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let ca = new_ca("faultline e2e CA")?;
        let dns = |n: &str| -> anyhow::Result<SanType> { Ok(SanType::DnsName(n.try_into()?)) };
        let agent = leaf(
            &ca,
            vec![dns(AGENT_NAME)?, SanType::IpAddress("127.0.0.1".parse()?)],
        )?;
        let controller = leaf(&ca, vec![dns(CONTROLLER)?])?;
        let stranger = leaf(&ca, vec![dns("someone-else.default.svc")?])?;
        let rogue = leaf(&new_ca("rogue CA")?, vec![dns(CONTROLLER)?])?;
        let pki = Pki {
            dir: dir.to_owned(),
            ca_pem: ca.pem(),
            agent,
            controller,
            stranger,
            rogue,
        };
        std::fs::write(dir.join("ca.pem"), &pki.ca_pem)?;
        std::fs::write(dir.join("agent.crt"), &pki.agent.cert)?;
        std::fs::write(dir.join("agent.key"), &pki.agent.key)?;
        Ok(pki)
    }
}

/// A running `faultline-agent serve`.
pub struct AgentProcess {
    child: Option<Child>,
    pub port: u16,
    pub state_dir: PathBuf,
    pub unix_socket: PathBuf,
    pub log: PathBuf,
    containerd_socket: PathBuf,
    pki_dir: PathBuf,
    /// `--runtime` and `--cri-socket` when the agent plays another runtime's node.
    runtime_args: Vec<String>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl AgentProcess {
    /// Starts an agent with its own state directory under the testbed.
    pub fn start(tb: &Testbed, pki: &Pki, name: &str) -> anyhow::Result<AgentProcess> {
        Self::start_with(tb, pki, name, Vec::new())
    }

    /// An agent of a node whose runtime is `runtime` (`cri-o`, `docker`), served by the
    /// testbed's containerd through its CRI socket.
    pub fn start_as_runtime(
        tb: &Testbed,
        pki: &Pki,
        name: &str,
        runtime: &str,
    ) -> anyhow::Result<AgentProcess> {
        let cri = tb.containerd_socket().display().to_string();
        let args = ["--runtime", runtime, "--cri-socket", &cri];
        Self::start_with(tb, pki, name, args.map(String::from).to_vec())
    }

    fn start_with(
        tb: &Testbed,
        pki: &Pki,
        name: &str,
        runtime_args: Vec<String>,
    ) -> anyhow::Result<AgentProcess> {
        let base = tb.base_dir().join(name);
        std::fs::create_dir_all(&base)?;
        let mut agent = AgentProcess {
            child: None,
            port: free_port()?,
            state_dir: base.join("state"),
            unix_socket: base.join("agent.sock"),
            log: base.join("agent.log"),
            containerd_socket: tb.containerd_socket().to_owned(),
            pki_dir: pki.dir.clone(),
            runtime_args,
        };
        agent.spawn()?;
        Ok(agent)
    }

    /// (Re)starts the process with the same state directory and port.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(crate::binaries::path("faultline-agent")?)
            .arg("--containerd-socket")
            .arg(&self.containerd_socket)
            .args(&self.runtime_args)
            // As the DaemonSet runs it (deploy/base/agent.yaml).
            .env("MALLOC_ARENA_MAX", "2")
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--http-listen", "off"])
            .arg("--cert")
            .arg(self.pki_dir.join("agent.crt"))
            .arg("--key")
            .arg(self.pki_dir.join("agent.key"))
            .arg("--ca")
            .arg(self.pki_dir.join("ca.pem"))
            .arg("--allowed-client")
            .arg(CONTROLLER)
            .arg("--unix-socket")
            .arg(&self.unix_socket)
            .arg("--insecure-unix-plaintext")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.unix_socket.exists()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the agent exited ({status}): {}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("the agent did not start listening: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The agent's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The spare injector the agent keeps for its next injection (`faultline-injector
    /// standby`, a child of the agent), if one runs.
    pub fn spare_injector(&self) -> Option<u32> {
        let agent = self.pid()?;
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // The parent is the 4th field, after the command in parentheses.
                let parent = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
                // Its name, not its command line: an assigned spare keeps `standby` there.
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                parent == Some(agent) && name.trim_end() == "faultline-spare"
            })
    }

    /// [`Self::spare_injector`], waited for (the agent starts it once it serves, and again
    /// after each injection).
    pub fn wait_for_spare_injector(&self) -> anyhow::Result<u32> {
        let mut spare = None;
        anyhow::ensure!(
            eventually(Duration::from_secs(5), || {
                spare = self.spare_injector();
                spare.is_some()
            }),
            "the agent keeps no spare injector"
        );
        spare.ok_or_else(|| anyhow::anyhow!("the agent keeps no spare injector"))
    }

    /// The agent's resident memory in KiB (0 once it is gone).
    pub fn rss_kib(&self) -> u64 {
        let Some(pid) = self.pid() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            let status = child.wait()?;
            if !status.success() {
                bail!("the agent exited with {status}: {}", self.log_text());
            }
        }
        Ok(())
    }

    /// A channel over mTLS with the given client identity (or none).
    pub async fn channel(&self, ca_pem: &str, client: Option<&Pem>) -> anyhow::Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(AGENT_NAME);
        if let Some(client) = client {
            tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
        }
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", self.port))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .context("connecting to the agent")?;
        Ok(channel)
    }

    pub async fn controller(
        &self,
        pki: &Pki,
    ) -> anyhow::Result<(ChaosDaemonClient<Channel>, AgentClient<Channel>)> {
        let channel = self.channel(&pki.ca_pem, Some(&pki.controller)).await?;
        Ok((
            ChaosDaemonClient::new(channel.clone()),
            AgentClient::new(channel),
        ))
    }

    /// Runs the `faultline` CLI against this agent's unix socket.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new(crate::binaries::path("faultline")?)
            .arg("--socket")
            .arg(&self.unix_socket)
            .args(args)
            .output()?)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Fault mounts (fuse.faultline) in the mount namespace of `pid`.
pub fn fault_mounts(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - fuse"))
        .map(str::to_owned)
        .collect()
}

/// Waits until `check` holds, up to `within`.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
