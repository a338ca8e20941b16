//! Looking at paths inside a container's filesystem from the host, safely: every lookup is
//! confined to the container's root with openat2(RESOLVE_IN_ROOT), so a symlink in the container
//! can never lead to a host path.

use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("volume {path:?}: {reason}")]
    Invalid { path: String, reason: &'static str },
    #[error("volume {path:?} does not exist in the container")]
    Missing { path: String },
    #[error("volume {path:?} is not a directory in the container")]
    NotADirectory { path: String },
    #[error("volume {path:?}: cannot look it up in the container of process {pid}: {source}")]
    Lookup {
        path: String,
        pid: u32,
        #[source]
        source: nix::Error,
    },
}

/// Checks the form of a volume path: absolute, normalized, without `..`.
pub fn validate_volume_path(path: &str) -> Result<(), PathError> {
    let invalid = |reason| PathError::Invalid {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if !path.starts_with('/') {
        return Err(invalid("the path must be absolute"));
    }
    if path == "/" {
        return Err(invalid("the container's root cannot be a fault volume"));
    }
    if path.contains('\0') {
        return Err(invalid("the path contains a NUL byte"));
    }
    if Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(invalid("the path must not contain '..'"));
    }
    Ok(())
}

/// Opens a directory inside the root of process `pid` (O_PATH), resolving symlinks as the
/// container would, never outside its root.
pub fn open_volume(pid: u32, path: &str) -> Result<OwnedFd, PathError> {
    validate_volume_path(path)?;
    let lookup = |source| PathError::Lookup {
        path: path.to_owned(),
        pid,
        source,
    };
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(lookup)?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let relative = path.trim_start_matches('/');
    let fd = match openat2(&root, relative, how) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => {
            return Err(PathError::Missing {
                path: path.to_owned(),
            });
        }
        Err(nix::Error::ENOTDIR) => {
            return Err(PathError::NotADirectory {
                path: path.to_owned(),
            });
        }
        Err(source) => return Err(lookup(source)),
    };
    let stat = fstat(&fd).map_err(lookup)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Err(PathError::NotADirectory {
            path: path.to_owned(),
        });
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_volume_paths_are_named() {
        for (path, says) in [
            ("", "empty"),
            ("data", "absolute"),
            ("/", "root"),
            ("/data/../etc", "'..'"),
        ] {
            let err = validate_volume_path(path).unwrap_err().to_string();
            assert!(err.contains(says), "{path}: {err}");
        }
        validate_volume_path("/data/sub").unwrap();
    }

    #[test]
    fn lookups_stay_inside_our_own_root() {
        // Our own process's root is the host root: a plain lookup works, a missing path and a
        // file are named.
        let me = std::process::id();
        open_volume(me, "/tmp").unwrap();
        assert!(matches!(
            open_volume(me, "/nonexistent-faultline"),
            Err(PathError::Missing { .. })
        ));
        assert!(matches!(
            open_volume(me, "/etc/hostname"),
            Err(PathError::NotADirectory { .. })
        ));
    }

    #[test]
    fn an_absolute_symlink_resolves_inside_the_root() {
        // Build a fake "container root" and point a process-independent check at it through
        // openat2 directly: /link -> /etc must resolve to <root>/etc, which does not exist.
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("link")).unwrap();
        let dir = nix::fcntl::open(
            root.path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let how = OpenHow::new()
            .flags(OFlag::O_PATH)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        assert_eq!(openat2(&dir, "link", how).unwrap_err(), nix::Error::ENOENT);
    }
}
