//! Reloading something on SIGHUP and when the files it was read from change. Changes are
//! polled (modification time and length), so they are seen wherever a secret mount, a
//! config map, an ACME client or a deploy script writes the files.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// What identifies a file's version cheaply: its modification time and length.
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

/// Calls `reload(target, reason)` on every SIGHUP and whenever one of `files` changes
/// (checked every `interval`), for as long as `target` lives elsewhere. `reload` logs its
/// own outcome; a failed reload leaves what `target` serves as it was.
///
/// Must be called inside the runtime; the SIGHUP handler is in place when this returns, so
/// a SIGHUP no longer terminates the process.
pub fn spawn<T, F>(
    target: &Arc<T>,
    files: Vec<PathBuf>,
    interval: Duration,
    reload: F,
) -> std::io::Result<()>
where
    T: Send + Sync + 'static,
    F: Fn(&T, &'static str) + Send + 'static,
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let target: Weak<T> = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut seen = stamps(&files);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let reason = tokio::select! {
                _ = ticker.tick() => {
                    let now = stamps(&files);
                    if now == seen {
                        if target.strong_count() == 0 {
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
            let Some(target) = target.upgrade() else {
                return;
            };
            reload(&target, reason);
        }
    });
    Ok(())
}
