//! Whether this process is shutting down. SIGTERM starts the drain (startup's signal
//! watch); readiness, the edge middleware and open WebSockets read it: readiness answers
//! 503 from then on, answers close their connection after they are sent, and sockets are
//! closed with 1001.

use std::sync::Arc;

use tokio::sync::watch;

/// The process's drain flag; clones share it.
#[derive(Clone)]
pub struct Drain(Arc<watch::Sender<bool>>);

impl Default for Drain {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on the process is draining; there is no way back.
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the drain has started (at once if it has).
    pub async fn started(&self) {
        let mut draining = self.0.subscribe();
        // The sender lives as long as `self`, so this only ends when the flag is set.
        let _ = draining.wait_for(|draining| *draining).await;
    }
}
