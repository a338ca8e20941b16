//! faultline-controller: `run` watches the chaos resources and drives the node agents;
//! `crdgen` writes the CRD manifests; `certs` makes the certificates; `webhook` serves the
//! sidecar mode's mutating admission webhook and the chaos kinds' admission; `plan` shows what
//! chaos manifests would hit.
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
    Certs(Box<certs::CertsArgs>),
    /// The admission webhooks over HTTPS: the template sidecar mode's (POST /inject; watches the
    /// template and config ConfigMaps, or reads them from --manifests DIR) and the chaos kinds'
    /// validation and defaults (POST /validate-chaos, /default-chaos).
    Webhook(Box<webhook_cmd::WebhookArgs>),
    /// What chaos manifests would hit: validated and their targets chosen through the
    /// reconciler's own code, against a saved cluster state (--cluster) or the live cluster.
    Plan(Box<plan_cmd::PlanArgs>),
}

mod certs;

mod plan_cmd;
mod run_cmd;
mod webhook_cmd;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_cmd::run(*args),
        Command::Crdgen { out } => crdgen(out),
        Command::Certs(args) => certs::run(&args),
        Command::Webhook(args) => webhook_cmd::run(*args),
        Command::Plan(args) => plan_cmd::run(*args),
    }
}

/// Logs to stderr, as JSON or text, filtered by RUST_LOG (default info).
pub(crate) fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        subscriber.json().init();
    } else {
        subscriber.init();
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
