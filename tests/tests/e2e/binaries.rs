//! The workspace's binaries, as a user runs them (built by `cargo build --workspace`, which
//! `scripts/test.sh` does before testing).

use std::path::PathBuf;

use anyhow::{Context, ensure};

/// `target/<profile>/<name>`, found from this test binary's own path (`target/<profile>/deps/`).
pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test binary is not under target/<profile>/deps")?;
    let path = profile_dir.join(name);
    ensure!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test.sh does)",
        path.display()
    );
    Ok(path)
}
