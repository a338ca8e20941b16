//! Turning on FUSE over io_uring on the node (`--enable-fuse-io-uring`).
//!
//! Linux 6.14+ offers the transport to FUSE servers only while the `fuse` module's
//! `enable_uring` parameter is on. It changes nothing for servers that do not ask for it at
//! INIT; the injector asks, and then serves each CPU's requests on that CPU (docs/injector.md).

use std::io;
use std::path::Path;

/// The module parameter.
pub const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// What turning it on found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was off and is on now.
    Enabled,
    /// It was on already.
    AlreadyOn,
    /// The kernel has no such parameter (older than 6.14, or built without
    /// CONFIG_FUSE_IO_URING): injectors read requests from /dev/fuse.
    Unsupported,
}

/// Turn the parameter at `path` on.
pub fn enable(path: &Path) -> io::Result<Outcome> {
    let current = match std::fs::read_to_string(path) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Unsupported),
        Err(e) => return Err(e),
    };
    if matches!(current.trim(), "Y" | "1") {
        return Ok(Outcome::AlreadyOn);
    }
    std::fs::write(path, "Y")?;
    Ok(Outcome::Enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_the_parameter_on_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("enable_uring");
        std::fs::write(&p, "N\n").expect("write");
        assert_eq!(enable(&p).expect("enable"), Outcome::Enabled);
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "Y");
        assert_eq!(enable(&p).expect("again"), Outcome::AlreadyOn);
        assert_eq!(
            enable(&dir.path().join("missing")).expect("missing"),
            Outcome::Unsupported
        );
    }
}
