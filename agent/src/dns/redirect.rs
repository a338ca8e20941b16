//! The redirect that brings a pod's DNS queries to its responder whatever the application does
//! with /etc/resolv.conf: in the pod's network namespace, nat OUTPUT jumps first to our chain,
//! which REDIRECTs UDP and TCP to port 53 of each original nameserver to the responder's
//! loopback port, except packets with [`RELAY_MARK`] (the responder's own relayed queries).
//! The iptables backend is the one detected for the pod (network::iptables::detect_backend).
//! IPv6 nameservers get the same chain through ip6tables of that backend; REDIRECT of a locally
//! sent IPv6 packet leads to `::1`, where the responder listens on the same port.

use std::net::IpAddr;

use crate::network::NetworkError;
use crate::network::iptables::Backend;
use crate::network::runner::Runner;

/// Our chain in the nat table.
pub const CHAIN: &str = "FAULTLINE-DNS";
/// SO_MARK of the responder's relayed queries. Chosen outside the network chaos mark's mask
/// (0x0fa17000), so network faults still see relayed DNS as the pod's traffic.
pub const RELAY_MARK: u32 = 0x00d0_0053;
/// Seconds to wait for the xtables lock.
const LOCK_WAIT: &str = "5";

/// The `iptables-restore --noflush` input installing the redirect of `nameservers` (those of
/// one family: `ip6tables-restore` takes the IPv6 ones) (the chain is created, or emptied if it
/// exists, and jumped to first from OUTPUT).
pub fn restore_input(nameservers: &[IpAddr], port: u16) -> String {
    let mut input =
        format!("*nat\n:{CHAIN} - [0:0]\n-A {CHAIN} -m mark --mark {RELAY_MARK:#x} -j RETURN\n");
    for server in nameservers {
        let prefix = if server.is_ipv6() { 128 } else { 32 };
        for proto in ["udp", "tcp"] {
            input.push_str(&format!(
                "-A {CHAIN} -d {server}/{prefix} -p {proto} -m {proto} --dport 53 -j REDIRECT --to-ports {port}\n"
            ));
        }
    }
    input.push_str(&format!("-I OUTPUT 1 -j {CHAIN}\nCOMMIT\n"));
    input
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The tool for one family of `backend`.
fn program(backend: Backend, ipv6: bool, tool: &str) -> String {
    if ipv6 {
        backend.program6(tool)
    } else {
        backend.program(tool)
    }
}

/// Installs the redirect in the network namespace of `pid`: iptables for the IPv4
/// nameservers, ip6tables for the IPv6 ones.
pub async fn install(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    nameservers: &[IpAddr],
    port: u16,
) -> Result<(), NetworkError> {
    for ipv6 in [false, true] {
        let family: Vec<IpAddr> = nameservers
            .iter()
            .copied()
            .filter(|n| n.is_ipv6() == ipv6)
            .collect();
        if family.is_empty() {
            continue;
        }
        let program = program(backend, ipv6, "-restore");
        let restore_args = args(&["--noflush", "-w", LOCK_WAIT]);
        runner
            .run(
                pid,
                &program,
                &restore_args,
                Some(restore_input(&family, port)),
            )
            .await?
            .check(&program, &restore_args)?;
    }
    Ok(())
}

/// Removes every jump to our chain and the chain, from ip6tables too when `ipv6` (the record
/// had IPv6 nameservers); what is already gone is not an error, and nothing else in the table
/// is touched.
pub async fn remove(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    ipv6: bool,
) -> Result<(), NetworkError> {
    remove_family(runner, pid, backend, false).await?;
    if ipv6 {
        remove_family(runner, pid, backend, true).await?;
    }
    Ok(())
}

async fn remove_family(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    ipv6: bool,
) -> Result<(), NetworkError> {
    let program = program(backend, ipv6, "");
    let jump = args(&["-w", LOCK_WAIT, "-t", "nat", "-C", "OUTPUT", "-j", CHAIN]);
    // A crash between two installs could have left more than one jump.
    for _ in 0..16 {
        if !runner.run(pid, &program, &jump, None).await?.success {
            break;
        }
        let delete = args(&["-w", LOCK_WAIT, "-t", "nat", "-D", "OUTPUT", "-j", CHAIN]);
        runner
            .run(pid, &program, &delete, None)
            .await?
            .check(&program, &delete)?;
    }
    let exists = args(&["-w", LOCK_WAIT, "-t", "nat", "-n", "-L", CHAIN]);
    if runner.run(pid, &program, &exists, None).await?.success {
        for step in ["-F", "-X"] {
            let cmd = args(&["-w", LOCK_WAIT, "-t", "nat", step, CHAIN]);
            runner
                .run(pid, &program, &cmd, None)
                .await?
                .check(&program, &cmd)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::runner::fake::{FakeRunner, fail, ok};

    #[test]
    fn the_redirect_covers_udp_and_tcp_to_each_nameserver_and_spares_relayed_queries() {
        let input = restore_input(&["10.96.0.10".parse().unwrap()], 40053);
        assert_eq!(
            input,
            "*nat\n:FAULTLINE-DNS - [0:0]\n\
             -A FAULTLINE-DNS -m mark --mark 0xd00053 -j RETURN\n\
             -A FAULTLINE-DNS -d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 40053\n\
             -A FAULTLINE-DNS -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 40053\n\
             -I OUTPUT 1 -j FAULTLINE-DNS\nCOMMIT\n"
        );
        assert_ne!(
            RELAY_MARK & crate::network::iptables::OWN_PACKET_MARK,
            crate::network::iptables::OWN_PACKET_MARK
        );
    }

    #[tokio::test]
    async fn removal_deletes_every_jump_then_the_chain_and_tolerates_absence() {
        let jumps = std::sync::Mutex::new(2);
        let runner = FakeRunner::new(move |_, args, _| {
            let mut jumps = jumps.lock().unwrap();
            match args.get(4).map(String::as_str) {
                Some("-C") if *jumps > 0 => ok(""),
                Some("-C") => fail("does a matching rule exist in that chain?"),
                Some("-D") => {
                    *jumps -= 1;
                    ok("")
                }
                _ => ok(""),
            }
        });
        remove(&runner, 7, Backend::Nft, false).await.unwrap();
        let calls = runner.calls();
        assert_eq!(calls.iter().filter(|c| c.contains(" -D OUTPUT")).count(), 2);
        assert!(
            calls.iter().all(|c| c.starts_with("iptables-nft ")),
            "{calls:?}"
        );
        assert!(calls.last().unwrap().ends_with("-X FAULTLINE-DNS"));

        // Nothing there: only the checks run.
        let runner = FakeRunner::new(|_, _, _| fail("No chain/target/match by that name."));
        remove(&runner, 7, Backend::Legacy, false).await.unwrap();
        assert_eq!(runner.calls().len(), 2);
    }

    /// IPv6 nameservers: the same chain through ip6tables of the pod's backend (/128 each),
    /// the IPv4 ones through iptables; removal covers both when the record had IPv6.
    #[tokio::test]
    async fn ipv6_nameservers_are_redirected_through_ip6tables() {
        let runner = FakeRunner::new(|_, _, _| ok(""));
        let servers: Vec<IpAddr> =
            vec!["10.96.0.10".parse().unwrap(), "fd00:10::a".parse().unwrap()];
        install(&runner, 7, Backend::Nft, &servers, 40053)
            .await
            .unwrap();
        let calls = runner.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[0].starts_with("iptables-nft-restore "), "{calls:?}");
        assert!(calls[0].contains("-d 10.96.0.10/32 -p udp"), "{calls:?}");
        assert!(!calls[0].contains("fd00"), "{calls:?}");
        assert!(calls[1].starts_with("ip6tables-nft-restore "), "{calls:?}");
        assert!(
            calls[1].contains(
                "-d fd00:10::a/128 -p udp -m udp --dport 53 -j REDIRECT --to-ports 40053"
            ),
            "{calls:?}"
        );
        assert!(calls[1].contains("-d fd00:10::a/128 -p tcp"), "{calls:?}");
        assert!(!calls[1].contains("10.96.0.10"), "{calls:?}");

        // Only IPv6: ip6tables alone.
        let runner = FakeRunner::new(|_, _, _| ok(""));
        install(&runner, 7, Backend::Legacy, &servers[1..], 40053)
            .await
            .unwrap();
        assert_eq!(runner.calls().len(), 1);
        assert!(runner.calls()[0].starts_with("ip6tables-legacy-restore "));

        let runner = FakeRunner::new(|_, _, _| fail("No chain/target/match by that name."));
        remove(&runner, 7, Backend::Legacy, true).await.unwrap();
        let calls = runner.calls();
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert!(calls[2].starts_with("ip6tables-legacy "), "{calls:?}");
    }
}
