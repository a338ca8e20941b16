//! `faultline-dns-responder`: started by the agent inside a pod's network namespace. Prints
//! `listening PORT` on stdout once its UDP and TCP sockets are bound, then serves until killed.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use clap::Parser;
use dns_responder::ResponderSpec;
use dns_responder::server::{Config, Listening};

#[derive(Parser)]
#[command(
    about = "DNS responder of a faultline DNSChaos (run by the agent in a pod's network namespace)"
)]
struct Args {
    /// `error` or `random`.
    #[arg(long)]
    action: String,
    /// A domain pattern (repeat); none covers every name.
    #[arg(long = "pattern")]
    patterns: Vec<String>,
    /// Where to relay what is not covered (repeat; tried in order).
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<SocketAddr>,
    /// SO_MARK of relayed queries, which the redirect lets pass.
    #[arg(long)]
    mark: Option<u32>,
    #[arg(long, default_value = "127.0.0.1")]
    listen: Ipv4Addr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = ResponderSpec::parse(&args.action, &args.patterns)?;
    // IPv6 nameservers are redirected (ip6tables) to the same port on ::1.
    let ipv6 = args.upstreams.iter().any(SocketAddr::is_ipv6);
    let listening = Listening::bind(args.listen, ipv6)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let port = listening.port()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {port}")?;
        out.flush()?;
    }
    listening
        .serve(Config {
            spec,
            upstreams: args.upstreams,
            mark: args.mark,
        })
        .await?;
    Ok(())
}
