//! `/auth/*`: login, callback, user, logout.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{cookies, redirect, single_params};
use crate::edge::ClientIp;
use crate::error::{ApiError, Problem};
use crate::observability::metrics::LogoutKind;
use crate::observability::telemetry::{SecurityEvent, SecurityLog};
use crate::oidc::flows::{sanitize_error_code, CallbackParams, FlowError, LoginRequest};
use crate::oidc::return_to::{validate_return_to, with_login_error};
use crate::ratelimit::{LimitName, Subject};
use crate::session::{LoginBindings, LoginStateError};
use crate::state::{AppState, CookieSettings, RateLimits};

/// Login starts and callbacks count against one limit per client IP.
async fn limit_login(req: &HttpRequest, limits: &RateLimits) -> Result<(), ApiError> {
    let client = Subject::ClientIp(ClientIp::of(req));
    limits
        .enforce(req, LimitName::Login, client, limits.login)
        .await
}

/// `GET /auth/login?returnTo=/x&prompt=none`
pub async fn login(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let AppState {
        flows,
        limits,
        cookie_settings,
        clock,
        events,
        ..
    } = &**state;
    limit_login(&req, limits).await?;
    let params = single_params(&req)?;
    let return_to = params.get("returnTo").map(String::as_str);
    let start = match flows
        .begin_login(
            LoginRequest {
                return_to,
                prompt: params.get("prompt").map(String::as_str),
                provider: params.get("provider").map(String::as_str),
                acr_values: params.get("acr_values").map(String::as_str),
                max_age: params.get("max_age").map(String::as_str),
            },
            login_bindings(&req, cookie_settings),
            clock.now(),
        )
        .await
    {
        Ok(start) => start,
        Err(error) => return login_start_failed(events, error, return_to),
    };
    events.log(SecurityEvent::LoginStarted, None, None, None);
    Ok(redirect(start.authorization_url.as_str())
        .cookie(cookies::login_cookie(
            &start.bindings_cookie,
            cookie_settings,
        ))
        .finish())
}

/// A login that fails at the provider before the browser leaves for it (the provider not
/// ready or unreachable, the pushed authorization request refused) goes back to `returnTo`
/// with `login_error=<code>`, as a provider's error at the callback does: a browser
/// navigated here. A request that is wrong in itself (a `returnTo` that is not local, an
/// unknown provider, a bad `prompt`) stays a 400: there is nothing safe to go back to, or
/// the link needs fixing. A store outage stays a 503 with `Retry-After`, as everywhere.
fn login_start_failed(
    events: &SecurityLog,
    error: FlowError,
    return_to: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    use crate::oidc::OidcError;
    let code = match &error {
        FlowError::Oidc(OidcError::Rejected { error, .. }) => sanitize_error_code(error),
        FlowError::Oidc(
            OidcError::NotReady(_) | OidcError::Transport { .. } | OidcError::Discovery(_),
        ) => "temporarily_unavailable".to_owned(),
        FlowError::Oidc(_) => "server_error".to_owned(),
        _ => return Err(error.into()),
    };
    let Ok(return_to) = validate_return_to(return_to.unwrap_or("/")) else {
        return Err(error.into());
    };
    tracing::warn!(%error, login_error = %code, "login could not start; back to returnTo");
    events.log(SecurityEvent::LoginFailed, None, None, Some(&code));
    Ok(redirect(&with_login_error(&return_to, &code)).finish())
}

/// `GET /auth/callback?code=…&state=…` (or `error=…`)
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let AppState {
        flows,
        limits,
        cookie_settings,
        clock,
        metrics,
        events,
        ..
    } = &**state;
    limit_login(&req, limits).await?;
    let params = single_params(&req)?;
    let bindings = login_bindings(&req, cookie_settings);
    let previous = cookies::read(&req, &cookie_settings.session_name);
    // Only the coarse label is kept, never the header itself.
    let device = crate::session::device::device_label(
        req.headers()
            .get(header::USER_AGENT)
            .and_then(|ua| ua.to_str().ok()),
    );
    let outcome = flows
        .complete_login(
            CallbackParams {
                code: params.get("code").map(String::as_str),
                state: params.get("state").map(String::as_str),
                error: params.get("error").map(String::as_str),
                iss: params.get("iss").map(String::as_str),
            },
            bindings,
            previous.as_deref(),
            device,
            clock.now(),
        )
        .await;
    match outcome {
        Ok(done) => {
            metrics.login(Some(&done.provider), true);
            events.log(
                SecurityEvent::LoginSucceeded,
                Some(&done.sub),
                None,
                Some(&done.provider),
            );
            if let Some((sub, key)) = &done.replaced {
                events.log(
                    SecurityEvent::LogoutCompleted,
                    Some(sub),
                    Some(key),
                    Some("replaced by a new login in the same browser"),
                );
            }
            Ok(redirect(&done.return_to)
                .cookie(cookies::session_cookie(
                    &done.session_cookie,
                    cookie_settings,
                ))
                .cookie(remaining_logins_cookie(&done.bindings, cookie_settings))
                .finish())
        }
        // A cancelled or silent login that needs interaction goes back to the app, which
        // reads `login_error`: the user lands in the app, not on a JSON page.
        Err(FlowError::ProviderDenied {
            code,
            return_to,
            bindings,
        }) => {
            metrics.login(None, false);
            events.log(SecurityEvent::LoginFailed, None, None, Some(&code));
            Ok(redirect(&with_login_error(&return_to, &code))
                .cookie(remaining_logins_cookie(&bindings, cookie_settings))
                .finish())
        }
        // A step-up that came back weaker than it asked: back to the app, which reads
        // `login_error`; no session was made, and the browser's own is untouched.
        Err(FlowError::InsufficientAuthentication {
            shortfall,
            return_to,
            bindings,
        }) => {
            metrics.login(None, false);
            let reason = format!("insufficient_authentication: {shortfall}");
            events.log(SecurityEvent::LoginFailed, None, None, Some(&reason));
            Ok(
                redirect(&with_login_error(&return_to, "insufficient_authentication"))
                    .cookie(remaining_logins_cookie(&bindings, cookie_settings))
                    .finish(),
            )
        }
        // A login this browser cannot open: another browser's, or one of its own whose
        // binding gave way to newer logins. It is used up; the browser's other logins in
        // flight (its cookie) stay as they are, and the tab lands in the app.
        Err(FlowError::LoginState(LoginStateError::WrongBrowser { return_to })) => {
            metrics.login(None, false);
            events.log(
                SecurityEvent::LoginFailed,
                None,
                None,
                Some("login state not bound to this browser"),
            );
            Ok(redirect(&with_login_error(&return_to, "login_state_invalid")).finish())
        }
        Err(error) => {
            metrics.login(None, false);
            let error = ApiError::from(error);
            events.log(
                SecurityEvent::LoginFailed,
                None,
                None,
                Some(error.problem.slug()),
            );
            Err(error)
        }
    }
}

/// The logins this browser has in flight: its login cookie, by its literal name.
fn login_bindings(req: &HttpRequest, cookie_settings: &CookieSettings) -> LoginBindings {
    let cookie = cookies::read(req, &cookie_settings.login_name);
    LoginBindings::parse(cookie.as_deref())
}

/// The login cookie after one login completed: the others still in flight, or none.
fn remaining_logins_cookie<'c>(
    bindings: &LoginBindings,
    settings: &CookieSettings,
) -> actix_web::cookie::Cookie<'c> {
    match bindings.cookie_value() {
        Some(value) => cookies::login_cookie(&value, settings),
        None => cookies::expired_login_cookie(settings),
    }
}

/// `GET /auth/providers`: the identity providers a user can log in at (names only), so an
/// SPA can offer one login button each.
pub async fn providers(state: web::Data<AppState>) -> HttpResponse {
    let providers = &state.flows.providers;
    let list: Vec<_> = providers
        .by_name
        .keys()
        .map(|name| {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("provider", name)
                .finish();
            json!({ "name": name, "login_url": format!("/auth/login?{query}") })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "default": providers.default, "providers": list }))
}

/// `GET /auth/user`: who is logged in, for the SPA. Never a redirect.
pub async fn user(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (session, now) = caller(&req, &state).await?;
    let data = &session.data;
    let seconds_until = |at: i64| ((at - now).max(0) + 999) / 1000;
    Ok(HttpResponse::Ok().json(json!({
        "sub": data.sub,
        "claims": data.claims,
        "session": {
            "expires_in": seconds_until(data.absolute_expires_at),
            "idle_expires_in": seconds_until(session.idle_expires_at),
            "logout_url": format!("/auth/logout?sid={}", data.logout_sid),
            "provider": data.provider,
        },
    })))
}

/// The caller's session (and the time it was read at), or 401: the session endpoints need
/// the anti-forgery header and act for a logged-in user only.
async fn caller(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(crate::session::LoadedSession, i64), ApiError> {
    let AppState {
        flows,
        anti_forgery,
        cookie_settings,
        clock,
        ..
    } = state;
    anti_forgery.require(req)?;
    let now = clock.now();
    let cookie = cookies::read(req, &cookie_settings.session_name);
    let session = flows
        .current_session(cookie.as_deref(), now)
        .await?
        .ok_or_else(|| ApiError::new(Problem::Unauthenticated))?;
    Ok((session, now))
}

/// Whole seconds since the Unix epoch, as OpenID Connect writes times.
pub(super) fn unix_seconds(millis: i64) -> i64 {
    millis.div_euclid(1000)
}

/// `GET /auth/sessions`: the caller's sessions at every instance (same provider and
/// `sub`), their own marked `current`. Public ids, times and coarse device labels only.
pub async fn sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (session, now) = caller(&req, &state).await?;
    let listed = state.flows.list_sessions(&session, now).await?;
    let sessions: Vec<_> = listed
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "provider": s.provider,
                "device": s.device,
                "created_at": unix_seconds(s.created_at),
                "last_used_at": unix_seconds(s.last_used_at),
                "current": s.current,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "sessions": sessions })))
}

/// A public id as `GET /auth/sessions` hands them out: 43 base64url characters.
fn well_formed_public_id(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn report_ended(
    AppState {
        metrics, events, ..
    }: &AppState,
    sub: &str,
    provider: &str,
    ended: &[crate::oidc::flows::EndedByUser],
) {
    if ended.is_empty() {
        return;
    }
    metrics.logouts(provider, LogoutKind::User, ended.len() as u64);
    for done in ended {
        let reason = match (done.current, done.revoked) {
            (true, true) => "current, revoked",
            (true, false) => "current, deleted only",
            (false, true) => "other, revoked",
            (false, false) => "other, deleted only",
        };
        events.log(
            SecurityEvent::SessionEndedByUser,
            Some(sub),
            Some(&done.store_key),
            Some(reason),
        );
    }
}

/// `DELETE /auth/sessions/{id}`: ends one of the caller's sessions, revoking its refresh
/// token at the provider when it can. An id that is not one of the caller's → 404, and
/// nothing changes. Ending the caller's own session is a logout without the redirect: the
/// cookie is expired too.
pub async fn end_session(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (session, now) = caller(&req, &state).await?;
    let not_found = || ApiError::new(Problem::NotFound).detail("You have no session with this id.");
    // Exactly as handed out: not a percent-encoded spelling of it either.
    if req.path().contains('%') || !well_formed_public_id(&id) {
        return Err(not_found());
    }
    let AppState {
        flows,
        public_url,
        cookie_settings,
        ..
    } = &**state;
    let done = flows
        .end_session(&session, &id, public_url, now)
        .await?
        .ok_or_else(not_found)?;
    let redirect = done.redirect.clone();
    report_ended(&state, &session.data.sub, &session.data.provider, &[done]);
    // The caller's own session: a logout, whose answer names where the browser goes next
    // (without the ID token, which only the continuation holds).
    Ok(match redirect {
        Some(redirect) => HttpResponse::Ok()
            .cookie(cookies::expired_session_cookie(cookie_settings))
            .json(json!({ "redirect_to": redirect.as_str() })),
        None => HttpResponse::NoContent().finish(),
    })
}

/// `POST /auth/sessions/end-others`: ends every session of the caller's but this one;
/// answers how many ended.
pub async fn end_other_sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (session, now) = caller(&req, &state).await?;
    let ended = state.flows.end_other_sessions(&session, now).await?;
    report_ended(&state, &session.data.sub, &session.data.provider, &ended);
    Ok(HttpResponse::Ok().json(json!({ "ended": ended.len() })))
}
