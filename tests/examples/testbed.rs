//! Starts a testbed with one CNI pod and one plain container, prints how to reach them, and
//! tears everything down when standard input reaches a newline or its end. For poking at the
//! runtime by hand (`ctr -a SOCKET -n k8s.io ...`, `nsenter -t PID ...`); if this process is
//! killed instead, the next testbed start reaps what it left.
//!
//! `cargo run -p faultline-tests --example testbed` (as root)

use std::io::BufRead;

use testbed::{PodSpec, Testbed, Volume, WORKLOAD_IMAGE};

fn main() -> anyhow::Result<()> {
    let tb = Testbed::start()?;
    let dir = tb.host_dir("data")?;
    let pod = tb.run_pod(PodSpec::new("poke").volume(Volume::host_dir(&dir, "/data")))?;
    let plain = tb.run_plain_container("poke", WORKLOAD_IMAGE, &[], &[])?;
    println!("base dir   {}", tb.base_dir().display());
    println!("socket     {}", tb.containerd_socket().display());
    println!(
        "pod        {} ip {:?} pid {} sandbox pid {}",
        pod.name, pod.ip, pod.pid, pod.sandbox_pid
    );
    println!("container  {} pid {}", plain.id, plain.pid);
    println!("volume     {} -> /data", dir.display());
    println!("press Enter to tear down");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    tb.shutdown()?;
    let left = tb.leftovers();
    anyhow::ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}
