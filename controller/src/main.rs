//! faultline controller: watches chaos resources, selects pods and drives the node agents.
//!
//! The reconciler lands with the controller issue; this binary only reports its version so the
//! workspace, packaging and CI already carry it.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
#[command(name = "faultline-controller", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("the controller is not implemented yet (see the controller issue)")
}
