//! Parsing `/proc/PID/mountinfo`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of a mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    /// Relative to the root of the process whose table this is.
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// `\040`-style octal escapes, as the kernel writes spaces, tabs, newlines and backslashes.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // The kernel escapes a byte as three octal digits (at most \\377); anything else, such
        // as "\\777" in a path a pod chose, is taken literally (it used to overflow).
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(byte) = octal {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent = fields.next()?.parse().ok()?;
    let _dev = fields.next()?;
    let _root = fields.next()?;
    let mount_point = unescape(fields.next()?);
    // Mount options, then optional fields up to the "-" separator.
    fields.by_ref().find(|f| *f == "-")?;
    let fstype = fields.next()?.to_owned();
    let source = fields.next().unwrap_or("").to_owned();
    Some(MountEntry {
        id,
        parent,
        mount_point,
        fstype,
        source,
    })
}

/// Every well-formed line of a mount table, in table order (later mounts last).
pub fn parse(table: &str) -> Vec<MountEntry> {
    table.lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
36 35 98:0 /mnt1 /mnt\\040with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue
812 36 0:77 / /data rw,nosuid,nodev,relatime - fuse.faultline faultline rw,user_id=0,group_id=0,default_permissions,allow_other
garbage line
";

    #[test]
    fn parses_fields_and_escapes() {
        let entries = parse(TABLE);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].fstype, "proc");
        assert_eq!(entries[1].mount_point, PathBuf::from("/mnt with space"));
        assert_eq!(entries[1].source, "/dev/root");
        let fuse = &entries[2];
        assert_eq!((fuse.id, fuse.parent), (812, 36));
        assert_eq!(fuse.mount_point, PathBuf::from("/data"));
        assert_eq!(fuse.fstype, "fuse.faultline");
    }

    #[test]
    fn backslash_without_octal_stays() {
        assert_eq!(unescape("a\\b"), PathBuf::from("a\\b"));
        assert_eq!(unescape("end\\04"), PathBuf::from("end\\04"));
        assert_eq!(unescape("x\\134y"), PathBuf::from("x\\y"));
    }
}
