//! The redirect of an HTTPChaos: in the pod's network namespace, nat PREROUTING jumps first to
//! our chain, which REDIRECTs TCP to the pod's `proxy_ports` to the proxy, except the proxy's
//! own connections (mark [`RELAY_MARK`]).

use crate::network::NetworkError;
use crate::network::iptables::Backend;
use crate::network::runner::Runner;

pub const CHAIN: &str = "FAULTLINE-HTTP";
/// SO_MARK of the proxy's upstream connections; outside the network chaos mask (0x0fa17000).
pub const RELAY_MARK: u32 = 0x00d0_0080;
const LOCK_WAIT: &str = "5";
/// iptables' multiport takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

/// The `iptables-restore --noflush` input: our chain (re)filled; the jump added only when
/// `with_jump` (the first install: an update must not add a second one).
pub fn restore_input(ports: &[u16], proxy_port: u16, with_jump: bool) -> String {
    let mut input =
        format!("*nat\n:{CHAIN} - [0:0]\n-A {CHAIN} -m mark --mark {RELAY_MARK:#x} -j RETURN\n");
    for chunk in ports.chunks(MULTIPORT_MAX) {
        let list = chunk
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        input.push_str(&format!(
            "-A {CHAIN} -p tcp -m multiport --dports {list} -j REDIRECT --to-ports {proxy_port}\n"
        ));
    }
    if with_jump {
        input.push_str(&format!("-I PREROUTING 1 -j {CHAIN}\n"));
    }
    input.push_str("COMMIT\n");
    input
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub async fn install(
    runner: &dyn Runner,
    pid: u32,
    backend: Backend,
    ports: &[u16],
    proxy_port: u16,
    with_jump: bool,
) -> Result<(), NetworkError> {
    let program = backend.program("-restore");
    let restore_args = args(&["--noflush", "-w", LOCK_WAIT]);
    runner
        .run(
            pid,
            &program,
            &restore_args,
            Some(restore_input(ports, proxy_port, with_jump)),
        )
        .await?
        .check(&program, &restore_args)?;
    Ok(())
}

/// Every jump to our chain, then the chain; what is gone already is not an error.
pub async fn remove(runner: &dyn Runner, pid: u32, backend: Backend) -> Result<(), NetworkError> {
    let program = backend.program("");
    let check = args(&[
        "-w",
        LOCK_WAIT,
        "-t",
        "nat",
        "-C",
        "PREROUTING",
        "-j",
        CHAIN,
    ]);
    for _ in 0..16 {
        if !runner.run(pid, &program, &check, None).await?.success {
            break;
        }
        let delete = args(&[
            "-w",
            LOCK_WAIT,
            "-t",
            "nat",
            "-D",
            "PREROUTING",
            "-j",
            CHAIN,
        ]);
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

    #[test]
    fn ports_are_redirected_in_multiport_chunks_and_the_jump_added_once() {
        let ports: Vec<u16> = (8000..8016).collect();
        let input = restore_input(&ports, 40080, true);
        assert!(input.contains("--dports 8000,8001,8002,8003,8004,8005,8006,8007,8008,8009,8010,8011,8012,8013,8014 -j REDIRECT --to-ports 40080\n"), "{input}");
        assert!(input.contains("--dports 8015 -j REDIRECT"), "{input}");
        assert!(input.contains("-I PREROUTING 1 -j FAULTLINE-HTTP\n"));
        assert!(!restore_input(&[80], 1, false).contains("PREROUTING"));
        assert_ne!(
            RELAY_MARK & crate::network::iptables::OWN_PACKET_MARK,
            crate::network::iptables::OWN_PACKET_MARK
        );
    }
}
