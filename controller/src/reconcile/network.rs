//! Several NetworkChaos on one pod, as Chaos Mesh's PodNetworkChaos merges them: the agent keeps
//! one network state per pod, so the controller sends it the merge of every experiment in force
//! on that pod. Injecting adds this experiment's rules to the others'; recovering sends the
//! others' alone, so each experiment is recovered without touching the rest.

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;

use super::conditions::in_force;
use crate::crd::{NetworkChaos, TargetRecord};
use crate::error::Result;
use crate::plan::{Action, NetworkPlan, Peers, Plannable, PodNetworkState};

/// What the other experiments keep on a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodShare {
    pub state: PodNetworkState,
    /// Some contributor has no deadline.
    pub unbounded: bool,
    /// The latest deadline among the contributors.
    pub latest: Option<Timestamp>,
}

impl PodShare {
    /// The agent's own duration for a merged state: until the last contributor's deadline
    /// (0 = until recovered), so the agent never drops a rule still due.
    pub fn duration_ms(&self, now: Timestamp, own_deadline: Option<Timestamp>, own: bool) -> u64 {
        if self.unbounded || (own && own_deadline.is_none()) {
            return 0;
        }
        let latest = match (self.latest, own_deadline.filter(|_| own)) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return 0,
            },
        };
        u64::try_from(latest.as_millisecond() - now.as_millisecond())
            .unwrap_or(0)
            .max(1)
    }

    fn add(&mut self, state: PodNetworkState, deadline: Option<&str>) {
        if state.is_empty() {
            return;
        }
        self.state.merge(state);
        match deadline.and_then(|d| d.parse::<Timestamp>().ok()) {
            Some(d) => self.latest = Some(self.latest.map_or(d, |l| l.max(d))),
            None => self.unbounded = true,
        }
    }
}

fn same_pod(a: &TargetRecord, b: &TargetRecord) -> bool {
    a.namespace == b.namespace
        && a.pod == b.pod
        && (a.pod_uid.is_none() || b.pod_uid.is_none() || a.pod_uid == b.pod_uid)
}

/// The rules every other NetworkChaos keeps in force on `rec`'s pod (`me`: this one's uid).
pub async fn others_on_pod(
    client: &kube::Client,
    me: Option<&str>,
    rec: &TargetRecord,
) -> Result<PodShare> {
    let mut share = PodShare::default();
    let api: Api<NetworkChaos> = Api::all(client.clone());
    for other in api.list(&ListParams::default()).await?.items {
        if me.is_some() && other.metadata.uid.as_deref() == me {
            continue;
        }
        let Some(status) = other.status.as_ref() else {
            continue;
        };
        // A spec that no longer validates cannot say what it holds; its own recovery clears it.
        let Ok(plan) = other.plan() else { continue };
        let Action::Network(network) = plan.action else {
            continue;
        };
        let peers = status.experiment.network_peers();
        for theirs in &status.experiment.container_records {
            if in_force(theirs) && same_pod(theirs, rec) {
                share.add(
                    network.state(&theirs.selector_key, &peers),
                    status.experiment.deadline.as_deref(),
                );
            }
        }
    }
    Ok(share)
}

/// Adds this experiment's other records on the same pod (a pod both selected and a target).
pub fn add_own(
    share: &mut PodShare,
    network: &NetworkPlan,
    peers: &Peers,
    records: &[TargetRecord],
    skip: usize,
    deadline: Option<&str>,
) {
    let rec = &records[skip];
    for (i, other) in records.iter().enumerate() {
        if i != skip && in_force(other) && same_pod(other, rec) {
            share.add(network.state(&other.selector_key, peers), deadline);
        }
    }
}
