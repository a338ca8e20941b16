//! How each open file does its IO, and the kernel's rules for mixing modes on one inode.
//!
//! The kernel (fs/fuse/iomode.c) refuses a caching open of an inode that is open in
//! passthrough mode, a passthrough open with another backing file, and a passthrough open
//! while the inode is open in caching mode; one backing file per inode is shared by all its
//! passthrough opens. A direct-IO open (`FOPEN_DIRECT_IO`) takes no IO mode and may join
//! either: an open that a rule reaches goes to the daemon whatever the other opens do
//! (injector/tests/faults.rs reads EIO through it while a passthrough open reads on).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use fuser::BackingId;

/// What a mount does with the data of files no rule in force may read or write: the
/// per-mount choice between reach and speed, shown by `get_status` (`fileIo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileIo {
    /// Every read and write of every file comes to the daemon (`FOPEN_DIRECT_IO`): a rule put
    /// in force at any time reaches every open file, whenever it was opened. The mode for
    /// mounts whose rules arrive or change later (sidecar mode, rule updates).
    #[default]
    Reachable,
    /// Kernel passthrough for files no rule in force may read or write (native speed, where
    /// the kernel offers it). A rule added later misses such a file until it is closed and
    /// reopened; `update` and `get_status` then say so with a warning.
    Passthrough,
    /// Through the daemon with the kernel page cache (no passthrough): writes reach the
    /// daemon, reads of cached pages do not, so a read rule added later misses them.
    Cached,
}

impl FileIo {
    pub const ALL: [FileIo; 3] = [FileIo::Reachable, FileIo::Passthrough, FileIo::Cached];

    pub fn name(self) -> &'static str {
        match self {
            FileIo::Reachable => "reachable",
            FileIo::Passthrough => "passthrough",
            FileIo::Cached => "cached",
        }
    }

    /// Can a rule added while a file is open always reach that file's reads and writes?
    pub fn late_rules_reach_open_files(self) -> bool {
        matches!(self, FileIo::Reachable)
    }
}

impl fmt::Display for FileIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--file-io` value.
#[derive(Debug, thiserror::Error)]
#[error("file-io: {0:?} is not a mode (reachable, passthrough or cached)")]
pub struct UnknownFileIo(String);

impl FromStr for FileIo {
    type Err = UnknownFileIo;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileIo::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownFileIo(s.to_owned()))
    }
}

/// The IO mode of one open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// Reads and writes go straight to the original through the kernel: no fault reaches them.
    Passthrough,
    /// Every read and write comes to the daemon (`FOPEN_DIRECT_IO`): faults apply to each.
    Direct,
    /// Through the daemon with the kernel page cache (no passthrough available, no rule):
    /// cached reads do not reach the daemon.
    Cached,
}

impl IoMode {
    /// Can a rule added after the open still reach this file's reads and writes?
    pub fn faults_reach_data(self) -> bool {
        matches!(self, IoMode::Direct)
    }

    pub fn name(self) -> &'static str {
        match self {
            IoMode::Passthrough => "passthrough",
            IoMode::Direct => "direct",
            IoMode::Cached => "cached",
        }
    }
}

/// What a new open must do, given the inode's other opens.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan<B> {
    /// Passthrough with the inode's existing backing file.
    Reuse(Arc<B>),
    /// Passthrough with a new backing file (no other open).
    NewBacking,
    /// Through the daemon.
    Daemon,
    /// The inode is open in passthrough with a read-only backing file and this open wants to
    /// write: the kernel allows no other mode, so the open must fail.
    Conflict,
}

/// Per-inode open bookkeeping.
#[derive(Debug)]
pub struct IoState<B = BackingId> {
    passthrough_opens: u32,
    daemon_opens: u32,
    backing: Option<Arc<B>>,
    backing_writable: bool,
}

impl<B> Default for IoState<B> {
    fn default() -> Self {
        Self {
            passthrough_opens: 0,
            daemon_opens: 0,
            backing: None,
            backing_writable: false,
        }
    }
}

impl<B> IoState<B> {
    /// Plan an open. `want_passthrough`: no rule may touch this file's data and the kernel
    /// supports passthrough. `direct`: a rule may touch its data, so the open is to be
    /// `FOPEN_DIRECT_IO`; such an open takes no IO mode in the kernel (fs/fuse/iomode.c lets
    /// it through whatever the other opens do), so it goes to the daemon even while the inode
    /// is open in passthrough. `writes`: the open is for writing.
    pub fn plan(&self, want_passthrough: bool, direct: bool, writes: bool) -> Plan<B> {
        if direct {
            return Plan::Daemon;
        }
        if self.passthrough_opens > 0 {
            return match &self.backing {
                Some(b) if self.backing_writable || !writes => Plan::Reuse(b.clone()),
                _ => Plan::Conflict,
            };
        }
        if self.daemon_opens > 0 || !want_passthrough {
            return Plan::Daemon;
        }
        Plan::NewBacking
    }

    pub fn add_passthrough(&mut self, backing: Arc<B>, writable: bool) {
        if self.passthrough_opens == 0 {
            self.backing = Some(backing);
            self.backing_writable = writable;
        }
        self.passthrough_opens += 1;
    }

    pub fn add_daemon(&mut self) {
        self.daemon_opens += 1;
    }

    /// An open file of this mode was released. The backing file is closed with the last
    /// passthrough open.
    pub fn release(&mut self, mode: IoMode) {
        match mode {
            IoMode::Passthrough => {
                self.passthrough_opens = self.passthrough_opens.saturating_sub(1);
                if self.passthrough_opens == 0 {
                    self.backing = None;
                }
            }
            IoMode::Direct | IoMode::Cached => {
                self.daemon_opens = self.daemon_opens.saturating_sub(1);
            }
        }
    }

    pub fn is_passthrough(&self) -> bool {
        self.passthrough_opens > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_decides_and_backing_is_shared() {
        let mut s: IoState<u32> = IoState::default();
        assert_eq!(s.plan(true, false, false), Plan::NewBacking);
        s.add_passthrough(Arc::new(7), true);
        // Another open no rule reaches joins the passthrough opens, on the same backing file.
        assert_eq!(s.plan(false, false, true), Plan::Reuse(Arc::new(7)));
        s.add_passthrough(Arc::new(8), true);
        s.release(IoMode::Passthrough);
        assert!(s.is_passthrough());
        s.release(IoMode::Passthrough);
        assert!(!s.is_passthrough());
        assert_eq!(s.plan(false, false, false), Plan::Daemon);
    }

    #[test]
    fn an_open_a_rule_reaches_goes_to_the_daemon_beside_passthrough_opens() {
        let mut s: IoState<u32> = IoState::default();
        s.add_passthrough(Arc::new(7), false);
        // A rule now matches: the new open is direct IO, which the kernel lets in beside the
        // passthrough opens (read-only backing or not).
        assert_eq!(s.plan(false, true, false), Plan::Daemon);
        assert_eq!(s.plan(false, true, true), Plan::Daemon);
    }

    #[test]
    fn daemon_opens_keep_later_opens_off_passthrough() {
        let mut s: IoState<u32> = IoState::default();
        s.add_daemon();
        assert_eq!(s.plan(true, false, false), Plan::Daemon);
        s.release(IoMode::Direct);
        assert_eq!(s.plan(true, false, false), Plan::NewBacking);
    }

    #[test]
    fn read_only_backing_conflicts_with_writers() {
        let mut s: IoState<u32> = IoState::default();
        s.add_passthrough(Arc::new(1), false);
        assert_eq!(s.plan(true, false, false), Plan::Reuse(Arc::new(1)));
        assert_eq!(s.plan(true, false, true), Plan::Conflict);
    }

    #[test]
    fn file_io_modes_parse_by_name_and_refuse_others() {
        for m in FileIo::ALL {
            assert_eq!(m.name().parse::<FileIo>().expect("parse"), m);
        }
        let err = "fast".parse::<FileIo>().expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "file-io: \"fast\" is not a mode (reachable, passthrough or cached)"
        );
        assert_eq!(FileIo::default(), FileIo::Reachable);
        assert!(FileIo::Reachable.late_rules_reach_open_files());
        assert!(!FileIo::Passthrough.late_rules_reach_open_files());
        assert!(!FileIo::Cached.late_rules_reach_open_files());
    }

    #[test]
    fn only_direct_mode_is_reachable_by_new_rules() {
        assert!(IoMode::Direct.faults_reach_data());
        assert!(!IoMode::Passthrough.faults_reach_data());
        assert!(!IoMode::Cached.faults_reach_data());
    }
}
