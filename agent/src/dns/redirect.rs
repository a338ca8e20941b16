//! The redirect that brings a pod's DNS queries to its responder whatever the application does
//! with /etc/resolv.conf: in the pod's network namespace, nat OUTPUT jumps first to our chain,
//! which REDIRECTs UDP and TCP to port 53 of each original nameserver to the responder's
//! loopback port, except packets with [`RELAY_MARK`] (the responder's own relayed queries).
//! The iptables backend is the one detected for the pod (network::iptables::detect_backend).

use std::net::Ipv4Addr;

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

/// The `iptables-restore --noflush` input installing the redirect (the chain is created, or
/// emptied if it exists, and jumped to first from OUTPUT).
pub fn restore_input(nameservers: &[Ipv4Addr], port: u16) -> String {
    let mut input =
        format!("*nat\n:{CHAIN} - [0:0]\n-A {CHAIN} -m mark --mark {RELAY_MARK:#x} -j RETURN\n");
    for server in nameservers {
        for proto in ["udp", "tcp"] {
            input.push_str(&format!(
                "-A {CHAIN} -d {server}/32 -p {proto} -m {proto} --dport 53 -j REDIRECT --to-ports {port}\n"
            ));
        }
    }
    input.push_str(&format!("-I OUTPUT 1 -j {CHAIN}\nCOMMIT\n"));
    input
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Installs the redirect in the network namespace of `pid`.
pub async fn install(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    nameservers: &[Ipv4Addr],
    port: u16,
) -> Result<(), NetworkError> {
    let program = backend.program("-restore");
    let restore_args = args(&["--noflush", "-w", LOCK_WAIT]);
    runner
        .run(
            pid,
            &program,
            &restore_args,
            Some(restore_input(nameservers, port)),
        )
        .await?
        .check(&program, &restore_args)?;
    Ok(())
}

/// Removes every jump to our chain and the chain; what is already gone is not an error, and
/// nothing else in the table is touched.
pub async fn remove(runner: &dyn Runner, pid: u32, backend: Backend) -> Result<(), NetworkError> {
    let program = backend.program("");
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
        let input = restore_input(&[Ipv4Addr::new(10, 96, 0, 10)], 40053);
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
        remove(&runner, 7, Backend::Nft).await.unwrap();
        let calls = runner.calls();
        assert_eq!(calls.iter().filter(|c| c.contains(" -D OUTPUT")).count(), 2);
        assert!(
            calls.iter().all(|c| c.starts_with("iptables-nft ")),
            "{calls:?}"
        );
        assert!(calls.last().unwrap().ends_with("-X FAULTLINE-DNS"));

        // Nothing there: only the checks run.
        let runner = FakeRunner::new(|_, _, _| fail("No chain/target/match by that name."));
        remove(&runner, 7, Backend::Legacy).await.unwrap();
        assert_eq!(runner.calls().len(), 2);
    }
}
