//! The pidfile `wait-fuse.sh` waits for: written only once the mount is in place, removed
//! again when the injector stops, so an application restarted after the sidecar stopped
//! waits instead of using its data directory unprotected.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::SidecarError;

/// A written pidfile; dropping it removes the file if it still holds our PID.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    content: String,
}

impl PidFile {
    /// Writes `pid` to `path` atomically (a temporary file renamed into place), creating the
    /// parent directory if needed: a reader sees no file or the whole PID, never a part.
    pub fn write(path: &Path, pid: u32) -> Result<PidFile, SidecarError> {
        let err = |what| {
            move |source| SidecarError::PidFile {
                path: path.to_owned(),
                what,
                source,
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err("creating its directory"))?;
        }
        let content = format!("{pid}\n");
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut file = std::fs::File::create(&partial).map_err(err("creating"))?;
        file.write_all(content.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(err("writing"))?;
        std::fs::rename(&partial, path).map_err(err("renaming into place"))?;
        Ok(PidFile {
            path: path.to_owned(),
            content,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Another injector may have taken the file over since: leave its PID alone.
        if std::fs::read_to_string(&self.path).is_ok_and(|c| c == self.content)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the pidfile");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_removed_on_drop_unless_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuse/pid");
        let file = PidFile::write(&path, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        drop(file);
        assert!(!path.exists());

        let file = PidFile::write(&path, 1).unwrap();
        std::fs::write(&path, "2\n").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");

        let blocked = dir.path().join("f");
        std::fs::write(&blocked, "").unwrap();
        let e = PidFile::write(&blocked.join("pid"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("creating its directory"), "{e}");
    }
}
