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
    /// Set once SIGTERM arrived: readiness fails, connections close after their answer,
    /// WebSockets close with 1001.
    pub drain: crate::drain::Drain,
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
    limiter: std::sync::Arc<RateLimiter>,
    /// Per client IP, on `/auth/login` and `/auth/callback`.
    pub login: Option<RateLimit>,
    /// Per session (per client IP without one), over every route without its own limit.
    pub api: Option<RateLimit>,
    metrics: Metrics,
    events: SecurityLog,
}

impl RateLimits {
    pub fn new(
        limiter: std::sync::Arc<RateLimiter>,
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

/// The admin API's bearer tokens (`admin.api_token_file`), each with its operator's name.
/// Only the admin listener holds one, and only when the file is configured.
pub struct OperatorTokens {
    /// SHA-256 of each token, beside its name: every comparison is over 32 bytes, so its
    /// time tells nothing about a token's length or content.
    digests: Vec<(String, [u8; 32])>,
    events: SecurityLog,
}

impl OperatorTokens {
    pub fn new(tokens: &[crate::config::OperatorToken], events: SecurityLog) -> Self {
        use secrecy::ExposeSecret;
        Self {
            digests: tokens
                .iter()
                .map(|t| (t.name.clone(), digest(t.token.expose_secret().as_bytes())))
                .collect(),
            events,
        }
    }

    /// The name of the operator whose token the request carries (`Authorization: Bearer
    /// …`), or 401. Every configured token is compared, in constant time, whatever matches.
    pub fn authorize(&self, req: &HttpRequest) -> Result<&str, ApiError> {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty());
        let refuse = |reason: &str| {
            self.events
                .log(SecurityEvent::AdminRejected, None, None, Some(reason));
            ApiError::new(Problem::OperatorTokenRequired)
                .header("WWW-Authenticate", "Bearer realm=\"gatehouse-admin\"")
        };
        let Some(presented) = presented else {
            return Err(refuse("no bearer token"));
        };
        let presented = digest(presented.as_bytes());
        let mut found = None;
        for (name, expected) in &self.digests {
            if bool::from(subtle::ConstantTimeEq::ct_eq(&presented[..], &expected[..])) {
                found = Some(name.as_str());
            }
        }
        found.ok_or_else(|| refuse("unknown token"))
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
