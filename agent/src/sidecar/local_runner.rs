//! iptables run as a plain child process: the sidecar already is in the pod's network
//! namespace, and has no CAP_SYS_ADMIN to enter one (the node agent's runner does).

use agent::network::NetworkError;
use agent::network::runner::{self, Output, Runner};

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
        let cmd = runner::command(program, args, stdin.is_some());
        runner::run_bounded(cmd, program, args, stdin).await
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
