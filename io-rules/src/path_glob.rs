//! Path globs of rules, matched against container paths.
//!
//! Chaos Mesh sends absolute container paths ("/data/**", "/data/a/*.txt"). The filesystem
//! knows paths relative to its mount root; they are joined under the mount point (the volume
//! path as seen inside the container) before matching. A relative glob ("a/*.txt") is taken
//! relative to the mount point. `*`, `?` and `[...]` never cross a `/`; `**` does.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use globset::{Candidate, GlobBuilder, GlobMatcher};

/// A path glob, parsed; its matcher is compiled when first needed.
#[derive(Debug, Clone)]
pub struct PathGlob {
    /// The pattern as the rule gave it.
    pattern: String,
    /// The pattern anchored at the mount point, checked to parse. Only the text is kept: a
    /// parsed glob holds a token per character (about 9 KB for a 280-character path).
    anchored: String,
    /// Compiled on first use, or ahead of it by [`PathGlob::compile`]: the matcher of a long
    /// pattern is a regex of tens of KB, which whoever only validates rules (the agent) never
    /// needs. 1,024 of them took 35 MB that the agent's allocator then kept.
    matcher: OnceLock<Option<GlobMatcher>>,
}

/// `anchored` parsed as rules take globs: `*`, `?` and `[...]` never cross a `/`.
fn glob_of(anchored: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(anchored)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

impl PathGlob {
    /// Parses `pattern` (a bad one is an error here); a relative pattern is anchored at
    /// `mount_point`.
    pub fn new(pattern: &str, mount_point: &Path) -> Result<PathGlob, globset::Error> {
        let anchored = if pattern.starts_with('/') {
            pattern.to_owned()
        } else {
            let mount = globset::escape(&mount_point.to_string_lossy());
            format!("{}/{}", mount.trim_end_matches('/'), pattern)
        };
        drop(glob_of(&anchored)?);
        Ok(PathGlob {
            pattern: pattern.to_owned(),
            anchored,
            matcher: OnceLock::new(),
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn is_match(&self, candidate: &Candidate<'_>) -> bool {
        self.matcher()
            .is_some_and(|m| m.is_match_candidate(candidate))
    }

    /// Compiles the matcher now rather than on the first match.
    pub fn compile(&self) {
        let _ = self.matcher();
    }

    /// Whether the matcher is compiled.
    pub fn is_compiled(&self) -> bool {
        self.matcher.get().is_some()
    }

    /// `None` only if the text that parsed in `new` no longer parses (it cannot): then the
    /// glob matches nothing rather than everything.
    fn matcher(&self) -> Option<&GlobMatcher> {
        self.matcher
            .get_or_init(|| glob_of(&self.anchored).ok().map(|g| g.compile_matcher()))
            .as_ref()
    }
}

thread_local! {
    // Reused so that matching a path on the hot path does not allocate.
    static JOINED_PATH: RefCell<PathBuf> = RefCell::new(PathBuf::with_capacity(256));
}

/// Calls `f` with the container path of `path_rel` (relative to the mount root; a leading
/// `/`, "" or "." mean the root itself) prepared for glob matching.
pub(super) fn with_container_path<T>(
    mount_point: &Path,
    path_rel: &Path,
    f: impl FnOnce(&Candidate<'_>) -> T,
) -> T {
    JOINED_PATH.with(|buffer| {
        // A re-entrant call (not expected) gets a fresh buffer instead of a panic.
        match buffer.try_borrow_mut() {
            Ok(mut joined) => {
                join_under(mount_point, path_rel, &mut joined);
                f(&Candidate::new(joined.as_path()))
            }
            Err(_) => {
                let mut joined = PathBuf::new();
                join_under(mount_point, path_rel, &mut joined);
                f(&Candidate::new(joined.as_path()))
            }
        }
    })
}

fn join_under(mount_point: &Path, path_rel: &Path, joined: &mut PathBuf) {
    let mut relative = path_rel.as_os_str().as_bytes();
    while let [b'/', rest @ ..] = relative {
        relative = rest;
    }
    if relative == b"." {
        relative = b"";
    }
    let out = joined.as_mut_os_string();
    out.clear();
    out.push(mount_point.as_os_str());
    if !relative.is_empty() {
        if !mount_point.as_os_str().as_bytes().ends_with(b"/") {
            out.push("/");
        }
        out.push(OsStr::from_bytes(relative));
    }
}

/// The container path of `path_rel` as an owned value (for status reports, not the hot path).
pub fn container_path(mount_point: &Path, path_rel: &Path) -> PathBuf {
    let mut joined = PathBuf::new();
    join_under(mount_point, path_rel, &mut joined);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, mount: &str, rel: &str) -> bool {
        let glob = PathGlob::new(pattern, Path::new(mount)).unwrap();
        with_container_path(Path::new(mount), Path::new(rel), |c| glob.is_match(c))
    }

    #[test]
    fn double_star_crosses_directories() {
        assert!(matches("/data/**", "/data", "a"));
        assert!(matches("/data/**", "/data", "a/b/c.txt"));
        assert!(!matches("/data/**", "/data", ""));
        assert!(matches("/data/**/*", "/data", "a/b"));
        assert!(matches("/data/**/*.log", "/data", "x.log"));
        assert!(matches("/data/**/*.log", "/data", "deep/er/x.log"));
        assert!(!matches("/data/**/*.log", "/data", "deep/x.txt"));
    }

    #[test]
    fn single_star_stays_in_one_directory() {
        assert!(matches("/data/a/*.txt", "/data", "a/f.txt"));
        assert!(!matches("/data/a/*.txt", "/data", "a/b/f.txt"));
        assert!(!matches("/data/*", "/data", "a/b"));
        assert!(matches("/data/?.txt", "/data", "x.txt"));
    }

    #[test]
    fn relative_globs_are_anchored_at_the_mount_point() {
        assert!(matches("a/*.txt", "/data", "a/f.txt"));
        assert!(!matches("a/*.txt", "/data", "b/a/f.txt"));
        assert!(matches("**", "/var/lib/db", "x/y"));
    }

    #[test]
    fn globs_outside_the_volume_never_match() {
        assert!(!matches("/other/**", "/data", "a"));
        assert!(!matches("/data2/**", "/data", "a"));
    }

    #[test]
    fn relative_paths_are_normalised() {
        assert!(matches("/data/a", "/data", "/a"));
        assert!(matches("/data/a", "/data/", "a"));
        assert!(matches("/data", "/data", ""));
        assert!(matches("/data", "/data", "."));
        assert!(matches("/a", "/", "a"));
        assert_eq!(
            container_path(Path::new("/"), Path::new("a")),
            Path::new("/a")
        );
    }

    #[test]
    fn mount_points_with_glob_characters_are_literal() {
        assert!(matches("f", "/data[1]", "f"));
        assert!(!matches("f", "/data[1]", "x"));
    }

    #[test]
    fn invalid_glob_is_an_error() {
        assert!(PathGlob::new("/data/[a", Path::new("/data")).is_err());
    }
}
