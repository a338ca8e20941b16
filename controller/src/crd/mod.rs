//! The chaos custom resources, group `chaos.faultline.dev`, version `v1alpha1`. Field names and
//! meanings follow Chaos Mesh's `api/v1alpha1`, so a Chaos Mesh manifest of a supported kind
//! works after its apiVersion is changed.

mod dns_chaos;
mod http_chaos;
mod io_chaos;
mod network_chaos;
mod pod_chaos;
mod schedule;
mod selector;
mod status;
mod status_check;
mod stress_chaos;
mod time_chaos;
mod workflow;

pub use dns_chaos::{DNSChaos, DNSChaosSpec, DnsChaosAction};
pub use http_chaos::{HTTPChaos, HTTPChaosSpec, HttpChaosTls, HttpTarget};
pub use io_chaos::{
    AttrOverrideSpec, FileType, Filling, IOChaos, IOChaosSpec, IoAction, IoMethod, MistakeSpec,
    Timespec,
};
pub use network_chaos::{
    BandwidthSpec, CorruptSpec, DelaySpec, Direction, DuplicateSpec, LossSpec, NetworkAction,
    NetworkChaos, NetworkChaosSpec, RateSpec, ReorderSpec,
};
pub use pod_chaos::{PodAction, PodChaos, PodChaosSpec};
pub use schedule::{
    ChaosOnlyScheduleSpec, ChildReference, ConcurrencyPolicy, Schedule, ScheduleSpec,
    ScheduleStatus, ScheduleType,
};
pub use selector::{
    ContainerSelector, LabelOperator, LabelSelectorRequirement, PodSelector, PodSelectorSpec,
    SelectorMode,
};
pub use status::{
    ChaosCondition, ChaosStatus, ConditionStatus, ConditionType, DesiredPhase, ExperimentStatus,
    RecordEvent, RecordPhase, TargetPhase, TargetRecord,
};
pub use status_check::{
    HttpCriteria, HttpMethod, HttpStatusCheck, SpecProblem, StatusCheck, StatusCheckCondition,
    StatusCheckMode, StatusCheckRecord, StatusCheckSpec, StatusCheckStatus, StatusCheckType,
    StatusCodes,
};
pub use stress_chaos::{CpuStressor, MemoryStressor, StressChaos, StressChaosSpec, Stressors};
pub use time_chaos::{TimeChaos, TimeChaosSpec};
pub use workflow::{
    ABORT_ANNOTATION, CONTROLLED_BY_LABEL, ChaosResource, ConditionalBranch,
    ConditionalBranchStatus, ConditionalBranchesStatus, EmbedChaos, LocalReference, NodeCondition,
    TEMPLATE_ANNOTATION, Task, Template, WORKFLOW_LABEL, Workflow, WorkflowCondition, WorkflowNode,
    WorkflowNodeSpec, WorkflowNodeStatus, WorkflowSpec, WorkflowStatus,
};
pub mod status_check_conditions {
    pub use super::status_check::{
        COMPLETED, DURATION_EXCEED, FAILURE_THRESHOLD_EXCEED, SUCCESS_THRESHOLD_EXCEED,
    };
}
pub mod node_conditions {
    pub use super::workflow::{ABORTED, ACCOMPLISHED, CHAOS_INJECTED, DEADLINE_EXCEED};
}

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub const GROUP: &str = "chaos.faultline.dev";
pub const VERSION: &str = "v1alpha1";

/// Every CRD, with the file name `crdgen` writes it to.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("dnschaos.yaml", DNSChaos::crd()),
        ("httpchaos.yaml", HTTPChaos::crd()),
        ("iochaos.yaml", IOChaos::crd()),
        ("networkchaos.yaml", NetworkChaos::crd()),
        ("podchaos.yaml", PodChaos::crd()),
        ("schedules.yaml", Schedule::crd()),
        ("stresschaos.yaml", StressChaos::crd()),
        ("timechaos.yaml", TimeChaos::crd()),
        ("statuschecks.yaml", StatusCheck::crd()),
        ("workflows.yaml", Workflow::crd()),
        ("workflownodes.yaml", WorkflowNode::crd()),
    ]
}
