//! Which namespaces to enter, of which target, and in which order.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use crate::syscall::Syscall;
use crate::{Error, Result};

/// A namespace kind nsexec can enter. User namespaces are deliberately absent: the agent is
/// already privileged on the host, and entering a container's user namespace would drop that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    Cgroup,
    Ipc,
    Uts,
    Net,
    Pid,
    /// Entered last: once in another mount namespace, host paths no longer resolve.
    Mnt,
}

impl Namespace {
    /// The order namespaces are entered in (youki applies namespaces from an explicit list, too).
    pub const ENTRY_ORDER: [Namespace; 6] = [
        Namespace::Cgroup,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::Pid,
        Namespace::Mnt,
    ];

    /// The file name under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Namespace::Cgroup => "cgroup",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::Pid => "pid",
            Namespace::Mnt => "mnt",
        }
    }

    /// The nsexec / nsenter command-line flag.
    pub fn flag(self) -> char {
        match self {
            Namespace::Cgroup => 'c',
            Namespace::Ipc => 'i',
            Namespace::Uts => 'u',
            Namespace::Net => 'n',
            Namespace::Pid => 'p',
            Namespace::Mnt => 'm',
        }
    }

    pub fn clone_flag(self) -> CloneFlags {
        match self {
            Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Net => CloneFlags::CLONE_NEWNET,
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
            Namespace::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proc_name())
    }
}

/// Whose namespace: a process (its `/proc/PID/ns/<kind>`) or a namespace file (a bind mount
/// such as `/run/netns/x`, or any `/proc/PID/ns/<kind>` path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceTarget {
    Pid(u32),
    File(PathBuf),
}

impl NamespaceTarget {
    /// Parses a command-line value: all digits is a PID, anything else a path.
    pub fn parse(flag: char, value: &str) -> Result<Self> {
        if value.is_empty() {
            return Err(Error::InvalidTarget {
                flag,
                value: value.to_owned(),
                reason: "expected a PID or a namespace file",
            });
        }
        if value.bytes().all(|b| b.is_ascii_digit()) {
            return match value.parse::<u32>() {
                Ok(0) | Err(_) => Err(Error::InvalidTarget {
                    flag,
                    value: value.to_owned(),
                    reason: "not a valid PID",
                }),
                Ok(pid) => Ok(NamespaceTarget::Pid(pid)),
            };
        }
        Ok(NamespaceTarget::File(PathBuf::from(value)))
    }
}

/// One namespace of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRequest {
    pub namespace: Namespace,
    pub target: NamespaceTarget,
}

impl NamespaceRequest {
    pub fn new(namespace: Namespace, target: NamespaceTarget) -> Self {
        Self { namespace, target }
    }

    /// Every namespace in `kinds` of process `pid`.
    pub fn of_pid(pid: u32, kinds: &[Namespace]) -> Vec<Self> {
        kinds
            .iter()
            .map(|&ns| Self::new(ns, NamespaceTarget::Pid(pid)))
            .collect()
    }

    fn path(&self) -> PathBuf {
        match &self.target {
            NamespaceTarget::Pid(pid) => {
                PathBuf::from(format!("/proc/{pid}/ns/{}", self.namespace.proc_name()))
            }
            NamespaceTarget::File(path) => path.clone(),
        }
    }

    fn open(&self, sys: &dyn Syscall) -> Result<OwnedFd> {
        if let NamespaceTarget::Pid(pid) = self.target
            && !sys.exists(Path::new(&format!("/proc/{pid}")))
        {
            return Err(Error::DeadProcess { pid });
        }
        let path = self.path();
        match sys.open_namespace(&path) {
            Ok(fd) => Ok(fd),
            Err(nix::Error::ENOENT) => match self.target {
                // The process exited between the check and the open.
                NamespaceTarget::Pid(pid) if !sys.exists(Path::new(&format!("/proc/{pid}"))) => {
                    Err(Error::DeadProcess { pid })
                }
                _ => Err(Error::MissingNamespace { path }),
            },
            Err(source) => Err(Error::OpenNamespace { path, source }),
        }
    }
}

/// Namespace files opened and ready to enter, in entry order. Dropping it closes them.
#[derive(Debug)]
pub struct OpenedNamespaces {
    entries: Vec<(Namespace, OwnedFd)>,
}

impl OpenedNamespaces {
    /// Opens every requested namespace file before any is entered. A kind asked for twice keeps
    /// the last request, as nsenter does.
    pub fn open(requests: &[NamespaceRequest], sys: &dyn Syscall) -> Result<Self> {
        let mut entries = Vec::with_capacity(requests.len());
        for ns in Namespace::ENTRY_ORDER {
            if let Some(request) = requests.iter().rev().find(|r| r.namespace == ns) {
                entries.push((ns, request.open(sys)?));
            }
        }
        Ok(Self { entries })
    }

    pub fn contains(&self, namespace: Namespace) -> bool {
        self.entries.iter().any(|(ns, _)| *ns == namespace)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = (Namespace, &OwnedFd)> {
        self.entries.iter().map(|(ns, fd)| (*ns, fd))
    }

    /// Enters every namespace in order and closes the files. Only for a single-threaded process
    /// (or a thread that did `unshare(CLONE_FS)` first): `setns` into a mount namespace fails
    /// with EINVAL otherwise.
    pub fn enter(self, sys: &dyn Syscall) -> Result<()> {
        for (namespace, fd) in self.entries {
            sys.setns(&fd, namespace)
                .map_err(|source| Error::Setns { namespace, source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::test_double::RecordingSyscall;

    #[test]
    fn parses_pids_and_paths() {
        assert_eq!(
            NamespaceTarget::parse('n', "42").unwrap(),
            NamespaceTarget::Pid(42)
        );
        assert_eq!(
            NamespaceTarget::parse('m', "/run/netns/x").unwrap(),
            NamespaceTarget::File("/run/netns/x".into())
        );
        for bad in ["", "0", "99999999999"] {
            let err = NamespaceTarget::parse('p', bad).unwrap_err().to_string();
            assert!(err.contains("-p"), "{err}");
        }
    }

    #[test]
    fn enters_in_fixed_order_with_mount_last() {
        let sys = RecordingSyscall::with_live_pids(&[7]);
        let requests = vec![
            NamespaceRequest::new(Namespace::Mnt, NamespaceTarget::Pid(7)),
            NamespaceRequest::new(Namespace::Net, NamespaceTarget::File("/run/netns/a".into())),
            NamespaceRequest::new(Namespace::Pid, NamespaceTarget::Pid(7)),
        ];
        let opened = OpenedNamespaces::open(&requests, &sys).unwrap();
        // Every file is opened before the first setns.
        assert_eq!(
            sys.calls(),
            [
                "open /run/netns/a",
                "open /proc/7/ns/pid",
                "open /proc/7/ns/mnt"
            ]
        );
        opened.enter(&sys).unwrap();
        assert_eq!(&sys.calls()[3..], ["setns net", "setns pid", "setns mnt"]);
    }

    #[test]
    fn dead_process_is_named() {
        let sys = RecordingSyscall::with_live_pids(&[]);
        let requests = NamespaceRequest::of_pid(4242, &[Namespace::Net]);
        let err = OpenedNamespaces::open(&requests, &sys).unwrap_err();
        assert!(matches!(err, Error::DeadProcess { pid: 4242 }), "{err}");
        assert!(err.to_string().contains("4242"));
    }

    #[test]
    fn missing_namespace_file_is_named() {
        let sys = RecordingSyscall::with_live_pids(&[]);
        let requests = vec![NamespaceRequest::new(
            Namespace::Net,
            NamespaceTarget::File("/nonexistent/ns".into()),
        )];
        let err = OpenedNamespaces::open(&requests, &sys).unwrap_err();
        assert!(matches!(err, Error::MissingNamespace { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ns"));
    }

    #[test]
    fn a_failed_setns_names_the_namespace() {
        let sys = RecordingSyscall::with_live_pids(&[7]).failing_setns(Namespace::Mnt);
        let opened =
            OpenedNamespaces::open(&NamespaceRequest::of_pid(7, &[Namespace::Mnt]), &sys).unwrap();
        let err = opened.enter(&sys).unwrap_err();
        assert!(err.to_string().contains("mnt namespace"), "{err}");
    }
}
