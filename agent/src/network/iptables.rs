//! iptables in a pod: the backend (legacy or nft) detected from the pod and the node, never
//! assumed; our chains only, replaced atomically with `iptables-restore --noflush -w`; jumps into
//! them checked before they are added, so never duplicated; removal leaves every other rule as
//! it was.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::error::NetworkError;
use super::runner::Runner;
use super::spec::{ChainSpec, Direction};

/// Seconds to wait for the xtables lock.
const LOCK_WAIT: &str = "5";

/// Packets we inject ourselves (duplicates) carry this mark and skip our queues.
pub const OWN_PACKET_MARK: u32 = 0x0fa1_7000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn program(self, tool: &str) -> String {
        match self {
            Backend::Legacy => format!("iptables-legacy{tool}"),
            Backend::Nft => format!("iptables-nft{tool}"),
        }
    }

    /// The IPv6 tool of the same backend (`ip6tables-legacy{tool}`, `ip6tables-nft{tool}`).
    pub fn program6(self, tool: &str) -> String {
        match self {
            Backend::Legacy => format!("ip6tables-legacy{tool}"),
            Backend::Nft => format!("ip6tables-nft{tool}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }
}

/// One of the base chains we own: in `table`, jumped to from the built-in `hook`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseChain {
    pub table: &'static str,
    pub name: &'static str,
    pub hook: &'static str,
}

pub const CHAOS_INPUT: BaseChain = BaseChain {
    table: "filter",
    name: "CHAOS-INPUT",
    hook: "INPUT",
};
pub const CHAOS_OUTPUT: BaseChain = BaseChain {
    table: "filter",
    name: "CHAOS-OUTPUT",
    hook: "OUTPUT",
};
/// tc classification and queueing of everything leaving a device (after routing).
pub const CHAOS_TC: BaseChain = BaseChain {
    table: "mangle",
    name: "CHAOS-TC",
    hook: "POSTROUTING",
};
/// Queueing of filtered traffic (its own hook, so a packet can meet a filtered and a global
/// fault).
pub const CHAOS_NETEM: BaseChain = BaseChain {
    table: "mangle",
    name: "CHAOS-NETEM",
    hook: "OUTPUT",
};

pub const BASE_CHAINS: [BaseChain; 4] = [CHAOS_INPUT, CHAOS_OUTPUT, CHAOS_TC, CHAOS_NETEM];

/// What one table should hold of ours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableRules {
    /// Rules per base chain (arguments after `-A CHAIN`).
    pub base: Vec<(BaseChain, Vec<String>)>,
    /// Our named chains and their rules.
    pub named: Vec<(String, Vec<String>)>,
}

/// Chaos Mesh's chain semantics: each named chain holds one rule per ipset (or one rule), and
/// CHAOS-INPUT / CHAOS-OUTPUT jump to it.
pub fn filter_rules(chains: &[ChainSpec]) -> TableRules {
    let mut input = Vec::new();
    let mut output = Vec::new();
    let mut named = Vec::new();
    for chain in chains {
        let (iface, set_dirs) = match chain.direction {
            Direction::Input => ("-i", "src,dst"),
            Direction::Output => ("-o", "dst,dst"),
        };
        let mut proto = Vec::new();
        if !chain.protocol.is_empty() {
            proto.push(format!("-p {}", chain.protocol));
            for (ports, multi, single) in [
                (&chain.source_ports, "--source-ports", "--sport"),
                (&chain.destination_ports, "--destination-ports", "--dport"),
            ] {
                if ports.contains(',') {
                    proto.push(format!("-m multiport {multi} {ports}"));
                } else if !ports.is_empty() {
                    proto.push(format!("{single} {ports}"));
                }
            }
            if !chain.tcp_flags.is_empty() {
                proto.push(format!("--tcp-flags {}", chain.tcp_flags));
            }
        }
        let proto = proto.join(" ");
        let join = |parts: &[&str]| {
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let target = format!("-j {}", chain.target);
        let dev = format!("{iface} {}", chain.device);
        let rules = if chain.ipsets.is_empty() {
            vec![join(&[&dev, &proto, &target])]
        } else {
            chain
                .ipsets
                .iter()
                .map(|set| {
                    let m = format!("-m set --match-set {set} {set_dirs}");
                    join(&[&dev, &m, &proto, &target])
                })
                .collect()
        };
        named.push((chain.name.clone(), rules));
        let jump = format!("-j {}", chain.name);
        match chain.direction {
            Direction::Input => input.push(jump),
            Direction::Output => output.push(jump),
        }
    }
    TableRules {
        base: vec![(CHAOS_INPUT, input), (CHAOS_OUTPUT, output)],
        named,
    }
}

/// The `iptables-restore --noflush` input that makes `table` hold exactly `rules` of ours:
/// declaring a chain creates or flushes it; named chains of ours no longer wanted are flushed
/// and deleted (nothing refers to them once the base chains are rewritten).
pub fn restore_input(table: &str, rules: &TableRules, retired: &[String]) -> String {
    let mut out = format!("*{table}\n");
    for (base, _) in &rules.base {
        out.push_str(&format!(":{} - [0:0]\n", base.name));
    }
    for (name, _) in &rules.named {
        out.push_str(&format!(":{name} - [0:0]\n"));
    }
    for (name, chain_rules) in &rules.named {
        for rule in chain_rules {
            out.push_str(&format!("-A {name} {rule}\n"));
        }
    }
    for (base, base_rules) in &rules.base {
        for rule in base_rules {
            out.push_str(&format!("-A {} {rule}\n", base.name));
        }
    }
    for name in retired {
        if !rules.named.iter().any(|(n, _)| n == name) {
            out.push_str(&format!("-F {name}\n-X {name}\n"));
        }
    }
    out.push_str("COMMIT\n");
    out
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Counts the rules of a save output ("-A" lines).
fn rule_count(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

/// Picks the backend: the one the pod already uses (it has rules there), else the one the node
/// uses (more rules in the host namespace, as kube-proxy's iptables wrapper decides), else the
/// default `iptables` binary's.
pub async fn detect_backend(runner: &dyn Runner, pid: u32) -> Result<Backend, NetworkError> {
    let count = |target: u32, backend: Backend| async move {
        runner
            .run(target, &backend.program("-save"), &[], None)
            .await
            .ok()
            .filter(|o| o.success)
            .map(|o| rule_count(&o.stdout))
    };
    let pod = (
        count(pid, Backend::Legacy).await,
        count(pid, Backend::Nft).await,
    );
    match pod {
        (None, None) => {
            return Err(NetworkError::Internal(
                "neither iptables-legacy nor iptables-nft runs in the pod's namespace".into(),
            ));
        }
        (Some(_), None) => return Ok(Backend::Legacy),
        (None, Some(_)) => return Ok(Backend::Nft),
        (Some(l), Some(n)) if l > 0 && n == 0 => return Ok(Backend::Legacy),
        (Some(l), Some(n)) if n > 0 && l == 0 => return Ok(Backend::Nft),
        _ => {}
    }
    let node = (
        count(1, Backend::Legacy).await,
        count(1, Backend::Nft).await,
    );
    match node {
        (Some(l), Some(n)) if l > n => return Ok(Backend::Legacy),
        (Some(l), Some(n)) if n > l => return Ok(Backend::Nft),
        _ => {}
    }
    // Both backends equally used: the pod's default `iptables` decides.
    let version_args = args(&["--version"]);
    let version = match runner.run(pid, "iptables", &version_args, None).await {
        Ok(output) if output.success => output.stdout,
        Ok(output) => format!("{} {}", output.status, output.stderr.trim()),
        Err(err) => err.to_string(),
    };
    if version.contains("legacy") {
        return Ok(Backend::Legacy);
    }
    if version.contains("nf_tables") {
        return Ok(Backend::Nft);
    }
    // No default to ask (a pod image with only iptables-legacy and iptables-nft), and neither
    // backend holds a rule in the pod or on the node: rules work in either; nft, the default of
    // current iptables, is a choice here. With rules in both, it would be a guess: an error.
    if pod == (Some(0), Some(0)) && matches!(node, (None, None) | (Some(0), Some(0))) {
        return Ok(Backend::Nft);
    }
    Err(NetworkError::Internal(format!(
        "cannot tell the iptables backend: both are in use and `iptables --version` says {:?}",
        version.trim()
    )))
}

/// Applies our rules of one table in a pod and fixes the jumps into our base chains: present
/// exactly once where the chain has rules, absent (and the chain deleted) where it has none.
pub async fn apply_table(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    table: &'static str,
    rules: &TableRules,
    retired: &[String],
) -> Result<(), NetworkError> {
    let restore_args = args(&["-w", LOCK_WAIT, "--noflush"]);
    let program = backend.program("-restore");
    runner
        .run(
            pid,
            &program,
            &restore_args,
            Some(restore_input(table, rules, retired)),
        )
        .await?
        .check(&program, &restore_args)?;
    let iptables = backend.program("");
    for (base, base_rules) in &rules.base {
        let jump = args(&[
            "-w", LOCK_WAIT, "-t", table, "-C", base.hook, "-j", base.name,
        ]);
        let present = runner.run(pid, &iptables, &jump, None).await?.success;
        if !base_rules.is_empty() && !present {
            let insert = args(&[
                "-w", LOCK_WAIT, "-t", table, "-I", base.hook, "1", "-j", base.name,
            ]);
            runner
                .run(pid, &iptables, &insert, None)
                .await?
                .check(&iptables, &insert)?;
        } else if base_rules.is_empty() {
            remove_base_chain(runner, pid, backend, base).await?;
        }
    }
    Ok(())
}

/// Removes every jump to `base` and the chain itself; absent is fine.
async fn remove_base_chain(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    base: &BaseChain,
) -> Result<(), NetworkError> {
    let iptables = backend.program("");
    let delete = args(&[
        "-w", LOCK_WAIT, "-t", base.table, "-D", base.hook, "-j", base.name,
    ]);
    // Each -D removes one jump; a jump someone duplicated is removed too.
    for _ in 0..16 {
        if !runner.run(pid, &iptables, &delete, None).await?.success {
            break;
        }
    }
    let exists = args(&["-w", LOCK_WAIT, "-t", base.table, "-S", base.name]);
    if runner.run(pid, &iptables, &exists, None).await?.success {
        for op in ["-F", "-X"] {
            let a = args(&["-w", LOCK_WAIT, "-t", base.table, op, base.name]);
            runner
                .run(pid, &iptables, &a, None)
                .await?
                .check(&iptables, &a)?;
        }
    }
    Ok(())
}

/// Removes everything of ours from `table`: jumps, base chains and the named chains given.
pub async fn clear_table(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    table: &'static str,
    named: &[String],
) -> Result<(), NetworkError> {
    let iptables = backend.program("");
    let bases: Vec<&BaseChain> = BASE_CHAINS.iter().filter(|b| b.table == table).collect();
    // Empty the base chains first so nothing refers to the named ones.
    for base in &bases {
        let exists = args(&["-w", LOCK_WAIT, "-t", table, "-S", base.name]);
        if runner.run(pid, &iptables, &exists, None).await?.success {
            let flush = args(&["-w", LOCK_WAIT, "-t", table, "-F", base.name]);
            runner
                .run(pid, &iptables, &flush, None)
                .await?
                .check(&iptables, &flush)?;
        }
    }
    let present: BTreeSet<&String> = named.iter().collect();
    for name in present {
        let exists = args(&["-w", LOCK_WAIT, "-t", table, "-S", name]);
        if runner.run(pid, &iptables, &exists, None).await?.success {
            for op in ["-F", "-X"] {
                let a = args(&["-w", LOCK_WAIT, "-t", table, op, name]);
                runner
                    .run(pid, &iptables, &a, None)
                    .await?
                    .check(&iptables, &a)?;
            }
        }
    }
    for base in bases {
        remove_base_chain(runner, pid, backend, base).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::runner::fake::{FakeRunner, fail, ok};

    fn chain(name: &str, direction: Direction, ipsets: &[&str]) -> ChainSpec {
        ChainSpec {
            name: name.into(),
            direction,
            ipsets: ipsets.iter().map(|s| s.to_string()).collect(),
            target: "DROP".into(),
            protocol: String::new(),
            source_ports: String::new(),
            destination_ports: String::new(),
            tcp_flags: String::new(),
            device: "eth0".into(),
        }
    }

    #[test]
    fn chains_render_like_chaos_mesh() {
        let mut web = chain("OUTPUT/web", Direction::Output, &["peers"]);
        web.protocol = "tcp".into();
        web.destination_ports = "80,443".into();
        let rules = filter_rules(&[chain("INPUT/all", Direction::Input, &[]), web]);
        let text = restore_input("filter", &rules, &["OLD".into(), "INPUT/all".into()]);
        assert_eq!(
            text,
            "*filter\n\
             :CHAOS-INPUT - [0:0]\n\
             :CHAOS-OUTPUT - [0:0]\n\
             :INPUT/all - [0:0]\n\
             :OUTPUT/web - [0:0]\n\
             -A INPUT/all -i eth0 -j DROP\n\
             -A OUTPUT/web -o eth0 -m set --match-set peers dst,dst -p tcp -m multiport --destination-ports 80,443 -j DROP\n\
             -A CHAOS-INPUT -j INPUT/all\n\
             -A CHAOS-OUTPUT -j OUTPUT/web\n\
             -F OLD\n-X OLD\n\
             COMMIT\n"
        );
    }

    #[tokio::test]
    async fn jumps_are_added_once_and_empty_base_chains_removed() {
        // -C finds no jump for CHAOS-OUTPUT; CHAOS-INPUT has no rules and does not exist.
        let runner = FakeRunner::new(|_, args, _| {
            let a = args.join(" ");
            if a.contains("-C OUTPUT -j CHAOS-OUTPUT")
                || a.contains("-D INPUT")
                || a.contains("-S CHAOS-INPUT")
            {
                fail("no such rule")
            } else {
                ok("")
            }
        });
        let rules = filter_rules(&[chain("x", Direction::Output, &["s"])]);
        apply_table(&runner, 9, Backend::Nft, "filter", &rules, &[])
            .await
            .unwrap();
        let calls = runner.calls();
        assert!(calls[0].starts_with("iptables-nft-restore -w 5 --noflush\n<<<\n*filter"));
        assert!(
            calls.contains(&"iptables-nft -w 5 -t filter -I OUTPUT 1 -j CHAOS-OUTPUT".to_owned())
        );
        assert!(!calls.iter().any(|c| c.contains("-I INPUT")), "{calls:#?}");
        assert!(
            !calls.iter().any(|c| c.contains("-X CHAOS-INPUT")),
            "{calls:#?}"
        );
    }

    #[tokio::test]
    async fn the_backend_in_use_wins() {
        let pod_nft = FakeRunner::new(|program, _, _| match program {
            "iptables-legacy-save" => ok(""),
            "iptables-nft-save" => ok("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"),
            _ => ok(""),
        });
        assert_eq!(detect_backend(&pod_nft, 5).await.unwrap(), Backend::Nft);
        let only_legacy = FakeRunner::new(|program, _, _| match program {
            "iptables-legacy-save" => ok(""),
            _ => fail("not found"),
        });
        assert_eq!(
            detect_backend(&only_legacy, 5).await.unwrap(),
            Backend::Legacy
        );
        let default_binary = FakeRunner::new(|program, _, _| match program {
            "iptables" => ok("iptables v1.8.9 (legacy)\n"),
            _ => ok(""),
        });
        assert_eq!(
            detect_backend(&default_binary, 5).await.unwrap(),
            Backend::Legacy
        );
        let none = FakeRunner::new(|_, _, _| fail("not found"));
        assert!(detect_backend(&none, 5).await.is_err());
        // No default binary: with nothing anywhere either backend works (nft); with rules in
        // both, picking one would be a guess.
        let empty_without_default = FakeRunner::new(|program, _, _| match program {
            "iptables" => fail("No such file or directory"),
            _ => ok(""),
        });
        assert_eq!(
            detect_backend(&empty_without_default, 5).await.unwrap(),
            Backend::Nft
        );
        let both_used_without_default = FakeRunner::new(|program, _, _| match program {
            "iptables" => fail("No such file or directory"),
            _ => ok("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"),
        });
        let err = detect_backend(&both_used_without_default, 5)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot tell the iptables backend"),
            "{err}"
        );
    }
}
