//! The reconciler's errors; each maps to a metric label.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{remaining} target(s) still need recovery: {detail}")]
    RecoveryIncomplete { remaining: usize, detail: String },
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    #[error("cannot build {0}")]
    Build(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::RecoveryIncomplete { .. } => "recovery_incomplete",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Build(_) => "build",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
