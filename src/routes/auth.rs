//! `/auth/*`: login, callback, user, logout.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{cookies, single_params, AppState};
use crate::edge::ClientIp;
use crate::error::{ApiError, Problem};
use crate::metrics::LogoutKind;
use crate::oidc::flows::{sanitize_error_code, CallbackParams, FlowError};
use crate::oidc::return_to::{validate_return_to, with_login_error};
use crate::ratelimit::{LimitName, Subject};
use crate::telemetry::{security_event, SecurityEvent};

fn redirect(location: &str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Found();
    response.insert_header((header::LOCATION, location.to_owned()));
    response
}

/// Login starts and callbacks count against one limit per client IP.
async fn limit_login(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let client = Subject::ClientIp(ClientIp::of(req));
    let limit = state.settings.rate_limits.login;
    state
        .enforce_rate_limit(req, LimitName::Login, client, limit)
        .await
}

/// `GET /auth/login?returnTo=/x&prompt=none`
pub async fn login(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    limit_login(&req, &state).await?;
    let params = single_params(&req)?;
    let return_to = params.get("returnTo").map(String::as_str);
    let start = match state
        .flows
        .begin_login(
            return_to,
            params.get("prompt").map(String::as_str),
            params.get("provider").map(String::as_str),
            state.now(),
        )
        .await
    {
        Ok(start) => start,
        Err(error) => return login_start_failed(error, return_to),
    };
    security_event(SecurityEvent::LoginStarted, None, None, None);
    Ok(redirect(start.authorization_url.as_str())
        .cookie(cookies::login_cookie(
            &start.binding_cookie,
            &state.settings.session,
        ))
        .finish())
}

/// A login that fails at the provider before the browser leaves for it (the provider not
/// ready or unreachable, the pushed authorization request refused) goes back to `returnTo`
/// with `login_error=<code>`, as a provider's error at the callback does: a browser
/// navigated here. A request that is wrong in itself (a `returnTo` that is not local, an
/// unknown provider, a bad `prompt`) stays a 400: there is nothing safe to go back to, or
/// the link needs fixing. A store outage stays a 503 with `Retry-After`, as everywhere.
fn login_start_failed(error: FlowError, return_to: Option<&str>) -> Result<HttpResponse, ApiError> {
    use crate::oidc::OidcError;
    let code = match &error {
        FlowError::Oidc(OidcError::Rejected { error, .. }) => sanitize_error_code(error),
        FlowError::Oidc(
            OidcError::NotReady(_) | OidcError::Transport(_) | OidcError::Discovery(_),
        ) => "temporarily_unavailable".to_owned(),
        FlowError::Oidc(_) => "server_error".to_owned(),
        _ => return Err(error.into()),
    };
    let Ok(return_to) = validate_return_to(return_to.unwrap_or("/")) else {
        return Err(error.into());
    };
    tracing::warn!(%error, login_error = %code, "login could not start; back to returnTo");
    security_event(SecurityEvent::LoginFailed, None, None, Some(&code));
    Ok(redirect(&with_login_error(&return_to, &code)).finish())
}

/// `GET /auth/callback?code=…&state=…` (or `error=…`)
pub async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    limit_login(&req, &state).await?;
    let params = single_params(&req)?;
    let settings = &state.settings.session;
    let binding = cookies::read(&req, &settings.login_cookie_name);
    let previous = cookies::read(&req, &settings.cookie_name);
    // Only the coarse label is kept, never the header itself.
    let device = crate::session::device::device_label(
        req.headers()
            .get(header::USER_AGENT)
            .and_then(|ua| ua.to_str().ok()),
    );
    let outcome = state
        .flows
        .complete_login(
            CallbackParams {
                code: params.get("code").map(String::as_str),
                state: params.get("state").map(String::as_str),
                error: params.get("error").map(String::as_str),
                iss: params.get("iss").map(String::as_str),
            },
            binding.as_deref(),
            previous.as_deref(),
            device,
            state.now(),
        )
        .await;
    match outcome {
        Ok(done) => {
            state.metrics.login(Some(&done.provider), true);
            security_event(
                SecurityEvent::LoginSucceeded,
                Some(&done.sub),
                None,
                Some(&done.provider),
            );
            Ok(redirect(&done.return_to)
                .cookie(cookies::session_cookie(&done.session_cookie, settings))
                .cookie(cookies::expired_login_cookie(settings))
                .finish())
        }
        // A cancelled or silent login that needs interaction goes back to the app, which
        // reads `login_error`: the user lands in the app, not on a JSON page.
        Err(FlowError::ProviderDenied { code, return_to }) => {
            state.metrics.login(None, false);
            security_event(SecurityEvent::LoginFailed, None, None, Some(&code));
            Ok(redirect(&with_login_error(&return_to, &code))
                .cookie(cookies::expired_login_cookie(settings))
                .finish())
        }
        Err(error) => {
            state.metrics.login(None, false);
            let error = ApiError::from(error);
            security_event(
                SecurityEvent::LoginFailed,
                None,
                None,
                Some(error.problem.slug()),
            );
            Err(error)
        }
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
    state.require_csrf_header(&req)?;
    let now = state.now();
    let cookie = cookies::read(&req, &state.settings.session.cookie_name);
    let session = state
        .flows
        .current_session(cookie.as_deref(), now)
        .await?
        .ok_or_else(|| ApiError::new(Problem::Unauthenticated))?;
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
    state.require_csrf_header(req)?;
    let now = state.now();
    let cookie = cookies::read(req, &state.settings.session.cookie_name);
    let session = state
        .flows
        .current_session(cookie.as_deref(), now)
        .await?
        .ok_or_else(|| ApiError::new(Problem::Unauthenticated))?;
    Ok((session, now))
}

/// Whole seconds since the Unix epoch, as OpenID Connect writes times.
fn unix_seconds(millis: i64) -> i64 {
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
    state: &AppState,
    sub: &str,
    provider: &str,
    ended: &[crate::oidc::flows::EndedByUser],
) {
    if ended.is_empty() {
        return;
    }
    state
        .metrics
        .logouts(provider, LogoutKind::User, ended.len() as u64);
    for done in ended {
        let reason = match (done.current, done.revoked) {
            (true, true) => "current, revoked",
            (true, false) => "current, deleted only",
            (false, true) => "other, revoked",
            (false, false) => "other, deleted only",
        };
        security_event(
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
    let done = state
        .flows
        .end_session(&session, &id, now)
        .await?
        .ok_or_else(not_found)?;
    let current = done.current;
    report_ended(&state, &session.data.sub, &session.data.provider, &[done]);
    let mut response = HttpResponse::NoContent();
    if current {
        response.cookie(cookies::expired_session_cookie(&state.settings.session));
    }
    Ok(response.finish())
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

/// `POST /auth/logout` from the SPA's fetch: a cross-origin redirect is useless to fetch, so
/// the answer names where to send the browser next — without `id_token_hint`, since
/// JavaScript reads this answer.
pub async fn logout_post(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.require_csrf_header(&req)?;
    let cookie = cookies::read(&req, &state.settings.session.cookie_name);
    let session = state
        .flows
        .current_session(cookie.as_deref(), state.now())
        .await?;
    let provider = session.as_ref().map(|s| s.data.provider.clone());
    let done = state.flows.logout(session, false).await?;
    if let Some((sub, key)) = &done.ended {
        if let Some(provider) = &provider {
            state.metrics.logouts(provider, LogoutKind::User, 1);
        }
        security_event(SecurityEvent::LogoutCompleted, Some(sub), Some(key), None);
    }
    Ok(HttpResponse::Ok()
        .cookie(cookies::expired_session_cookie(&state.settings.session))
        .json(json!({ "redirect_to": done.redirect.as_str() })))
}

/// `GET /auth/logout?sid=…`: a top-level navigation. The `sid` (from `/auth/user`) must match
/// the session, so a cross-site link cannot log the user out.
pub async fn logout_get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = single_params(&req)?;
    let cookie = cookies::read(&req, &state.settings.session.cookie_name);
    let session = state
        .flows
        .current_session(cookie.as_deref(), state.now())
        .await?;
    if let Some(session) = &session {
        let given = params.get("sid").map(String::as_bytes).unwrap_or_default();
        let expected = session.data.logout_sid.as_bytes();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given, expected)) {
            security_event(
                SecurityEvent::CsrfRejected,
                Some(&session.data.sub),
                Some(&session.store_key),
                Some("logout sid"),
            );
            return Err(ApiError::new(Problem::InvalidRequest).detail(
                "The sid parameter does not match this session; take logout_url from /auth/user.",
            ));
        }
    }
    let provider = session.as_ref().map(|s| s.data.provider.clone());
    let done = state.flows.logout(session, true).await?;
    if let Some((sub, key)) = &done.ended {
        if let Some(provider) = &provider {
            state.metrics.logouts(provider, LogoutKind::User, 1);
        }
        security_event(SecurityEvent::LogoutCompleted, Some(sub), Some(key), None);
    }
    Ok(redirect(done.redirect.as_str())
        .cookie(cookies::expired_session_cookie(&state.settings.session))
        .finish())
}

/// `POST /auth/backchannel-logout`: the provider, server to server, ends sessions.
pub async fn backchannel_logout(
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let invalid = |reason: &str| {
        security_event(SecurityEvent::BackchannelLogout, None, None, Some(reason));
        ApiError::new(Problem::LogoutTokenInvalid)
            .extension("error", "invalid_request")
            .cause(reason.to_owned())
    };
    let token = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "logout_token")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| invalid("no logout_token"))?;
    let now = state.now();
    let request = state
        .flows
        .providers
        .verify_logout_token(&token, now)
        .await
        .map_err(|e| invalid(&e.to_string()))?;
    let replay_key = crate::session::crypto::hash_id(
        "gatehouse/logout-jti",
        &[
            request.provider.settings.issuer.as_bytes(),
            request.jti.as_bytes(),
        ],
    );
    let replay_window =
        crate::oidc::backchannel::MAX_AGE + request.provider.settings.clock_skew * 2;
    if !state
        .flows
        .sessions
        .store()
        .remember_once(&replay_key, replay_window, now)
        .await?
    {
        return Err(invalid("logout token replayed"));
    }
    let provider = request.provider.name();
    let ended = match (&request.sid, &request.sub) {
        (Some(sid), _) => {
            state
                .flows
                .sessions
                .delete_by_provider_sid(provider, sid, now)
                .await?
        }
        (None, Some(sub)) => {
            state
                .flows
                .sessions
                .delete_by_sub(provider, sub, now)
                .await?
        }
        (None, None) => 0,
    };
    state
        .metrics
        .logouts(provider, LogoutKind::Backchannel, ended as u64);
    security_event(
        SecurityEvent::BackchannelLogout,
        request.sub.as_deref(),
        None,
        Some(&format!("ended {ended} session(s)")),
    );
    Ok(HttpResponse::Ok().finish())
}
