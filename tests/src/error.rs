//! The one error type of the testbed: each variant says which step failed and on what.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the testbed needs root (running as euid {euid})")]
    NotRoot { euid: u32 },

    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("containerd did not become ready within {waited:?} ({detail}); see {log}")]
    ContainerdNotReady {
        waited: Duration,
        detail: String,
        log: PathBuf,
    },

    #[error("containerd exited during start-up ({status}); see {log}")]
    ContainerdExited { status: String, log: PathBuf },

    #[error("connecting to {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },

    #[error("{call} failed: {code:?}: {message}")]
    Rpc {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },

    #[error("{call} timed out after {after:?}")]
    Timeout { call: &'static str, after: Duration },

    #[error("{call}: unexpected response: {detail}")]
    BadResponse { call: &'static str, detail: String },

    #[error(
        "no free /24 in {range} for the pod network (every candidate overlaps a route or another testbed)"
    )]
    NoFreeSubnet { range: &'static str },

    #[error("{op} {path}: {source}")]
    Mount {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("building the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error("invalid {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },

    #[error("`{cmd}` in container {container} exited with {exit_code}: {stderr}")]
    ExecFailed {
        cmd: String,
        container: String,
        exit_code: i32,
        stderr: String,
    },

    #[error("init container {name} ended with {state} (exit code {exit_code}); its log:\n{log}")]
    InitContainerFailed {
        name: String,
        state: String,
        exit_code: i32,
        log: String,
    },

    #[error("the testbed has been shut down")]
    ShutDown,

    #[error("teardown left problems:\n  {}", .0.join("\n  "))]
    Teardown(Vec<String>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}
