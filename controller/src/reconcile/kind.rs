//! What the reconciler needs of each chaos kind: its name, its status, its plan, and how its
//! targets are recovered (known from the kind alone, so a resource whose spec no longer
//! validates is still recovered).

use std::fmt::Debug;

use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{
    ChaosStatus, DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodAction, PodChaos, StressChaos,
    TimeChaos,
};
use crate::plan::Plannable;

/// How a kind's injected targets are put back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The agent's experiment by id; without one, ApplyIOChaos with no actions on the volume.
    Io { volume: String },
    /// The agent's experiment by id; without one, an empty network state for the pod.
    Network,
    /// The agent's stressors by id; without any, those the agent lists for the container.
    Stress,
    /// The agent's DNS experiment by id; without one, those the agent lists for the container.
    Dns,
    /// The agent's HTTP experiment by id; without one, those the agent lists for the container.
    Http,
    /// The agent's time experiment by id; without one, those the agent lists for the container.
    Time,
    /// The original images, kept in the pod's annotations, put back.
    PodFailure,
    /// One-shot actions (pod-kill, container-kill) leave nothing to recover.
    Nothing,
}

pub trait Chaos:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Plannable
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    fn status(&self) -> Option<&ChaosStatus>;
    fn recovery(&self) -> Recovery;
}

impl Chaos for IOChaos {
    const KIND: &'static str = "IOChaos";
    fn status(&self) -> Option<&ChaosStatus> {
        self.status.as_ref()
    }
    fn recovery(&self) -> Recovery {
        Recovery::Io {
            volume: self.spec.volume_path.trim().to_owned(),
        }
    }
}

impl Chaos for NetworkChaos {
    const KIND: &'static str = "NetworkChaos";
    fn status(&self) -> Option<&ChaosStatus> {
        self.status.as_ref()
    }
    fn recovery(&self) -> Recovery {
        Recovery::Network
    }
}

impl Chaos for StressChaos {
    const KIND: &'static str = "StressChaos";
    fn status(&self) -> Option<&ChaosStatus> {
        self.status.as_ref()
    }
    fn recovery(&self) -> Recovery {
        Recovery::Stress
    }
}

impl Chaos for DNSChaos {
    const KIND: &'static str = "DNSChaos";
    fn status(&self) -> Option<&ChaosStatus> {
        self.status.as_ref()
    }
    fn recovery(&self) -> Recovery {
        Recovery::Dns
    }
}

impl Chaos for HTTPChaos {
    const KIND: &'static str = "HTTPChaos";
    fn status(&self) -> Option<&ChaosStatus> {
        self.status.as_ref()
    }
    fn recovery(&self) -> Recovery {
        Recovery::Http
    }
}

impl Chaos for TimeChaos {
    const KIND: &'static str = "TimeChaos";
    fn status(&self) -> Option<&ChaosStatus> {
        self.status.as_ref()
    }
    fn recovery(&self) -> Recovery {
        Recovery::Time
    }
}

impl Chaos for PodChaos {
    const KIND: &'static str = "PodChaos";
    fn status(&self) -> Option<&ChaosStatus> {
        self.status.as_ref()
    }
    fn recovery(&self) -> Recovery {
        match self.spec.action {
            PodAction::PodFailure => Recovery::PodFailure,
            PodAction::PodKill | PodAction::ContainerKill => Recovery::Nothing,
        }
    }
}
