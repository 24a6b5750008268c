//! The API proxy's handler: checks a call against its route (anti-forgery header, method,
//! session, rate limit, authorization), attaches the token and forwards it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;

use super::authorize::PolicyCheck;
use super::cookies;
use super::step_up::step_up_problem;
use crate::config::{RouteRateLimit, RouteSettings, TokenPolicy};
use crate::edge::trace_context::TraceContext;
use crate::edge::ClientIp;
use crate::error::{ApiError, Problem};
use crate::observability::metrics::{Metrics, UpstreamOutcome};
use crate::observability::telemetry::{RequestId, SecurityEvent, SecurityLog};
use crate::observability::{spans, trace_export};
use crate::oidc::refresh::RefreshError;
use crate::proxy::forward::{
    append_request_headers, declared_length, has_body, is_websocket_upgrade, reqwest_failure,
    stream_response, stream_upstream_response, upload_chunks, ResponsePolicy,
};
use crate::proxy::headers::Forwarding;
use crate::proxy::routes::{upstream_uri, upstream_url};
use crate::proxy::step_up::upstream_challenge;
use crate::proxy::template::match_templates;
use crate::proxy::upstream::{classify, empty_body, streamed_body, SendFailure};
use crate::proxy::{dpop, websocket, Proxy, ProxyError, UpstreamToken};
use crate::ratelimit::{LimitName, Subject};
use crate::session::LoadedSession;
use crate::state::{AppState, CookieSettings};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::Instrument;

mod websocket_open;
use websocket_open::{open_websocket, require_own_origin};

const AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;
const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A call to an API route (the route table matched `route`, leaving `rest` of the path).
pub async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    route: &RouteSettings,
    rest: &str,
) -> Result<HttpResponse, ApiError> {
    let websocket = route.websocket.is_some() && is_websocket_upgrade(req);
    if websocket {
        // A browser cannot add the anti-forgery header to a WebSocket handshake; it always
        // sends Origin, which a page on another site cannot forge.
        require_own_origin(req, &state.public_url, &state.events)?;
    } else {
        state.anti_forgery.require(req)?;
    }
    Proxy::check_method(route, req.method().as_str())?;
    // A route with templates serves only the paths that fit one; nothing else under its
    // prefix is passed on (least of all to a broader route, which the policy would not see).
    let parameters = if route.templates.is_empty() {
        Vec::new()
    } else {
        match_templates(&route.templates, rest, route.match_case)
            .ok_or_else(|| ApiError::new(Problem::NotFound))?
    };
    let caller = admit(req, state, route).await?;
    let now = state.clock.now();
    let session = caller.as_ref().map(|(session, _)| session);
    let token = match state.proxy.token_for(route, session, now).await {
        Ok(token) => token,
        Err(ProxyError::Forbidden(reason)) => {
            state.events.log(
                SecurityEvent::AuthorizationDenied,
                session.map(|s| s.data.sub.as_str()),
                session.map(|s| s.store_key.as_str()),
                Some(&reason),
            );
            return Err(ProxyError::Forbidden(reason).into());
        }
        Err(ProxyError::StepUpRequired(challenge)) => {
            let session = session.ok_or_else(|| ApiError::new(Problem::Unauthenticated))?;
            return Err(step_up_problem(
                req,
                &state.public_url,
                &state.events,
                session,
                challenge,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let policy = PolicyCheck {
        policies: state.policies.as_deref(),
        clock: &state.clock,
        events: &state.events,
    };
    policy.require(req, route, &parameters, session)?;
    if websocket {
        // Boxed: a plain call's future then carries a pointer, not the relay's state.
        let cookie = caller.as_ref().map(|(_, cookie)| cookie.as_str());
        return Box::pin(open_websocket(
            req,
            payload,
            state,
            route,
            rest,
            (session, cookie),
            token.as_ref(),
        ))
        .await;
    }

    let declared_length = declared_length(req);
    if declared_length.is_some_and(|len| len > route.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge.into());
    }
    let method = http::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|_| {
        ProxyError::MethodNotAllowed {
            allow: route.methods.clone(),
        }
    })?;
    let uri = upstream_uri(&route.upstream, rest, req.query_string()).map_err(|e| {
        ApiError::new(Problem::InvalidRequest)
            .detail("The request path or query cannot be sent on.")
            .cause(e)
    })?;
    let client = state.proxy.client_for(route);
    let measured = state.measured.then_some(&state.metrics);
    // Exported, the upstream call is a client span of its own and the upstream's parent.
    let upstream_span = spans::upstream_call(&route.prefix, method.as_str());
    let upstream_parent = trace_export::span_id(&upstream_span);
    let bound = matches!(token, Some(UpstreamToken::UserDpop(..)));
    let origin = bound.then(|| route.upstream.origin().ascii_serialization());
    let htu = if bound {
        dpop::htu(&uri)
    } else {
        String::new()
    };
    let first_nonce = origin
        .as_deref()
        .and_then(|o| state.proxy.dpop_nonces.get(o));
    let request = |body, nonce: Option<&str>| {
        let mut request = http::Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        let call = Call {
            method: method.as_str(),
            htu: &htu,
            nonce,
        };
        upstream_headers(
            req,
            request.headers_mut(),
            state,
            (Forwarding::Api, &call),
            route,
            session,
            token.as_ref(),
        );
        if let Some(parent) = &upstream_parent {
            let traceparent = req
                .extensions()
                .get::<TraceContext>()
                .map(|trace| trace.traceparent_from(parent));
            if let Some(value) = traceparent.and_then(|v| HeaderValue::try_from(v).ok()) {
                request.headers_mut().insert(TRACEPARENT, value);
            }
        }
        request
    };
    let response = if has_body(req) {
        let too_large = Arc::new(AtomicBool::new(false));
        let body = upload_chunks(payload, route.max_body_bytes, too_large.clone());
        let mut request = request(streamed_body(body), first_nonce.as_deref());
        if let Some(len) = declared_length {
            let headers = request.headers_mut();
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        send(
            client.send(request),
            classify,
            measured,
            route,
            Some(&too_large),
        )
        .instrument(upstream_span.clone())
        .await?
    } else {
        // Nothing to stream, so it can be sent again should a pooled connection turn out
        // to be one the upstream had closed.
        let sent = client.send_replayable(
            || request(empty_body(), first_nonce.as_deref()),
            method.is_idempotent(),
        );
        let response = send(sent, classify, measured, route, None)
            .instrument(upstream_span.clone())
            .await?;
        // RFC 9449 §9: an upstream that wants a nonce in the proof gets one more call.
        match origin.as_deref() {
            Some(origin)
                if state.proxy.dpop_nonces.learn(
                    origin,
                    response.status(),
                    response.headers(),
                    first_nonce.as_deref(),
                ) =>
            {
                let nonce = state.proxy.dpop_nonces.get(origin);
                let sent = client.send_replayable(
                    || request(empty_body(), nonce.as_deref()),
                    method.is_idempotent(),
                );
                send(sent, classify, measured, route, None)
                    .instrument(upstream_span.clone())
                    .await?
            }
            _ => response,
        }
    };
    upstream_span.record("http.response.status_code", response.status().as_u16());
    drop(upstream_span);
    if let (Some(origin), true) = (origin.as_deref(), has_body(req)) {
        // A streamed body cannot be sent twice: its nonce serves the next call.
        state.proxy.dpop_nonces.learn(
            origin,
            response.status(),
            response.headers(),
            first_nonce.as_deref(),
        );
    }
    // The upstream's own RFC 9470 challenge to the user's token: the same step-up answer
    // as a route requirement's. Any other 401 passes through as it is.
    if let (Some(session), http::StatusCode::UNAUTHORIZED) = (session, response.status()) {
        let challenges = response.headers().get_all(http::header::WWW_AUTHENTICATE);
        if let Some(challenge) = upstream_challenge(challenges.iter().map(|v| v.as_bytes())) {
            return Err(step_up_problem(
                req,
                &state.public_url,
                &state.events,
                session,
                challenge,
            ));
        }
    }
    Ok(stream_upstream_response(
        response,
        response_policy(route, token.as_ref()),
        route.max_duration,
    ))
}

/// What the upstream's answer gets on its way back: a call that carried the user's token is
/// kept out of shared caches unless the upstream says otherwise (or the route turns it off).
fn response_policy(route: &RouteSettings, token: Option<&UpstreamToken<'_>>) -> ResponsePolicy {
    ResponsePolicy {
        pass_set_cookie: route.pass_set_cookie,
        private: route.cache_private && token.is_some_and(UpstreamToken::is_users),
    }
}

/// The session the route needs (refreshed when due) with its cookie, after the rate limit.
async fn admit(
    req: &HttpRequest,
    state: &AppState,
    route: &RouteSettings,
) -> Result<Option<(LoadedSession, String)>, ApiError> {
    let AppState {
        flows,
        refresher,
        limits,
        cookie_settings,
        clock,
        ..
    } = state;
    let now = clock.now();
    let session = match route.token {
        TokenPolicy::None | TokenPolicy::Client => None,
        _ => {
            let cookie = cookies::read(req, &cookie_settings.session_name);
            flows
                .current_session(cookie.as_deref(), now)
                .await?
                .zip(cookie)
        }
    };
    // Counted before a refresh: a limited call must not cost a trip to the provider.
    let (limit_name, limit) = match route.rate_limit {
        RouteRateLimit::Default => (LimitName::Api, limits.api),
        RouteRateLimit::Own(limit) => (LimitName::Route(&route.prefix), Some(limit)),
        RouteRateLimit::Off => (LimitName::Api, None),
    };
    let subject = match &session {
        Some((session, _)) => Subject::Session(&session.store_key),
        None => Subject::ClientIp(ClientIp::of(req)),
    };
    limits.enforce(req, limit_name, subject, limit).await?;
    match session {
        Some((session, cookie)) => {
            let session = refresher
                .fresh_for_route(&cookie, session, route)
                .await
                .map_err(|e| refresh_error(e, cookie_settings))?;
            Ok(Some((session, cookie)))
        }
        None => Ok(None),
    }
}

/// The request a DPoP proof names: method, URL (no query) and the upstream's nonce.
struct Call<'a> {
    method: &'a str,
    htu: &'a str,
    nonce: Option<&'a str>,
}

fn upstream_headers(
    req: &HttpRequest,
    headers: &mut HeaderMap,
    state: &AppState,
    (forwarding, call): (Forwarding, &Call<'_>),
    route: &RouteSettings,
    session: Option<&LoadedSession>,
    token: Option<&UpstreamToken<'_>>,
) {
    let csrf_header = &state.anti_forgery.header;
    append_request_headers(req, headers, csrf_header, forwarding, Some(route));
    for injected in &route.inject_headers {
        let mut value =
            HeaderValue::from_str(injected.value.expose_secret()).expect("validated at start-up");
        value.set_sensitive(true);
        let name = HeaderName::from_bytes(injected.name.as_bytes()).expect("validated at start-up");
        headers.append(name, value);
    }
    if let Some(UpstreamToken::UserDpop(token, key)) = token {
        dpop::attach(headers, token, key, call.method, call.htu, call.nonce);
    } else if let Some(token) = token {
        // One String, moved into the header value (no copy).
        let bearer = format!("Bearer {}", token.secret().expose_secret());
        if let Ok(mut value) = HeaderValue::try_from(bearer) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
    }
    if route.send_user_id_header {
        if let Some(value) = session.and_then(|s| HeaderValue::from_str(&s.data.sub).ok()) {
            headers.insert(X_USER_ID, value);
        }
    }
    // Static names (no copy of the name per call); the proto and host values were made once.
    if let Ok(client) = HeaderValue::try_from(ClientIp::of(req).to_string()) {
        headers.insert(X_FORWARDED_FOR, client);
    }
    headers.insert(X_FORWARDED_PROTO, state.proxy.forwarded_proto.clone());
    headers.insert(X_FORWARDED_HOST, state.proxy.forwarded_host.clone());
    let extensions = req.extensions();
    if let Some(value) = extensions
        .get::<RequestId>()
        .and_then(|id| HeaderValue::from_str(&id.0).ok())
    {
        headers.insert(X_REQUEST_ID, value);
    }
    // The caller's trace continued (or a new one), gatehouse's span as the parent; the
    // caller's own headers were left out above.
    if let Some(trace) = extensions.get::<TraceContext>() {
        if let Ok(value) = HeaderValue::try_from(trace.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
        if let Some(value) = trace
            .tracestate
            .as_deref()
            .and_then(|state| HeaderValue::from_str(state).ok())
        {
            headers.insert(TRACESTATE, value);
        }
    }
}

/// Sends the request and waits (at most the route's timeout) for the response head.
async fn send<R, E>(
    request: impl std::future::Future<Output = Result<R, E>>,
    failure: fn(&E) -> SendFailure,
    measured: Option<&Metrics>,
    route: &RouteSettings,
    upload_too_large: Option<&AtomicBool>,
) -> Result<R, ApiError> {
    let started = measured.map(|metrics| (metrics, Instant::now()));
    let upstream = |outcome| {
        if let Some((metrics, started)) = started {
            metrics.upstream_request(&route.prefix, outcome, started.elapsed());
        }
    };
    let error = match tokio::time::timeout(route.timeout, request).await {
        Ok(Ok(response)) => {
            upstream(UpstreamOutcome::Ok);
            return Ok(response);
        }
        Ok(Err(error)) => error,
        Err(_) => {
            upstream(UpstreamOutcome::Timeout);
            return Err(ProxyError::UpstreamTimeout.into());
        }
    };
    if upload_too_large.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
        return Err(ProxyError::BodyTooLarge.into());
    }
    Err(match failure(&error) {
        SendFailure::Timeout => {
            upstream(UpstreamOutcome::Timeout);
            ProxyError::UpstreamTimeout
        }
        SendFailure::Tls(reason) => {
            upstream(UpstreamOutcome::Tls);
            ProxyError::UpstreamTls(reason)
        }
        SendFailure::Unreachable(what) => {
            upstream(UpstreamOutcome::Unreachable);
            ProxyError::UpstreamUnreachable(what.to_owned())
        }
    }
    .into())
}

fn refresh_error(error: RefreshError, cookie_settings: &CookieSettings) -> ApiError {
    match error {
        RefreshError::SessionEnded(reason) => ApiError::new(Problem::Unauthenticated)
            .header(
                "Set-Cookie",
                cookies::expired_session_cookie(cookie_settings).to_string(),
            )
            .cause(reason),
        RefreshError::Unavailable(reason) => {
            ApiError::new(Problem::ProviderUnavailable).cause(reason)
        }
        RefreshError::Session(e) => e.into(),
    }
}
