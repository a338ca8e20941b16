//! What ExecStressors and CancelStressors ask for and answer, validated before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use super::error::StressError;
use super::options::{CpuSpec, MemorySpec};
use super::record::{StressScope, StressorKind};

/// What ExecStressors asks for.
#[derive(Clone, Debug)]
pub struct StressRequest<'a> {
    pub container_id: &'a str,
    pub scope: StressScope,
    pub cpu: &'a str,
    pub memory: &'a str,
    pub oom_score_adj: i32,
    /// Recover by itself after this long.
    pub duration: Option<Duration>,
}

/// One started stressor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub id: String,
    pub kind: StressorKind,
    pub pid: u32,
    pub started_at_ms: u64,
    pub cgroups: Vec<PathBuf>,
    pub summary: String,
}

/// What ExecStressors did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub target_pid: u32,
    pub cpu: Option<Started>,
    pub memory: Option<Started>,
}

/// A stressor to cancel: by uid, or (Chaos Mesh's older way) by PID and start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceRef {
    Uid(String),
    Pid { pid: u32, started_at_ms: u64 },
}

impl InstanceRef {
    /// From one (instance, start time, uid) triple of a CancelStressRequest; `None` when all
    /// three are empty.
    pub fn from_request(
        field: &'static str,
        instance: &str,
        start_time: i64,
        uid: &str,
    ) -> Result<Option<InstanceRef>, StressError> {
        if !uid.is_empty() {
            return Ok(Some(InstanceRef::Uid(uid.to_owned())));
        }
        if instance.is_empty() {
            return Ok(None);
        }
        let pid = instance
            .parse::<u32>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| StressError::BadInstance {
                field,
                value: instance.to_owned(),
            })?;
        Ok(Some(InstanceRef::Pid {
            pid,
            started_at_ms: u64::try_from(start_time).unwrap_or(0),
        }))
    }
}

pub(super) fn validate(
    request: &StressRequest<'_>,
) -> Result<(Option<CpuSpec>, Option<MemorySpec>), StressError> {
    if !(-1000..=1000).contains(&request.oom_score_adj) {
        return Err(StressError::OomScoreAdjRange(request.oom_score_adj));
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let cpu = CpuSpec::parse(request.cpu, cpus)?;
    let memory = MemorySpec::parse(request.memory, cpus)?;
    if cpu.is_none() && memory.is_none() {
        return Err(StressError::NoStressor);
    }
    Ok((cpu, memory))
}

pub(super) fn matches(instance: &InstanceRef, id: &str, pid: u32, started_at_ms: u64) -> bool {
    match instance {
        InstanceRef::Uid(uid) => uid == id,
        InstanceRef::Pid {
            pid: wanted,
            started_at_ms: at,
        } => *wanted == pid && (*at == 0 || *at == started_at_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(cpu: &'a str, memory: &'a str, oom: i32) -> StressRequest<'a> {
        StressRequest {
            container_id: "containerd://abc",
            scope: StressScope::Container,
            cpu,
            memory,
            oom_score_adj: oom,
            duration: None,
        }
    }

    #[test]
    fn validation_happens_before_anything_runs() {
        assert!(matches!(
            validate(&request("", " ", 0)),
            Err(StressError::NoStressor)
        ));
        let err = validate(&request("--cpu 1", "", 1001)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("oomScoreAdj 1001"), "{err}");
        let err = validate(&request("--cpu 1 --cpu-load 120", "", 0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.reason(), "invalid_argument");
        let (cpu, memory) = validate(&request("--cpu 2 --cpu-load 50", "--size 1M", -5)).unwrap();
        let cpu = cpu.unwrap();
        assert_eq!((cpu.workers, cpu.load), (2, 50));
        assert!(memory.is_some());
        // An unknown stress option or cpu method is a named INVALID_ARGUMENT.
        for (cpu, memory, says) in [
            (
                " --cpu-load-slice 10 --cpu-method sqrt --cpu 1 --hdd 1",
                "",
                "\"--hdd\"",
            ),
            (
                " --cpu-load-slice 10 --cpu-method hanoi --cpu 1",
                "",
                "--cpu-method \"hanoi\"",
            ),
            (
                "",
                " --workers 1 --size 1M --vm-method nope",
                "--vm-method \"nope\"",
            ),
        ] {
            let err = validate(&request(cpu, memory, 0)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn cancel_requests_name_an_instance() {
        assert_eq!(
            InstanceRef::from_request("cpuInstance", "123", 5, "uid-1").unwrap(),
            Some(InstanceRef::Uid("uid-1".into()))
        );
        assert_eq!(
            InstanceRef::from_request("cpuInstance", "123", 5, "").unwrap(),
            Some(InstanceRef::Pid {
                pid: 123,
                started_at_ms: 5
            })
        );
        assert_eq!(
            InstanceRef::from_request("cpuInstance", "", 0, "").unwrap(),
            None
        );
        let err = InstanceRef::from_request("memoryInstance", "12x", 0, "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "memoryInstance: \"12x\" is not a process id"
        );
        assert!(matches(
            &InstanceRef::Pid {
                pid: 7,
                started_at_ms: 0
            },
            "a",
            7,
            99
        ));
        assert!(!matches(
            &InstanceRef::Pid {
                pid: 7,
                started_at_ms: 98
            },
            "a",
            7,
            99
        ));
    }
}
