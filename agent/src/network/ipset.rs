//! ipsets in a pod, replaced atomically: the new content is built in a temporary set and swapped
//! with the live one (`ipset swap`), so a rule matching the set never sees it half filled.

use super::error::NetworkError;
use super::runner::Runner;
use super::spec::{IpSetKind, IpSetSpec, MAX_SET_ENTRIES};

/// A temporary name (at most 31 characters) derived from the set's name.
pub fn temporary_name(name: &str) -> String {
    // FNV-1a: stable across runs, so a temporary left by a crash is found again.
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("fltmp-{hash:08x}")
}

fn create_line(name: &str, kind: &IpSetKind) -> String {
    match kind {
        IpSetKind::Sets(_) => format!("create {name} list:set -exist"),
        // The same maxelem for every hash set of ours, so `create -exist` of a live set made by
        // an earlier request matches it (the kernel compares maxelem) and `swap` works.
        other => format!(
            "create {name} {} family inet maxelem {MAX_SET_ENTRIES} -exist",
            other.type_name()
        ),
    }
}

/// The `ipset restore` input that fills a temporary set and swaps it in.
pub fn restore_input(set: &IpSetSpec) -> String {
    let tmp = temporary_name(&set.name);
    let mut out = String::new();
    out.push_str(&create_line(&tmp, &set.kind));
    out.push('\n');
    out.push_str(&format!("flush {tmp}\n"));
    match &set.kind {
        IpSetKind::Nets(cidrs) => {
            for cidr in cidrs {
                out.push_str(&format!("add {tmp} {cidr} -exist\n"));
            }
        }
        IpSetKind::NetPorts(entries) => {
            for (cidr, port) in entries {
                out.push_str(&format!("add {tmp} {cidr},{port} -exist\n"));
            }
        }
        IpSetKind::Sets(members) => {
            for member in members {
                out.push_str(&format!("add {tmp} {member} -exist\n"));
            }
        }
    }
    out.push_str(&create_line(&set.name, &set.kind));
    out.push('\n');
    out.push_str(&format!("swap {tmp} {}\ndestroy {tmp}\n", set.name));
    out
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Creates or atomically replaces the sets, list:set ones last (their members must exist).
pub async fn apply(runner: &dyn Runner, pid: u32, sets: &[IpSetSpec]) -> Result<(), NetworkError> {
    let mut ordered: Vec<&IpSetSpec> = sets.iter().collect();
    ordered.sort_by_key(|s| matches!(s.kind, IpSetKind::Sets(_)));
    for set in ordered {
        let restore = args(&["restore"]);
        let outcome = runner
            .run(pid, "ipset", &restore, Some(restore_input(set)))
            .await;
        let failure = match outcome {
            Ok(output) if output.success => continue,
            Ok(output) => NetworkError::Command {
                command: format!("ipset restore (set {})", set.name),
                status: output.status,
                stderr: output.stderr.trim().to_owned(),
            },
            Err(e) => e,
        };
        // Leave no temporary set behind, whatever stopped the restore.
        destroy_temporary(runner, pid, &set.name).await;
        return Err(failure);
    }
    Ok(())
}

/// Destroys the temporary set of `name` if one is there (a failed or interrupted restore).
async fn destroy_temporary(runner: &dyn Runner, pid: u32, name: &str) {
    let tmp = temporary_name(name);
    match runner
        .run(pid, "ipset", &args(&["destroy", &tmp]), None)
        .await
    {
        Ok(o) if o.success || o.stderr.contains("does not exist") => {}
        Ok(o) => {
            tracing::warn!(set = %tmp, stderr = %o.stderr.trim(), "temporary ipset not destroyed")
        }
        Err(e) => tracing::warn!(set = %tmp, %e, "temporary ipset not destroyed"),
    }
}

/// The names of every set in the namespace (ours and anyone's).
pub async fn names(
    runner: &dyn Runner,
    pid: u32,
) -> Result<std::collections::BTreeSet<String>, NetworkError> {
    let list = args(&["list", "-n"]);
    let output = runner
        .run(pid, "ipset", &list, None)
        .await?
        .check("ipset", &list)?;
    Ok(output
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Destroys sets; returns the ones that could not be (still referenced), absent ones count as
/// destroyed.
pub async fn destroy(
    runner: &dyn Runner,
    pid: u32,
    names: &[String],
) -> Result<Vec<String>, NetworkError> {
    let mut kept = Vec::new();
    // list:set sets first: they refer to the others.
    for name in names.iter().rev() {
        // A restore cut short (a crash between create and swap) leaves the temporary behind.
        destroy_temporary(runner, pid, name).await;
        let a = args(&["destroy", name]);
        let output = runner.run(pid, "ipset", &a, None).await?;
        let gone = output.success || output.stderr.contains("does not exist");
        if !gone {
            tracing::debug!(set = %name, stderr = %output.stderr.trim(), "ipset still in use; kept for later");
            kept.push(name.clone());
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use super::*;
    use crate::network::runner::Output;
    use crate::network::runner::fake::{FakeRunner, fail, ok};

    #[test]
    fn sets_are_built_aside_and_swapped_in() {
        let set = IpSetSpec {
            name: "peers".into(),
            kind: IpSetKind::Nets(vec!["10.0.0.0/8".into()]),
        };
        let tmp = temporary_name("peers");
        assert!(tmp.len() <= 31);
        assert_eq!(
            restore_input(&set),
            format!(
                "create {tmp} hash:net family inet maxelem 262144 -exist\nflush {tmp}\n\
                 add {tmp} 10.0.0.0/8 -exist\n\
                 create peers hash:net family inet maxelem 262144 -exist\nswap {tmp} peers\n\
                 destroy {tmp}\n"
            )
        );
        let ports = IpSetSpec {
            name: "web".into(),
            kind: IpSetKind::NetPorts(vec![("10.1.0.0/16".into(), 80)]),
        };
        assert!(restore_input(&ports).contains("add fltmp-"));
        assert!(restore_input(&ports).contains(" 10.1.0.0/16,80 -exist"));
    }

    #[tokio::test]
    async fn a_failed_restore_leaves_no_temporary_set() {
        let runner = FakeRunner::new(|_, args, _| {
            if args[0] == "restore" {
                fail("ipset v7.17: Error in line 3: Syntax error")
            } else {
                ok("")
            }
        });
        let set = IpSetSpec {
            name: "x".into(),
            kind: IpSetKind::Nets(vec![]),
        };
        let err = apply(&runner, 1, &[set]).await.unwrap_err();
        assert!(err.to_string().contains("set x"), "{err}");
        assert_eq!(
            runner.calls()[1],
            format!("ipset destroy {}", temporary_name("x"))
        );
    }

    #[tokio::test]
    async fn a_restore_that_could_not_run_leaves_no_temporary_set() {
        // The runner itself fails (timed out, could not start): the restore may have created
        // the temporary set before it stopped.
        let runner = FakeRunner::new(|_, _, _| ok(""));
        struct Broken(FakeRunner);
        impl Debug for Broken {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Broken")
            }
        }
        #[tonic::async_trait]
        impl Runner for Broken {
            async fn run(
                &self,
                pid: u32,
                program: &str,
                args: &[String],
                stdin: Option<String>,
            ) -> Result<Output, NetworkError> {
                let answer = self.0.run(pid, program, args, stdin).await;
                if args[0] == "restore" {
                    return Err(NetworkError::Command {
                        command: "ipset restore".into(),
                        status: "timed out".into(),
                        stderr: String::new(),
                    });
                }
                answer
            }
        }
        let broken = Broken(runner);
        let set = IpSetSpec {
            name: "x".into(),
            kind: IpSetKind::Nets(vec!["10.0.0.1".into()]),
        };
        let err = apply(&broken, 1, &[set]).await.unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        let calls = broken.0.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[1], format!("ipset destroy {}", temporary_name("x")));
    }

    #[tokio::test]
    async fn destroying_a_set_destroys_a_temporary_left_beside_it() {
        let runner = FakeRunner::new(|_, _, _| ok(""));
        let kept = destroy(&runner, 1, &["peers".into()]).await.unwrap();
        assert!(kept.is_empty());
        assert_eq!(
            runner.calls(),
            [
                format!("ipset destroy {}", temporary_name("peers")),
                "ipset destroy peers".to_owned()
            ]
        );
    }

    #[tokio::test]
    async fn sets_in_use_are_kept() {
        let runner = FakeRunner::new(|_, args, _| match args[1].as_str() {
            "busy" => fail("Set cannot be destroyed: it is in use by a kernel component"),
            "gone" => fail("The set with the given name does not exist"),
            _ => ok(""),
        });
        let kept = destroy(&runner, 1, &["busy".into(), "gone".into(), "free".into()])
            .await
            .unwrap();
        assert_eq!(kept, ["busy"]);
    }
}
