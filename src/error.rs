//! The edge error: every failure a client sees is `application/problem+json` (RFC 9457)
//! with a stable `type`, a short `title` and the request id. Causes go to the log only.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::oidc::flows::FlowError;
use crate::oidc::OidcError;
use crate::proxy::path::UnsafePath;
use crate::proxy::ProxyError;
use crate::session::{LoginStateError, SessionError, StoreError};

/// Stable problem kinds: `type` is `urn:gatehouse:problem:<slug>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    CsrfRequired,
    Unauthenticated,
    InvalidReturnTo,
    InvalidRequest,
    InvalidCallback,
    LoginStateInvalid,
    ProviderDenied,
    LoginFailed,
    NotFound,
    MethodNotAllowed,
    SessionStoreUnavailable,
    ProviderUnavailable,
    Internal,
    UnsafePath,
    Forbidden,
    RateLimited,
    HeaderTooLarge,
    PayloadTooLarge,
    BodyTimeout,
    UpstreamUnreachable,
    UpstreamTimeout,
    LogoutTokenInvalid,
    UpstreamTls,
    OriginRejected,
    TooManyWebSockets,
    StepUpRequired,
    OperatorTokenRequired,
    ForbiddenByPolicy,
}

impl Problem {
    /// Each problem's status, slug and title, in one table.
    fn table(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Problem::CsrfRequired => (
                StatusCode::UNAUTHORIZED,
                "csrf-header-required",
                "Anti-forgery header missing",
            ),
            Problem::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, "unauthenticated", "Not logged in")
            }
            Problem::InvalidReturnTo => (
                StatusCode::BAD_REQUEST,
                "invalid-return-to",
                "returnTo must be a local path",
            ),
            Problem::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
            ),
            Problem::InvalidCallback => (
                StatusCode::BAD_REQUEST,
                "invalid-callback",
                "Invalid login callback",
            ),
            Problem::LoginStateInvalid => (
                StatusCode::BAD_REQUEST,
                "login-state-invalid",
                "Login state unknown, expired, used or from another browser",
            ),
            Problem::ProviderDenied => (
                StatusCode::BAD_REQUEST,
                "provider-denied",
                "The identity provider did not log you in",
            ),
            Problem::LoginFailed => (StatusCode::BAD_REQUEST, "login-failed", "Login failed"),
            Problem::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Problem::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Problem::SessionStoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "session-store-unavailable",
                "Session store unavailable, try again",
            ),
            Problem::ProviderUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "provider-unavailable",
                "Identity provider unavailable, try again",
            ),
            Problem::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal-error",
                "Internal error",
            ),
            Problem::UnsafePath => (
                StatusCode::BAD_REQUEST,
                "unsafe-path",
                "Request path not acceptable",
            ),
            Problem::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            Problem::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests, slow down",
            ),
            Problem::HeaderTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request-header-too-large",
                "Request header fields too large",
            ),
            Problem::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            Problem::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request-body-timeout",
                "Request body too slow",
            ),
            Problem::UpstreamUnreachable => (
                StatusCode::BAD_GATEWAY,
                "upstream-unreachable",
                "Upstream API unreachable",
            ),
            Problem::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Upstream API did not answer in time",
            ),
            Problem::LogoutTokenInvalid => (
                StatusCode::BAD_REQUEST,
                "logout-token-invalid",
                "Logout token rejected",
            ),
            Problem::UpstreamTls => (
                StatusCode::BAD_GATEWAY,
                "upstream-tls",
                "TLS handshake with the upstream API failed",
            ),
            Problem::OriginRejected => (
                StatusCode::FORBIDDEN,
                "origin-rejected",
                "Request origin not allowed",
            ),
            Problem::OperatorTokenRequired => (
                StatusCode::UNAUTHORIZED,
                "operator-token-required",
                "The admin API needs a valid operator bearer token",
            ),
            Problem::TooManyWebSockets => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-websockets",
                "Too many WebSockets open for this session",
            ),
            Problem::StepUpRequired => (
                StatusCode::UNAUTHORIZED,
                "step-up-required",
                "A stronger or more recent sign-in is needed",
            ),
            Problem::ForbiddenByPolicy => (
                StatusCode::FORBIDDEN,
                "forbidden-by-policy",
                "Not allowed by the authorization policy",
            ),
        }
    }

    pub fn status(self) -> StatusCode {
        self.table().0
    }

    pub fn slug(self) -> &'static str {
        self.table().1
    }

    pub fn title(self) -> &'static str {
        self.table().2
    }
}

/// An error on its way to the client. `detail` is a fixed, safe sentence; `cause` is logged.
#[derive(Debug)]
pub struct ApiError {
    pub problem: Problem,
    pub detail: Option<String>,
    /// Extra stable members of the problem object, e.g. `provider_error`.
    pub extensions: Vec<(&'static str, serde_json::Value)>,
    /// Response headers the problem needs (`Allow` on 405).
    pub headers: Vec<(&'static str, String)>,
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(problem: Problem) -> Self {
        Self {
            problem,
            detail: None,
            extensions: Vec::new(),
            headers: Vec::new(),
            cause: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn extension(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.push((name, value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// Renders the body with the request id and trace id; the request-context middleware
    /// calls this.
    pub fn render(&self, request_id: &str, trace_id: Option<&str>) -> HttpResponse {
        let status = self.problem.status();
        let mut body = json!({
            "type": format!("urn:gatehouse:problem:{}", self.problem.slug()),
            "title": self.problem.title(),
            "status": status.as_u16(),
            "request_id": request_id,
        });
        if let Some(trace_id) = trace_id {
            body["trace_id"] = json!(trace_id);
        }
        if let Some(detail) = &self.detail {
            body["detail"] = json!(detail);
        }
        for (name, value) in &self.extensions {
            body[*name] = json!(value);
        }
        let mut response = HttpResponse::build(status);
        response
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            ))
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        for (name, value) in &self.headers {
            response.insert_header((*name, value.as_str()));
        }
        response.body(body.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.problem.slug())?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem.status()
    }

    fn error_response(&self) -> HttpResponse {
        // The middleware re-renders with the real request id; this is the fallback.
        self.render("unknown", None)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::new(Problem::SessionStoreUnavailable).cause(error)
    }
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Store(e) => e.into(),
            SessionError::Encoding(_) => ApiError::new(Problem::Internal).cause(error),
        }
    }
}

impl From<OidcError> for ApiError {
    fn from(error: OidcError) -> Self {
        match &error {
            OidcError::NotReady(_) | OidcError::Transport { .. } | OidcError::Discovery(_) => {
                ApiError::new(Problem::ProviderUnavailable).cause(error)
            }
            OidcError::Rejected { error: code, .. } => ApiError::new(Problem::LoginFailed)
                .extension("provider_error", code.clone())
                .cause(error),
            OidcError::BadResponse(_) | OidcError::InvalidIdToken(_) => {
                ApiError::new(Problem::LoginFailed).cause(error)
            }
            OidcError::IssuerMismatch => ApiError::new(Problem::InvalidCallback)
                .detail("The issuer in the authorization response is not this provider.")
                .cause(error),
            // gatehouse's own failures, not the provider's.
            OidcError::ClientAssertion(_) | OidcError::HttpClient(_) => {
                ApiError::new(Problem::Internal).cause(error)
            }
        }
    }
}

impl From<FlowError> for ApiError {
    fn from(error: FlowError) -> Self {
        match error {
            FlowError::ReturnTo(e) => ApiError::new(Problem::InvalidReturnTo).detail(e.to_string()),
            FlowError::UnknownProvider => {
                ApiError::new(Problem::InvalidRequest).detail("Unknown identity provider.")
            }
            FlowError::InvalidPrompt => {
                ApiError::new(Problem::InvalidRequest).detail(FlowError::InvalidPrompt.to_string())
            }
            FlowError::MissingState | FlowError::MissingCode => {
                ApiError::new(Problem::InvalidCallback).detail(error.to_string())
            }
            FlowError::LoginState(LoginStateError::Store(e)) => e.into(),
            FlowError::LoginState(e) => ApiError::new(Problem::LoginStateInvalid).cause(e),
            FlowError::ProviderDenied { code, .. } => {
                let detail = match code.as_str() {
                    "access_denied" => "Login was cancelled or denied at the identity provider.",
                    "login_required"
                    | "interaction_required"
                    | "consent_required"
                    | "account_selection_required" => {
                        "The identity provider needs you to log in interactively."
                    }
                    _ => "The identity provider reported an error.",
                };
                ApiError::new(Problem::ProviderDenied)
                    .detail(detail)
                    .extension("provider_error", code)
            }
            FlowError::LoginParameter(e) => {
                ApiError::new(Problem::InvalidRequest).detail(e.to_string())
            }
            // Answered as a redirect by the callback; this is the fallback.
            FlowError::InsufficientAuthentication { .. } => {
                ApiError::new(Problem::LoginFailed).cause(error)
            }
            FlowError::Oidc(e) => e.into(),
            FlowError::Session(e) => e.into(),
        }
    }
}

impl From<UnsafePath> for ApiError {
    fn from(error: UnsafePath) -> Self {
        ApiError::new(Problem::UnsafePath).detail(error.0)
    }
}

impl From<ProxyError> for ApiError {
    fn from(error: ProxyError) -> Self {
        match error {
            ProxyError::Unauthenticated => ApiError::new(Problem::Unauthenticated),
            ProxyError::Forbidden(reason) => ApiError::new(Problem::Forbidden).cause(reason),
            ProxyError::MethodNotAllowed { allow } => {
                ApiError::new(Problem::MethodNotAllowed).header("Allow", allow.join(", "))
            }
            ProxyError::BodyTooLarge => ApiError::new(Problem::PayloadTooLarge),
            ProxyError::UpstreamUnreachable(cause) => {
                ApiError::new(Problem::UpstreamUnreachable).cause(cause)
            }
            ProxyError::UpstreamTimeout => ApiError::new(Problem::UpstreamTimeout),
            ProxyError::UpstreamTls(cause) => ApiError::new(Problem::UpstreamTls).cause(cause),
            ProxyError::Token(e) => ApiError::new(Problem::ProviderUnavailable).cause(e),
            ProxyError::NoRouteToken => {
                ApiError::new(Problem::ProviderUnavailable).cause("no token for the route")
            }
            // The API handler adds the `login_url`; this is the fallback.
            ProxyError::StepUpRequired(challenge) => ApiError::new(Problem::StepUpRequired)
                .header("WWW-Authenticate", challenge.www_authenticate())
                .cause(challenge.reason),
        }
    }
}
