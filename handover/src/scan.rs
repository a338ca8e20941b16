//! Finding what a process holds under the volume: open files (`fd`, `fdinfo`), its working
//! directory (`cwd`) and file mappings (`maps`, `smaps`). Pure logic over a [`ProcSource`], so
//! it is tested on fixture text; nothing here stops or changes a process.
//!
//! The tables are parsed here, by hand, not with the `procfs` crate, for reasons measured with
//! `examples/proc_parse_cost.rs` (docs/handover.md): `procfs` 0.18 has no reader for `fdinfo`
//! (`pos`, `flags`, `mnt_id`: needed for every open file moved); its `mountinfo` keeps the
//! kernel's octal escapes in mount points (`\040` for a space), so a volume whose path has a
//! space would never match; and over `maps` + `mountinfo` of every process of a host it took
//! as long or longer (median 25–27 ms against 23–26 ms for 107–112 processes).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::arch::{Arch, Native};
use crate::proc_source::ProcSource;

/// A device number as `stat` splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dev {
    pub major: u32,
    pub minor: u32,
}

/// The fault mount: how files on it are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultMount {
    pub mount_id: u64,
    pub dev: Dev,
}

/// Which way things move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// From the original directory onto the fault mount (it is mounted over the volume).
    ToFault,
    /// From the fault mount back onto the original directory (the fault mount has been
    /// detached, so the volume path resolves to the original again; paths of files on the
    /// detached mount read relative to its root).
    ToOriginal,
}

/// What to move and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The volume path as the container sees it (absolute, normalised).
    pub volume: PathBuf,
    pub fault: FaultMount,
    pub direction: Direction,
}

/// One open file to reopen by path over the same descriptor number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdMove {
    pub fd: i32,
    /// Where to reopen it, as the process resolves paths.
    pub path: PathBuf,
    /// Open flags, less those that only mattered at creation and O_CLOEXEC.
    pub flags: i32,
    pub cloexec: bool,
    /// The file offset to restore; `None` where there is none (O_PATH).
    pub pos: Option<u64>,
}

/// A working directory to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CwdMove {
    pub path: PathBuf,
}

/// One file mapping to replace at the same address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMove {
    pub start: u64,
    pub end: u64,
    /// PROT_* bits.
    pub prot: i32,
    pub shared: bool,
    pub offset: u64,
    pub path: PathBuf,
}

/// Something under the volume left where it is, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub pid: u32,
    /// "fd 5 /data/f", "cwd /data", "mapping 7f00..7f10 /data/f", "process".
    pub what: String,
    pub reason: String,
}

/// Everything to move in one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessPlan {
    pub pid: u32,
    pub fds: Vec<FdMove>,
    pub cwd: Option<CwdMove>,
    pub maps: Vec<MapMove>,
    pub skipped: Vec<Skipped>,
}

impl ProcessPlan {
    /// Nothing to do inside the process (it need not be stopped).
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty() && self.cwd.is_none() && self.maps.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    #[error("cannot read /proc/{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A numeric field of a `key:\tvalue` file (fdinfo, status); `flags` is octal there.
pub(crate) fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let v = v.trim();
        if key == "flags" {
            u64::from_str_radix(v, 8).ok()
        } else {
            v.split_whitespace().next()?.parse().ok()
        }
    })
}

const DELETED: &str = " (deleted)";

impl Scope {
    fn under_volume(&self, path: &Path) -> bool {
        path.starts_with(&self.volume)
    }

    /// The path to reopen `link` (as `/proc` shows it) at, if the object lives on the side we
    /// move away from and under the volume.
    fn reopen_path(&self, link: &Path, on_fault: bool) -> Option<PathBuf> {
        match self.direction {
            Direction::ToFault => (!on_fault && self.under_volume(link)).then(|| link.to_owned()),
            Direction::ToOriginal => on_fault.then(|| match link.strip_prefix("/") {
                Ok(rel) if !rel.as_os_str().is_empty() => self.volume.join(rel),
                _ => self.volume.clone(),
            }),
        }
    }
}

fn read(src: &dyn ProcSource, pid: u32, path: String) -> Result<String, ScanError> {
    src.read(&path).map_err(|source| gone_or(pid, path, source))
}

fn gone_or(pid: u32, path: String, source: std::io::Error) -> ScanError {
    if source.kind() == std::io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
        ScanError::Gone { pid }
    } else {
        ScanError::Read { path, source }
    }
}

/// What `pid` holds under the volume that should move in `scope`'s direction.
pub fn scan_process(
    src: &dyn ProcSource,
    pid: u32,
    scope: &Scope,
) -> Result<ProcessPlan, ScanError> {
    let mut plan = ProcessPlan {
        pid,
        ..Default::default()
    };
    scan_fds(src, pid, scope, &mut plan)?;
    scan_cwd(src, pid, scope, &mut plan);
    scan_maps(src, pid, scope, &mut plan)?;
    Ok(plan)
}

/// Whether a file the kernel shows as deleted on the fault mount is in fact still in the
/// original directory: FUSE shows " (deleted)" for names whose cached entries the injector
/// invalidated (it does so when rules change). The injector's inode numbers are the
/// original's, so the same number at the same path is the same file.
fn still_there(
    src: &dyn ProcSource,
    pid: u32,
    scope: &Scope,
    path: &Path,
    ino: Option<u64>,
) -> bool {
    scope.direction == Direction::ToOriginal
        && ino.is_some_and(|ino| ino != 0 && src.ino_in_root(pid, path).ok() == Some(ino))
}

fn scan_fds(
    src: &dyn ProcSource,
    pid: u32,
    scope: &Scope,
    plan: &mut ProcessPlan,
) -> Result<(), ScanError> {
    let dir = format!("{pid}/fd");
    let mut fds: Vec<i32> = src
        .list(&dir)
        .map_err(|e| gone_or(pid, dir.clone(), e))?
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    fds.sort_unstable();
    for fd in fds {
        // A descriptor closed since the listing is simply not there any more.
        let Ok(link) = src.read_link(&format!("{pid}/fd/{fd}")) else {
            continue;
        };
        if !link.is_absolute() {
            continue; // socket:[..], pipe:[..], anon_inode:..
        }
        // Onto the fault mount, only paths under the volume qualify: skip the rest unread.
        if scope.direction == Direction::ToFault && !scope.under_volume(&link) {
            continue;
        }
        let Ok(info) = src.read(&format!("{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let on_fault = field(&info, "mnt_id") == Some(scope.fault.mount_id);
        let text = link.to_string_lossy();
        let (name, deleted) = match text.strip_suffix(DELETED) {
            Some(name) => (PathBuf::from(name), true),
            None => (link.clone(), false),
        };
        let Some(path) = scope.reopen_path(&name, on_fault) else {
            continue;
        };
        let what = format!("fd {fd} {}", path.display());
        let skip = |reason: &str| Skipped {
            pid,
            what: what.clone(),
            reason: reason.to_owned(),
        };
        if deleted && !still_there(src, pid, scope, &path, field(&info, "ino")) {
            plan.skipped
                .push(skip("the file was deleted: it cannot be reopened by name"));
            continue;
        }
        if info.lines().any(|l| l.starts_with("lock:")) {
            plan.skipped.push(skip(
                "the process holds a lock on it: replacing the descriptor would release the lock",
            ));
            continue;
        }
        let raw_flags = field(&info, "flags").unwrap_or(0) as i32;
        let pos = field(&info, "pos").unwrap_or(0);
        let is_dir = raw_flags & Native::O_DIRECTORY != 0;
        if is_dir && pos != 0 {
            plan.skipped.push(skip(
                "a directory being read: its position means nothing on the other filesystem",
            ));
            continue;
        }
        let flags = raw_flags
            & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC);
        plan.fds.push(FdMove {
            fd,
            path,
            flags,
            cloexec: raw_flags & libc::O_CLOEXEC != 0,
            pos: (raw_flags & libc::O_PATH == 0).then_some(pos),
        });
    }
    Ok(())
}

fn scan_cwd(src: &dyn ProcSource, pid: u32, scope: &Scope, plan: &mut ProcessPlan) {
    let Ok(link) = src.read_link(&format!("{pid}/cwd")) else {
        return; // a zombie, or gone
    };
    if scope.direction == Direction::ToFault && !scope.under_volume(&link) {
        return;
    }
    let (mount, ino) = src
        .mount_and_ino_of(&format!("{pid}/cwd"))
        .unwrap_or((0, 0));
    let on_fault = mount == scope.fault.mount_id;
    let text = link.to_string_lossy();
    if let Some(name) = text.strip_suffix(DELETED) {
        if let Some(path) = scope.reopen_path(Path::new(name), on_fault)
            && still_there(src, pid, scope, &path, Some(ino))
        {
            plan.cwd = Some(CwdMove { path });
        } else if scope.reopen_path(Path::new(name), on_fault).is_some() {
            plan.skipped.push(Skipped {
                pid,
                what: format!("cwd {name}"),
                reason: "the directory was deleted".into(),
            });
        }
        return;
    }
    if let Some(path) = scope.reopen_path(&link, on_fault) {
        plan.cwd = Some(CwdMove { path });
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub dev: Dev,
    pub inode: u64,
    pub path: String,
}

pub fn parse_map_line(line: &str) -> Option<MapLine> {
    let mut it = line.splitn(6, ' ');
    let (start, end) = it.next()?.split_once('-')?;
    let perms = it.next()?.to_owned();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let (major, minor) = it.next()?.split_once(':')?;
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim_start().to_owned();
    Some(MapLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        dev: Dev {
            major: u32::from_str_radix(major, 16).ok()?,
            minor: u32::from_str_radix(minor, 16).ok()?,
        },
        inode,
        path,
    })
}

/// kB of a mapping's pages that exist only in this process (written copy-on-write), from its
/// block in `/proc/PID/smaps`.
fn private_written_kb(smaps: &str, start: u64) -> Option<u64> {
    let mut in_block = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some(map) = parse_map_line(line).filter(|_| line.contains('-')) {
            if in_block {
                break;
            }
            in_block = map.start == start;
            continue;
        }
        if in_block && (line.starts_with("Private_Dirty:") || line.starts_with("Anonymous:")) {
            // Written private pages show in both; either alone means some were written.
            total = total.max(
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0),
            );
        }
    }
    in_block.then_some(total)
}

fn scan_maps(
    src: &dyn ProcSource,
    pid: u32,
    scope: &Scope,
    plan: &mut ProcessPlan,
) -> Result<(), ScanError> {
    let maps = read(src, pid, format!("{pid}/maps"))?;
    let mut smaps: Option<String> = None;
    for map in maps.lines().filter_map(parse_map_line) {
        if map.inode == 0 || !map.path.starts_with('/') {
            continue;
        }
        let on_fault = map.dev == scope.fault.dev;
        let (name, deleted) = match map.path.strip_suffix(DELETED) {
            Some(name) => (name, true),
            None => (map.path.as_str(), false),
        };
        let Some(path) = scope.reopen_path(Path::new(name), on_fault) else {
            continue;
        };
        let what = format!("mapping {:x}-{:x} {}", map.start, map.end, path.display());
        let mut skip = |reason: String| {
            plan.skipped.push(Skipped {
                pid,
                what: what.clone(),
                reason,
            })
        };
        if deleted && !still_there(src, pid, scope, &path, Some(map.inode)) {
            skip("the file was deleted: it cannot be reopened by name".into());
            continue;
        }
        let shared = map.perms.as_bytes().get(3) == Some(&b's');
        if !shared {
            if smaps.is_none() {
                smaps = Some(read(src, pid, format!("{pid}/smaps"))?);
            }
            let written = smaps
                .as_deref()
                .and_then(|s| private_written_kb(s, map.start));
            match written {
                Some(0) => {}
                Some(kb) => {
                    skip(format!(
                        "a private mapping with {kb} kB written copy-on-write: replacing it would lose them"
                    ));
                    continue;
                }
                None => {
                    skip("the mapping changed while it was scanned".into());
                    continue;
                }
            }
        }
        let p = map.perms.as_bytes();
        let prot = if p.first() == Some(&b'r') {
            libc::PROT_READ
        } else {
            0
        } | if p.get(1) == Some(&b'w') {
            libc::PROT_WRITE
        } else {
            0
        } | if p.get(2) == Some(&b'x') {
            libc::PROT_EXEC
        } else {
            0
        };
        plan.maps.push(MapMove {
            start: map.start,
            end: map.end,
            prot,
            shared,
            offset: map.offset,
            path,
        });
    }
    Ok(())
}

/// The fault mount over `volume` in the mount table of `pid` (the topmost `fstype` mount on
/// that mount point).
pub fn find_fault_mount(
    src: &dyn ProcSource,
    pid: u32,
    volume: &Path,
    fstype: &str,
) -> Result<Option<FaultMount>, ScanError> {
    let table = read(src, pid, format!("{pid}/mountinfo"))?;
    Ok(table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let (major, minor) = fields.get(2)?.split_once(':')?;
        let mount_point = unescape(fields.get(4)?);
        (mount_point == volume.as_os_str().to_string_lossy() && fields.get(sep + 1)? == &fstype)
            .then(|| {
                Some(FaultMount {
                    mount_id: fields[0].parse().ok()?,
                    dev: Dev {
                        major: major.parse().ok()?,
                        minor: minor.parse().ok()?,
                    },
                })
            })
            .flatten()
    }))
}

fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // The kernel escapes a byte as three octal digits (at most \\377); anything else, such
        // as "\\777" in a path a pod chose, is taken literally (it used to overflow).
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(byte) = octal {
            out.push(byte);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every process (host PIDs) in the same mount namespace as `pid`, `pid` included: exactly the
/// processes that see the fault mount.
pub fn processes_sharing_mounts(src: &dyn ProcSource, pid: u32) -> Result<Vec<u32>, ScanError> {
    let ns = src
        .read_link(&format!("{pid}/ns/mnt"))
        .map_err(|e| gone_or(pid, format!("{pid}/ns/mnt"), e))?;
    let mut pids: Vec<u32> = src
        .list("")
        .map_err(|e| ScanError::Read {
            path: String::new(),
            source: e,
        })?
        .iter()
        .filter_map(|n| n.parse().ok())
        .filter(|p: &u32| {
            src.read_link(&format!("{p}/ns/mnt"))
                .is_ok_and(|other| other == ns)
        })
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests;
