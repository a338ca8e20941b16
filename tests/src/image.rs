//! Registry-free images: a single-layer OCI image layout tar whose rootfs is busybox-static with
//! one symlink per applet, built here byte for byte, then imported with `ctr images import`.
//!
//! The import goes through `ctr` (shipped with Debian's containerd) rather than the raw API:
//! importing and unpacking through gRPC would mean writing the blobs through the content store,
//! creating the image record, then applying the layer through the diff service onto a snapshot
//! prepared and committed under the chain ID — containerd's Go client does that plumbing, the
//! Rust bindings do not.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::ctr::Ctr;
use crate::error::{Error, Result};
use crate::oci_archive::oci_arch;

/// The image pods and plain containers run unless told otherwise.
pub const WORKLOAD_IMAGE: &str = "docker.io/library/bbox:test";
const BUSYBOX: &str = "/bin/busybox";

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// What differs between the images we build.
#[derive(Debug, Clone)]
pub(crate) struct ImageDef {
    pub reference: &'static str,
    pub entrypoint: Option<&'static [&'static str]>,
    pub cmd: Option<&'static [&'static str]>,
}

pub(crate) const WORKLOAD: ImageDef = ImageDef {
    reference: WORKLOAD_IMAGE,
    entrypoint: None,
    cmd: Some(&["sh"]),
};

pub(crate) const SANDBOX: ImageDef = ImageDef {
    reference: crate::containerd::SANDBOX_IMAGE,
    entrypoint: Some(&["/bin/sleep", "2147483647"]),
    cmd: None,
};

/// Builds `def` as an OCI layout tar at `out` (kept as a cache: an existing file is reused).
pub(crate) fn build(def: &ImageDef, out: &Path) -> Result<()> {
    if out.is_file() {
        return Ok(());
    }
    let busybox = std::fs::read(BUSYBOX).map_err(Error::io("reading", BUSYBOX))?;
    let layer = rootfs_layer(&busybox, &applets()?)?;
    let layout = oci_layout(def, layer)?;
    // Write then rename, so an interrupted build never leaves a truncated cache entry.
    let partial = out.with_extension("partial");
    std::fs::write(&partial, layout).map_err(Error::io("writing", &partial))?;
    std::fs::rename(&partial, out).map_err(Error::io("renaming into place", out))
}

/// Imports (and unpacks for the default overlayfs snapshotter) an OCI layout tar.
pub(crate) fn import(ctr: &Ctr, tar: &Path) -> Result<()> {
    ctr.run(["images".as_ref(), "import".as_ref(), tar.as_os_str()])
        .map(drop)
}

fn applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|source| Error::Spawn {
            program: format!("{BUSYBOX} --list"),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{BUSYBOX} --list"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        // An applet name is one plain path component; anything else would escape /bin.
        .filter(|n| !n.is_empty() && *n != "busybox" && !n.contains('/') && !n.starts_with('.'))
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(Error::BadResponse {
            call: "busybox --list",
            detail: "no applets listed".into(),
        });
    }
    Ok(names)
}

/// The rootfs as an uncompressed, reproducible tar (owner root, mtime 0).
fn rootfs_layer(busybox: &[u8], applets: &[String]) -> Result<Vec<u8>> {
    let err = |source| Error::Io {
        what: "building the rootfs layer",
        path: BUSYBOX.into(),
        source,
    };
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    };
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        tar.append_data(&mut h, dir, std::io::empty())
            .map_err(err)?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", busybox)
        .map_err(err)?;
    for applet in applets {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .map_err(err)?;
    }
    for (path, content) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, content.len() as u64);
        tar.append_data(&mut h, path, content.as_bytes())
            .map_err(err)?;
    }
    tar.into_inner().map_err(err)
}

/// The OCI image layout (oci-layout, index.json, blobs/sha256/*) as one tar.
fn oci_layout(def: &ImageDef, layer: Vec<u8>) -> Result<Vec<u8>> {
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": def.entrypoint,
            "Cmd": def.cmd,
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
    }))
    .map_err(json_err)?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": format!("sha256:{config_digest}"), "size": config.len() },
        "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": format!("sha256:{layer_digest}"), "size": layer.len() }],
    }))
    .map_err(json_err)?;
    let manifest_digest = digest(&manifest);
    let tag = def
        .reference
        .rsplit_once(':')
        .map_or("latest", |(_, tag)| tag);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": {
                "io.containerd.image.name": def.reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .map_err(json_err)?;

    let err = |source| Error::Io {
        what: "building the image layout of",
        path: def.reference.into(),
        source,
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data)
    };
    add(
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        tar::EntryType::Regular,
    )
    .map_err(err)?;
    add("index.json", &index, tar::EntryType::Regular).map_err(err)?;
    add("blobs/", &[], tar::EntryType::Directory).map_err(err)?;
    add("blobs/sha256/", &[], tar::EntryType::Directory).map_err(err)?;
    for (d, blob) in [
        (&manifest_digest, &manifest),
        (&config_digest, &config),
        (&layer_digest, &layer),
    ] {
        add(&format!("blobs/sha256/{d}"), blob, tar::EntryType::Regular).map_err(err)?;
    }
    tar.into_inner().map_err(err)
}

fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn json_err(e: serde_json::Error) -> Error {
    Error::BadResponse {
        call: "serializing image metadata",
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_is_reproducible_and_has_applets() {
        let applets = vec!["sh".to_owned(), "cat".to_owned()];
        let a = rootfs_layer(b"not really busybox", &applets).expect("layer");
        let b = rootfs_layer(b"not really busybox", &applets).expect("layer");
        assert_eq!(digest(&a), digest(&b));
        let mut archive = tar::Archive::new(&a[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .flatten()
            .filter_map(|e| Some(e.path().ok()?.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/cat",
            "etc/passwd",
            "etc/group",
            "tmp",
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == want),
                "{want} missing: {names:?}"
            );
        }
    }

    #[test]
    fn index_names_the_image() {
        let out = oci_layout(&SANDBOX, b"layer".to_vec()).expect("layout");
        let mut archive = tar::Archive::new(&out[..]);
        let mut index = None;
        for entry in archive.entries().expect("entries").flatten() {
            let mut entry = entry;
            if entry
                .path()
                .ok()
                .is_some_and(|p| p == Path::new("index.json"))
            {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut entry, &mut s).expect("utf-8");
                index = Some(s);
            }
        }
        let index: serde_json::Value =
            serde_json::from_str(&index.expect("index.json")).expect("json");
        let ann = &index["manifests"][0]["annotations"];
        assert_eq!(ann["io.containerd.image.name"], SANDBOX.reference);
        assert_eq!(ann["org.opencontainers.image.ref.name"], "3.6");
    }
}
