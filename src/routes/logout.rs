//! `/auth/logout…`: the ways a session ends at gatehouse and the provider — the SPA's
//! logout and its continuation to the provider, and the provider's back- and front-channel
//! logouts.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{cookies, redirect, single_params};
use crate::error::{ApiError, Problem};
use crate::observability::metrics::LogoutKind;
use crate::observability::telemetry::SecurityEvent;
use crate::oidc::flows::HintDelivery;
use crate::state::AppState;

/// `POST /auth/logout` from the SPA's fetch: a cross-origin redirect is useless to fetch, so
/// the answer names where to send the browser next — without `id_token_hint`, since
/// JavaScript reads this answer.
pub async fn logout_post(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let AppState {
        flows,
        anti_forgery,
        cookie_settings,
        public_url,
        clock,
        metrics,
        events,
        ..
    } = &**state;
    anti_forgery.require(&req)?;
    let cookie = cookies::read(&req, &cookie_settings.session_name);
    let session = flows
        .current_session(cookie.as_deref(), clock.now())
        .await?;
    let provider = session.as_ref().map(|s| s.data.provider.clone());
    let continuation = HintDelivery::Continuation { base: public_url };
    let done = flows.logout(session, continuation, clock.now()).await?;
    if let Some((sub, key)) = &done.ended {
        if let Some(provider) = &provider {
            metrics.logouts(provider, LogoutKind::User, 1);
        }
        events.log(SecurityEvent::LogoutCompleted, Some(sub), Some(key), None);
    }
    Ok(HttpResponse::Ok()
        .cookie(cookies::expired_session_cookie(cookie_settings))
        .json(json!({ "redirect_to": done.redirect.as_str() })))
}

/// `GET /auth/logout?sid=…`: a top-level navigation. The `sid` (from `/auth/user`) must match
/// the session, so a cross-site link cannot log the user out.
pub async fn logout_get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let AppState {
        flows,
        cookie_settings,
        clock,
        metrics,
        events,
        ..
    } = &**state;
    let params = single_params(&req)?;
    let cookie = cookies::read(&req, &cookie_settings.session_name);
    let session = flows
        .current_session(cookie.as_deref(), clock.now())
        .await?;
    if let Some(session) = &session {
        let given = params.get("sid").map(String::as_bytes).unwrap_or_default();
        let expected = session.data.logout_sid.as_bytes();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given, expected)) {
            events.log(
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
    let done = flows
        .logout(session, HintDelivery::Redirect, clock.now())
        .await?;
    if let Some((sub, key)) = &done.ended {
        if let Some(provider) = &provider {
            metrics.logouts(provider, LogoutKind::User, 1);
        }
        events.log(SecurityEvent::LogoutCompleted, Some(sub), Some(key), None);
    }
    Ok(redirect(done.redirect.as_str())
        .cookie(cookies::expired_session_cookie(cookie_settings))
        .finish())
}

/// `GET /auth/logout/continue?t=…`: the browser, sent on by `POST /auth/logout`, goes to the
/// provider's end-session endpoint with `id_token_hint` (once, within a minute). Anything
/// else lands on `post_logout_redirect`: never an error page, never elsewhere.
pub async fn logout_continue(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(key, _)| key == "t")
        .map(|(_, value)| value.into_owned())
        .filter(|token| token.len() <= 100)
        .unwrap_or_default();
    let location = state
        .flows
        .continue_logout(&token, state.clock.now())
        .await?;
    Ok(redirect(location.as_str()).finish())
}

/// `POST /auth/backchannel-logout`: the provider, server to server, ends sessions.
pub async fn backchannel_logout(
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let invalid = |reason: &str| {
        state
            .events
            .log(SecurityEvent::BackchannelLogout, None, None, Some(reason));
        ApiError::new(Problem::LogoutTokenInvalid)
            .extension("error", "invalid_request")
            .cause(reason.to_owned())
    };
    let token = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "logout_token")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| invalid("no logout_token"))?;
    let now = state.clock.now();
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
        .replay
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
    state.events.log(
        SecurityEvent::BackchannelLogout,
        request.sub.as_deref(),
        None,
        Some(&format!("ended {ended} session(s)")),
    );
    Ok(HttpResponse::Ok().finish())
}

/// `GET /auth/frontchannel-logout?iss=…&sid=…`: OIDC Front-Channel Logout 1.0. The
/// provider's page loads this in an iframe when the user logs out there; the SameSite
/// session cookie does not come along (a third-party frame), so the sessions are found by
/// the provider and its session id alone, at every instance. An empty page that only that
/// provider's pages may frame.
pub async fn frontchannel_logout(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = single_params(&req)?;
    let providers = &state.flows.providers;
    // The issuer as the provider's responses must name it (a multi-tenant Entra issuer:
    // the tenant's, under its template).
    let provider = params.get("iss").and_then(|iss| {
        providers
            .by_name
            .values()
            .find(|provider| provider.check_response_issuer(Some(iss)).is_ok())
    });
    let sid = params
        .get("sid")
        .filter(|sid| !sid.is_empty() && sid.len() <= 256);
    let (Some(provider), Some(sid)) = (provider, sid) else {
        let reason = if provider.is_none() {
            "no configured provider has that iss"
        } else {
            "no sid"
        };
        state.events.log_for_provider(
            SecurityEvent::FrontchannelLogout,
            None,
            None,
            None,
            Some(reason),
        );
        return Err(ApiError::new(Problem::InvalidRequest)
            .detail("Front-channel logout needs the iss of a configured provider and a sid."));
    };
    let ended = state
        .flows
        .sessions
        .delete_by_provider_sid(provider.name(), sid, state.clock.now())
        .await?;
    state
        .metrics
        .logouts(provider.name(), LogoutKind::Frontchannel, ended as u64);
    state.events.log_for_provider(
        SecurityEvent::FrontchannelLogout,
        Some(provider.name()),
        None,
        None,
        Some(&format!("ended {ended} session(s)")),
    );
    let origin = url::Url::parse(&provider.settings.issuer)
        .map(|issuer| issuer.origin().ascii_serialization())
        .unwrap_or_else(|_| "'none'".to_owned());
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header((
            "Content-Security-Policy",
            format!("default-src 'none'; frame-ancestors {origin}"),
        ))
        .body(""))
}
