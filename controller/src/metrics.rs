//! The controller's Prometheus metrics (OpenMetrics text at `/metrics`): reconciles, failures by
//! reason, active experiments by kind, agent call latency.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentCallLabels {
    pub method: String,
    pub outcome: String,
}

pub struct Metrics {
    pub reconciles: Family<KindLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub active: Family<KindLabels, Gauge>,
    pub agent_calls: Family<AgentCallLabels, Histogram>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("faultline_controller");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let active = Family::<KindLabels, Gauge>::default();
        let agent_calls = Family::<AgentCallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        registry.register("reconciles", "Reconciliations, by kind", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciliations, by kind and reason",
            failures.clone(),
        );
        registry.register(
            "active_experiments",
            "Experiments with a fault in force, by kind",
            active.clone(),
        );
        registry.register(
            "agent_call_duration_seconds",
            "Calls to node agents, by method and outcome",
            agent_calls.clone(),
        );
        Metrics {
            reconciles,
            failures,
            active,
            agent_calls,
            registry,
        }
    }

    pub fn reconciled(&self, kind: &str) {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn failed(&self, kind: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn agent_call(&self, method: &str, outcome: &str, took: Duration) {
        self.agent_calls
            .get_or_create(&AgentCallLabels {
                method: method.into(),
                outcome: outcome.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
