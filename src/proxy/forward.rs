//! Forwarding a request and its response: which headers cross, how bodies stream (never
//! buffered whole, with backpressure both ways), and the byte tunnel after an upgrade. The
//! API proxy and the dev-server pass-through both use it; neither depends on the other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::headers::{
    connection_tokens, forward_request_header, forward_response_header, same_header, Forwarding,
    RequestHeaderPolicy,
};
use super::upstream::{body_chunks, BoxError, SendFailure, UpstreamResponse};
use crate::config::RouteSettings;
use crate::tls::tls_failure;

/// Chunks in flight between the browser's upload and the upstream: the backpressure window.
const UPLOAD_WINDOW: usize = 8;
/// Bytes read from a file or an upgraded connection at a time.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the route's limit")]
struct BodyLimitExceeded;

#[derive(Debug, thiserror::Error)]
#[error("client upload failed")]
struct ClientUploadFailed;

/// Whether the browser asks to switch this request to a WebSocket.
pub fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    let has_token = |name, token: &str| {
        req.headers().get_all(name).any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// The length the browser declared for its request body, when it declared one.
pub fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether the browser's request has a body to forward.
pub fn has_body(req: &HttpRequest) -> bool {
    declared_length(req).is_some_and(|len| len > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// actix's payload is not `Send`; a local task pumps it into a bounded channel whose
/// receiving end is the upstream request body, so a slow upstream slows the upload.
pub fn upload_chunks(
    mut payload: web::Payload,
    limit: u64,
    too_large: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(UPLOAD_WINDOW);
    actix_web::rt::spawn(async move {
        let mut total: u64 = 0;
        while let Some(chunk) = payload.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    total += bytes.len() as u64;
                    if total > limit {
                        too_large.store(true, Ordering::SeqCst);
                        let _ = sender.send(Err(Box::new(BodyLimitExceeded))).await;
                        return;
                    }
                    Ok(bytes)
                }
                Err(_) => Err(Box::new(ClientUploadFailed) as BoxError),
            };
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                return; // the upstream stopped reading, or the client went away
            }
        }
    });
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// [`upload_chunks`] as a reqwest body (the dev-server pass-through).
pub fn stream_upload(
    payload: web::Payload,
    limit: u64,
    too_large: Arc<AtomicBool>,
) -> reqwest::Body {
    reqwest::Body::wrap_stream(upload_chunks(payload, limit, too_large))
}

/// The browser's headers that may go on to an upstream (see `forward_request_header`).
fn forwardable_request_headers<'r>(
    req: &'r HttpRequest,
    csrf_header: &'r str,
    forwarding: Forwarding,
    route: Option<&'r RouteSettings>,
) -> impl Iterator<Item = (&'r str, &'r [u8])> + 'r {
    let connection_values: Vec<&str> = req
        .headers()
        .get_all(actix_web::http::header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .collect();
    let hop_tokens = connection_tokens(&connection_values);
    req.headers().iter().filter_map(move |(name, value)| {
        let policy = RequestHeaderPolicy {
            forwarding,
            route_headers: route.map_or(&[], |route| route.forward_headers.as_slice()),
            csrf_header,
            connection_tokens: &hop_tokens,
        };
        // A header the route injects from a server-held secret never comes from the browser
        // (asked only of the few headers the allow-list lets through).
        (forward_request_header(name.as_str(), &policy)
            && !route.is_some_and(|route| {
                route
                    .inject_headers
                    .iter()
                    .any(|h| same_header(name.as_str(), &h.name))
            }))
        .then(|| (name.as_str(), value.as_bytes()))
    })
}

/// The browser's headers that may go on, onto a reqwest request (the dev-server pass-through).
pub fn copy_request_headers(
    req: &HttpRequest,
    mut request: reqwest::RequestBuilder,
    csrf_header: &str,
    forwarding: Forwarding,
    route: Option<&RouteSettings>,
) -> reqwest::RequestBuilder {
    for (name, value) in forwardable_request_headers(req, csrf_header, forwarding, route) {
        request = request.header(name, value);
    }
    request
}

/// The browser's headers that may go on, into the upstream request's own map.
pub fn append_request_headers(
    req: &HttpRequest,
    headers: &mut http::HeaderMap,
    csrf_header: &str,
    forwarding: Forwarding,
    route: Option<&RouteSettings>,
) {
    for (name, value) in forwardable_request_headers(req, csrf_header, forwarding, route) {
        // actix parsed both already; the same bytes are valid here too.
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
}

/// The upstream's headers that may go back to the browser (see `forward_response_header`).
pub fn copy_response_headers(
    builder: &mut actix_web::HttpResponseBuilder,
    headers: &http::HeaderMap,
    pass_set_cookie: bool,
) {
    let connection_values: Vec<&str> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let hop_tokens = connection_tokens(&connection_values);
    for (name, value) in headers {
        if forward_response_header(name.as_str(), &hop_tokens, pass_set_cookie) {
            builder.append_header((name.as_str(), value.as_bytes()));
        }
    }
}

/// What gatehouse does to an upstream's response head on its way to the browser.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponsePolicy {
    /// The upstream's `Set-Cookie` reaches the browser.
    pub pass_set_cookie: bool,
    /// The call carried a user's token: an answer without a `Cache-Control` of the
    /// upstream's own gets `private, no-store`, so no shared cache stores user data.
    pub private: bool,
}

const PRIVATE_NO_STORE: header::HeaderValue = header::HeaderValue::from_static("private, no-store");

/// A reqwest response (the dev server's, or a refused WebSocket handshake's) to the browser.
pub fn stream_response(
    response: reqwest::Response,
    policy: ResponsePolicy,
    max_duration: Option<std::time::Duration>,
) -> HttpResponse {
    let (builder, length) = response_head(
        response.status(),
        response.headers(),
        response.content_length(),
        policy,
    );
    with_body(builder, length, response.bytes_stream(), max_duration)
}

/// An API upstream's response to the browser, its body streamed as it arrives.
pub fn stream_upstream_response(
    response: UpstreamResponse,
    policy: ResponsePolicy,
    max_duration: Option<std::time::Duration>,
) -> HttpResponse {
    let (head, body) = response.into_parts();
    let size_hint = hyper::body::Body::size_hint(&body).exact();
    let (builder, length) = response_head(head.status, &head.headers, size_hint, policy);
    with_body(builder, length, body_chunks(body), max_duration)
}

/// The browser's response head, and the length its body will have when that is known.
fn response_head(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    size_hint: Option<u64>,
    policy: ResponsePolicy,
) -> (actix_web::HttpResponseBuilder, Option<u64>) {
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    copy_response_headers(&mut builder, headers, policy.pass_set_cookie);
    if policy.private && !headers.contains_key(http::header::CACHE_CONTROL) {
        builder.insert_header((header::CACHE_CONTROL, PRIVATE_NO_STORE));
    }
    // A HEAD answer has no body but states the length of the one a GET would get; keep it.
    let declared_length: Option<u64> = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (builder, declared_length.or(size_hint))
}

fn with_body<S, E>(
    mut builder: actix_web::HttpResponseBuilder,
    length: Option<u64>,
    body: S,
    max_duration: Option<std::time::Duration>,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + 'static,
    E: Into<Box<dyn std::error::Error>> + 'static,
{
    match (length, max_duration) {
        // A stream that may be cut short has no length to promise.
        (_, Some(limit)) => {
            builder.body(BodyStream::new(body.take_until(tokio::time::sleep(limit))))
        }
        (Some(length), None) => builder.body(SizedStream::new(length, body)),
        (None, None) => builder.body(BodyStream::new(body)),
    }
}

/// Reads `reader` in chunks of up to [`CHUNK`] bytes until it ends or fails.
pub fn read_chunks<R>(reader: R) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>
where
    R: tokio::io::AsyncRead + Unpin + 'static,
{
    futures_util::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buffer = BytesMut::with_capacity(CHUNK);
        match reader.read_buf(&mut buffer).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buffer.freeze()), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The upstream accepted an upgrade: answer 101 with its handshake headers, then copy bytes
/// both ways until either side closes. actix hands an upgraded request's payload over as the
/// raw stream from the browser, and sends a 101's body raw. `None` when the upstream's
/// connection could not be taken over.
pub async fn byte_tunnel(
    response: reqwest::Response,
    mut payload: web::Payload,
) -> Option<HttpResponse> {
    let mut answer = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    answer.upgrade("websocket");
    copy_response_headers(&mut answer, response.headers(), false);
    let upgraded = response.upgrade().await.ok()?;
    let (from_upstream, mut to_upstream) = tokio::io::split(upgraded);
    actix_web::rt::spawn(async move {
        while let Some(Ok(chunk)) = payload.next().await {
            if to_upstream.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to_upstream.shutdown().await;
    });
    Some(answer.body(BodyStream::new(read_chunks(from_upstream))))
}

/// Why a reqwest request (a WebSocket handshake) got no response head: its kind, never its
/// text (which carries the upstream URL). The API proxy's own client has `upstream::classify`.
pub fn reqwest_failure(error: &reqwest::Error) -> SendFailure {
    if error.is_timeout() {
        return SendFailure::Timeout;
    }
    if let Some(tls) = tls_failure(error) {
        return SendFailure::Tls(tls.to_string());
    }
    SendFailure::Unreachable(if error.is_connect() {
        "connection failed"
    } else if error.is_body() {
        "body transfer failed"
    } else if error.is_request() {
        "request failed"
    } else {
        "upstream failed"
    })
}
