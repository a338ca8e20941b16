//! Plain containerd containers (not CRI pods), made with `ctr run` in the same `k8s.io`
//! namespace: invisible to CRI, visible to containerd's Tasks API.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use containerd_client::services::v1::GetRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::containerd::NAMESPACE;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::pod::Volume;

const TASK_LIMIT: Duration = Duration::from_secs(10);

/// A running plain container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainContainer {
    /// The containerd container ID (the given name plus a sequence number).
    pub id: String,
    /// Host PID of its init process (containerd Tasks.Get).
    pub pid: u32,
    pub image: String,
}

/// `ctr` pointed at the testbed's containerd and namespace.
#[derive(Debug, Clone)]
pub(crate) struct Ctr {
    socket: PathBuf,
    runc_root: PathBuf,
}

impl Ctr {
    pub fn new(layout: &Layout) -> Ctr {
        Ctr {
            socket: layout.socket(),
            runc_root: layout.runc_root(),
        }
    }

    /// Runs `ctr -a SOCKET -n k8s.io ARGS...`; a non-zero exit is an error carrying stderr.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a")
            .arg(&self.socket)
            .args(["-n", NAMESPACE])
            .args(args);
        let out = cmd.output().map_err(|source| Error::Spawn {
            program: "ctr".into(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            Err(Error::Command {
                command: format!("ctr {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// `ctr run -d`: rbind mounts, output to `log`, runc state under the testbed's state dir
    /// (ctr would use /run/containerd/runc otherwise).
    pub fn start(
        &self,
        id: &str,
        image: &str,
        args: &[&str],
        mounts: &[Volume],
        log: &Path,
    ) -> Result<()> {
        let mut argv: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--runc-root".into(),
            self.runc_root.to_string_lossy().into_owned(),
            "--log-uri".into(),
            format!("file://{}", log.display()),
        ];
        for m in mounts {
            let access = if m.readonly { "ro" } else { "rw" };
            argv.push("--mount".into());
            argv.push(format!(
                "type=bind,src={},dst={},options=rbind:{access}:{}",
                m.host_path.display(),
                m.container_path,
                m.propagation.mount_option()
            ));
        }
        argv.push(image.into());
        argv.push(id.into());
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        self.run(&argv).map(drop)
    }

    /// Kills (SIGKILL) and deletes the task, then the container and its snapshot. A container
    /// or task that is already gone counts as removed.
    pub fn remove(&self, id: &str) -> Result<()> {
        let not_found =
            |e: &Error| matches!(e, Error::Command { stderr, .. } if stderr.contains("not found"));
        match self.run(["tasks", "delete", "--force", id]) {
            Err(e) if !not_found(&e) => return Err(e),
            _ => {}
        }
        match self.run(["containers", "delete", id]) {
            Err(e) if !not_found(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Every container ID in the namespace (CRI's included).
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self
            .run(["containers", "list", "--quiet"])?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// The task's host PID through containerd's Tasks.Get, the way the agent resolves containers.
/// A task as containerd reports it: its status name (`RUNNING`, `STOPPED`, …) and, once
/// stopped, its exit status (128 + signal for a killed process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub status: String,
    pub exit_status: u32,
}

pub(crate) async fn task_state(channel: Channel, id: &str) -> Result<TaskState> {
    const CALL: &str = "containerd Tasks.Get";
    let mut request = tonic::Request::new(GetRequest {
        container_id: id.to_owned(),
        exec_id: String::new(),
    });
    request.metadata_mut().insert(
        "containerd-namespace",
        MetadataValue::from_static(NAMESPACE),
    );
    let response =
        crate::grpc::call(CALL, TASK_LIMIT, TasksClient::new(channel).get(request)).await?;
    let process = response.process.ok_or_else(|| Error::BadResponse {
        call: CALL,
        detail: format!("no process for task {id}"),
    })?;
    let status = containerd_client::types::v1::Status::try_from(process.status)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| process.status.to_string());
    Ok(TaskState {
        status,
        exit_status: process.exit_status,
    })
}

pub(crate) async fn task_pid(channel: Channel, id: &str) -> Result<u32> {
    const CALL: &str = "containerd Tasks.Get";
    let mut request = tonic::Request::new(GetRequest {
        container_id: id.to_owned(),
        exec_id: String::new(),
    });
    request.metadata_mut().insert(
        "containerd-namespace",
        MetadataValue::from_static(NAMESPACE),
    );
    let response =
        crate::grpc::call(CALL, TASK_LIMIT, TasksClient::new(channel).get(request)).await?;
    response
        .process
        .map(|p| p.pid)
        .filter(|&pid| pid > 0)
        .ok_or_else(|| Error::BadResponse {
            call: CALL,
            detail: format!("no process with a PID for task {id}"),
        })
}
