//! IOChaos: faults in the filesystem calls under a volume of the target containers (Chaos
//! Mesh's `IOChaosSpec`; the agent mounts the FUSE injector over `volumePath`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::selector::ContainerSelector;
use super::status::ChaosStatus;

/// IOChaos: faults in filesystem calls under `volumePath` of the selected containers.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "chaos.faultline.dev",
    version = "v1alpha1",
    kind = "IOChaos",
    plural = "iochaos",
    singular = "iochaos",
    namespaced,
    status = "ChaosStatus",
    shortname = "ioc",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".spec.duration"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IOChaosSpec {
    #[serde(flatten)]
    pub container_selector: ContainerSelector,
    /// latency, fault, attrOverride or mistake.
    pub action: IoAction,
    /// The latency of `latency` (Go duration, e.g. "100ms").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// The error number `fault` returns (e.g. 5 for EIO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<u32>,
    /// The attributes `attrOverride` reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr: Option<AttrOverrideSpec>,
    /// The wrong data `mistake` puts into reads and writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mistake: Option<MistakeSpec>,
    /// A glob of the paths to act on (absolute in the container, or relative to volumePath);
    /// default: everything under volumePath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The filesystem operations to act on; default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<IoMethod>,
    /// Probability in percent that a matching operation is affected; default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i64>,
    /// The mount path of the volume in the container.
    pub volume_path: String,
    /// How long the faults stay (Go duration, e.g. "30s"); default: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Chaos Mesh's remote cluster: not supported (rejected with a condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cluster: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IoAction {
    Latency,
    Fault,
    AttrOverride,
    Mistake,
}

impl IoAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IoAction::Latency => "latency",
            IoAction::Fault => "fault",
            IoAction::AttrOverride => "attrOverride",
            IoAction::Mistake => "mistake",
        }
    }
}

/// Chaos Mesh's `AttrOverrideSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttrOverrideSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime: Option<Timespec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Timespec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<Timespec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Timespec {
    pub sec: i64,
    #[serde(default)]
    #[schemars(range(min = 0, max = 999_999_999))]
    pub nsec: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FileType {
    NamedPipe,
    CharDevice,
    BlockDevice,
    Directory,
    RegularFile,
    Symlink,
    Socket,
}

/// Chaos Mesh's `MistakeSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MistakeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filling: Option<Filling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_occurrences: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_length: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Filling {
    Zero,
    Random,
}

/// A filesystem operation a fault acts on, by the name Chaos Mesh uses (`read`, `getattr`, ...).
/// The list is the injector's own ([`io_rules::Method`]): Chaos Mesh's 32 names plus the
/// operations it cannot name (`fallocate`, `lseek`, `copy_file_range`, `ioctl`, `poll`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoMethod(pub io_rules::Method);

impl Serialize for IoMethod {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for IoMethod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        io_rules::Method::parse(&name).map(IoMethod).ok_or_else(|| {
            let known: Vec<&str> = io_rules::Method::ALL.iter().map(|m| m.name()).collect();
            serde::de::Error::custom(format!(
                "unknown method {name:?}; expected one of {}",
                known.join(", ")
            ))
        })
    }
}

impl JsonSchema for IoMethod {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IoMethod".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = io_rules::Method::ALL.iter().map(|m| m.name()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_the_injectors_names() {
        let methods: Vec<IoMethod> =
            serde_json::from_str(r#"["read", "WRITE", "copy_file_range"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&methods).unwrap(),
            r#"["read","write","copy_file_range"]"#
        );
        let error = serde_json::from_str::<Vec<IoMethod>>(r#"["reed"]"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains(r#"unknown method "reed""#), "{error}");
        assert!(
            error.contains("getattr"),
            "the error lists the names: {error}"
        );
    }
}
