//! Reloads the policy set on SIGHUP and when a file changes (polled: modification time and
//! length of the schema and every policy file, which works wherever a config map or a deploy
//! script writes them). Self-contained, so that a whole-config reload can call
//! [`PolicyStore::reload`] itself later.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use super::PolicyStore;
use crate::clock::SharedClock;

type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Watches for as long as `store` lives. Must be called inside the runtime; the SIGHUP
/// handler is in place when this returns.
pub fn spawn_reloader(store: &Arc<PolicyStore>, clock: SharedClock) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let settings = store.settings();
    let mut files = settings.files.clone();
    files.push(settings.schema.clone());
    let interval = settings.poll_interval;
    let store: Weak<PolicyStore> = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut seen = stamps(&files);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let reason = tokio::select! {
                _ = ticker.tick() => {
                    let now = stamps(&files);
                    if now == seen {
                        if store.strong_count() == 0 {
                            return;
                        }
                        continue;
                    }
                    seen = now;
                    "files changed"
                }
                received = hangup.recv() => {
                    if received.is_none() {
                        return;
                    }
                    seen = stamps(&files);
                    "SIGHUP"
                }
            };
            let Some(store) = store.upgrade() else {
                return;
            };
            // The outcome is logged and counted by `reload` itself.
            let _ = store.reload(clock.now_millis(), reason);
        }
    });
    Ok(())
}
