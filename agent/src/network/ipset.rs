//! ipsets in a pod, replaced atomically: the new content is built in a temporary set and swapped
//! with the live one (`ipset swap`), so a rule matching the set never sees it half filled.

use super::error::NetworkError;
use super::runner::Runner;
use super::spec::{IpSetKind, IpSetSpec};

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
        other => format!("create {name} {} family inet -exist", other.type_name()),
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
        let output = runner
            .run(pid, "ipset", &restore, Some(restore_input(set)))
            .await?;
        if !output.success {
            // Leave no temporary set behind.
            let _ = runner
                .run(
                    pid,
                    "ipset",
                    &args(&["destroy", &temporary_name(&set.name)]),
                    None,
                )
                .await;
            return Err(NetworkError::Command {
                command: format!("ipset restore (set {})", set.name),
                status: output.status,
                stderr: output.stderr.trim().to_owned(),
            });
        }
    }
    Ok(())
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
    use super::*;
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
                "create {tmp} hash:net family inet -exist\nflush {tmp}\nadd {tmp} 10.0.0.0/8 -exist\n\
                 create peers hash:net family inet -exist\nswap {tmp} peers\ndestroy {tmp}\n"
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
