//! Extended attributes and POSIX ACLs for tests, through python3's `os` module (so the tests
//! need no unsafe code and no `attr`/`acl` tools). The `l*` variants act on a symlink itself.
//! ACLs are built and shown in a short text form, `u::rw- u:4242:r-- g::--- m::r-- o::---`,
//! and travel in the kernel's `system.posix_acl_*` format.

use std::path::Path;
use std::process::Command;

use nix::errno::Errno;

pub const ACCESS: &str = "system.posix_acl_access";
pub const DEFAULT: &str = "system.posix_acl_default";

const SCRIPT: &str = r#"
import os, sys
op, follow, path, name, value = sys.argv[1:6]
follow = follow == "follow"
try:
    if op == "get":
        sys.stdout.write(os.getxattr(path, name, follow_symlinks=follow).hex())
    elif op == "set":
        os.setxattr(path, name, bytes.fromhex(value), follow_symlinks=follow)
    elif op == "remove":
        os.removexattr(path, name, follow_symlinks=follow)
    elif op == "list":
        sys.stdout.write(" ".join(sorted(os.listxattr(path, follow_symlinks=follow))))
    else:
        sys.exit("unknown operation " + op)
except OSError as e:
    sys.stdout.write(str(e.errno))
    sys.exit(3)
"#;

/// Whether a final symlink in the path is followed (`getxattr`) or not (`lgetxattr`).
#[derive(Clone, Copy)]
enum Follow {
    Yes,
    No,
}

fn run(op: &str, follow: Follow, path: &Path, name: &str, value: &[u8]) -> Result<String, Errno> {
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let follow = match follow {
        Follow::Yes => "follow",
        Follow::No => "nofollow",
    };
    let out = Command::new(super::PYTHON)
        .args(["-I", "-c", SCRIPT, op, follow])
        .arg(path)
        .args([name, &hex])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Ok(stdout),
        Some(3) => Err(Errno::from_raw(stdout.trim().parse().expect("errno"))),
        _ => panic!(
            "python3 {op} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn get(path: &Path, name: &str) -> Result<Vec<u8>, Errno> {
    run("get", Follow::Yes, path, name, b"").map(|s| unhex(&s))
}

pub fn lget(path: &Path, name: &str) -> Result<Vec<u8>, Errno> {
    run("get", Follow::No, path, name, b"").map(|s| unhex(&s))
}

pub fn set(path: &Path, name: &str, value: &[u8]) -> Result<(), Errno> {
    run("set", Follow::Yes, path, name, value).map(drop)
}

pub fn lset(path: &Path, name: &str, value: &[u8]) -> Result<(), Errno> {
    run("set", Follow::No, path, name, value).map(drop)
}

pub fn remove(path: &Path, name: &str) -> Result<(), Errno> {
    run("remove", Follow::Yes, path, name, b"").map(drop)
}

pub fn lremove(path: &Path, name: &str) -> Result<(), Errno> {
    run("remove", Follow::No, path, name, b"").map(drop)
}

/// Names, sorted.
pub fn list(path: &Path) -> Result<Vec<String>, Errno> {
    run("list", Follow::Yes, path, "", b"")
        .map(|s| s.split_whitespace().map(String::from).collect())
}

pub fn llist(path: &Path) -> Result<Vec<String>, Errno> {
    run("list", Follow::No, path, "", b"").map(|s| s.split_whitespace().map(String::from).collect())
}

const TAGS: [(&str, bool, u16); 6] = [
    ("u", false, 0x01), // ACL_USER_OBJ
    ("u", true, 0x02),  // ACL_USER
    ("g", false, 0x04), // ACL_GROUP_OBJ
    ("g", true, 0x08),  // ACL_GROUP
    ("m", false, 0x10), // ACL_MASK
    ("o", false, 0x20), // ACL_OTHER
];
const UNDEFINED_ID: u32 = u32::MAX;
const VERSION: u32 = 2;

/// The xattr value of an ACL written as `u::rw- u:4242:r-- g::--- m::r-- o::---`.
pub fn acl(text: &str) -> Vec<u8> {
    let mut entries: Vec<(u16, u32, u16)> = text
        .split_whitespace()
        .map(|entry| {
            let mut parts = entry.split(':');
            let (kind, id, perm) = match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(id), Some(p)) => (k, id, p),
                _ => panic!("bad ACL entry {entry}"),
            };
            let named = !id.is_empty();
            let tag = TAGS
                .iter()
                .find(|(k, n, _)| *k == kind && *n == named)
                .unwrap_or_else(|| panic!("bad ACL entry {entry}"))
                .2;
            let id = if named {
                id.parse().expect("numeric id")
            } else {
                UNDEFINED_ID
            };
            let bits = perm
                .chars()
                .zip([4u16, 2, 1])
                .map(|(c, bit)| if c == '-' { 0 } else { bit })
                .sum();
            (tag, id, bits)
        })
        .collect();
    entries.sort();
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// The text form of an ACL xattr value (the inverse of [`acl`]).
pub fn acl_text(value: &[u8]) -> String {
    assert!(
        value.len() >= 4 && (value.len() - 4).is_multiple_of(8),
        "ACL of {} bytes",
        value.len()
    );
    assert_eq!(value[..4], VERSION.to_le_bytes());
    value[4..]
        .chunks(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let (kind, named, _) = TAGS
                .iter()
                .find(|t| t.2 == tag)
                .unwrap_or_else(|| panic!("ACL tag {tag:#x}"));
            let id = if *named {
                id.to_string()
            } else {
                String::new()
            };
            let rwx: String = [(4, 'r'), (2, 'w'), (1, 'x')]
                .iter()
                .map(|&(bit, c)| if perm & bit != 0 { c } else { '-' })
                .collect();
            format!("{kind}:{id}:{rwx}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An ACL of `path` (not following a final symlink) as text, or the errno (ENODATA: none).
pub fn acl_of(path: &Path, which: &str) -> Result<String, Errno> {
    lget(path, which).map(|v| acl_text(&v))
}
