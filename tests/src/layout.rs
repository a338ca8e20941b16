//! Where one testbed keeps its files, and the names derived from its identity (owner PID + sequence).
//!
//! The base directory name encodes the owning process, so a later run can tell a crashed testbed's
//! leftovers (owner dead) from a concurrently running one (owner alive).

use std::path::{Path, PathBuf};

/// Every testbed lives in `/tmp/faultline-testbed-<pid>-<seq>`. A fixed directory (not `$TMPDIR`)
/// so that stale ones are found whatever the environment of the run that left them.
pub(crate) const TMP: &str = "/tmp";
pub(crate) const DIR_PREFIX: &str = "faultline-testbed-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub pid: u32,
    pub seq: u32,
    pub base: PathBuf,
}

impl Layout {
    pub fn new(pid: u32, seq: u32) -> Layout {
        let base = Path::new(TMP).join(format!("{DIR_PREFIX}{pid}-{seq}"));
        Layout { pid, seq, base }
    }

    /// The layout a directory name under [`TMP`] stands for, if it is one of ours.
    pub fn parse(dir_name: &str) -> Option<Layout> {
        let rest = dir_name.strip_prefix(DIR_PREFIX)?;
        let (pid, seq) = rest.split_once('-')?;
        let layout = Layout::new(pid.parse().ok()?, seq.parse().ok()?);
        // Reject non-canonical spellings ("007-1"), which would map to another directory.
        (layout.base.file_name()?.to_str()? == dir_name).then_some(layout)
    }

    /// The cgroup (in every hierarchy) that this testbed's pod cgroups live under.
    pub fn cgroup_name(&self) -> String {
        format!("{DIR_PREFIX}{}-{}", self.pid, self.seq)
    }

    pub fn root(&self) -> PathBuf {
        self.base.join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.base.join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.base.join("containerd.sock")
    }
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.base.join("containerd.sock.ttrpc")
    }
    pub fn config(&self) -> PathBuf {
        self.base.join("config.toml")
    }
    pub fn containerd_log(&self) -> PathBuf {
        self.base.join("containerd.log")
    }
    pub fn containerd_pid_file(&self) -> PathBuf {
        self.base.join("containerd.pid")
    }
    pub fn opt(&self) -> PathBuf {
        self.base.join("opt")
    }
    /// runc state of CRI and `ctr` containers alike (runc appends the namespace).
    pub fn runc_root(&self) -> PathBuf {
        self.state().join("runc")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.base.join("cni").join("net.d")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.base.join("cni").join("ipam")
    }
    /// The pod subnet this testbed claimed, read by testbeds starting later.
    pub fn subnet_file(&self) -> PathBuf {
        self.base.join("subnet")
    }
    /// Host directories this testbed made rshared bind mounts of, one per line, so that a later
    /// run can undo them if this one crashes.
    pub fn shared_binds_file(&self) -> PathBuf {
        self.base.join("shared-binds")
    }
    pub fn logs(&self) -> PathBuf {
        self.base.join("logs")
    }
    pub fn images(&self) -> PathBuf {
        self.base.join("images")
    }
    pub fn volumes(&self) -> PathBuf {
        self.base.join("vol")
    }

    /// Linux interface names are at most 15 bytes: "flbr" + up to 7 hex digits of the PID
    /// (pid_max is at most 2^22) + "-" + up to 3 hex digits of the sequence.
    pub fn bridge(&self) -> String {
        format!("flbr{:x}-{:x}", self.pid, self.seq & 0xfff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_names() {
        let l = Layout::new(4_194_303, 4095);
        let name = l
            .base
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned);
        assert_eq!(name.as_deref().and_then(Layout::parse), Some(l.clone()));
        assert!(l.bridge().len() <= 15, "{}", l.bridge());
    }

    #[test]
    fn rejects_foreign_and_non_canonical_names() {
        assert_eq!(Layout::parse("faultline-testbed-12"), None);
        assert_eq!(Layout::parse("faultline-testbed-012-1"), None);
        assert_eq!(Layout::parse("faultline-testbed-x-1"), None);
        assert_eq!(Layout::parse("other-12-1"), None);
    }
}
