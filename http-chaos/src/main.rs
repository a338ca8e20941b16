//! `faultline-http-proxy`: started by the agent inside a pod's network namespace. Listens on a
//! free port (printed as `listening PORT` on stdout), serves connections redirected to it, and
//! reads what is in force from stdin, one control line per change (every experiment's rule
//! set: [`http_chaos::control`]), answering `ok` or `error: ...` on stdout for each. It serves
//! until killed; the agent removes the redirect first.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use http_chaos::proxy::{Rules, original_destination, serve_connection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    about = "HTTP proxy of a faultline HTTPChaos (run by the agent in a pod's network namespace)"
)]
struct Args {
    /// SO_MARK of the relayed connections (the redirect lets them pass).
    #[arg(long)]
    mark: Option<u32>,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind("0.0.0.0:0").await.context("binding")?;
    let rules = Rules::default();
    say(&format!("listening {}", listener.local_addr()?.port()));
    let control = rules.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match http_chaos::control::parse(&line) {
                Ok(sets) => {
                    control.replace(sets);
                    say("ok");
                }
                Err(e) => say(&format!("error: {e}")),
            }
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(upstream) = original_destination(&stream) else {
            continue;
        };
        let rules = rules.clone();
        tokio::spawn(serve_connection(stream, upstream, args.mark, rules));
    }
}
