//! The one-way "recover now" signal from the control plane (or a signal handler) to the
//! binary, which then unmounts and exits.

use std::sync::Arc;

use tokio::sync::watch;

/// Cloneable; every clone sees the same request. Once requested it stays requested.
#[derive(Debug, Clone)]
pub struct RecoverySignal {
    requested: Arc<watch::Sender<bool>>,
}

impl Default for RecoverySignal {
    fn default() -> Self {
        RecoverySignal::new()
    }
}

impl RecoverySignal {
    pub fn new() -> RecoverySignal {
        RecoverySignal {
            requested: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Requests recovery; returns true for the first request.
    pub fn request(&self) -> bool {
        !self.requested.send_replace(true)
    }

    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves once recovery has been requested (at once if it already was).
    pub async fn requested(&self) {
        let mut receiver = self.requested.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = receiver.wait_for(|requested| *requested).await;
    }
}
