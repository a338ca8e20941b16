//! What every reconcile shares: the Kubernetes client, the event recorder, the metrics, the door
//! to the agents, a clock and a random source (both replaceable in tests), and the settings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::agent::Agents;
use crate::metrics::Metrics;

/// Tells the time; tests use a fixed one.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// The image pod-failure puts in place of the containers' images.
    pub pause_image: String,
    /// How soon a selector that matched nothing is tried again.
    pub no_match_retry: Duration,
    /// The first retry of a failed target; doubled per failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often an experiment is looked at without a change (vanished pods, new containers).
    pub resync: Duration,
    /// The namespaces the controller may select pods in.
    pub scoping: crate::selection::Scoping,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pause_image: "registry.k8s.io/pause:3.10".into(),
            no_match_retry: Duration::from_secs(30),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            resync: Duration::from_secs(300),
            scoping: crate::selection::Scoping::default(),
        }
    }
}

impl Settings {
    /// The wait before retry number `attempts` (1-based).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub agents: Arc<dyn Agents>,
    pub clock: Arc<dyn Clock>,
    pub rng: Mutex<StdRng>,
    pub settings: Settings,
    /// kind/namespace/name -> whether a fault is in force (the active-experiments gauge).
    pub active: Mutex<HashMap<String, (&'static str, bool)>>,
    /// Held through a NetworkChaos reconcile, from reading the other experiments' records to
    /// writing its own: the merged state one sends always includes what another just put in
    /// force (the controller is the only writer: one leader).
    pub network: tokio::sync::Mutex<()>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        agents: Arc<dyn Agents>,
        settings: Settings,
    ) -> Context {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            agents,
            clock: Arc::new(SystemClock),
            rng: Mutex::new(StdRng::from_os_rng()),
            settings,
            active: Mutex::new(HashMap::new()),
            network: tokio::sync::Mutex::new(()),
        }
    }

    /// Records whether an experiment has a fault in force and updates the gauge of its kind.
    pub fn set_active(&self, kind: &'static str, key: String, active: Option<bool>) {
        let mut map = self.active.lock();
        match active {
            Some(a) => {
                map.insert(key, (kind, a));
            }
            None => {
                map.remove(&key);
            }
        }
        let count = map.values().filter(|(k, a)| *k == kind && *a).count();
        self.metrics
            .active
            .get_or_create(&crate::metrics::KindLabels { kind: kind.into() })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Settings::default();
        assert_eq!(s.backoff(1), Duration::from_secs(5));
        assert_eq!(s.backoff(2), Duration::from_secs(10));
        assert_eq!(s.backoff(4), Duration::from_secs(40));
        assert_eq!(s.backoff(10), Duration::from_secs(300));
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(300));
    }
}
