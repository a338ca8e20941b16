//! Running iptables and ipset inside a pod's network namespace: the child joins the namespace
//! between fork and exec (nsexec), dies with the agent, and is bounded in time. Behind a trait so
//! the logic that builds the commands is tested without root.

use std::fmt::Debug;
use std::process::Stdio;
use std::time::Duration;

use nsexec::{Namespace, NamespaceRequest, NamespaceTarget};
use tokio::io::AsyncWriteExt;

use super::error::NetworkError;

/// How long one iptables/ipset command may take (the xtables lock wait is 5 s of it).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The output, or an error naming the command.
    pub fn check(self, program: &str, args: &[String]) -> Result<Output, NetworkError> {
        if self.success {
            Ok(self)
        } else {
            Err(NetworkError::Command {
                command: format!("{program} {}", args.join(" ")),
                status: self.status,
                stderr: self.stderr.trim().to_owned(),
            })
        }
    }
}

/// Runs a program in the network namespace of a process.
#[tonic::async_trait]
pub trait Runner: Send + Sync + Debug {
    async fn run(
        &self,
        pid: u32,
        program: &str,
        args: &[String],
        stdin: Option<String>,
    ) -> Result<Output, NetworkError>;
}

/// The real runner (nsexec's pre-exec setns).
#[derive(Debug, Default)]
pub struct NamespaceRunner;

#[tonic::async_trait]
impl Runner for NamespaceRunner {
    async fn run(
        &self,
        pid: u32,
        program: &str,
        args: &[String],
        stdin: Option<String>,
    ) -> Result<Output, NetworkError> {
        let mut cmd = command(program, args, stdin.is_some());
        nsexec::spawn::prepare(
            &mut cmd,
            nsexec::spawn::ChildSetup {
                namespaces: vec![NamespaceRequest::new(
                    Namespace::Net,
                    NamespaceTarget::Pid(pid),
                )],
                die_with_parent: Some(nix::sys::signal::Signal::SIGKILL),
                pass_fds: Vec::new(),
            },
        )
        .map_err(|e| NetworkError::Namespace {
            pid,
            reason: e.to_string(),
        })?;
        run_bounded(cmd, program, args, stdin).await
    }
}

/// `program args` with its output captured, and a stdin pipe when there is input for it.
pub fn command(program: &str, args: &[String], with_stdin: bool) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts `cmd` (made by [`command`]), feeds it `stdin`, and waits for it at most
/// [`COMMAND_TIMEOUT`] (killing it after); errors name the command.
pub async fn run_bounded(
    cmd: std::process::Command,
    program: &str,
    args: &[String],
    stdin: Option<String>,
) -> Result<Output, NetworkError> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let describe = || format!("{program} {}", args.join(" "));
    let mut child = cmd.spawn().map_err(|e| NetworkError::Command {
        command: describe(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    // Feed stdin while the output is read: a command that fails early (ipset at the first bad
    // line) closes its stdin, and its words on stderr are what the caller needs, not our EPIPE.
    let pipe = child.stdin.take();
    let feed = async move {
        if let (Some(text), Some(mut pipe)) = (stdin, pipe) {
            match pipe.write_all(text.as_bytes()).await {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
        }
        Ok(())
    };
    let run = async { tokio::join!(feed, child.wait_with_output()) };
    let (fed, output) = tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .map_err(|_| NetworkError::Command {
            command: describe(),
            status: "timed out".into(),
            stderr: format!("no answer within {COMMAND_TIMEOUT:?}"),
        })?;
    let output = output.map_err(|e| NetworkError::Internal(format!("{}: {e}", describe())))?;
    fed.map_err(|e| NetworkError::Internal(format!("{}: stdin: {e}", describe())))?;
    Ok(Output {
        success: output.status.success(),
        status: output.status.to_string(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_that_stops_reading_its_input_reports_its_own_words() {
        // Like ipset restore at its first bad line: it exits without reading the rest, so the
        // writer meets a closed pipe; what the caller needs is the command's stderr.
        let args = vec![
            "-c".to_owned(),
            "read -r line; echo \"Error in line 1: $line\" >&2; exit 3".to_owned(),
        ];
        let input = "bad\n".repeat(1 << 20);
        let cmd = command("sh", &args, true);
        let output = run_bounded(cmd, "sh", &args, Some(input)).await.unwrap();
        assert!(!output.success);
        assert_eq!(output.stderr.trim(), "Error in line 1: bad");
    }
}

#[cfg(test)]
pub mod fake {
    //! A runner that records commands and answers from a script.
    use std::sync::Mutex;

    use super::*;

    type Answer = Box<dyn Fn(&str, &[String], Option<&str>) -> Output + Send + Sync>;

    pub struct FakeRunner {
        pub calls: Mutex<Vec<String>>,
        answer: Answer,
    }

    impl Debug for FakeRunner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FakeRunner")
        }
    }

    pub fn ok(stdout: &str) -> Output {
        Output {
            success: true,
            status: "exit status: 0".into(),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    pub fn fail(stderr: &str) -> Output {
        Output {
            success: false,
            status: "exit status: 1".into(),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    impl FakeRunner {
        pub fn new(
            answer: impl Fn(&str, &[String], Option<&str>) -> Output + Send + Sync + 'static,
        ) -> Self {
            Self {
                calls: Mutex::default(),
                answer: Box::new(answer),
            }
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[tonic::async_trait]
    impl Runner for FakeRunner {
        async fn run(
            &self,
            _pid: u32,
            program: &str,
            args: &[String],
            stdin: Option<String>,
        ) -> Result<Output, NetworkError> {
            let mut line = format!("{program} {}", args.join(" "));
            if let Some(input) = &stdin {
                line.push_str(&format!("\n<<<\n{input}"));
            }
            self.calls.lock().unwrap().push(line);
            Ok((self.answer)(program, args, stdin.as_deref()))
        }
    }
}
