//! Logging: the subscriber, the per-request span and request id, and the catalogue of
//! security events. Nothing here ever records a token, a cookie or a code.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
use crate::error::ApiError;
use crate::ratelimit::RateLimitHeaders;
use crate::session::crypto::b64;

/// Installs the global subscriber once; later calls (tests) are no-ops. `GATEHOUSE_LOG`
/// overrides the configured filter.
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("GATEHOUSE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&settings.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// The id of one request, from a well-formed `X-Request-Id` or freshly made.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
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
fn new_request_id() -> String {
    let bytes: [u8; 12] = rand::Rng::gen(&mut rand::thread_rng());
    b64(&bytes)
}

/// Wraps every request in a span with its id, echoes the id, and renders edge errors with it.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(acceptable_request_id)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    // The path only: a query can carry an authorization code. The client IP is recorded by
    // the edge guard, which knows the trusted proxies.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        client_ip = tracing::field::Empty,
    );
    async move {
        let response = next.call(req).await?;
        let status = response.status();
        let mut response = match response.response().error().and_then(|e| e.as_error::<ApiError>()) {
            Some(api_error) => {
                if status.is_server_error() {
                    tracing::error!(status = status.as_u16(), error = %api_error, "request failed");
                } else {
                    tracing::info!(status = status.as_u16(), error = %api_error, "request rejected");
                }
                let rendered = api_error.render(&request_id);
                response.into_response(rendered).map_into_boxed_body()
            }
            None => {
                tracing::debug!(status = status.as_u16(), "request done");
                response.map_into_boxed_body()
            }
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        let rate_limit = response.request().extensions().get::<RateLimitHeaders>().cloned();
        for (name, value) in rate_limit.iter().flat_map(|headers| headers.0.iter()) {
            let name = HeaderName::from_static(name);
            if let (false, Ok(value)) = (response.headers().contains_key(&name), HeaderValue::from_str(value)) {
                response.headers_mut().insert(name, value);
            }
        }
        Ok(response)
    }
    .instrument(span)
    .await
}

/// The security event catalogue: stable names that alerting can key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityEvent {
    LoginStarted,
    LoginSucceeded,
    LoginFailed,
    LogoutCompleted,
    CsrfRejected,
    SessionRejected,
    BackchannelLogout,
    RefreshSucceeded,
    RefreshFailed,
    AuthorizationDenied,
    RateLimited,
}

impl SecurityEvent {
    pub fn name(self) -> &'static str {
        match self {
            SecurityEvent::LoginStarted => "login.started",
            SecurityEvent::LoginSucceeded => "login.succeeded",
            SecurityEvent::LoginFailed => "login.failed",
            SecurityEvent::LogoutCompleted => "logout.completed",
            SecurityEvent::CsrfRejected => "csrf.rejected",
            SecurityEvent::SessionRejected => "session.rejected",
            SecurityEvent::BackchannelLogout => "backchannel_logout.received",
            SecurityEvent::RefreshSucceeded => "refresh.succeeded",
            SecurityEvent::RefreshFailed => "refresh.failed",
            SecurityEvent::AuthorizationDenied => "authz.denied",
            SecurityEvent::RateLimited => "rate_limit.hit",
        }
    }
}

/// Logs a security event inside the current request span (which carries request id and
/// client IP). `session` is a store key (a hash), never a cookie value.
pub fn security_event(
    event: SecurityEvent,
    sub: Option<&str>,
    session: Option<&str>,
    reason: Option<&str>,
) {
    crate::metrics::record_security_event(event);
    tracing::info!(
        target: "gatehouse::security",
        event = event.name(),
        sub = sub.unwrap_or(""),
        session = session.map(|s| &s[..s.len().min(12)]).unwrap_or(""),
        reason = reason.unwrap_or(""),
        "security event"
    );
}
