//! The application's state: the narrow, named parts that handlers and the edge middleware
//! take, built once by startup (`Application::build`). No part carries all of the settings:
//! each holds what its readers use, read out of the settings when the state is made.
//!
//! One `web::Data<AppState>` is registered, so a request pays one extraction (one `Arc`
//! clone) however many parts it reads; a handler names the parts it uses by destructuring
//! the state at its top.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use ipnet::IpNet;
use url::Url;

use crate::clock::{SharedClock, UnixMillis};
use crate::config::{CsrfSettings, RateLimitSettings, ServerSettings, SessionSettings};
use crate::edge::body::BodyLimits;
use crate::error::{ApiError, Problem};
use crate::frontend::Frontend;
use crate::observability::metrics::Metrics;
use crate::observability::telemetry::{SecurityEvent, SecurityLog};
use crate::oidc::flows::AuthFlows;
use crate::oidc::refresh::TokenRefresher;
use crate::policy::PolicyStore;
use crate::proxy::websocket::SocketSlots;
use crate::proxy::Proxy;
use crate::ratelimit::{
    self, LimitName, RateLimit, RateLimitHeaders, RateLimiter, Subject, Verdict,
};

/// Shared, read-only application state handed to every handler.
pub struct AppState {
    /// Login, callback, logout, and the session behind a cookie (with the providers).
    pub flows: AuthFlows,
    /// The route table, the upstream clients and the route tokens.
    pub proxy: Proxy,
    /// A session's tokens refreshed under its lock before a call goes on.
    pub refresher: TokenRefresher,
    /// The limiter with the configured login and API limits.
    pub limits: RateLimits,
    /// The session and login cookies: names, lifetimes, `Secure`.
    pub cookie_settings: CookieSettings,
    /// The header every API call carries.
    pub anti_forgery: AntiForgery,
    /// `server.public_url`: the site's own origin and the base of the URLs it hands out.
    pub public_url: Url,
    /// What the edge middleware decides with before routing.
    pub edge: EdgeSettings,
    pub clock: Clock,
    pub frontend: Frontend,
    /// For `frontend.dev_server`: unlike the API proxy's client, no read timeout.
    pub dev_server_http: reqwest::Client,
    /// Whether the store answers (readiness).
    pub store_health: std::sync::Arc<dyn crate::session::StoreHealth>,
    /// The WebSockets each session holds open on this instance (capped).
    pub websockets: SocketSlots,
    pub metrics: Metrics,
    /// Whether anyone can read the metrics: only with an admin listener. Without one the
    /// hot path neither times nor counts.
    pub measured: bool,
    /// The handlers' security events: logged, and counted when `measured`.
    pub events: SecurityLog,
    /// The Cedar policy set of `policy = true` routes (`None`: no `[policies]`).
    pub policies: Option<std::sync::Arc<PolicyStore>>,
}

/// The injected clock, read as milliseconds since the Unix epoch.
#[derive(Clone)]
pub struct Clock(pub SharedClock);

impl Clock {
    pub fn now(&self) -> UnixMillis {
        self.0.now_millis()
    }
}

/// The rate limiter and the limits the configuration sets for logins and API calls (a
/// route's own limit comes with its route).
pub struct RateLimits {
    limiter: RateLimiter,
    /// Per client IP, on `/auth/login` and `/auth/callback`.
    pub login: Option<RateLimit>,
    /// Per session (per client IP without one), over every route without its own limit.
    pub api: Option<RateLimit>,
    metrics: Metrics,
    events: SecurityLog,
}

impl RateLimits {
    pub fn new(
        limiter: RateLimiter,
        settings: RateLimitSettings,
        metrics: Metrics,
        events: SecurityLog,
    ) -> Self {
        Self {
            limiter,
            login: settings.login,
            api: settings.api,
            metrics,
            events,
        }
    }

    /// Counts the request against `limit` (when set): 429 with `Retry-After` over it; under
    /// it, the rate-limit headers go on the response whatever it turns out to be.
    pub async fn enforce(
        &self,
        req: &HttpRequest,
        name: LimitName<'_>,
        subject: Subject<'_>,
        limit: Option<RateLimit>,
    ) -> Result<(), ApiError> {
        let Some(limit) = limit else { return Ok(()) };
        match self.limiter.check(name, subject, limit).await {
            Verdict::Passed(decision) => {
                req.extensions_mut()
                    .insert(RateLimitHeaders(ratelimit::headers(name, limit, &decision)));
                Ok(())
            }
            Verdict::Limited(decision) => {
                self.metrics.rate_limited(name);
                let session = match subject {
                    Subject::Session(key) => Some(key),
                    Subject::ClientIp(_) => None,
                };
                self.events.log(
                    SecurityEvent::RateLimited,
                    None,
                    session,
                    Some(name.policy()),
                );
                let retry_after = ratelimit::retry_after_secs(&decision);
                let mut error = ApiError::new(Problem::RateLimited)
                    .detail(format!("Try again in {retry_after} s."))
                    .header("Retry-After", retry_after.to_string());
                for (header, value) in ratelimit::headers(name, limit, &decision) {
                    error = error.header(header, value);
                }
                Err(error)
            }
            Verdict::Unchecked => Ok(()),
        }
    }
}

/// What gatehouse's two cookies are made of (`routes::cookies`).
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub session_name: String,
    pub login_name: String,
    /// `Secure`, and the `__Host-` prefix by default (off only with `server.insecure_http`).
    pub secure: bool,
    /// The session cookie's `Max-Age`: the session's absolute lifetime.
    pub session_max_age: Duration,
    /// The login cookie's `Max-Age`: a login state's lifetime.
    pub login_max_age: Duration,
}

impl CookieSettings {
    pub fn new(session: &SessionSettings) -> Self {
        Self {
            session_name: session.cookie_name.clone(),
            login_name: session.login_cookie_name.clone(),
            secure: session.secure_cookies,
            session_max_age: session.absolute_timeout,
            login_max_age: session.login_state_ttl,
        }
    }
}

/// The anti-forgery header (`[csrf]`): its name and the value it must have.
#[derive(Debug, Clone)]
pub struct AntiForgery {
    pub header: String,
    pub value: String,
    events: SecurityLog,
}

impl AntiForgery {
    pub fn new(csrf: &CsrfSettings, events: SecurityLog) -> Self {
        Self {
            header: csrf.header.clone(),
            value: csrf.value.clone(),
            events,
        }
    }

    /// Every API call carries the anti-forgery header: a cross-site form or image cannot set
    /// it, and a cross-site fetch that sets it fails CORS preflight.
    pub fn require(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let ok = req
            .headers()
            .get(self.header.as_str())
            .is_some_and(|value| value.as_bytes() == self.value.as_bytes());
        if ok {
            Ok(())
        } else {
            self.events
                .log(SecurityEvent::CsrfRejected, None, None, Some(req.path()));
            Err(ApiError::new(Problem::CsrfRequired).detail(format!(
                "API calls must send the header `{}: {}`.",
                self.header, self.value
            )))
        }
    }
}

/// What the edge middleware (`edge::front`) decides with: whose `X-Forwarded-For` to
/// believe, the bounds on a request's head and body, and the headers every answer gets.
pub struct EdgeSettings {
    pub trusted_proxies: Vec<IpNet>,
    pub max_header_bytes: usize,
    pub body_limits: BodyLimits,
    /// Added to every response that has none of its own (`frontend::security_headers`).
    pub security_headers: Vec<(HeaderName, HeaderValue)>,
}

impl EdgeSettings {
    pub fn new(server: &ServerSettings, security_headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self {
            trusted_proxies: server.trusted_proxies.clone(),
            max_header_bytes: server.max_header_bytes,
            body_limits: BodyLimits {
                timeout: server.body_timeout,
                min_bytes_per_sec: server.body_min_bytes_per_sec,
            },
            security_headers,
        }
    }
}
