//! A private containerd: its configuration, its process, and waiting until it answers.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::Layout;

/// The containerd namespace CRI uses; `ctr` containers go there too so one Tasks API sees both.
pub const NAMESPACE: &str = "k8s.io";
/// CRI's sandbox image; a locally built image is imported under this exact name, so nothing is
/// ever pulled.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.6";

const STARTUP_LIMIT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Config version 2 with everything under the base directory. Paths are quoted as TOML basic
/// strings; our paths contain neither `"` nor `\`.
pub(crate) fn config_toml(layout: &Layout) -> String {
    let q = |p: &Path| format!("\"{}\"", p.display());
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox}"
    netns_mounts_under_state_dir = true
    # REQUIRED on this machine: without CAP_SYS_RESOURCE the sandbox's oom_score_adj -998 fails
    # RunPodSandbox with runc's opaque "can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = {cni}
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = {runc}
"#,
        root = q(&layout.root()),
        state = q(&layout.state()),
        socket = q(&layout.socket()),
        ttrpc = q(&layout.ttrpc_socket()),
        opt = q(&layout.opt()),
        sandbox = SANDBOX_IMAGE,
        cni = q(&layout.cni_conf_dir()),
        runc = q(&layout.runc_root()),
    )
}

/// The containerd process this testbed started.
#[derive(Debug)]
pub(crate) struct Containerd {
    child: Child,
}

impl Containerd {
    /// Starts containerd on an already written config and waits until its socket accepts.
    pub fn start(layout: &Layout) -> Result<Containerd> {
        let log_path = layout.containerd_log();
        let log = File::create(&log_path).map_err(Error::io("creating", &log_path))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io("duplicating", &log_path))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(layout.config())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C meant for the test run must not kill containerd
            // before the teardown has removed the pods through it.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "containerd".into(),
                source,
            })?;
        let mut containerd = Containerd { child };
        let pid_file = layout.containerd_pid_file();
        if let Err(e) = std::fs::write(&pid_file, containerd.pid().to_string()) {
            containerd.stop();
            return Err(Error::io("writing", pid_file)(e));
        }
        if let Err(e) = containerd.wait_for_socket(layout) {
            containerd.stop();
            return Err(e);
        }
        Ok(containerd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_socket(&mut self, layout: &Layout) -> Result<()> {
        let socket = layout.socket();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::ContainerdExited {
                    status: status.to_string(),
                    log: layout.containerd_log(),
                });
            }
            let attempt = UnixStream::connect(&socket);
            match attempt {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > STARTUP_LIMIT => {
                    return Err(Error::ContainerdNotReady {
                        waited: STARTUP_LIMIT,
                        detail: format!("connecting to {}: {e}", socket.display()),
                        log: layout.containerd_log(),
                    });
                }
                Err(_) => sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGTERM (containerd shuts its plugins down cleanly), then SIGKILL after a grace period.
    /// Only this PID, which is our own child, so waiting on it also reaps it.
    pub fn stop(&mut self) -> Option<String> {
        if let Ok(Some(_)) = self.child.try_wait() {
            return None;
        }
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return Some(format!("containerd pid {} out of range", self.child.id()));
        };
        let pid = nix::unistd::Pid::from_raw(raw);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Some(format!(
            "containerd (pid {raw}) ignored SIGTERM for {STOP_GRACE:?}; killed"
        ))
    }
}

/// True if `pid` runs `containerd --config <config>` for exactly this layout: the check a later
/// run makes before killing a stale testbed's containerd by its PID file.
pub(crate) fn is_our_containerd(pid: u32, layout: &Layout) -> bool {
    let Some(args) = crate::process::cmdline(pid) else {
        return false;
    };
    let config = layout.config();
    let program_ok = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "containerd");
    program_ok
        && args
            .windows(2)
            .any(|w| w[0] == "--config" && Path::new(&w[1]) == config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_under_base() {
        let layout = Layout::new(42, 0);
        let toml = config_toml(&layout);
        assert!(toml.contains("restrict_oom_score_adj = true"));
        assert!(toml.contains("netns_mounts_under_state_dir = true"));
        assert!(toml.contains(&format!("address = \"{}\"", layout.socket().display())));
        for line in toml.lines().filter(|l| l.contains("= \"/")) {
            assert!(
                line.contains(&*layout.base.to_string_lossy()) || line.contains("/usr/lib/cni"),
                "path outside the base dir: {line}"
            );
        }
    }

    #[test]
    fn own_process_is_not_containerd() {
        assert!(!is_our_containerd(std::process::id(), &Layout::new(1, 0)));
    }
}
