//! OCI image archives from layer tars, without an engine or a registry: the image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/*`) as one tar, which `ctr images import` takes.
//! Layers are uncompressed tars, streamed from disk (a Debian base is over 100 MB). The index
//! names the image as containerd and CRI look it up (`faultline-agent:0.1.0` is
//! `docker.io/library/faultline-agent:0.1.0`), so a pod spec's `image:` finds it as written.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Debian's images set this PATH; the Dockerfile's stages inherit it.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image's runtime configuration and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// As a manifest names it (`faultline-agent:0.1.0`).
    pub reference: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `uid[:gid]`.
    pub user: Option<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
}

/// A file to put in a layer: read from `source`, stored at `dest` (absolute) with `mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFile {
    pub source: PathBuf,
    pub dest: String,
    pub mode: u32,
}

/// The full name containerd gives a short reference (`name:tag` is
/// `docker.io/library/name:tag`, `org/name:tag` is `docker.io/org/name:tag`).
pub fn normalized_reference(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or_default();
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        reference.to_owned()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    }
}

/// Writes `files` as an uncompressed layer tar at `out`: owner root, mtime 0, every parent
/// directory with mode 0755.
pub fn write_files_layer(files: &[LayerFile], out: &Path) -> Result<()> {
    let err = |source| Error::Io {
        what: "writing the layer",
        path: out.to_owned(),
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
    let file = File::create(out).map_err(Error::io("creating", out))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let mut dirs_done = std::collections::BTreeSet::new();
    for f in files {
        let relative = f
            .dest
            .strip_prefix('/')
            .filter(|r| !r.is_empty() && !r.split('/').any(|c| c == ".." || c.is_empty()))
            .ok_or_else(|| Error::InvalidSpec {
                field: "layer file destination",
                reason: format!("{:?} is not a clean absolute path", f.dest),
            })?;
        let mut parent = String::new();
        for component in relative
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            parent.push_str(component);
            parent.push('/');
            if dirs_done.insert(parent.clone()) {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, &parent, std::io::empty())
                    .map_err(err)?;
            }
        }
        let source = File::open(&f.source).map_err(Error::io("reading", &f.source))?;
        let size = source
            .metadata()
            .map_err(Error::io("reading", &f.source))?
            .len();
        let mut h = header(tar::EntryType::Regular, f.mode, size);
        tar.append_data(&mut h, relative, BufReader::new(source))
            .map_err(err)?;
    }
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(err)
}

/// Writes the image (config plus `layers`, bottom first, each an uncompressed tar) as an OCI
/// layout archive at `out` (through a `.partial` file, renamed at the end); returns its size.
pub fn write_archive(config: &ImageConfig, layers: &[PathBuf], out: &Path) -> Result<u64> {
    let mut layer_digests = Vec::new();
    for layer in layers {
        layer_digests.push(file_digest(layer)?);
    }
    let arch = oci_arch();
    let mut env = vec![DEFAULT_PATH.to_owned()];
    env.extend(
        config
            .env
            .iter()
            .filter(|e| !e.starts_with("PATH="))
            .cloned(),
    );
    if let Some(path) = config.env.iter().find(|e| e.starts_with("PATH=")) {
        env[0] = path.clone();
    }
    let mut runtime = serde_json::json!({
        "Env": env,
        "WorkingDir": config.workdir.clone().unwrap_or_else(|| "/".into()),
    });
    if let Some(e) = &config.entrypoint {
        runtime["Entrypoint"] = serde_json::json!(e);
    }
    if let Some(c) = &config.cmd {
        runtime["Cmd"] = serde_json::json!(c);
    }
    if let Some(u) = &config.user {
        runtime["User"] = serde_json::json!(u);
    }
    let image_config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": runtime,
        "rootfs": {
            "type": "layers",
            "diff_ids": layer_digests.iter().map(|(d, _)| format!("sha256:{d}")).collect::<Vec<_>>(),
        },
    }))
    .map_err(json_err)?;
    let config_digest = hex::encode(Sha256::digest(&image_config));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": format!("sha256:{config_digest}"), "size": image_config.len() },
        "layers": layer_digests.iter().map(|(d, size)| serde_json::json!({
            "mediaType": LAYER_MEDIA_TYPE, "digest": format!("sha256:{d}"), "size": size,
        })).collect::<Vec<_>>(),
    }))
    .map_err(json_err)?;
    let manifest_digest = hex::encode(Sha256::digest(&manifest));
    let full_name = normalized_reference(&config.reference);
    let tag = full_name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": { "architecture": arch, "os": "linux" },
            "annotations": {
                "io.containerd.image.name": full_name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .map_err(json_err)?;

    let partial = out.with_extension("partial");
    let err = |source| Error::Io {
        what: "writing the image archive",
        path: partial.clone(),
        source,
    };
    let file = File::create(&partial).map_err(Error::io("creating", &partial))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let mut add = |path: &str, size: u64, data: &mut dyn Read, dir: bool| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_size(size);
        tar.append_data(&mut h, path, data)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add("oci-layout", layout.len() as u64, &mut &layout[..], false).map_err(err)?;
    add("index.json", index.len() as u64, &mut &index[..], false).map_err(err)?;
    add("blobs/", 0, &mut std::io::empty(), true).map_err(err)?;
    add("blobs/sha256/", 0, &mut std::io::empty(), true).map_err(err)?;
    for (digest, blob) in [
        (&manifest_digest, &manifest),
        (&config_digest, &image_config),
    ] {
        add(
            &format!("blobs/sha256/{digest}"),
            blob.len() as u64,
            &mut &blob[..],
            false,
        )
        .map_err(err)?;
    }
    for (layer, (digest, size)) in layers.iter().zip(&layer_digests) {
        let mut reader = BufReader::new(File::open(layer).map_err(Error::io("reading", layer))?);
        add(&format!("blobs/sha256/{digest}"), *size, &mut reader, false).map_err(err)?;
    }
    let mut writer = tar.into_inner().map_err(err)?;
    std::io::Write::flush(&mut writer).map_err(err)?;
    drop(writer);
    std::fs::rename(&partial, out).map_err(Error::io("renaming into place", out))?;
    Ok(std::fs::metadata(out)
        .map_err(Error::io("reading", out))?
        .len())
}

/// What an archive holds: its name, its runtime config, and every layer's entries.
#[derive(Debug, Clone)]
pub struct ArchiveContents {
    /// `io.containerd.image.name` of the index.
    pub name: String,
    /// The image config's `config` object (Entrypoint, User, Env, ...).
    pub config: serde_json::Value,
    /// Per layer, bottom first: (path without a leading `./` or `/`, mode, uid, gid, sha256 of
    /// the content for regular files).
    pub layers: Vec<Vec<LayerEntry>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: Option<String>,
}

/// Reads an archive [`write_archive`] (or any single-manifest OCI layout tar) wrote.
/// (`ctr images import` checks the blobs' digests.)
pub fn read_archive(path: &Path) -> Result<ArchiveContents> {
    let bad = |detail: String| Error::BadResponse {
        call: "reading an image archive",
        detail: format!("{}: {detail}", path.display()),
    };
    let mut blobs = std::collections::BTreeMap::new();
    let mut index = None;
    let file = File::open(path).map_err(Error::io("reading", path))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    for entry in archive.entries().map_err(Error::io("reading", path))? {
        let mut entry = entry.map_err(Error::io("reading", path))?;
        let name = entry
            .path()
            .map_err(Error::io("reading", path))?
            .to_string_lossy()
            .into_owned();
        if name == "index.json" {
            let mut s = Vec::new();
            entry
                .read_to_end(&mut s)
                .map_err(Error::io("reading", path))?;
            index = Some(s);
        } else if let Some(digest) = name.strip_prefix("blobs/sha256/").filter(|d| !d.is_empty()) {
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(Error::io("reading", path))?;
            blobs.insert(digest.to_owned(), data);
        }
    }
    let index: serde_json::Value =
        serde_json::from_slice(&index.ok_or_else(|| bad("no index.json".into()))?)
            .map_err(json_err)?;
    let descriptor = &index["manifests"][0];
    let blob = |d: &serde_json::Value| -> Result<&Vec<u8>> {
        let digest = d["digest"].as_str().unwrap_or_default();
        blobs
            .get(digest.trim_start_matches("sha256:"))
            .ok_or_else(|| bad(format!("no blob {digest}")))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(blob(descriptor)?).map_err(json_err)?;
    let config: serde_json::Value =
        serde_json::from_slice(blob(&manifest["config"])?).map_err(json_err)?;
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
        let mut entries = Vec::new();
        let mut tar = tar::Archive::new(&blob(&layer)?[..]);
        for entry in tar
            .entries()
            .map_err(Error::io("reading a layer of", path))?
        {
            let mut entry = entry.map_err(Error::io("reading a layer of", path))?;
            let h = entry.header().clone();
            let name = entry
                .path()
                .map_err(Error::io("reading a layer of", path))?
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_owned();
            let kind = h.entry_type();
            let sha256 = if kind == tar::EntryType::Regular {
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .map_err(Error::io("reading a layer of", path))?;
                Some(hex::encode(Sha256::digest(&data)))
            } else {
                None
            };
            entries.push(LayerEntry {
                path: name,
                kind: if kind.is_dir() {
                    'd'
                } else if kind.is_symlink() {
                    'l'
                } else if kind.is_hard_link() {
                    'h'
                } else if kind == tar::EntryType::Regular {
                    'f'
                } else {
                    'o'
                },
                mode: h.mode().unwrap_or(0),
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
                size: h.size().unwrap_or(0),
                sha256,
                link: entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string_lossy().into_owned()),
            });
        }
        layers.push(entries);
    }
    Ok(ArchiveContents {
        name: descriptor["annotations"]["io.containerd.image.name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        config: config["config"].clone(),
        layers,
    })
}

/// sha256 (hex) and size of a file, streamed.
pub fn file_digest(path: &Path) -> Result<(String, u64)> {
    let mut file = BufReader::new(File::open(path).map_err(Error::io("reading", path))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(Error::io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

fn json_err(e: serde_json::Error) -> Error {
    Error::BadResponse {
        call: "image metadata",
        detail: e.to_string(),
    }
}

/// The OCI name of this machine's architecture (containerd imports only the host platform).
pub(crate) fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_references_get_containerds_full_names() {
        assert_eq!(
            normalized_reference("faultline-agent:0.1.0"),
            "docker.io/library/faultline-agent:0.1.0"
        );
        assert_eq!(normalized_reference("org/x:1"), "docker.io/org/x:1");
        assert_eq!(
            normalized_reference("registry.example:5000/x:1"),
            "registry.example:5000/x:1"
        );
    }

    #[test]
    fn an_archive_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("oci-archive-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("tool");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let layer = dir.join("layer.tar");
        write_files_layer(
            &[LayerFile {
                source: bin.clone(),
                dest: "/usr/local/bin/tool".into(),
                mode: 0o755,
            }],
            &layer,
        )
        .unwrap();
        let config = ImageConfig {
            reference: "t:1".into(),
            entrypoint: Some(vec!["/usr/local/bin/tool".into()]),
            cmd: None,
            user: Some("65532:65532".into()),
            env: vec![],
            workdir: None,
        };
        let out = dir.join("image.tar");
        write_archive(&config, &[layer.clone(), layer], &out).unwrap();
        let read = read_archive(&out).unwrap();
        assert_eq!(read.name, "docker.io/library/t:1");
        assert_eq!(read.config["User"], "65532:65532");
        assert_eq!(read.config["Entrypoint"][0], "/usr/local/bin/tool");
        assert_eq!(read.layers.len(), 2);
        let tool = read.layers[0]
            .iter()
            .find(|e| e.path == "usr/local/bin/tool")
            .expect("the tool");
        assert_eq!((tool.mode, tool.uid, tool.kind), (0o755, 0, 'f'));
        assert!(
            read.layers[0]
                .iter()
                .any(|e| e.path == "usr/local" && e.kind == 'd')
        );
        let bad = write_files_layer(
            &[LayerFile {
                source: bin,
                dest: "/usr/../etc/x".into(),
                mode: 0o644,
            }],
            &dir.join("bad.tar"),
        )
        .expect_err("not clean");
        assert!(bad.to_string().contains("layer file destination"), "{bad}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
