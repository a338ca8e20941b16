//! The agent's durable record of every fault it injected. A record is written (temp file, fsync,
//! atomic rename, fsync of the directory) before a fault is applied and removed after it is
//! recovered, so after a crash the agent knows exactly what to undo. Recovery is computed from
//! the record, never from memory alone.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Experiment ID: unique per agent, safe as a file name.
    pub id: String,
    /// Unix milliseconds when the experiment started.
    pub started_at_ms: u64,
    /// Unix milliseconds when it must be recovered, if it has a duration.
    pub deadline_ms: Option<u64>,
    /// The container as the caller named it (`containerd://…`).
    pub container_id: String,
    /// The process whose namespaces were entered; the start time tells a reused PID apart.
    pub target: ProcessIdentity,
    /// The inode of the target's namespace the fault lives in (mnt for IO, net for network).
    pub namespace_inode: u64,
    pub fault: Fault,
}

/// A process as it was when we saw it: PID plus its start time in clock ticks since boot
/// (`/proc/PID/stat` field 22), which together identify it across PID reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessIdentity {
    /// Reads the identity of a live process.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let start_time = parse_start_time(&stat).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unparsable /proc/{pid}/stat"),
            )
        })?;
        Ok(Self { pid, start_time })
    }

    /// True if this very process is still running (not merely some process with its PID).
    pub fn is_alive(&self) -> bool {
        Self::of(self.pid).is_ok_and(|now| now.start_time == self.start_time)
    }
}

/// Field 22 of /proc/PID/stat; the command name (field 2) may hold spaces and parentheses, so
/// count from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// What was injected, with what recovery needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    Io {
        /// The volume path inside the container.
        volume: String,
        /// The IOChaos actions JSON currently applied.
        actions: String,
        /// The injector serving the mount, if it was started.
        injector: Option<ProcessIdentity>,
        /// The fault mount, once files were handed over to it: recovery moves back what is
        /// on it (absent in records written before handover existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fault_mount: Option<handover::FaultMount>,
    },
    /// A CPU or memory stressor in the target's (or its pod's) cgroups.
    Stress {
        stressor: StressorKind,
        scope: StressScope,
        /// The option string as given (`--cpu 1 --cpu-load 50`).
        options: String,
        /// Every cgroup directory the stressor joins.
        cgroups: Vec<PathBuf>,
        /// The cgroups made for it (removed at recovery), recorded before they are made.
        created_cgroups: Vec<PathBuf>,
        /// The stressor process, once spawned.
        process: Option<ProcessIdentity>,
    },
    /// Network faults of one pod (its sandbox's network namespace).
    Network(Box<crate::network::NetworkRecord>),
    /// Shifted clocks of a container's processes (its module owns the record).
    Time(Box<crate::time_chaos::record::TimeRecord>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StressorKind {
    Cpu,
    Memory,
}

impl StressorKind {
    pub fn name(self) -> &'static str {
        match self {
            StressorKind::Cpu => "cpu",
            StressorKind::Memory => "memory",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StressScope {
    Container,
    Pod,
}

impl StressScope {
    pub fn name(self) -> &'static str {
        match self {
            StressScope::Container => "container",
            StressScope::Pod => "pod",
        }
    }
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Io { .. } => "io",
            Fault::Network(_) => "network",
            Fault::Stress { .. } => "stress",
            Fault::Time(_) => "time",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal record {}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid experiment id {0:?}: letters, digits, '-' and '_' only")]
    BadId(String),
}

/// The journal directory.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating if needed) the journal under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let dir = state_dir.join("journal");
        fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, id: &str) -> Result<PathBuf, JournalError> {
        let valid = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(JournalError::BadId(id.to_owned()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Writes (or replaces) a record durably: when this returns, a crash cannot lose it.
    pub fn write(&self, record: &Record) -> Result<(), JournalError> {
        let path = self.path_of(&record.id)?;
        let tmp = self.dir.join(format!(".{}.tmp", record.id));
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| JournalError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io)?;
        self.sync_dir()
    }

    /// Removes a record durably; removing a record that is not there is not an error.
    pub fn remove(&self, id: &str) -> Result<(), JournalError> {
        let path = self.path_of(id)?;
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Io { path, source }),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Record>, JournalError> {
        let path = self.path_of(id)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| JournalError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(JournalError::Io { path, source }),
        }
    }

    /// Every record, oldest first, and the records that could not be read (a corrupt record is
    /// reported, never silently dropped).
    pub fn list(&self) -> Result<(Vec<Record>, Vec<JournalError>), JournalError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| JournalError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        let mut broken = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            match self.get(id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(err) => broken.push(err),
            }
        }
        records.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok((records, broken))
    }

    fn sync_dir(&self) -> Result<(), JournalError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| JournalError::Io {
                path: self.dir.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, started: u64) -> Record {
        Record {
            id: id.into(),
            started_at_ms: started,
            deadline_ms: Some(started + 30_000),
            container_id: "containerd://abc".into(),
            target: ProcessIdentity {
                pid: 42,
                start_time: 7,
            },
            namespace_inode: 4026532000,
            fault: Fault::Io {
                volume: "/data".into(),
                actions: r#"[{"type":"fault","faults":[{"errno":5,"weight":1}]}]"#.into(),
                injector: None,
                fault_mount: None,
            },
        }
    }

    #[test]
    fn records_survive_reopening_and_are_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.write(&record("b", 2)).unwrap();
        journal.write(&record("a", 1)).unwrap();
        let reopened = Journal::open(dir.path()).unwrap();
        let (records, broken) = reopened.list().unwrap();
        assert!(broken.is_empty());
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(records[0], record("a", 1));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(journal.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn the_handover_fault_mount_is_kept_and_older_records_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let mut with_mount = record("h", 3);
        if let Fault::Io { fault_mount, .. } = &mut with_mount.fault {
            *fault_mount = Some(handover::FaultMount {
                mount_id: 901,
                dev: handover::Dev {
                    major: 0,
                    minor: 78,
                },
            });
        }
        journal.write(&with_mount).unwrap();
        // A record written before handover existed has no such field.
        let old = serde_json::to_string(&record("o", 1)).unwrap();
        assert!(!old.contains("fault_mount"), "{old}");
        fs::write(journal.dir().join("o.json"), old).unwrap();
        let (records, broken) = journal.list().unwrap();
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(records, vec![record("o", 1), with_mount]);
    }

    #[test]
    fn rewriting_replaces_and_removing_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let mut r = record("x", 1);
        journal.write(&r).unwrap();
        r.deadline_ms = None;
        journal.write(&r).unwrap();
        assert_eq!(journal.get("x").unwrap(), Some(r));
        journal.remove("x").unwrap();
        journal.remove("x").unwrap();
        assert_eq!(journal.get("x").unwrap(), None);
    }

    #[test]
    fn corrupt_records_are_reported_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.write(&record("good", 1)).unwrap();
        fs::write(journal.dir().join("bad.json"), b"{not json").unwrap();
        let (records, broken) = journal.list().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(broken.len(), 1);
        assert!(broken[0].to_string().contains("bad.json"));
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert!(matches!(
            journal.get("../etc/passwd"),
            Err(JournalError::BadId(_))
        ));
        assert!(matches!(
            journal.write(&record("a/b", 1)),
            Err(JournalError::BadId(_))
        ));
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat =
            "123 (a) b) c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        assert!(
            !ProcessIdentity {
                start_time: me.start_time + 1,
                ..me
            }
            .is_alive()
        );
    }
}
