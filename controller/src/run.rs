//! `faultline-controller run`: the HTTP endpoints, leader election, and one kube-runtime
//! Controller per chaos kind sharing one Context (client, recorder, metrics, agent pool).

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;

use crate::agent::discovery::AgentService;
use crate::agent::pool::{AgentPool, PoolSettings};
use crate::agent::tls::ClientTls;
use crate::crd::{
    DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodChaos, Schedule, StatusCheck, StressChaos,
    TimeChaos, Workflow,
};
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::Metrics;
use crate::reconcile::{self, Chaos, Context, Settings};

pub struct RunConfig {
    pub tls: ClientTls,
    pub agent_service: AgentService,
    pub pool: PoolSettings,
    pub settings: Settings,
    pub http_listen: SocketAddr,
    /// None: no leader election (a single replica).
    pub lease: Option<LeaseSettings>,
    pub instance: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("the HTTP endpoint on {addr} failed: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("leadership lost ({0}): stopping so that only the leader acts")]
    LeadershipLost(String),
}

async fn controller<K: Chaos>(client: kube::Client, ctx: Arc<Context>) {
    let api: Api<K> = Api::all(client);
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile::reconcile::<K>, reconcile::error_policy::<K>, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => {
                    tracing::debug!(kind = K::KIND, object = %object.name, "reconciled")
                }
                Err(e) => tracing::debug!(kind = K::KIND, error = %e, "reconcile error"),
            }
        })
        .await;
}

/// Schedules, woken by their children's changes too (a finished child lets a Forbid run start;
/// a Workflow child's Accomplished condition as well).
async fn schedules(client: kube::Client, ctx: Arc<Context>) {
    let config = watcher::Config::default();
    Controller::new(Api::<Schedule>::all(client.clone()), config.clone())
        .owns(Api::<PodChaos>::all(client.clone()), config.clone())
        .owns(Api::<NetworkChaos>::all(client.clone()), config.clone())
        .owns(Api::<IOChaos>::all(client.clone()), config.clone())
        .owns(Api::<StressChaos>::all(client.clone()), config.clone())
        .owns(Api::<DNSChaos>::all(client.clone()), config.clone())
        .owns(Api::<HTTPChaos>::all(client.clone()), config.clone())
        .owns(Api::<TimeChaos>::all(client.clone()), config.clone())
        .owns(Api::<Workflow>::all(client), config)
        .shutdown_on_signal()
        .run(
            crate::schedule::reconcile,
            crate::schedule::error_policy,
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => {
                    tracing::debug!(kind = "Schedule", object = %object.name, "reconciled")
                }
                Err(e) => tracing::debug!(kind = "Schedule", error = %e, "reconcile error"),
            }
        })
        .await;
}

/// Workflows, woken by what their nodes watch: a StatusCheck's records, a task pod's end
/// (both labelled with the workflow's name, as Chaos Mesh labels them).
async fn workflows(client: kube::Client, ctx: Arc<Context>) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::runtime::reflector::ObjectRef;
    let labelled = watcher::Config::default().labels(crate::crd::WORKFLOW_LABEL);
    fn owner<K: kube::Resource>(obj: K) -> Option<ObjectRef<Workflow>> {
        let name = obj.labels().get(crate::crd::WORKFLOW_LABEL)?.clone();
        Some(ObjectRef::new(&name).within(obj.namespace().as_deref()?))
    }
    Controller::new(
        Api::<Workflow>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<StatusCheck>::all(client.clone()),
        labelled.clone(),
        owner,
    )
    .watches(Api::<Pod>::all(client), labelled, owner)
    .shutdown_on_signal()
    .run(
        crate::workflow::reconcile,
        crate::workflow::error_policy,
        ctx,
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(kind = "Workflow", error = %e, "reconcile error");
        }
    })
    .await;
}

async fn status_checks(client: kube::Client, ctx: Arc<Context>) {
    Controller::new(Api::<StatusCheck>::all(client), watcher::Config::default())
        .shutdown_on_signal()
        .run(
            crate::status_check::reconcile,
            crate::status_check::error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind = "StatusCheck", error = %e, "reconcile error");
            }
        })
        .await;
}

pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::new());
    let addr = config.http_listen;
    let http = tokio::spawn(crate::http::serve(addr, metrics.clone()));

    let elector = config
        .lease
        .map(|lease| LeaderElector::new(client.clone(), lease));
    if let Some(elector) = &elector {
        elector.acquire().await;
    }
    let agents = Arc::new(AgentPool::new(
        client.clone(),
        config.agent_service,
        config.tls,
        config.pool,
        Some(metrics.clone()),
    ));
    let reporter = Reporter {
        controller: "faultline-controller".into(),
        instance: config.instance,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        reporter,
        metrics,
        agents,
        config.settings,
    ));
    let controllers = futures::future::join5(
        controller::<IOChaos>(client.clone(), ctx.clone()),
        controller::<NetworkChaos>(client.clone(), ctx.clone()),
        controller::<PodChaos>(client.clone(), ctx.clone()),
        controller::<StressChaos>(client.clone(), ctx.clone()),
        schedules(client.clone(), ctx.clone()),
    );
    let new_kinds = futures::future::join3(
        controller::<TimeChaos>(client.clone(), ctx.clone()),
        controller::<DNSChaos>(client.clone(), ctx.clone()),
        controller::<HTTPChaos>(client.clone(), ctx.clone()),
    );
    let controllers = futures::future::join4(
        controllers,
        new_kinds,
        workflows(client.clone(), ctx.clone()),
        status_checks(client, ctx),
    );
    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controllers => Ok(()),
        reason = lost => Err(RunError::LeadershipLost(reason)),
        served = http => match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(RunError::Http { addr, source }),
            Err(join) => Err(RunError::Http { addr, source: std::io::Error::other(join) }),
        },
    }
}
