//! The request middleware: the request's span, id and trace context, the edge's refusals,
//! and the headers every answer gets.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use tracing::Instrument;

use super::{
    acceptable_request_id, new_request_id, RequestId, REQUEST_ID_HEADER, TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
};
use crate::edge;
use crate::error::ApiError;
use crate::metrics;
use crate::proxy::path::{normalise_request_path, NormalPath};
use crate::ratelimit::RateLimitHeaders;
use crate::request_body::{self, BodyLimits, CutFlag};
use crate::routes::AppState;
use crate::trace_context::TraceContext;

/// Everything decided once per request before routing, in one middleware (one boxed call
/// and one future per request, where three layers cost three): the request's span with its
/// id, trace id (W3C Trace Context, continued or new: see `trace_context`) and client IP;
/// the edge's refusals (an oversized head: 431; an unsafe path: 400), rendered like a
/// handler's problem; the request id echoed and the rate-limit headers added; and the
/// connection held busy until the response has gone out.
pub async fn front(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let ticket = edge::hold_connection(&req);
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
    let trace_id = trace.trace_id.clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let server = state.as_ref().map(|state| &state.settings.server);
    let client = server.map(|server| edge::identify_client(&req, &server.trusted_proxies));
    let head_limit = server.map(|server| server.max_header_bytes);
    // Decided once: everything after this reads the normal form, never the raw path.
    let normal_path = normalise_request_path(req.path());
    // Only with an admin listener: otherwise no one reads the numbers.
    let measure = state
        .as_ref()
        .filter(|state| state.measured())
        .map(|state| {
            let path = match &normal_path {
                Ok(Some(normal)) => normal.as_str(),
                _ => req.path(),
            };
            let measure = metrics::RequestMeasure::begin(
                req.method(),
                path,
                &state.proxy.table,
                &state.metrics,
            );
            (measure, state.metrics.clone())
        });
    let normal_path = {
        let mut extensions = req.extensions_mut();
        extensions.insert(RequestId(request_id.clone()));
        extensions.insert(trace);
        normal_path.map(|normal| {
            extensions.insert(NormalPath(normal));
        })
    };
    // The path only: a query can carry an authorization code.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        trace_id = %trace_id,
        method = %req.method(),
        path = %req.path(),
        client_ip = %OptionalIp(client),
    );
    let handled = async move {
        let refusal = head_limit
            .map_or(Ok(()), |limit| edge::check_head_size(req.headers(), limit))
            .and_then(|()| normal_path.map_err(ApiError::from))
            .and_then(|()| guard_body(&mut req, state.as_ref().map(|state| state.get_ref())));
        let (response, cut_off) = match refusal {
            Err(problem) => (req.error_response(problem), None),
            Ok(guarded) => {
                let response = next.call(req).await?.map_into_boxed_body();
                // A body cut off answers for itself, whatever the handler made of the error
                // it read.
                match guarded.and_then(|(cut, limits)| Some((cut.take()?, limits))) {
                    Some(((cut, rest), limits)) => {
                        (response.error_response(cut.problem(limits)), Some(rest))
                    }
                    None => (response, None),
                }
            }
        };
        let status = response.status();
        let mut response = match response.response().error().and_then(|e| e.as_error::<ApiError>()) {
            Some(api_error) => {
                if status.is_server_error() {
                    tracing::error!(status = status.as_u16(), error = %api_error, "request failed");
                } else {
                    tracing::info!(status = status.as_u16(), error = %api_error, "request rejected");
                }
                let rendered = api_error.render(&request_id, Some(&trace_id));
                response.into_response(rendered).map_into_boxed_body()
            }
            None => {
                tracing::debug!(status = status.as_u16(), "request done");
                response
            }
        };
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
        // Last, so that the problem responses rendered above get them as well; a header the
        // response set itself (a route's own CSP, say) is kept.
        for (name, value) in state.iter().flat_map(|state| state.security_headers.iter()) {
            if !response.headers().contains_key(name) {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
        Ok(edge::release_when_sent(response, ticket))
    }
    .instrument(span);
    match measure {
        None => handled.await,
        Some((measure, metrics)) => {
            let response = metrics.scope(handled).await?;
            measure.finish(&metrics, response.status().as_u16());
            Ok(response)
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
    let server = &state.settings.server;
    let limits = BodyLimits {
        timeout: server.body_timeout,
        min_bytes_per_sec: server.body_min_bytes_per_sec,
    };
    let path = NormalPath::of(req.request())?.into_owned();
    let streamed = matches!(state.proxy.table.find(&path), Ok(Some(_)))
        || matches!(state.frontend, crate::frontend::Frontend::DevServer(_));
    let policy = request_body::policy_for(&path, streamed);
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
