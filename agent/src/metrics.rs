//! Prometheus metrics of the agent (served on `/metrics`): active experiments, injections,
//! recoveries and failures by kind and reason, and gRPC latency by method.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    active: Family<KindLabel, Gauge>,
    injections: Family<KindLabel, Counter>,
    recoveries: Family<KindLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    rpc_seconds: Family<RpcLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("faultline_agent");
        let active = Family::<KindLabel, Gauge>::default();
        let injections = Family::<KindLabel, Counter>::default();
        let recoveries = Family::<KindLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let rpc_seconds = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.5, 14))
        });
        registry.register(
            "active_experiments",
            "Experiments in force, by kind",
            active.clone(),
        );
        registry.register("injections", "Faults injected, by kind", injections.clone());
        registry.register(
            "recoveries",
            "Faults recovered, by kind",
            recoveries.clone(),
        );
        registry.register(
            "failures",
            "Failed operations, by kind and reason",
            failures.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC handling time, by method and status code",
            rpc_seconds.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            active,
            injections,
            recoveries,
            failures,
            rpc_seconds,
        }
    }

    pub fn injected(&self, kind: &str) {
        let label = KindLabel { kind: kind.into() };
        self.injections.get_or_create(&label).inc();
        self.active.get_or_create(&label).inc();
    }

    /// An experiment a previous run left in force, taken over: active again, not a new
    /// injection.
    pub fn adopted(&self, kind: &str) {
        let label = KindLabel { kind: kind.into() };
        self.active.get_or_create(&label).inc();
    }

    pub fn recovered(&self, kind: &str) {
        let label = KindLabel { kind: kind.into() };
        self.recoveries.get_or_create(&label).inc();
        let active = self.active.get_or_create(&label);
        if active.get() > 0 {
            active.dec();
        }
    }

    pub fn failure(&self, kind: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn rpc(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.rpc_seconds
            .get_or_create(&RpcLabels {
                method: method.into(),
                code: format!("{code:?}"),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_exposition() {
        let m = Metrics::new();
        m.injected("io");
        m.injected("io");
        m.recovered("io");
        m.failure("io", "volume");
        m.rpc("ApplyIOChaos", tonic::Code::Ok, Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains("faultline_agent_active_experiments{kind=\"io\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("faultline_agent_injections_total{kind=\"io\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("faultline_agent_failures_total{kind=\"io\",reason=\"volume\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "faultline_agent_rpc_duration_seconds_count{method=\"ApplyIOChaos\",code=\"Ok\"} 1"
            ),
            "{text}"
        );
    }
}
