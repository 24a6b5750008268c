//! The audit file (`log.audit_file`): the security events, and nothing else, as JSON lines
//! in a file of their own, for a SIEM or an auditor. Opened append-only, created mode 0600,
//! reopened on SIGHUP so that logrotate can move it away.
//!
//! A tracing layer: the events come from `telemetry::SecurityLog` (target
//! `gatehouse::security`); each line also carries the spans it happened in (the request
//! span's request id, trace id and client IP).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::observability::events::SECURITY_TARGET;
use crate::observability::spans::EXPORT_TARGET;

/// The open audit file; clones share one handle, which `reopen` swaps.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    // O_APPEND: every line lands at the end even if another writer (or a copytruncate)
    // moved the end. The mode applies only when the file is created.
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(open(path)?)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again (a new file, when logrotate moved the old one away) and writes
    /// to it from now on. On failure the previous file stays in use.
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = open(&self.path)?;
        *self.lock() = file;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        self.file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reopens the file on every SIGHUP, for as long as the process runs. Must be called
    /// inside the runtime; the handler is in place when this returns.
    pub fn reopen_on_sighup(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        let audit = self.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match audit.reopen() {
                    Ok(()) => tracing::info!(file = %audit.path.display(), "audit file reopened"),
                    Err(error) => tracing::error!(
                        file = %audit.path.display(),
                        %error,
                        "audit file not reopened; still writing to the previous one"
                    ),
                }
            }
        });
        Ok(())
    }

    /// The layer that writes the security events to this file, one JSON object per line.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(self.clone())
            .with_filter(audit_filter())
    }
}

/// Security events only; and gatehouse's own spans (at info and above), so that a line
/// carries the request it belongs to.
fn audit_filter<S>() -> impl Filter<S> + Send + Sync + 'static {
    filter_fn(|metadata: &Metadata<'_>| {
        if metadata.is_span() {
            *metadata.level() <= Level::INFO
                && metadata.target().starts_with("gatehouse")
                && metadata.target() != EXPORT_TARGET
        } else {
            metadata.target() == SECURITY_TARGET
        }
    })
}

/// One formatted line at a time: the file stays locked while tracing writes it (one
/// `write_all` of the whole line), so lines of concurrent requests never interleave.
pub struct AuditLine<'a>(MutexGuard<'a, File>);

impl Write for AuditLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for AuditLog {
    type Writer = AuditLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        AuditLine(self.lock())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::observability::telemetry::{SecurityEvent, SecurityLog};
    use tracing_subscriber::layer::SubscriberExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("test-artifacts")
            .join(format!(
                "unit-audit-{}-{:016x}",
                std::process::id(),
                rand::Rng::gen::<u64>(&mut rand::thread_rng())
            ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join(name)
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("audit file")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect()
    }

    #[test]
    fn only_security_events_reach_the_file_as_json_lines_with_their_request() {
        let path = scratch("audit.log");
        let audit = AuditLog::open(&path).expect("open");
        let subscriber = tracing_subscriber::registry().with(audit.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("an ordinary line");
            tracing::warn!(target: "gatehouse::security::not", "not the security target");
            let span = tracing::info_span!(
                target: "gatehouse::observability::telemetry",
                "request",
                request_id = "req-1",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                client_ip = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("client_ip", "192.0.2.7");
            tracing::error!("an error inside the request");
            SecurityLog::default().log(
                SecurityEvent::CsrfRejected,
                None,
                None,
                Some("/api/\"quoted\"\nsecond line"),
            );
            SecurityLog::default().log(
                SecurityEvent::LogoutCompleted,
                Some("alice"),
                Some("0123456789abcdefghij"),
                None,
            );
        });
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
        let lines = lines(&path);
        assert_eq!(lines[0]["event"], "csrf.rejected");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["reason"], "/api/\"quoted\"\nsecond line");
        assert_eq!(lines[0]["target"], SECURITY_TARGET);
        assert_eq!(lines[0]["spans"][0]["request_id"], "req-1");
        assert_eq!(lines[0]["spans"][0]["client_ip"], "192.0.2.7");
        assert_eq!(
            lines[0]["spans"][0]["trace_id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(lines[0]["timestamp"].is_string());
        assert_eq!(lines[1]["event"], "logout.completed");
        assert_eq!(lines[1]["level"], "INFO");
        assert_eq!(lines[1]["sub"], "alice");
        assert_eq!(
            lines[1]["session"], "0123456789ab",
            "a prefix of the key only"
        );

        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }

    #[test]
    fn reopen_writes_to_a_new_file_after_a_rotation_and_appends_to_an_existing_one() {
        let path = scratch("audit.log");
        std::fs::write(&path, "{\"earlier\":true}\n").expect("existing file");
        let audit = AuditLog::open(&path).expect("open");
        let subscriber = tracing_subscriber::registry().with(audit.layer());
        tracing::subscriber::with_default(subscriber, || {
            SecurityLog::default().log(SecurityEvent::LoginStarted, None, None, None);
            let rotated = path.with_extension("log.1");
            std::fs::rename(&path, &rotated).expect("rotate");
            SecurityLog::default().log(
                SecurityEvent::LoginFailed,
                None,
                None,
                Some("access_denied"),
            );
            audit.reopen().expect("reopen");
            SecurityLog::default().log(SecurityEvent::RateLimited, None, None, Some("login"));
            let old = lines(&rotated);
            assert_eq!(old.len(), 3);
            assert_eq!(old[0]["earlier"], true, "appended, not truncated");
            assert_eq!(old[1]["event"], "login.started");
            assert_eq!(old[2]["event"], "login.failed");
        });
        let new = lines(&path);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0]["event"], "rate_limit.hit");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
}
