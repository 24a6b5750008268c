//! The request middleware: the request's span, id and trace context, the edge's refusals,
//! and the headers every answer gets.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use std::rc::Rc;

use actix_web::dev::Extensions;
use actix_web::{web, Error, HttpMessage};
use tracing::Instrument;

use super::body::{self as request_body, BodyLimits, CutFlag, HeldBody};
use super::trace_context::TraceContext;
use crate::edge;
use crate::error::ApiError;
use crate::live::LiveState;
use crate::observability::metrics;
use crate::observability::telemetry::{
    acceptable_request_id, new_request_id, RequestId, REQUEST_ID_HEADER, TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
};
use crate::observability::trace_export;
use crate::proxy::path::{normalise_request_path, NormalPath, UnsafePath};
use crate::ratelimit::RateLimitHeaders;
use crate::state::{AppState, EdgeSettings};

/// Everything decided once per request before routing, in one middleware (one boxed call
/// and one future per request, where a layer per step would cost one each), as named
/// steps in order:
/// 1. [`identify`]: the request id, the trace context (W3C, continued or new) and the
///    client's address, kept in the request's extensions and on its span;
/// 2. [`normalise_request_path`]: the one path every later step reads (`NormalPath`);
/// 3. [`admit`]: the edge's refusals — an oversized head (431), an unsafe path (400), a
///    body over its endpoint's cap (413) — and the deadline on the body;
/// 4. the handler, or the refusal; a body cut off answers for itself ([`answer_for_cut`]);
/// 5. [`render`]: an error as problem+json with the request and trace ids;
/// 6. [`add_headers`]: the request id, the rate-limit headers, the security headers;
/// 7. the connection held busy until the answer has gone out, and the request counted.
pub async fn front(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let ticket = edge::hold_connection(&req);
    let state = attach_live_state(&mut req);
    let mut ids = identify(&req, state.as_ref().map(|state| &state.edge));
    let normal_path = normalise_request_path(req.path());
    // Only with an admin listener: otherwise no one reads the numbers.
    let measure = state.as_ref().filter(|state| state.measured).map(|state| {
        let path = match &normal_path {
            Ok(Some(normal)) => normal.as_str(),
            _ => req.path(),
        };
        let measure =
            metrics::RequestMeasure::begin(req.method(), path, &state.proxy.table, &state.metrics);
        (measure, state.metrics.clone())
    });
    // The path only: a query can carry an authorization code.
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        request_id = %ids.request_id,
        trace_id = tracing::field::Empty,
        method = %req.method(),
        path = %req.path(),
        client_ip = %OptionalIp(ids.client),
    );
    // With trace export, the exported server span is this request's span in the trace:
    // the log, the upstream's `traceparent` and the export name the same ids.
    if let Some(exported) = trace_export::join(&span, &ids.trace) {
        ids.trace.trace_id = exported.trace_id;
        ids.trace.span_id = exported.span_id;
    }
    span.record("trace_id", tracing::field::display(&ids.trace.trace_id));
    let normal_path = {
        let mut extensions = req.extensions_mut();
        extensions.insert(RequestId(ids.request_id.clone()));
        extensions.insert(ids.trace.clone());
        normal_path.map(|normal| {
            extensions.insert(NormalPath(normal));
        })
    };
    let handled = async move {
        let state = state.as_ref().map(|state| state.get_ref());
        let admitted = admit(&mut req, state, normal_path);
        let (response, cut_off) = match admitted {
            Err(problem) => (req.error_response(problem), None),
            Ok(guarded) => answer_for_cut(next.call(req).await?.map_into_boxed_body(), guarded),
        };
        let mut response = render(response, &ids);
        if let Some(rest) = cut_off {
            // The rest of that body is never read: the connection closes once this is sent.
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            response = response
                .map_body(|_, body| rest.keep_until_sent(body))
                .map_into_boxed_body();
        }
        // Draining: this answer is the connection's last, so a kept-alive client moves to
        // another instance and the drain is not held up by idle connections.
        if state.is_some_and(|state| state.drain.is_draining()) {
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        add_headers(
            &mut response,
            &ids.request_id,
            state.map(|state| &state.edge),
        );
        Ok(edge::release_when_sent(response, ticket))
    }
    .instrument(span);
    match measure {
        None => handled.await,
        Some((measure, metrics)) => {
            let response = handled.await?;
            measure.finish(&metrics, response.status().as_u16());
            Ok(response)
        }
    }
}

/// The state in force when the request starts, for the whole of it: handlers extract it
/// as `web::Data<AppState>`, and a reload meanwhile does not change it under them.
pub fn attach_live_state(req: &mut ServiceRequest) -> Option<web::Data<AppState>> {
    let live = req.app_data::<web::Data<LiveState>>()?;
    let state = web::Data::from(live.load_full());
    let mut container = Extensions::new();
    container.insert(state.clone());
    req.add_data_container(Rc::new(container));
    Some(state)
}

/// [`attach_live_state`] as a middleware of its own (the admin listener's).
pub async fn with_live_state(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    attach_live_state(&mut req);
    next.call(req).await
}

/// Who and what the request is, for its span, its log lines and the upstream.
struct Ids {
    request_id: String,
    trace: TraceContext,
    client: Option<std::net::IpAddr>,
}

/// Step 1: a well-formed `X-Request-Id` or a new one, the trace context, and the client's
/// address (a trusted proxy's `X-Forwarded-For` only).
fn identify(req: &ServiceRequest, edge: Option<&EdgeSettings>) -> Ids {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(acceptable_request_id)
        .unwrap_or_else(new_request_id);
    let trace = TraceContext::from_headers(
        req.headers()
            .get_all(TRACEPARENT_HEADER)
            .map(HeaderValue::as_bytes),
        req.headers()
            .get_all(TRACESTATE_HEADER)
            .map(HeaderValue::as_bytes),
        |buf| rand::Rng::fill(&mut rand::thread_rng(), buf),
    );
    let client = edge.map(|edge| edge::identify_client(req, &edge.trusted_proxies));
    Ids {
        request_id,
        trace,
        client,
    }
}

/// Step 3: the head within `max_header_bytes`, a safe path, then the body's deadline and
/// cap.
fn admit(
    req: &mut ServiceRequest,
    state: Option<&AppState>,
    normal_path: Result<(), UnsafePath>,
) -> Result<Option<(CutFlag, BodyLimits)>, ApiError> {
    if let Some(state) = state {
        edge::check_head_size(req.headers(), state.edge.max_header_bytes)?;
    }
    normal_path?;
    guard_body(req, state)
}

/// Step 4: the handler's answer, unless its body was cut off: then 408 or 413 (whatever the
/// handler made of the error it read), with the unread rest to hold until it is sent.
fn answer_for_cut(
    response: ServiceResponse<BoxBody>,
    guarded: Option<(CutFlag, BodyLimits)>,
) -> (ServiceResponse<BoxBody>, Option<HeldBody>) {
    match guarded.and_then(|(cut, limits)| Some((cut.take()?, limits))) {
        Some(((cut, rest), limits)) => (response.error_response(cut.problem(limits)), Some(rest)),
        None => (response, None),
    }
}

/// Step 5: an error as problem+json, logged with its cause (never shown).
fn render(response: ServiceResponse<BoxBody>, ids: &Ids) -> ServiceResponse<BoxBody> {
    let status = response.status();
    let Some(api_error) = response
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
    else {
        tracing::debug!(status = status.as_u16(), "request done");
        return response;
    };
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), error = %api_error, "request failed");
    } else {
        tracing::info!(status = status.as_u16(), error = %api_error, "request rejected");
    }
    let rendered = api_error.render(&ids.request_id, Some(&ids.trace.trace_id));
    response.into_response(rendered).map_into_boxed_body()
}

/// Step 6: the request id, the rate-limit headers of a counted call, and last the security
/// headers (so that problem answers get them too; a header the answer set itself, a
/// route's own CSP say, is kept).
fn add_headers(
    response: &mut ServiceResponse<BoxBody>,
    request_id: &str,
    edge: Option<&EdgeSettings>,
) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let rate_limit = response
        .request()
        .extensions()
        .get::<RateLimitHeaders>()
        .cloned();
    for (name, value) in rate_limit.iter().flat_map(|headers| headers.0.iter()) {
        let name = HeaderName::from_static(name);
        if let (false, Ok(value)) = (
            response.headers().contains_key(&name),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    for (name, value) in edge.iter().flat_map(|edge| edge.security_headers.iter()) {
        if !response.headers().contains_key(name) {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
}

/// The deadline and cap on a request's body (`request_body`), for a request that may have
/// one; the cut flag to check once the handler has answered.
fn guard_body(
    req: &mut ServiceRequest,
    state: Option<&AppState>,
) -> Result<Option<(CutFlag, BodyLimits)>, ApiError> {
    let Some(state) = state else { return Ok(None) };
    if !request_body::may_have_body(req) {
        return Ok(None);
    }
    let limits = state.edge.body_limits;
    // The path is borrowed only while the policy is decided (no copy per request).
    let policy = {
        let path = NormalPath::of(req.request())?;
        let streamed = matches!(state.proxy.table.find(&path), Ok(Some(_)))
            || matches!(state.frontend, crate::frontend::Frontend::DevServer(_));
        request_body::policy_for(&path, streamed)
    };
    request_body::guard(req, policy, limits).map(|cut| Some((cut, limits)))
}

/// A client IP for the span, formatted once with the span's other fields.
struct OptionalIp(Option<std::net::IpAddr>);

impl std::fmt::Display for OptionalIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}
