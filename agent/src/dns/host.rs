//! What the DNS pipelines do to the node, behind one trait: files inside a container's root,
//! finding containers and namespaces, and the responder processes. The real implementation is
//! [`NodeHost`]; tests use a recording double.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use nsexec::{Namespace, NamespaceRequest, NamespaceTarget};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

use super::error::DnsError;
use crate::container_runtime::Resolver;
use crate::journal::ProcessIdentity;
use crate::supervised_child::SupervisedChild;

/// How long a responder gets to bind its sockets.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// What a responder is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderLaunch {
    pub spec: dns_responder::ResponderSpec,
    pub upstreams: Vec<std::net::IpAddr>,
    pub mark: u32,
}

/// A responder that is serving.
#[derive(Debug)]
pub struct StartedResponder {
    pub identity: ProcessIdentity,
    pub port: u16,
    /// Resolves (with what it said last) when the responder exits, whoever ended it.
    pub exited: oneshot::Receiver<String>,
}

#[tonic::async_trait]
pub trait DnsHost: Send + Sync + Debug {
    /// The host PID of a running container; `None` if the runtime no longer knows it.
    async fn locate(&self, container_id: &str) -> Result<Option<u32>, DnsError>;
    /// The inode of the network namespace of `pid`.
    fn netns_inode(&self, pid: u32) -> Result<u64, DnsError>;
    /// Whether `inode` is the node's own network namespace.
    fn is_host_netns(&self, inode: u64) -> bool;
    /// A live process in the network namespace `inode`, `hint` first.
    fn process_in_netns(&self, inode: u64, hint: u32) -> Option<u32>;
    fn identity(&self, pid: u32) -> Result<ProcessIdentity, DnsError>;
    fn is_alive(&self, process: &ProcessIdentity) -> bool;
    /// A file inside the root of `pid`; `None` if it does not exist.
    fn read(&self, pid: u32, path: &str) -> Result<Option<Vec<u8>>, DnsError>;
    /// Replaces the content of an existing file in place (it may be a bind mount, which a
    /// rename could not replace).
    fn overwrite(&self, pid: u32, path: &str, content: &[u8]) -> Result<(), DnsError>;
    /// Creates a file that must not exist yet; `false` if it already existed (left as it was).
    fn create_new(&self, pid: u32, path: &str, content: &[u8]) -> Result<bool, DnsError>;
    /// Removes a file; one that is not there is not an error.
    fn remove(&self, pid: u32, path: &str) -> Result<(), DnsError>;
    /// Starts a responder in the network namespace of `pid`.
    async fn start_responder(
        &self,
        pid: u32,
        launch: &ResponderLaunch,
    ) -> Result<StartedResponder, DnsError>;
    /// Ends a responder (this very process, not a reuse of its PID) and waits for it.
    async fn stop_responder(&self, process: &ProcessIdentity);
}

/// The node: the container runtime, /proc, openat2 in container roots, and
/// `faultline-dns-responder` processes.
#[derive(Debug)]
pub struct NodeHost {
    resolver: Resolver,
    responder_binary: PathBuf,
    /// Responders this agent started, to signal them through their reaper.
    children: Mutex<HashMap<u32, Arc<SupervisedChild>>>,
}

impl NodeHost {
    pub fn new(resolver: Resolver, responder_binary: PathBuf) -> Self {
        Self {
            resolver,
            responder_binary,
            children: Mutex::default(),
        }
    }

    fn open_in_root(&self, pid: u32, path: &str, flags: OFlag) -> Result<OwnedFd, nix::Error> {
        let root = nix::fcntl::open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // openat2 refuses a mode without O_CREAT (EINVAL).
        if flags.contains(OFlag::O_CREAT) {
            how = how.mode(Mode::from_bits_truncate(0o644));
        }
        openat2(&root, path.trim_start_matches('/'), how)
    }
}

fn file_error(pid: u32, path: &str, reason: impl ToString) -> DnsError {
    DnsError::File {
        path: path.to_owned(),
        pid,
        reason: reason.to_string(),
    }
}

#[tonic::async_trait]
impl DnsHost for NodeHost {
    async fn locate(&self, container_id: &str) -> Result<Option<u32>, DnsError> {
        use crate::container_runtime::RuntimeError;
        match self.resolver.container_pid(container_id).await {
            Ok(pid) => Ok(Some(pid)),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    fn netns_inode(&self, pid: u32) -> Result<u64, DnsError> {
        Ok(crate::network::netns::inode_of(pid)?)
    }

    fn is_host_netns(&self, inode: u64) -> bool {
        crate::network::netns::is_host(inode)
    }

    fn process_in_netns(&self, inode: u64, hint: u32) -> Option<u32> {
        crate::network::netns::find_process(inode, Some(hint))
    }

    fn identity(&self, pid: u32) -> Result<ProcessIdentity, DnsError> {
        ProcessIdentity::of(pid).map_err(|e| DnsError::Responder(format!("process {pid}: {e}")))
    }

    fn is_alive(&self, process: &ProcessIdentity) -> bool {
        process.is_alive()
    }

    fn read(&self, pid: u32, path: &str) -> Result<Option<Vec<u8>>, DnsError> {
        let fd = match self.open_in_root(pid, path, OFlag::O_RDONLY) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => return Ok(None),
            Err(e) => return Err(file_error(pid, path, e)),
        };
        let mut content = Vec::new();
        std::fs::File::from(fd)
            .read_to_end(&mut content)
            .map_err(|e| file_error(pid, path, e))?;
        Ok(Some(content))
    }

    fn overwrite(&self, pid: u32, path: &str, content: &[u8]) -> Result<(), DnsError> {
        let fd = self
            .open_in_root(pid, path, OFlag::O_WRONLY | OFlag::O_TRUNC)
            .map_err(|e| file_error(pid, path, e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(content)
            .and_then(|()| file.sync_all())
            .map_err(|e| file_error(pid, path, e))
    }

    fn create_new(&self, pid: u32, path: &str, content: &[u8]) -> Result<bool, DnsError> {
        let fd =
            match self.open_in_root(pid, path, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL) {
                Ok(fd) => fd,
                Err(nix::Error::EEXIST) => return Ok(false),
                Err(e) => return Err(file_error(pid, path, e)),
            };
        let mut file = std::fs::File::from(fd);
        file.write_all(content)
            .and_then(|()| file.sync_all())
            .map_err(|e| file_error(pid, path, e))?;
        Ok(true)
    }

    fn remove(&self, pid: u32, path: &str) -> Result<(), DnsError> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) if !name.is_empty() => (if dir.is_empty() { "/" } else { dir }, name),
            _ => return Err(file_error(pid, path, "not a file path")),
        };
        let dir = self
            .open_in_root(pid, dir, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| file_error(pid, path, e))?;
        match nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
            Err(e) => Err(file_error(pid, path, e)),
        }
    }

    async fn start_responder(
        &self,
        pid: u32,
        launch: &ResponderLaunch,
    ) -> Result<StartedResponder, DnsError> {
        let mut cmd = std::process::Command::new(&self.responder_binary);
        cmd.arg("--action").arg(launch.spec.action.name());
        for pattern in launch.spec.pattern_strings() {
            cmd.arg("--pattern").arg(pattern);
        }
        for upstream in &launch.upstreams {
            cmd.arg("--upstream")
                .arg(std::net::SocketAddr::new(*upstream, 53).to_string());
        }
        cmd.arg("--mark")
            .arg(launch.mark.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a signal meant for the agent's group does not end it.
            .process_group(0);
        // No parent-death signal: the responder outlives an agent crash, so the pod keeps
        // resolving (through the experiment) until the restarted agent recovers the record.
        nsexec::spawn::prepare(
            &mut cmd,
            nsexec::spawn::ChildSetup {
                namespaces: vec![NamespaceRequest::new(
                    Namespace::Net,
                    NamespaceTarget::Pid(pid),
                )],
                ..Default::default()
            },
        )
        .map_err(|e| DnsError::Responder(format!("entering the pod's network namespace: {e}")))?;
        let mut child = tokio::process::Command::from(cmd).spawn().map_err(|e| {
            DnsError::Responder(format!(
                "cannot start {}: {e}",
                self.responder_binary.display()
            ))
        })?;
        let stdout = child.stdout.take();
        let identity = SupervisedChild::identity_of(&child)
            .map_err(|e| DnsError::Responder(format!("the responder process: {e}")))?;
        let child = Arc::new(SupervisedChild::adopt(child, identity, "dns-responder"));
        // Out of the agent's cgroup, so that it outlives the agent's container.
        crate::cgroup::helpers::place_or_warn(pid, identity.pid, "dns-responder");
        let ready = async {
            let stdout = stdout.ok_or("no stdout")?;
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .await
                .map_err(|_| "reading its stdout failed")?;
            line.trim()
                .strip_prefix("listening ")
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or("it exited before listening")
        };
        let port = match tokio::time::timeout(READY_WITHIN, ready).await {
            Ok(Ok(port)) => port,
            outcome => {
                child.kill().await;
                let why = match outcome {
                    Ok(Err(why)) => why,
                    _ => "not listening in time",
                };
                return Err(DnsError::Responder(format!(
                    "{why}: {}",
                    child.stderr_tail_after_exit().await
                )));
            }
        };
        let (tx, exited) = oneshot::channel();
        self.children
            .lock()
            .map_err(|_| DnsError::Responder("internal lock poisoned".into()))?
            .insert(identity.pid, Arc::clone(&child));
        tokio::spawn(async move {
            let status = child.wait().await;
            // At once, with what it has said so far: the redirect goes now, not after its
            // stderr is drained.
            let _ = tx.send(format!("{status}; it said: {}", child.stderr_tail()));
        });
        Ok(StartedResponder {
            identity,
            port,
            exited,
        })
    }

    async fn stop_responder(&self, process: &ProcessIdentity) {
        use crate::cgroup::{RealFs, helpers};
        let leaves = helpers::leaves_of_helper(&RealFs, process.pid);
        let ours = self
            .children
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&process.pid));
        if let Some(child) = ours {
            child.kill().await;
            helpers::release_in_background(leaves);
            return;
        }
        // Started by a previous run of the agent: not our child, so no reaper to go through;
        // the start time check keeps a reused PID safe.
        if process.is_alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(process.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            for _ in 0..100 {
                if !process.is_alive() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        helpers::release_in_background(leaves);
    }
}

#[cfg(test)]
pub mod fake {
    //! A host made of maps: files per (pid, path), containers by id, responders that can be
    //! made to die; every change is recorded.
    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeHost {
        pub files: Mutex<HashMap<(u32, String), Vec<u8>>>,
        pub containers: Mutex<HashMap<String, u32>>,
        pub alive: Mutex<Vec<ProcessIdentity>>,
        pub calls: Mutex<Vec<String>>,
        pub exits: Mutex<HashMap<u32, oneshot::Sender<String>>>,
        pub next_pid: Mutex<u32>,
        /// How many of the next overwrites fail.
        pub fail_writes: Mutex<u32>,
    }

    impl FakeHost {
        pub fn with_container(id: &str, pid: u32, resolv: &[u8]) -> Arc<Self> {
            let host = Self::default();
            host.containers.lock().unwrap().insert(id.into(), pid);
            host.alive
                .lock()
                .unwrap()
                .push(ProcessIdentity { pid, start_time: 1 });
            host.files.lock().unwrap().insert(
                (pid, super::super::resolv_conf::PATH.into()),
                resolv.to_vec(),
            );
            *host.next_pid.lock().unwrap() = 9000;
            Arc::new(host)
        }

        pub fn file(&self, pid: u32, path: &str) -> Option<Vec<u8>> {
            self.files.lock().unwrap().get(&(pid, path.into())).cloned()
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn call(&self, line: String) {
            self.calls.lock().unwrap().push(line);
        }

        /// Makes a responder die on its own.
        pub fn kill_responder(&self, pid: u32) {
            self.alive.lock().unwrap().retain(|p| p.pid != pid);
            if let Some(tx) = self.exits.lock().unwrap().remove(&pid) {
                let _ = tx.send("killed".into());
            }
        }
    }

    #[tonic::async_trait]
    impl DnsHost for FakeHost {
        async fn locate(&self, container_id: &str) -> Result<Option<u32>, DnsError> {
            Ok(self.containers.lock().unwrap().get(container_id).copied())
        }
        fn netns_inode(&self, pid: u32) -> Result<u64, DnsError> {
            Ok(4_026_000_000 + u64::from(pid))
        }
        fn is_host_netns(&self, inode: u64) -> bool {
            inode == 4_026_000_001
        }
        fn process_in_netns(&self, inode: u64, hint: u32) -> Option<u32> {
            let pid = (inode - 4_026_000_000) as u32;
            (pid == hint && self.alive.lock().unwrap().iter().any(|p| p.pid == pid)).then_some(pid)
        }
        fn identity(&self, pid: u32) -> Result<ProcessIdentity, DnsError> {
            Ok(ProcessIdentity { pid, start_time: 1 })
        }
        fn is_alive(&self, process: &ProcessIdentity) -> bool {
            self.alive.lock().unwrap().contains(process)
        }
        fn read(&self, pid: u32, path: &str) -> Result<Option<Vec<u8>>, DnsError> {
            Ok(self.file(pid, path))
        }
        fn overwrite(&self, pid: u32, path: &str, content: &[u8]) -> Result<(), DnsError> {
            {
                let mut failing = self.fail_writes.lock().unwrap();
                if *failing > 0 {
                    *failing -= 1;
                    return Err(file_error(pid, path, "ENOSPC"));
                }
            }
            let mut files = self.files.lock().unwrap();
            let slot = files
                .get_mut(&(pid, path.into()))
                .ok_or_else(|| file_error(pid, path, "ENOENT"))?;
            *slot = content.to_vec();
            self.call(format!("overwrite {pid} {path}"));
            Ok(())
        }
        fn create_new(&self, pid: u32, path: &str, content: &[u8]) -> Result<bool, DnsError> {
            let mut files = self.files.lock().unwrap();
            if files.contains_key(&(pid, path.into())) {
                return Ok(false);
            }
            files.insert((pid, path.into()), content.to_vec());
            self.call(format!("create {pid} {path}"));
            Ok(true)
        }
        fn remove(&self, pid: u32, path: &str) -> Result<(), DnsError> {
            self.files.lock().unwrap().remove(&(pid, path.into()));
            self.call(format!("remove {pid} {path}"));
            Ok(())
        }
        async fn start_responder(
            &self,
            pid: u32,
            launch: &ResponderLaunch,
        ) -> Result<StartedResponder, DnsError> {
            let mut next = self.next_pid.lock().unwrap();
            *next += 1;
            let identity = ProcessIdentity {
                pid: *next,
                start_time: 1,
            };
            self.alive.lock().unwrap().push(identity);
            let (tx, exited) = oneshot::channel();
            self.exits.lock().unwrap().insert(identity.pid, tx);
            self.call(format!(
                "start responder {} in {pid}: {} {:?} via {:?}",
                identity.pid,
                launch.spec.action.name(),
                launch.spec.pattern_strings(),
                launch.upstreams
            ));
            Ok(StartedResponder {
                identity,
                port: 40053,
                exited,
            })
        }
        async fn stop_responder(&self, process: &ProcessIdentity) {
            self.call(format!("stop responder {}", process.pid));
            self.alive.lock().unwrap().retain(|p| p != process);
            self.exits.lock().unwrap().remove(&process.pid);
        }
    }
}
