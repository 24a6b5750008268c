//! Logging: the subscriber, the per-request span and request id, and the security events
//! (their catalogue is `events`). Nothing here ever records a token, a cookie or a code.

use std::str::FromStr;

use actix_web::http::header::{HeaderName, HeaderValue};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{Directive, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};
use crate::observability::audit::AuditLog;
pub use crate::observability::events::{
    SecurityEvent, OPERATOR, PROVIDER, REASON, SECURITY_TARGET, SESSION, SUB,
};
use crate::observability::metrics::Metrics;
use crate::observability::spans::EXPORT_TARGET;
use crate::observability::trace_export::{TraceExport, TraceExportError};
use crate::session::crypto::b64;

/// What [`init`] started: the audit file (reopened on SIGHUP) and the trace export (flushed
/// at shutdown, its dropped spans counted in the metrics).
#[derive(Debug, Default)]
pub struct Telemetry {
    pub audit: Option<AuditLog>,
    pub trace_export: Option<TraceExport>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot open log.audit_file: {0}")]
    Audit(#[source] std::io::Error),
    #[error(transparent)]
    TraceExport(#[from] TraceExportError),
}

/// Installs the global subscriber once; later calls (tests) are no-ops. `GATEHOUSE_LOG`
/// overrides the configured filter, which applies to stderr only: the audit file, when
/// configured, gets every security event whatever the filter, and the trace export every
/// span of gatehouse's at info and above. The client spans (target
/// [`EXPORT_TARGET`](crate::observability::spans::EXPORT_TARGET)) go to the trace export
/// only.
pub fn init(
    settings: &LogSettings,
    telemetry: &TelemetrySettings,
) -> Result<Telemetry, TelemetryError> {
    let filter = std::env::var("GATEHOUSE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&settings.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
        .add_directive(export_spans_off());
    let audit = settings
        .audit_file
        .as_deref()
        .map(AuditLog::open)
        .transpose()
        .map_err(TelemetryError::Audit)?;
    let export = telemetry
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| TraceExport::start(telemetry, endpoint))
        .transpose()?;
    let (trace_export, tracer) = match export {
        Some((export, tracer)) => (Some(export), Some(tracer)),
        None => (None, None),
    };
    let _ = if audit.is_none() && tracer.is_none() {
        // The filter can be global. A per-layer filter looks up the span's filter state on
        // every enter and exit of the request span (each poll of a request's future); a
        // global one decides once, when the span is made.
        tracing_subscriber::registry()
            .with(filter)
            .with(stderr_layer(settings.format, std::io::stderr))
            .try_init()
    } else {
        let exported = tracer.map(|tracer| {
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false)
                .with_filter(Targets::new().with_target("gatehouse", Level::INFO))
        });
        tracing_subscriber::registry()
            .with(stderr_layer(settings.format, std::io::stderr).with_filter(filter))
            .with(audit.as_ref().map(|audit| audit.layer()))
            .with(exported)
            .try_init()
    };
    Ok(Telemetry {
        audit,
        trace_export,
    })
}

/// The client spans are for the trace export; the log never shows them.
fn export_spans_off() -> Directive {
    Directive::from_str(&format!("{EXPORT_TARGET}=off")).expect("a valid directive")
}

/// The log on `writer` in the configured format: one line per event (JSON: one object per
/// line, with the current span's fields, i.e. the request's).
pub fn stderr_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Json => layer
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => layer.with_ansi(false).boxed(),
    }
}

/// The id of one request, from a well-formed `X-Request-Id` or freshly made.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE_HEADER: HeaderName = HeaderName::from_static("tracestate");

pub(crate) fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    (!text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    .then(|| text.to_owned())
}

/// Request ids need to be unique, not secret: the thread-local generator spares a system
/// call per request.
pub(crate) fn new_request_id() -> String {
    let bytes: [u8; 12] = rand::Rng::gen(&mut rand::thread_rng());
    b64(&bytes)
}

/// Where security events go: always the log (and so the audit file), and the count in
/// `gatehouse_security_events_total` when the metrics are read, i.e. with an admin listener.
/// Startup hands one to each part that logs events (the state, the flows, the refresher…):
/// what is counted is passed, not looked up. A cheap clone; without metrics, a log call
/// costs no more than the log line.
#[derive(Clone, Default)]
pub struct SecurityLog {
    counted_in: Option<Metrics>,
}

impl std::fmt::Debug for SecurityLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityLog")
            .field("counted", &self.counted_in.is_some())
            .finish()
    }
}

impl SecurityLog {
    /// Events logged, and counted in `metrics` when there are any to read.
    pub fn new(metrics: Option<Metrics>) -> Self {
        Self {
            counted_in: metrics,
        }
    }

    /// Logs a security event inside the current request span (which carries request id,
    /// trace id and client IP), at the event's level, with target `gatehouse::security`, and
    /// counts it. `session` is a store key (a hash), never a cookie value; only its first 12
    /// characters are logged.
    pub fn log(
        &self,
        event: SecurityEvent,
        sub: Option<&str>,
        session: Option<&str>,
        reason: Option<&str>,
    ) {
        self.log_for_provider(event, None, sub, session, reason);
    }

    /// [`SecurityLog::log`] for an event about one provider (its name under `[providers]`).
    pub fn log_for_provider(
        &self,
        event: SecurityEvent,
        provider: Option<&str>,
        sub: Option<&str>,
        session: Option<&str>,
        reason: Option<&str>,
    ) {
        self.record(event, None, provider, sub, session, reason);
    }

    /// [`SecurityLog::log_for_provider`] for an operator's call to the admin API: `operator`
    /// is the name its token has in `admin.api_token_file`.
    pub fn log_by_operator(
        &self,
        event: SecurityEvent,
        operator: &str,
        provider: Option<&str>,
        sub: Option<&str>,
        session: Option<&str>,
        reason: Option<&str>,
    ) {
        self.record(event, Some(operator), provider, sub, session, reason);
    }

    /// Counts the event and writes it.
    fn record(
        &self,
        event: SecurityEvent,
        operator: Option<&str>,
        provider: Option<&str>,
        sub: Option<&str>,
        session: Option<&str>,
        reason: Option<&str>,
    ) {
        if let Some(metrics) = &self.counted_in {
            metrics.security_event(event);
        }
        write_security_event(event, operator, provider, sub, session, reason);
    }
}

fn write_security_event(
    event: SecurityEvent,
    operator: Option<&str>,
    provider: Option<&str>,
    sub: Option<&str>,
    session: Option<&str>,
    reason: Option<&str>,
) {
    debug_assert!(
        [
            (SUB, sub),
            (SESSION, session),
            (REASON, reason),
            (PROVIDER, provider),
            (OPERATOR, operator)
        ]
        .iter()
        .all(|(field, value)| value.is_none() || event.fields().contains(field)),
        "security event {} carries a field docs/events.md does not list",
        event.name()
    );
    let sub = sub.unwrap_or("");
    let session = session.map(|s| &s[..s.len().min(12)]).unwrap_or("");
    let reason = reason.unwrap_or("");
    let provider = provider.unwrap_or("");
    let operator = operator.unwrap_or("");
    // One call site per level: a tracing level is fixed at the call site.
    if event.level() == Level::WARN {
        tracing::warn!(
            target: "gatehouse::security",
            event = event.name(),
            sub,
            session,
            reason,
            provider,
            operator,
            "security event"
        );
    } else {
        tracing::info!(
            target: "gatehouse::security",
            event = event.name(),
            sub,
            session,
            reason,
            provider,
            operator,
            "security event"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    #[test]
    fn with_json_format_an_event_is_one_json_line_with_its_request() {
        let capture = Capture::default();
        let subscriber =
            tracing_subscriber::registry().with(stderr_layer(LogFormat::Json, capture.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "req-7",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                client_ip = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("client_ip", "192.0.2.1");
            SecurityLog::default().log(
                SecurityEvent::CsrfRejected,
                None,
                None,
                Some("/api/\"x\"\n{\"forged\":true}"),
            );
        });
        let text = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        assert!(text.ends_with('\n'));
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect("JSON");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], SECURITY_TARGET);
        assert_eq!(line["fields"]["event"], "csrf.rejected");
        assert_eq!(line["fields"]["reason"], "/api/\"x\"\n{\"forged\":true}");
        assert_eq!(line["fields"]["sub"], "");
        assert_eq!(line["span"]["request_id"], "req-7");
        assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["span"]["client_ip"], "192.0.2.1");
    }

    #[test]
    fn every_event_logs_at_its_level_with_its_name() {
        let capture = Capture::default();
        let subscriber =
            tracing_subscriber::registry().with(stderr_layer(LogFormat::Json, capture.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for event in SecurityEvent::ALL {
                SecurityLog::default().log(*event, None, None, None);
            }
        });
        let text = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(lines.len(), SecurityEvent::ALL.len());
        for (event, line) in SecurityEvent::ALL.iter().zip(&lines) {
            assert_eq!(line["fields"]["event"], event.name());
            assert_eq!(line["level"], event.level().as_str());
        }
    }
}
