//! What the benchmark binaries share (included with `#[path]`, not part of the testbed
//! library): the real agent started on a unix socket of a testbed, a gRPC channel to it, and
//! reads of a process's footprint.
#![allow(dead_code)] // each binary uses its part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testbed::Testbed;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A binary built beside the running one (`cargo build` puts them together).
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .ok_or("no binary directory")?
        .join(name);
    if !path.exists() {
        return Err(format!("{} is missing: build the workspace first", path.display()).into());
    }
    Ok(path)
}

/// The real `faultline-agent`, plaintext on a unix socket under the testbed; SIGTERM on drop.
/// Its log goes under the testbed (removed with it), or to `$FAULTLINE_AGENT_LOG` when set (to
/// read, e.g., where each injection's time went: the `IO fault injected` lines).
pub struct LocalAgent {
    child: Child,
    socket: PathBuf,
}

impl LocalAgent {
    pub fn start(tb: &Testbed, name: &str) -> Result<LocalAgent> {
        let socket = tb.base_dir().join(format!("{name}.sock"));
        let log = std::env::var_os("FAULTLINE_AGENT_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| tb.base_dir().join(format!("{name}.log")));
        let child = Command::new(binary("faultline-agent")?)
            .arg("--containerd-socket")
            .arg(tb.containerd_socket())
            .args([
                "serve",
                "--http-listen",
                "off",
                "--insecure-unix-plaintext",
                "--unix-socket",
            ])
            .arg(&socket)
            .arg("--state-dir")
            .arg(tb.base_dir().join(format!("{name}-state")))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .spawn()?;
        let agent = LocalAgent { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("the agent did not start: {log}").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its unix socket (for the `faultline` CLI's `--socket`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        let path = self.socket.clone();
        Ok(tonic::transport::Endpoint::from_static("http://[::]:31767")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await?)
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A process's resident memory in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:").unwrap_or(0)
}

/// The first number of a `/proc/PID/status` field.
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Entries of a directory (0 if unreadable): open fds, threads.
pub fn entries(dir: impl AsRef<Path>) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.count() as u64)
}

/// A process's proportional set size in KiB (`/proc/PID/smaps_rollup`; 0 if it is gone): its
/// private pages plus its share of the pages it has in common with others.
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Whether `pid` is the agent's spare injector (`faultline-injector standby`): one waits
/// for the next injection at all times, holding no fault, so footprints leave it out.
pub fn is_spare_injector(pid: u32) -> bool {
    // Its name, not its command line: an assigned spare keeps `standby` there.
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|name| name.trim_end() == "faultline-spare")
}

/// Every process under `pid` (children, their children, ...), but the spare injector (see
/// [`is_spare_injector`]).
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u64)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, status_field(p, "PPid:")?)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![u64::from(pid)];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents
            .iter()
            .filter(|(child, pp)| *pp == parent && !is_spare_injector(*child))
        {
            found.push(*child);
            frontier.push(u64::from(*child));
        }
    }
    found
}

/// A CPU accounting cgroup of its own for a process and every process it starts from then on
/// (exited ones included): cgroup v2 `cpu.stat`, or v1 `cpuacct.usage`. Removed on drop.
pub struct CpuCgroup {
    dir: PathBuf,
    v2: bool,
}

impl CpuCgroup {
    /// Moves `pid` into a new cgroup named `name` (under the root of the hierarchy).
    pub fn enter(pid: u32, name: &str) -> Result<CpuCgroup> {
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            PathBuf::from("/sys/fs/cgroup").join(name)
        } else {
            PathBuf::from("/sys/fs/cgroup/cpuacct").join(name)
        };
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        Ok(CpuCgroup { dir, v2 })
    }

    /// CPU time (user + system) of everything in it so far, in nanoseconds.
    pub fn usage_ns(&self) -> Result<u64> {
        if self.v2 {
            let stat = std::fs::read_to_string(self.dir.join("cpu.stat"))?;
            let usec: u64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .ok_or("cpu.stat has no usage_usec")?
                .trim()
                .parse()?;
            Ok(usec * 1000)
        } else {
            Ok(std::fs::read_to_string(self.dir.join("cpuacct.usage"))?
                .trim()
                .parse()?)
        }
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone (the caller stops them first).
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
