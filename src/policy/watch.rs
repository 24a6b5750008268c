//! Reloads the policy set on SIGHUP and when a file changes (polled: modification time and
//! length of the schema and every policy file, which works wherever a config map or a deploy
//! script writes them). Self-contained, so that a whole-config reload can call
//! [`PolicyStore::reload`] itself later.

use std::sync::Arc;

use super::PolicyStore;
use crate::clock::SharedClock;

/// Watches for as long as `store` lives. Must be called inside the runtime; the SIGHUP
/// handler is in place when this returns.
pub fn spawn_reloader(store: &Arc<PolicyStore>, clock: SharedClock) -> std::io::Result<()> {
    let settings = store.settings();
    let mut files = settings.files.clone();
    files.push(settings.schema.clone());
    let interval = settings.poll_interval;
    crate::file_watch::spawn(store, files, interval, move |store, reason| {
        // The outcome is logged and counted by `reload` itself.
        let _ = store.reload(clock.now_millis(), reason);
    })
}
