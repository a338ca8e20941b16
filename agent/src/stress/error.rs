//! What can go wrong with a stressor, in terms the caller can act on.

use super::options::OptionsError;
use super::process::ProcessError;
use crate::cgroup::CgroupError;

#[derive(Debug, thiserror::Error)]
pub enum StressError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("oomScoreAdj {0}: must be between -1000 and 1000")]
    OomScoreAdjRange(i32),
    #[error("no stressor: cpuStressors and memoryStressors are both empty")]
    NoStressor,
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("writing oom_score_adj {value} for stressor {pid}: {source}{hint}")]
    OomScoreAdj {
        value: i32,
        pid: u32,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("the stressor exited ({status}) before it was released: {stderr}")]
    ExitedEarly { status: String, stderr: String },
    #[error("the stressor could not start ({reason}): {stderr}")]
    CouldNotStart { reason: String, stderr: String },
    #[error("no stress instance {0}")]
    UnknownInstance(String),
    #[error("{field}: {value:?} is not a process id")]
    BadInstance { field: &'static str, value: String },
    #[error(
        "nothing to cancel: give cpuInstanceUid or memoryInstanceUid (or cpuInstance/memoryInstance, the PIDs)"
    )]
    NothingToCancel,
}

impl StressError {
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            StressError::Options(_)
            | StressError::OomScoreAdjRange(_)
            | StressError::NoStressor
            | StressError::BadInstance { .. }
            | StressError::NothingToCancel => Code::InvalidArgument,
            StressError::Cgroup(err) => err.code(),
            StressError::OomScoreAdj { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Code::FailedPrecondition
            }
            StressError::UnknownInstance(_) => Code::NotFound,
            StressError::Process(_) | StressError::OomScoreAdj { .. } => Code::Internal,
            StressError::ExitedEarly { .. } => Code::Internal,
            // What it asked for is not there to be had (memory it cannot reserve).
            StressError::CouldNotStart { .. } => Code::ResourceExhausted,
        }
    }

    /// A short label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self.code() {
            tonic::Code::InvalidArgument => "invalid_argument",
            tonic::Code::NotFound => "unknown_instance",
            _ => match self {
                StressError::Cgroup(_) => "cgroup",
                StressError::OomScoreAdj { .. } => "oom_score_adj",
                _ => "stressor",
            },
        }
    }
}
