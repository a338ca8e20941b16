//! Fork, exec and wait for the command, forwarding signals and the exit status. Used by the
//! single-threaded `nsexec` binary after it has entered the namespaces (a pid namespace only
//! applies to children, hence the fork).

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execvp, pipe2, read, write};

use crate::{Error, Result, sys};

/// Why the command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{command}: command not found")]
    NotFound { command: String },
    #[error("{command}: cannot execute: {source}")]
    CannotExecute {
        command: String,
        #[source]
        source: Errno,
    },
    #[error("{0}")]
    Setup(#[from] Error),
}

impl StartError {
    /// The exit status a shell would give.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::NotFound { .. } => 127,
            StartError::CannotExecute { .. } => 126,
            StartError::Setup(_) => 125,
        }
    }
}

const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Runs `argv` in a child and returns its exit code (128+signal if a signal ended it).
pub fn run(argv: &[String]) -> Result<i32, StartError> {
    let Some(program) = argv.first() else {
        return Err(StartError::NotFound {
            command: String::new(),
        });
    };
    let c_argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| StartError::NotFound {
            command: program.clone(),
        })?;

    let mut waited = SigSet::empty();
    for signal in FORWARDED {
        waited.add(signal);
    }
    waited.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), Some(&mut old_mask))
        .map_err(sys_err("sigprocmask"))?;

    let (exec_error_rx, exec_error_tx) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))?;
    let parent = nix::unistd::getpid();
    match sys::fork().map_err(sys_err("fork"))? {
        ForkResult::Child => {
            drop(exec_error_rx);
            exec_child(&c_argv, &old_mask, parent, exec_error_tx)
        }
        ForkResult::Parent { child } => {
            drop(exec_error_tx);
            if let Some(errno) = read_exec_error(&exec_error_rx) {
                let _ = waitpid(child, None);
                return Err(if errno == Errno::ENOENT {
                    StartError::NotFound {
                        command: program.clone(),
                    }
                } else {
                    StartError::CannotExecute {
                        command: program.clone(),
                        source: errno,
                    }
                });
            }
            wait_forwarding(child, &waited)
        }
    }
}

fn exec_child(argv: &[CString], old_mask: &SigSet, parent: Pid, exec_error_tx: OwnedFd) -> ! {
    // Die with nsexec (and so with the agent that started it).
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // If nsexec died before the death signal was armed, we were reparented: give up. (In a
    // pid namespace we entered, our parent is outside it and getppid() is 0.)
    let ppid = nix::unistd::getppid();
    if ppid != parent && ppid.as_raw() != 0 {
        std::process::exit(125);
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
    let errno = match execvp(&argv[0], argv) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    let _ = write(exec_error_tx.as_fd(), &(errno as i32).to_ne_bytes());
    std::process::exit(if errno == Errno::ENOENT { 127 } else { 126 })
}

/// The errno the child wrote if exec failed; nothing (EOF) when exec succeeded.
fn read_exec_error(rx: &OwnedFd) -> Option<Errno> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match read(rx, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    (got == buf.len()).then(|| Errno::from_raw(i32::from_ne_bytes(buf)))
}

fn wait_forwarding(child: Pid, waited: &SigSet) -> Result<i32, StartError> {
    loop {
        // SIGCHLD may have been consumed before the child was reaped; check first.
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(Error::Sys {
                    call: "waitpid",
                    source,
                }
                .into());
            }
        }
        let signal = waited.wait().map_err(sys_err("sigwait"))?;
        if signal != Signal::SIGCHLD {
            let _ = kill(child, signal);
        }
    }
}

fn sys_err(call: &'static str) -> impl Fn(Errno) -> StartError {
    move |source| Error::Sys { call, source }.into()
}
