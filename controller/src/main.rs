//! faultline-controller: `run` watches the chaos resources and drives the node agents;
//! `crdgen` writes the CRD manifests.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "faultline-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watches the chaos resources and drives the node agents over mTLS.
    Run(Box<run_cmd::RunArgs>),
    /// Writes the CRD manifests (one YAML file per kind) into a directory, or prints them.
    Crdgen {
        /// Where to write them; "-" prints them to stdout.
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
    },
    /// Makes the mTLS certificates of the controller and the agents (a CA, the agents' server
    /// certificate, the controller's client certificate) as Secrets or PEM files.
    Certs(certs::CertsArgs),
}

mod certs;

mod run_cmd;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_cmd::run(*args),
        Command::Crdgen { out } => crdgen(out),
        Command::Certs(args) => certs::run(&args),
    }
}

fn crdgen(out: PathBuf) -> anyhow::Result<()> {
    if out.as_os_str() == "-" {
        for (_, yaml) in controller::crdgen::render_all()? {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    let written = controller::crdgen::write_all(&out)
        .with_context(|| format!("writing the CRDs to {}", out.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
