//! `nsexec [-m|-p|-n|-i|-u|-c <nsfile or PID>]... [--keep-fd N]... -- CMD ARGS`
//!
//! Runs CMD inside the given namespaces of a target. Exit status: CMD's own, 128+signal if a
//! signal ended it, 125 if nsexec itself failed, 126/127 if CMD could not be executed / found.
#![forbid(unsafe_code)]

use clap::Parser;
use nsexec::runner::{self, StartError};
use nsexec::{Error, LinuxSyscall, Namespace, NamespaceRequest, NamespaceTarget, OpenedNamespaces};

#[derive(Parser)]
#[command(
    name = "nsexec",
    version,
    about = "Run a command inside the namespaces of a process"
)]
struct Cli {
    /// Mount namespace: a PID or a namespace file.
    #[arg(short = 'm', long = "mount", value_name = "PID|FILE")]
    mount: Option<String>,
    /// PID namespace (takes effect for CMD, which nsexec forks after entering).
    #[arg(short = 'p', long = "pid", value_name = "PID|FILE")]
    pid: Option<String>,
    /// Network namespace.
    #[arg(short = 'n', long = "net", value_name = "PID|FILE")]
    net: Option<String>,
    /// IPC namespace.
    #[arg(short = 'i', long = "ipc", value_name = "PID|FILE")]
    ipc: Option<String>,
    /// UTS namespace.
    #[arg(short = 'u', long = "uts", value_name = "PID|FILE")]
    uts: Option<String>,
    /// Cgroup namespace.
    #[arg(short = 'c', long = "cgroup", value_name = "PID|FILE")]
    cgroup: Option<String>,
    /// Pass this open descriptor on to CMD (every other descriptor above 2 is closed on exec).
    #[arg(long = "keep-fd", value_name = "N")]
    keep_fd: Vec<i32>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl Cli {
    fn requests(&self) -> Result<Vec<NamespaceRequest>, Error> {
        let given = [
            (Namespace::Mnt, &self.mount),
            (Namespace::Pid, &self.pid),
            (Namespace::Net, &self.net),
            (Namespace::Ipc, &self.ipc),
            (Namespace::Uts, &self.uts),
            (Namespace::Cgroup, &self.cgroup),
        ];
        given
            .into_iter()
            .filter_map(|(ns, value)| value.as_deref().map(|v| (ns, v)))
            .map(|(ns, value)| {
                Ok(NamespaceRequest::new(
                    ns,
                    NamespaceTarget::parse(ns.flag(), value)?,
                ))
            })
            .collect()
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match enter_and_run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nsexec: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}

fn enter_and_run(cli: &Cli) -> Result<i32, StartError> {
    let requests = cli.requests()?;
    let opened = OpenedNamespaces::open(&requests, &LinuxSyscall)?;
    let entered_mount_ns = opened.contains(Namespace::Mnt);
    opened.enter(&LinuxSyscall)?;
    if entered_mount_ns {
        nix::unistd::chdir("/").map_err(|source| Error::Sys {
            call: "chdir /",
            source,
        })?;
    }
    nsexec::close_on_exec_except(&cli.keep_fd)?;
    runner::run(&cli.command)
}
