use std::fmt;
use std::str::FromStr;

use super::RuntimeError;

/// The container runtime a container ID belongs to, from the scheme Kubernetes puts in
/// `status.containerStatuses[].containerID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    Containerd,
    CriO,
    Docker,
}

impl RuntimeKind {
    pub fn scheme(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "containerd",
            RuntimeKind::CriO => "cri-o",
            RuntimeKind::Docker => "docker",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "containerd" => Ok(RuntimeKind::Containerd),
            "cri-o" | "crio" => Ok(RuntimeKind::CriO),
            "docker" => Ok(RuntimeKind::Docker),
            other => Err(format!(
                "unknown container runtime {other:?} (expected containerd, cri-o or docker)"
            )),
        }
    }
}

/// A validated container reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub runtime: RuntimeKind,
    pub id: String,
}

impl ContainerRef {
    /// Parses `scheme://ID`, or a bare ID that belongs to `default_runtime`.
    pub fn parse(input: &str, default_runtime: RuntimeKind) -> Result<Self, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidArgument {
            input: input.to_owned(),
            reason,
        };
        let (runtime, id) = match input.split_once("://") {
            Some((scheme, id)) => (scheme.parse::<RuntimeKind>().map_err(invalid)?, id),
            None => (default_runtime, input),
        };
        if id.is_empty() {
            return Err(invalid("the container id is empty".into()));
        }
        if id.len() > 256 {
            return Err(invalid(
                "the container id is longer than 256 characters".into(),
            ));
        }
        // containerd's identifier rule: alphanumerics with '.', '_', '-' inside.
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if let Some(bad) = id.chars().find(|&c| !valid_char(c)) {
            return Err(invalid(format!("the container id contains {bad:?}")));
        }
        if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(invalid(
                "the container id must start with a letter or digit".into(),
            ));
        }
        Ok(ContainerRef {
            runtime,
            id: id.to_owned(),
        })
    }
}

impl fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.runtime, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        for (input, runtime) in [
            ("containerd://abc123", RuntimeKind::Containerd),
            ("cri-o://abc123", RuntimeKind::CriO),
            ("docker://abc123", RuntimeKind::Docker),
        ] {
            let parsed = ContainerRef::parse(input, RuntimeKind::Docker).unwrap();
            assert_eq!(parsed.runtime, runtime);
            assert_eq!(parsed.id, "abc123");
            assert_eq!(parsed.to_string(), input);
        }
    }

    #[test]
    fn bare_id_takes_the_default_runtime() {
        let parsed = ContainerRef::parse("f00d", RuntimeKind::CriO).unwrap();
        assert_eq!(parsed.runtime, RuntimeKind::CriO);
    }

    #[test]
    fn malformed_ids_are_invalid_arguments() {
        for (input, says) in [
            ("rkt://abc", "unknown container runtime"),
            ("containerd://", "empty"),
            ("", "empty"),
            ("containerd://../etc", "contains '/'"),
            ("containerd://-x", "must start"),
            ("containerd://a b", "contains ' '"),
        ] {
            let err = ContainerRef::parse(input, RuntimeKind::Containerd).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{input}");
            assert!(err.to_string().contains(says), "{input}: {err}");
        }
    }
}
