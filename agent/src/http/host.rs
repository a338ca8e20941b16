//! What the HTTP pipeline does to the node, behind one trait: finding containers and
//! namespaces, and the proxy processes (started in a pod's network namespace, controlled live
//! through their stdin/stdout). The real implementation is [`NodeHost`]; tests use a double.

use std::collections::HashMap;
use std::fmt::Debug;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsexec::{Namespace, NamespaceRequest, NamespaceTarget};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use super::HttpError;
use crate::container_runtime::Resolver;
use crate::journal::ProcessIdentity;
use crate::supervised_child::SupervisedChild;

/// How long a proxy gets to bind and to answer a rule update.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct StartedProxy {
    pub identity: ProcessIdentity,
    pub port: u16,
    /// Resolves when the proxy exits, whoever ended it.
    pub exited: oneshot::Receiver<String>,
}

#[tonic::async_trait]
pub trait HttpHost: Send + Sync + Debug {
    async fn locate(&self, container_id: &str) -> Result<Option<u32>, HttpError>;
    fn netns_inode(&self, pid: u32) -> Result<u64, HttpError>;
    fn is_host_netns(&self, inode: u64) -> bool;
    fn process_in_netns(&self, inode: u64, hint: u32) -> Option<u32>;
    fn identity(&self, pid: u32) -> Result<ProcessIdentity, HttpError>;
    /// Starts a proxy in the network namespace of `pid`.
    async fn start_proxy(&self, pid: u32, mark: u32) -> Result<StartedProxy, HttpError>;
    /// Puts `control_line` (every experiment's rule set: [`http_chaos::control::line`]) in
    /// force in a proxy this agent started; returns once the proxy has it.
    async fn set_in_force(
        &self,
        proxy: &ProcessIdentity,
        control_line: &str,
    ) -> Result<(), HttpError>;
    /// Ends a proxy (this very process) and waits for it.
    async fn stop_proxy(&self, proxy: &ProcessIdentity);
}

struct Control {
    child: Arc<SupervisedChild>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

pub struct NodeHost {
    resolver: Resolver,
    proxy_binary: PathBuf,
    proxies: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<Control>>>>,
}

impl Debug for NodeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHost")
            .field("proxy_binary", &self.proxy_binary)
            .finish()
    }
}

impl NodeHost {
    pub fn new(resolver: Resolver, proxy_binary: PathBuf) -> Self {
        Self {
            resolver,
            proxy_binary,
            proxies: Mutex::default(),
        }
    }

    fn control(&self, pid: u32) -> Option<Arc<tokio::sync::Mutex<Control>>> {
        self.proxies.lock().ok()?.get(&pid).cloned()
    }
}

fn proxy_error(reason: impl Into<String>) -> HttpError {
    HttpError::Proxy(reason.into())
}

#[tonic::async_trait]
impl HttpHost for NodeHost {
    async fn locate(&self, container_id: &str) -> Result<Option<u32>, HttpError> {
        use crate::container_runtime::RuntimeError;
        match self.resolver.container_pid(container_id).await {
            Ok(pid) => Ok(Some(pid)),
            Err(RuntimeError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    fn netns_inode(&self, pid: u32) -> Result<u64, HttpError> {
        Ok(crate::network::netns::inode_of(pid)?)
    }

    fn is_host_netns(&self, inode: u64) -> bool {
        crate::network::netns::is_host(inode)
    }

    fn process_in_netns(&self, inode: u64, hint: u32) -> Option<u32> {
        crate::network::netns::find_process(inode, Some(hint))
    }

    fn identity(&self, pid: u32) -> Result<ProcessIdentity, HttpError> {
        ProcessIdentity::of(pid).map_err(|e| proxy_error(format!("process {pid}: {e}")))
    }

    async fn start_proxy(&self, pid: u32, mark: u32) -> Result<StartedProxy, HttpError> {
        let mut cmd = std::process::Command::new(&self.proxy_binary);
        cmd.arg("--mark")
            .arg(mark.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // No parent-death signal: after an agent crash the proxy keeps serving the rules it
        // has (its control channel is gone), so the redirect never points at a closed port;
        // the restarted agent recovers from the journal.
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
        .map_err(|e| proxy_error(format!("entering the pod's network namespace: {e}")))?;
        let mut child = tokio::process::Command::from(cmd).spawn().map_err(|e| {
            proxy_error(format!("cannot start {}: {e}", self.proxy_binary.display()))
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(proxy_error("no stdio pipes"));
        };
        let identity = SupervisedChild::identity_of(&child)
            .map_err(|e| proxy_error(format!("the proxy process: {e}")))?;
        let child = Arc::new(SupervisedChild::adopt(child, identity, "http-proxy"));
        // Out of the agent's cgroup, so that it outlives the agent's container.
        crate::cgroup::helpers::place_or_warn(pid, identity.pid, "http-proxy");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let ready = tokio::time::timeout(ANSWER_WITHIN, stdout.read_line(&mut line)).await;
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port.filter(|_| matches!(ready, Ok(Ok(_)))) else {
            child.kill().await;
            return Err(proxy_error(format!(
                "not listening: {}",
                child.stderr_tail_after_exit().await
            )));
        };
        let (tx, exited) = oneshot::channel();
        let watched = Arc::clone(&child);
        tokio::spawn(async move {
            let status = watched.wait().await;
            // At once, with what it has said so far: the redirect goes now, not after its
            // stderr is drained.
            let _ = tx.send(format!("{status}; it said: {}", watched.stderr_tail()));
        });
        self.proxies
            .lock()
            .map_err(|_| proxy_error("internal lock poisoned"))?
            .insert(
                identity.pid,
                Arc::new(tokio::sync::Mutex::new(Control {
                    child,
                    stdin,
                    stdout,
                })),
            );
        Ok(StartedProxy {
            identity,
            port,
            exited,
        })
    }

    async fn set_in_force(
        &self,
        proxy: &ProcessIdentity,
        control_line: &str,
    ) -> Result<(), HttpError> {
        let control = self.control(proxy.pid).ok_or_else(|| {
            proxy_error(format!(
                "proxy {} is not controlled by this agent",
                proxy.pid
            ))
        })?;
        let mut control = control.lock().await;
        let line = format!("{}\n", control_line.replace('\n', " "));
        let exchange = async {
            control.stdin.write_all(line.as_bytes()).await?;
            control.stdin.flush().await?;
            let mut answer = String::new();
            control.stdout.read_line(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(ANSWER_WITHIN, exchange)
            .await
            .map_err(|_| proxy_error("no answer to a rule update"))?
            .map_err(|e| proxy_error(format!("control channel: {e}")))?;
        match answer.trim() {
            "ok" => Ok(()),
            other => Err(proxy_error(format!("refused the rules: {other}"))),
        }
    }

    async fn stop_proxy(&self, proxy: &ProcessIdentity) {
        use crate::cgroup::{RealFs, helpers};
        let leaves = helpers::leaves_of_helper(&RealFs, proxy.pid);
        let ours = self
            .proxies
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&proxy.pid));
        if let Some(control) = ours {
            let child = Arc::clone(&control.lock().await.child);
            child.kill().await;
            helpers::release_in_background(leaves);
            return;
        }
        if proxy.is_alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(proxy.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        helpers::release_in_background(leaves);
    }
}
