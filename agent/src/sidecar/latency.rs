//! The delay in force and how a request changes it: the kernel's netem first, the NFQUEUE
//! path where the kernel has no netem (decided on the first refusal and remembered), a new
//! delay replacing the old one on the same path, 0 removing it.

use serde::Serialize;
use tokio::sync::Mutex;

use super::backend::{DelayBackend, KernelRefusal};
use super::delay::format_delay;
use agent::network::{NetemPath, NetworkError};

/// Which path carries the delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PathUsed {
    #[serde(rename = "kernel netem")]
    Kernel,
    #[serde(rename = "userspace NFQUEUE")]
    Userspace,
}

/// What a request did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `set`, `replaced`, `removed` or `nothing to remove`.
    pub action: &'static str,
    pub device: String,
    /// The delay now in force (`0`: none).
    pub delay: String,
    pub delay_us: u32,
    pub path: Option<PathUsed>,
    /// The delay this one replaced or removed.
    pub previous: Option<String>,
    /// Why the userspace path, when it is used.
    pub note: Option<String>,
}

/// `GET /status`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub device: String,
    pub delay: String,
    pub delay_us: u32,
    pub path: Option<PathUsed>,
    /// The path setting (`--netem-path`).
    pub netem_path: NetemPath,
    /// Set once the kernel refused netem.
    pub kernel_refused_netem: Option<String>,
    /// Packets seen by the userspace path while it runs.
    pub userspace: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    active: Option<(u32, PathUsed)>,
    kernel_refused: Option<String>,
}

/// The delay of one device of our namespace.
pub struct Latency<B> {
    device: String,
    netem_path: NetemPath,
    backend: B,
    state: Mutex<State>,
}

impl<B: DelayBackend> Latency<B> {
    pub fn new(device: impl Into<String>, netem_path: NetemPath, backend: B) -> Self {
        Self {
            device: device.into(),
            netem_path,
            backend,
            state: Mutex::default(),
        }
    }

    fn report(
        &self,
        action: &'static str,
        active: Option<(u32, PathUsed)>,
        previous: Option<u32>,
        note: Option<String>,
    ) -> Report {
        let delay_us = active.map_or(0, |(d, _)| d);
        Report {
            action,
            device: self.device.clone(),
            delay: format_delay(delay_us),
            delay_us,
            path: active.map(|(_, p)| p),
            previous: previous.map(format_delay),
            note,
        }
    }

    /// Sets (or replaces) the delay; 0 removes it.
    pub async fn set(&self, delay_us: u32) -> Result<Report, NetworkError> {
        let mut state = self.state.lock().await;
        if delay_us == 0 {
            return self.remove(&mut state).await;
        }
        let previous = state.active.map(|(d, _)| d);
        let action = if previous.is_some() {
            "replaced"
        } else {
            "set"
        };
        let kernel = match self.netem_path {
            NetemPath::Kernel => true,
            NetemPath::Userspace => false,
            NetemPath::Auto => state.kernel_refused.is_none(),
        };
        if kernel {
            match self.backend.kernel_set(&self.device, delay_us).await {
                Ok(()) => {
                    state.active = Some((delay_us, PathUsed::Kernel));
                    return Ok(self.report(action, state.active, previous, None));
                }
                Err(KernelRefusal::NoNetem(reason)) if self.netem_path == NetemPath::Auto => {
                    tracing::warn!(%reason, "the kernel refused netem; using the userspace NFQUEUE path");
                    state.kernel_refused = Some(reason);
                }
                Err(KernelRefusal::NoNetem(reason)) => {
                    state.active = None;
                    return Err(NetworkError::NetemUnavailable { reason });
                }
                Err(KernelRefusal::Failed(e)) => {
                    // A failed build puts the device's baseline back: no delay is left.
                    state.active = None;
                    return Err(e);
                }
            }
        } else if state.active.is_some_and(|(_, p)| p == PathUsed::Kernel) {
            self.backend.kernel_clear(&self.device).await?;
            state.active = None;
        }
        self.backend.userspace_set(&self.device, delay_us).await?;
        state.active = Some((delay_us, PathUsed::Userspace));
        let note = match (&state.kernel_refused, self.netem_path) {
            (Some(reason), _) => format!("kernel refused netem: {reason}"),
            (None, _) => "userspace path forced (--netem-path userspace)".into(),
        };
        Ok(self.report(action, state.active, previous, Some(note)))
    }

    /// Removes the delay, if any.
    pub async fn clear(&self) -> Result<Report, NetworkError> {
        let mut state = self.state.lock().await;
        self.remove(&mut state).await
    }

    async fn remove(&self, state: &mut State) -> Result<Report, NetworkError> {
        let Some((previous, path)) = state.active else {
            return Ok(self.report("nothing to remove", None, None, None));
        };
        match path {
            PathUsed::Kernel => self.backend.kernel_clear(&self.device).await?,
            PathUsed::Userspace => self.backend.userspace_clear().await?,
        }
        state.active = None;
        Ok(self.report("removed", None, Some(previous), None))
    }

    pub async fn status(&self) -> Status {
        let state = self.state.lock().await;
        let delay_us = state.active.map_or(0, |(d, _)| d);
        Status {
            device: self.device.clone(),
            delay: format_delay(delay_us),
            delay_us,
            path: state.active.map(|(_, p)| p),
            netem_path: self.netem_path,
            kernel_refused_netem: state.kernel_refused.clone(),
            userspace: self.backend.userspace_stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// Records calls; the kernel has netem or not.
    #[derive(Default)]
    struct Fake {
        no_netem: bool,
        calls: StdMutex<Vec<String>>,
    }

    impl Fake {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    #[tonic::async_trait]
    impl DelayBackend for Fake {
        async fn kernel_set(&self, device: &str, delay_us: u32) -> Result<(), KernelRefusal> {
            self.record(format!("kernel_set {device} {delay_us}"));
            if self.no_netem {
                Err(KernelRefusal::NoNetem("unknown qdisc".into()))
            } else {
                Ok(())
            }
        }
        async fn kernel_clear(&self, device: &str) -> Result<(), NetworkError> {
            self.record(format!("kernel_clear {device}"));
            Ok(())
        }
        async fn userspace_set(&self, device: &str, delay_us: u32) -> Result<(), NetworkError> {
            self.record(format!("userspace_set {device} {delay_us}"));
            Ok(())
        }
        async fn userspace_clear(&self) -> Result<(), NetworkError> {
            self.record("userspace_clear".into());
            Ok(())
        }
        fn userspace_stats(&self) -> Option<String> {
            None
        }
    }

    #[tokio::test]
    async fn kernel_netem_when_there_replaced_then_removed() {
        let latency = Latency::new("eth0", NetemPath::Auto, Fake::default());
        let set = latency.set(20_000).await.unwrap();
        assert_eq!(
            (set.action, set.delay.as_str(), set.path),
            ("set", "20ms", Some(PathUsed::Kernel))
        );
        let again = latency.set(30_000).await.unwrap();
        assert_eq!(again.action, "replaced");
        assert_eq!(again.previous.as_deref(), Some("20ms"));
        let removed = latency.set(0).await.unwrap();
        assert_eq!(
            (removed.action, removed.delay.as_str(), removed.path),
            ("removed", "0", None)
        );
        assert_eq!(removed.previous.as_deref(), Some("30ms"));
        assert_eq!(latency.clear().await.unwrap().action, "nothing to remove");
        assert_eq!(
            latency.backend.calls(),
            [
                "kernel_set eth0 20000",
                "kernel_set eth0 30000",
                "kernel_clear eth0"
            ]
        );
    }

    #[tokio::test]
    async fn without_netem_the_userspace_path_takes_over_and_the_kernel_is_not_asked_again() {
        let fake = Fake {
            no_netem: true,
            ..Default::default()
        };
        let latency = Latency::new("eth0", NetemPath::Auto, fake);
        let set = latency.set(20_000).await.unwrap();
        assert_eq!(set.path, Some(PathUsed::Userspace));
        assert_eq!(
            set.note.as_deref(),
            Some("kernel refused netem: unknown qdisc")
        );
        let again = latency.set(25_000).await.unwrap();
        assert_eq!(
            (again.action, again.path),
            ("replaced", Some(PathUsed::Userspace))
        );
        latency.clear().await.unwrap();
        assert_eq!(
            latency.backend.calls(),
            [
                "kernel_set eth0 20000",
                "userspace_set eth0 20000",
                "userspace_set eth0 25000",
                "userspace_clear"
            ]
        );
        let status = latency.status().await;
        assert_eq!(status.delay_us, 0);
        assert_eq!(
            status.kernel_refused_netem.as_deref(),
            Some("unknown qdisc")
        );
    }

    #[tokio::test]
    async fn a_forced_kernel_path_without_netem_is_an_error_naming_the_reason() {
        let fake = Fake {
            no_netem: true,
            ..Default::default()
        };
        let latency = Latency::new("eth0", NetemPath::Kernel, fake);
        let err = latency.set(20_000).await.unwrap_err().to_string();
        assert!(err.contains("unknown qdisc"), "{err}");
        assert_eq!(latency.status().await.path, None);
        let forced = Latency::new("eth0", NetemPath::Userspace, Fake::default());
        let set = forced.set(5_000).await.unwrap();
        assert_eq!(set.path, Some(PathUsed::Userspace));
        assert!(
            forced
                .backend
                .calls()
                .iter()
                .all(|c| !c.starts_with("kernel"))
        );
    }
}
