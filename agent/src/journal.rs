//! The agent's record of every fault it injected: a generic store of envelopes (id, times,
//! target, namespace) around a fault record that its kind owns and names (`"kind"`). A record is
//! written (temp file, atomic rename) before a fault is applied and removed after it is
//! recovered, so after a crash of the agent it knows exactly what to undo. Recovery is computed
//! from the record, never from memory alone (see `fault_kinds`).
//!
//! What the journal must outlive is the agent (a crash, an OOM kill, a SIGKILL, a rollout), not
//! the node: every fault it records lives in kernel state (mounts in a container's namespace,
//! qdiscs and iptables rules in a pod's network namespace, cgroups, helper processes, a
//! patched process's memory) that a power loss or a reboot ends with the containers it was in.
//! A write that reached the page cache outlives the agent, so records are not fsynced: on this
//! VM an fsync of the file and one of the directory cost 0.5-23 ms per write, three writes per
//! IO injection (docs/benchmarks.md). The one thing a power loss can leave is a record file
//! whose data never reached the disk (empty or cut short, on a filesystem that does not flush
//! data before a rename): [`Journal::clear_unreadable_from_before`] removes such records once
//! they are known to predate the boot, where nothing they could describe survives.
//!
//! The store knows no kind: a kind's record type implements [`FaultRecord`]; records are read
//! back as [`StoredRecord`]s and decoded by the kind they name.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::process_identity::ProcessIdentity;

/// A fault kind's own record: what it injected, with what its recovery needs. Serialized inside
/// the envelope's `fault` object, beside `"kind": KIND` (so it has no field named `kind`).
pub trait FaultRecord: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// The journal's name of the kind (`"io"`, `"network"`, `"stress"`): stable, on disk.
    const KIND: &'static str;
}

/// One injected fault: the envelope every kind shares, and the kind's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<F> {
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
    /// The inode of the target's namespace the fault lives in (mnt for IO, net for network,
    /// cgroup for stress, pid for time).
    pub namespace_inode: u64,
    pub fault: F,
}

/// A record as read from disk, its fault not decoded yet (`fault.kind` says by whom).
pub type StoredRecord = Record<serde_json::Value>;

impl<F> Record<F> {
    /// The same envelope around another fault.
    pub fn with_fault<G>(&self, fault: G) -> Record<G> {
        Record {
            id: self.id.clone(),
            started_at_ms: self.started_at_ms,
            deadline_ms: self.deadline_ms,
            container_id: self.container_id.clone(),
            target: self.target,
            namespace_inode: self.namespace_inode,
            fault,
        }
    }
}

impl StoredRecord {
    /// The kind the record names (empty when it names none).
    pub fn kind(&self) -> &str {
        self.fault
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }

    /// Decodes the fault as `F`'s record.
    pub fn decode<F: FaultRecord>(&self) -> Result<Record<F>, JournalError> {
        if self.kind() != F::KIND {
            return Err(JournalError::WrongKind {
                id: self.id.clone(),
                expected: F::KIND,
                found: self.kind().to_owned(),
            });
        }
        let fault = F::deserialize(&self.fault).map_err(|source| JournalError::Undecodable {
            id: self.id.clone(),
            kind: F::KIND,
            source,
        })?;
        Ok(self.with_fault(fault))
    }
}

impl<F: FaultRecord> Record<F> {
    /// The record as stored: the fault with its kind beside its fields.
    pub fn to_stored(&self) -> Result<StoredRecord, JournalError> {
        let mut fault =
            serde_json::to_value(&self.fault).map_err(|source| JournalError::Undecodable {
                id: self.id.clone(),
                kind: F::KIND,
                source,
            })?;
        let serde_json::Value::Object(fields) = &mut fault else {
            return Err(JournalError::NotAnObject {
                id: self.id.clone(),
                kind: F::KIND,
            });
        };
        fields.insert("kind".into(), F::KIND.into());
        Ok(self.with_fault(fault))
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
    #[error("journal record {id}: a {found:?} record, not {expected:?}")]
    WrongKind {
        id: String,
        expected: &'static str,
        found: String,
    },
    #[error("journal record {id}: not a valid {kind} record: {source}")]
    Undecodable {
        id: String,
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal record {id}: a {kind} record must serialize to an object")]
    NotAnObject { id: String, kind: &'static str },
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

    /// Writes (or replaces) a record atomically: when this returns, a crash of the agent cannot
    /// lose it, and a reader sees the old record or the new one, never a part.
    pub fn write<F: FaultRecord>(&self, record: &Record<F>) -> Result<(), JournalError> {
        self.write_stored(&record.to_stored()?)
    }

    /// Writes a record as stored (kind already in it).
    pub fn write_stored(&self, record: &StoredRecord) -> Result<(), JournalError> {
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
        // Owner only: a record may hold secrets (an HTTPChaos's TLS key).
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io)
    }

    /// Removes a record; removing a record that is not there is not an error.
    pub fn remove(&self, id: &str) -> Result<(), JournalError> {
        let path = self.path_of(id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Io { path, source }),
        }
    }

    /// The record with this id, if there is one.
    pub fn get(&self, id: &str) -> Result<Option<StoredRecord>, JournalError> {
        let path = self.path_of(id)?;
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| JournalError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(JournalError::Io { path, source }),
        }
    }

    /// The record with this id, decoded as `F`'s.
    pub fn get_as<F: FaultRecord>(&self, id: &str) -> Result<Option<Record<F>>, JournalError> {
        self.get(id)?.map(|r| r.decode()).transpose()
    }

    /// Every readable record of kind `F`, decoded (records of other kinds are not).
    pub fn list_of<F: FaultRecord>(&self) -> Result<Vec<Record<F>>, JournalError> {
        let (records, _) = self.list()?;
        records
            .into_iter()
            .filter(|r| r.kind() == F::KIND)
            .map(|r| r.decode())
            .collect()
    }

    /// Every record, oldest first, and the records that could not be read (a corrupt record is
    /// reported, never silently dropped).
    pub fn list(&self) -> Result<(Vec<StoredRecord>, Vec<JournalError>), JournalError> {
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

    /// Removes the records that cannot be read and were last written before `boot` (the node's
    /// boot time): what a power loss left of a record whose data never reached the disk. The
    /// fault it described ended with the boot. Returns the paths removed; unreadable records
    /// written since the boot stay, as always, for a human to look at.
    pub fn clear_unreadable_from_before(&self, boot: SystemTime) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut cleared = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let written = entry.metadata().and_then(|m| m.modified());
            if matches!(self.get(id), Err(JournalError::Corrupt { .. }))
                && written.is_ok_and(|written| written < boot)
                && fs::remove_file(entry.path()).is_ok()
            {
                cleared.push(entry.path());
            }
        }
        cleared
    }
}

/// When this node booted (`btime` of `/proc/stat`).
pub fn boot_time() -> std::io::Result<SystemTime> {
    let stat = fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        .map(|secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .ok_or_else(|| std::io::Error::other("/proc/stat has no btime line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind of the tests' own: the store knows none of the agent's.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Probe {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        added_later: Option<u32>,
    }

    impl FaultRecord for Probe {
        const KIND: &'static str = "probe";
    }

    fn record(id: &str, started: u64) -> Record<Probe> {
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
            fault: Probe {
                path: "/data".into(),
                added_later: None,
            },
        }
    }

    #[test]
    fn unreadable_records_from_before_the_boot_are_cleared_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.write(&record("readable", 1)).unwrap();
        // What a power loss leaves of a record whose data never reached the disk.
        std::fs::write(journal.dir().join("empty.json"), b"").unwrap();
        std::fs::write(journal.dir().join("cut.json"), b"{\"id\": \"cut\", \"sta").unwrap();
        let written = SystemTime::now();
        // A boot before they were written clears nothing.
        let earlier = written - std::time::Duration::from_secs(3600);
        assert!(journal.clear_unreadable_from_before(earlier).is_empty());
        assert_eq!(journal.list().unwrap().1.len(), 2);
        // A boot after: only the unreadable ones go.
        let later = written + std::time::Duration::from_secs(3600);
        let mut cleared = journal.clear_unreadable_from_before(later);
        cleared.sort();
        assert_eq!(
            cleared,
            [
                journal.dir().join("cut.json"),
                journal.dir().join("empty.json")
            ]
        );
        let (records, broken) = journal.list().unwrap();
        assert_eq!(records.len(), 1);
        assert!(broken.is_empty());
    }

    #[test]
    fn the_boot_time_is_in_the_past() {
        let boot = boot_time().unwrap();
        assert!(boot < SystemTime::now());
        assert!(boot > SystemTime::UNIX_EPOCH);
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
        assert_eq!(records[0].kind(), "probe");
        assert_eq!(records[0].decode::<Probe>().unwrap(), record("a", 1));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(journal.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn the_kind_sits_beside_the_fault_fields_and_older_records_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let mut newer = record("n", 3);
        newer.fault.added_later = Some(9);
        journal.write(&newer).unwrap();
        let text = fs::read_to_string(journal.dir().join("n.json")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["fault"],
            serde_json::json!({"kind": "probe", "path": "/data", "added_later": 9})
        );
        // A record written before a field existed has no such field.
        let old = serde_json::to_string(&record("o", 1).to_stored().unwrap()).unwrap();
        assert!(!old.contains("added_later"), "{old}");
        fs::write(journal.dir().join("o.json"), old).unwrap();
        let (records, broken) = journal.list().unwrap();
        assert!(broken.is_empty(), "{broken:?}");
        let decoded: Vec<Record<Probe>> = records.iter().map(|r| r.decode().unwrap()).collect();
        assert_eq!(decoded, vec![record("o", 1), newer]);
    }

    #[test]
    fn a_record_decodes_only_as_the_kind_it_names() {
        #[derive(Clone, Debug, Serialize, Deserialize)]
        struct Other {}
        impl FaultRecord for Other {
            const KIND: &'static str = "other";
        }
        let stored = record("x", 1).to_stored().unwrap();
        let err = stored.decode::<Other>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"journal record x: a "probe" record, not "other""#
        );
        let mut broken = stored.clone();
        broken.fault["path"] = serde_json::json!(5);
        let err = broken.decode::<Probe>().unwrap_err();
        assert!(
            err.to_string().contains("not a valid probe record"),
            "{err}"
        );
    }

    #[test]
    fn rewriting_replaces_and_removing_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let mut r = record("x", 1);
        journal.write(&r).unwrap();
        r.deadline_ms = None;
        journal.write(&r).unwrap();
        assert_eq!(journal.get_as::<Probe>("x").unwrap(), Some(r));
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
}
