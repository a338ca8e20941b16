//! iptables run as a plain child process: the sidecar already is in the pod's network
//! namespace, and has no CAP_SYS_ADMIN to enter one (the node agent's runner does).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use agent::network::NetworkError;
use agent::network::runner::{Output, Runner};

/// How long one command may take (the xtables lock wait is 5 s of it).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs programs in our own namespaces; the PID a caller names is ignored.
#[derive(Debug, Default)]
pub struct LocalRunner;

#[tonic::async_trait]
impl Runner for LocalRunner {
    async fn run(
        &self,
        _pid: u32,
        program: &str,
        args: &[String],
        stdin: Option<String>,
    ) -> Result<Output, NetworkError> {
        let describe = || format!("{program} {}", args.join(" "));
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| NetworkError::Command {
                command: describe(),
                status: "not started".into(),
                stderr: e.to_string(),
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(|e| NetworkError::Internal(format!("{}: stdin: {e}", describe())))?;
        }
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| NetworkError::Command {
                command: describe(),
                status: "timed out".into(),
                stderr: format!("no answer within {COMMAND_TIMEOUT:?}"),
            })?
            .map_err(|e| NetworkError::Internal(format!("{}: {e}", describe())))?;
        Ok(Output {
            success: output.status.success(),
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_with_stdin_and_reports_failures() {
        let out = LocalRunner
            .run(0, "cat", &[], Some("through\n".into()))
            .await
            .unwrap();
        assert!(out.success);
        assert_eq!(out.stdout, "through\n");
        let out = LocalRunner
            .run(0, "sh", &["-c".into(), "echo no >&2; exit 3".into()], None)
            .await
            .unwrap();
        assert!(!out.success);
        assert_eq!(out.stderr, "no\n");
        let err = LocalRunner
            .run(0, "/nonexistent/iptables", &[], None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not started"), "{err}");
    }
}
