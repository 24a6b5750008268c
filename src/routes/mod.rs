//! HTTP handlers: thin translations between requests and the flows.

pub mod auth;
pub mod cookies;
pub mod frontend;
pub mod health;
pub mod logout;
pub mod proxy;
pub mod step_up;

use std::sync::Arc;

use actix_web::{web, HttpMessage, HttpRequest};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::error::{ApiError, Problem};
use crate::observability::telemetry::{security_event, SecurityEvent};
use crate::oidc::flows::AuthFlows;
use crate::oidc::refresh::TokenRefresher;
use crate::proxy::path::NormalPath;
use crate::proxy::Proxy;
use crate::ratelimit::{
    self, LimitName, RateLimit, RateLimitHeaders, RateLimiter, Subject, Verdict,
};

/// Shared, read-only application state handed to every handler.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub flows: AuthFlows,
    pub proxy: Proxy,
    pub refresher: TokenRefresher,
    pub clock: SharedClock,
    pub frontend: crate::frontend::Frontend,
    /// For `frontend.dev_server`: unlike the API proxy's client, no read timeout.
    pub dev_server_http: reqwest::Client,
    pub limiter: RateLimiter,
    /// Whether the store answers (readiness).
    pub store_health: Arc<dyn crate::session::StoreHealth>,
    /// The WebSockets each session holds open on this instance (capped).
    pub websockets: crate::proxy::websocket::SocketSlots,
    pub metrics: crate::observability::metrics::Metrics,
    /// Added to every response that has none of its own (`frontend::security_headers`).
    pub security_headers: Vec<(
        actix_web::http::header::HeaderName,
        actix_web::http::header::HeaderValue,
    )>,
}

impl AppState {
    pub fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Whether anyone can read the metrics: only with an admin listener. Without one the
    /// hot path neither times nor counts.
    pub fn measured(&self) -> bool {
        self.settings.admin.bind.is_some()
    }

    /// Counts the request against `limit` (when set): 429 with `Retry-After` over it; under
    /// it, the rate-limit headers go on the response whatever it turns out to be.
    pub async fn enforce_rate_limit(
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
                security_event(
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

    /// Every API call carries the anti-forgery header: a cross-site form or image cannot set
    /// it, and a cross-site fetch that sets it fails CORS preflight.
    pub fn require_csrf_header(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let csrf = &self.settings.csrf;
        let ok = req
            .headers()
            .get(csrf.header.as_str())
            .is_some_and(|value| value.as_bytes() == csrf.value.as_bytes());
        if ok {
            Ok(())
        } else {
            security_event(SecurityEvent::CsrfRejected, None, None, Some(req.path()));
            Err(ApiError::new(Problem::CsrfRequired).detail(format!(
                "API calls must send the header `{}: {}`.",
                csrf.header, csrf.value
            )))
        }
    }
}

/// The `/auth` scope's routes (the scope itself is made in startup, with its headers).
pub fn configure_auth(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(auth::login))
        .route("/callback", web::get().to(auth::callback))
        .route("/user", web::get().to(auth::user))
        .route("/providers", web::get().to(auth::providers))
        .route("/sessions", web::get().to(auth::sessions))
        .route(
            "/sessions/end-others",
            web::post().to(auth::end_other_sessions),
        )
        .route("/sessions/{id}", web::delete().to(auth::end_session))
        .route("/logout", web::post().to(logout::logout_post))
        .route("/logout", web::get().to(logout::logout_get))
        .route("/logout/continue", web::get().to(logout::logout_continue))
        .route(
            "/backchannel-logout",
            web::post().to(logout::backchannel_logout),
        )
        .route(
            "/frontchannel-logout",
            web::get().to(logout::frontchannel_logout),
        )
        .default_service(web::to(not_found));
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        // Metrics are the admin listener's only; never the SPA fallback's index.html either.
        .route("/metrics", web::route().to(not_found));
}

/// The default service: an API route when one matches, else the frontend.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let path = NormalPath::of(&req)?;
    match state.proxy.table.find(&path)? {
        Some((route, rest)) => proxy::forward(&req, payload, &state, route, rest).await,
        None => frontend::serve(&req, &path, payload, &state).await,
    }
}

/// A 302 to `location`.
pub(crate) fn redirect(location: &str) -> actix_web::HttpResponseBuilder {
    let mut response = actix_web::HttpResponse::Found();
    response.insert_header((actix_web::http::header::LOCATION, location.to_owned()));
    response
}

pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(Problem::NotFound))
}

/// Query parameters, each at most once: a repeated parameter is a request to refuse, not to
/// guess about.
pub fn single_params(
    req: &HttpRequest,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let mut params = std::collections::HashMap::new();
    for (key, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        if params
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::new(Problem::InvalidRequest)
                .detail(format!("parameter `{key}` appears more than once")));
        }
    }
    Ok(params)
}
