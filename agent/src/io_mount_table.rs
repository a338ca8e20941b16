//! Whether an IO experiment's fault mount is still in its target's mount table: the one test
//! recovery trusts before it forgets a record. An injector that says it recovered, or a cleanup
//! that exited 0, is not proof: once the injector refused to unmount a mount it did not
//! recognise and exited, and the pod was left with "Transport endpoint is not connected".

use handover::FaultMount;

/// The fstype of every mount an injector makes.
pub const FAULT_FSTYPE: &str = handover::FAULT_FSTYPE;

/// The line of `table` (a `/proc/PID/mountinfo`) that is our fault mount: a `fuse.faultline`
/// mount with the journaled mount ID when one was journaled, or mounted at `volume` (the path
/// as the target sees it). `None`: no such mount is left.
pub fn fault_mount_line<'t>(
    table: &'t str,
    volume: &str,
    journaled: Option<FaultMount>,
) -> Option<&'t str> {
    table.lines().find(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        if fields.get(separator + 1) != Some(&FAULT_FSTYPE) {
            return false;
        }
        let same_id = journaled.is_some_and(|fault| {
            fields
                .first()
                .and_then(|id| id.parse::<u64>().ok())
                .is_some_and(|id| id == fault.mount_id)
        });
        let at_volume = fields
            .get(4)
            .is_some_and(|point| unescape(point) == volume.as_bytes());
        same_id || at_volume
    })
}

/// A mountinfo field as the kernel wrote it: space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
1300 1200 0:120 / / rw,relatime - overlay overlay rw,lowerdir=/l
1301 1300 8:1 /srv/data /data rw,relatime - ext4 /dev/sda1 rw
1302 1301 0:78 / /data rw,nosuid,nodev,relatime - fuse.faultline faultline rw,user_id=0
1303 1300 0:79 / /my\\040dir rw - fuse.faultline faultline rw
1304 1300 0:80 / /other rw - fuse.sshfs host:/x rw
";

    fn journaled(mount_id: u64) -> Option<FaultMount> {
        Some(FaultMount {
            mount_id,
            dev: handover::Dev {
                major: 0,
                minor: 78,
            },
        })
    }

    #[test]
    fn our_mount_is_found_by_its_point_or_its_journaled_id() {
        let line = fault_mount_line(TABLE, "/data", None).unwrap();
        assert!(line.starts_with("1302 "), "{line}");
        // The journaled ID finds it whatever the path (a volume that resolved elsewhere).
        let line = fault_mount_line(TABLE, "/elsewhere", journaled(1302)).unwrap();
        assert!(line.starts_with("1302 "), "{line}");
        assert!(fault_mount_line(TABLE, "/my dir", None).is_some());
    }

    #[test]
    fn other_mounts_are_not_ours() {
        // Mounted at /other, but another FUSE filesystem; /data's ext4 bind is not ours.
        assert_eq!(fault_mount_line(TABLE, "/other", None), None);
        assert_eq!(fault_mount_line(TABLE, "/srv/data", None), None);
        assert_eq!(fault_mount_line(TABLE, "/gone", journaled(1301)), None);
        assert_eq!(fault_mount_line("", "/data", None), None);
        assert_eq!(fault_mount_line("garbage line\n", "/data", None), None);
    }
}
