//! Leader election with a coordination.k8s.io Lease, so two replicas never both act: a replica
//! acts only while it holds the Lease, renews it well before it expires, and stops (the process
//! exits and is restarted) as soon as a renewal fails or someone else holds it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    /// How often the holder renews (well under the lease duration).
    pub renew_every: Duration,
}

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's, expired: take it over.
    TakeOver,
    /// Someone else's and live: try again after this long.
    Wait(Duration),
}

pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            Decision::TakeOver
        } else {
            Decision::Create
        };
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
            );
            let renewed = spec
                .renew_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let expires_ms = renewed.as_millisecond()
                + i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4);
            let left = expires_ms - now.as_millisecond();
            if left <= 0 {
                Decision::TakeOver
            } else {
                Decision::Wait(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
            }
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    fn spec(&self, now: Timestamp, previous: Option<&LeaseSpec>, acquire: bool) -> LeaseSpec {
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: if acquire {
                Some(MicroTime(now))
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if acquire && previous.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// One step: Ok(true) when we hold the Lease afterwards, Ok(false) with the wait otherwise.
    pub async fn try_hold(&self) -> Result<Result<(), Duration>, kube::Error> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.settings.name).await?;
        match decide(lease.as_ref(), &self.settings.identity, now) {
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, true)),
                };
                self.api.create(&PostParams::default(), &lease).await?;
                Ok(Ok(()))
            }
            Decision::Wait(wait) => Ok(Err(wait)),
            decision @ (Decision::Renew | Decision::TakeOver) => {
                let Some(mut lease) = lease else {
                    return Ok(Err(self.settings.renew_every));
                };
                let acquire = decision == Decision::TakeOver;
                lease.spec = Some(self.spec(now, lease.spec.as_ref(), acquire));
                // resourceVersion is kept: a concurrent writer makes this a conflict, not a tie.
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await?;
                Ok(Ok(()))
            }
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(Ok(())) => {
                    tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, "leading");
                    return;
                }
                Ok(Err(wait)) => tokio::time::sleep(wait.min(self.settings.renew_every)).await,
                Err(e) => {
                    tracing::debug!(error = %e, "lease not acquired");
                    tokio::time::sleep(self.settings.renew_every).await;
                }
            }
        }
    }

    /// Renews until leadership is lost; returns why.
    pub async fn hold(&self) -> String {
        loop {
            tokio::time::sleep(self.settings.renew_every).await;
            match self.try_hold().await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return "another replica holds the lease".into(),
                Err(e) => return format!("cannot renew the lease: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed.parse().expect("time"))),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now: Timestamp = "2026-11-24T12:00:10Z".parse().expect("time");
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease("a", "2026-11-24T12:00:00Z", 15)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease("b", "2026-11-24T12:00:00Z", 15)), "a", now),
            Decision::Wait(Duration::from_secs(5))
        );
        assert_eq!(
            decide(Some(&lease("b", "2026-11-24T11:59:00Z", 15)), "a", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease("", "2026-11-24T12:00:00Z", 15)), "a", now),
            Decision::TakeOver
        );
    }
}
