//! The frontend behind every path no other route takes: files from the frontend directory,
//! or a dev server passed through (HTTP and WebSocket upgrades for hot reload).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use url::Url;

use crate::error::{ApiError, Problem};
use crate::frontend::{self, Frontend, StaticFile};
use crate::proxy::forward::{
    byte_tunnel, copy_request_headers, declared_length, has_body, is_websocket_upgrade,
    read_chunks, stream_response, stream_upload, ResponsePolicy,
};
use crate::proxy::headers::Forwarding;

/// Files up to this size are read whole in the lookup's blocking call.
const SMALL_FILE: u64 = 256 * 1024;
/// How long a dev server may take to answer (its bodies then stream without a limit).
const DEV_SERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Uploads to a dev server (it is a development tool; this only bounds mistakes).
const DEV_SERVER_MAX_BODY: u64 = 100 * 1024 * 1024;

/// The HTTP client for a dev server: no redirects followed, and no read timeout, so an idle
/// hot-reload WebSocket is not cut.
pub fn dev_server_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
}

/// `path` is the request's normal path (`NormalPath`).
pub async fn serve(
    req: &HttpRequest,
    path: &str,
    payload: web::Payload,
    (frontend, dev_server_http): (&Frontend, &reqwest::Client),
    csrf_header: &str,
) -> Result<HttpResponse, ApiError> {
    match frontend {
        Frontend::DevServer(origin) => {
            pass_through(req, path, payload, (dev_server_http, origin), csrf_header).await
        }
        Frontend::Dir(root) if matches!(*req.method(), Method::GET | Method::HEAD) => {
            serve_file(req, path, root.clone()).await
        }
        Frontend::Dir(_) | Frontend::None => Err(ApiError::new(Problem::NotFound)),
    }
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

async fn serve_file(
    req: &HttpRequest,
    path: &str,
    root: std::path::PathBuf,
) -> Result<HttpResponse, ApiError> {
    let header_text = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = path.to_owned();
    let accept = header_text(header::ACCEPT);
    let accept_encoding = header_text(header::ACCEPT_ENCODING);
    let if_none_match = header_text(header::IF_NONE_MATCH);
    let wants_body = req.method() != Method::HEAD;
    // One trip to the blocking pool: look the file up and, when it is small (most of an SPA
    // build), read it there too; larger files stream in chunks.
    let found = web::block(move || {
        let file = frontend::lookup(&root, &path, accept.as_deref(), accept_encoding.as_deref())?;
        let not_modified = if_none_match.is_some_and(|tags| file.matches(&tags));
        let contents = (wants_body && !not_modified && file.len <= SMALL_FILE)
            .then(|| std::fs::read(&file.path));
        Some((file, not_modified, contents))
    })
    .await
    .map_err(|e| ApiError::new(Problem::Internal).cause(e))?;
    let Some((file, not_modified, contents)) = found else {
        return Err(ApiError::new(Problem::NotFound));
    };

    if not_modified {
        let mut response = HttpResponse::NotModified();
        describe(&mut response, &file);
        return Ok(response.finish());
    }
    let mut response = HttpResponse::Ok();
    describe(&mut response, &file);
    response.insert_header((header::CONTENT_TYPE, file.content_type));
    if let Some(encoding) = file.encoding {
        response.insert_header((header::CONTENT_ENCODING, encoding.token()));
    }
    match contents {
        Some(Ok(bytes)) if bytes.len() as u64 == file.len => Ok(response.body(bytes)),
        // Changed between lookup and read (a deployment in progress): stream what is there.
        Some(_) | None => {
            let opened = tokio::fs::File::open(&file.path)
                .await
                .map_err(|e| ApiError::new(Problem::NotFound).cause(e))?;
            Ok(response.body(SizedStream::new(file.len, read_chunks(opened))))
        }
    }
}

/// The headers a 200 and a 304 share.
fn describe(response: &mut actix_web::HttpResponseBuilder, file: &StaticFile) {
    response
        .insert_header((header::CACHE_CONTROL, file.cache_control))
        .insert_header((header::ETAG, file.etag.as_str()))
        // The body depends on Accept-Encoding whenever a variant might exist.
        .insert_header((header::VARY, "Accept-Encoding"));
}

// ---------------------------------------------------------------------------------------
// Dev server
// ---------------------------------------------------------------------------------------

async fn pass_through(
    req: &HttpRequest,
    path: &str,
    payload: web::Payload,
    (http, origin): (&reqwest::Client, &Url),
    csrf_header: &str,
) -> Result<HttpResponse, ApiError> {
    let mut url = origin.clone();
    url.set_path(path);
    url.set_query(Some(req.query_string()).filter(|q| !q.is_empty()));
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::new(Problem::MethodNotAllowed))?;
    let websocket = is_websocket_upgrade(req);
    let mut payload = Some(payload);

    let mut request = http.request(method, url).version(reqwest::Version::HTTP_11);
    // The API allow-list plus what page loads and a hot-reload socket need: no cookie, no
    // anti-forgery header, no identity headers, no hop-by-hop headers.
    request = copy_request_headers(req, request, csrf_header, Forwarding::DevServer, None);
    if websocket {
        request = request
            .header("connection", "Upgrade")
            .header("upgrade", "websocket");
    } else {
        if has_body(req) {
            if let Some(len) = declared_length(req) {
                request = request.header("content-length", len);
            }
            request = request.body(stream_upload(
                payload
                    .take()
                    .ok_or_else(|| ApiError::new(Problem::Internal))?,
                DEV_SERVER_MAX_BODY,
                Arc::new(AtomicBool::new(false)),
            ));
        }
    }

    let response = match tokio::time::timeout(DEV_SERVER_TIMEOUT, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if !e.is_timeout() => {
            return Err(dev_server_down().cause(if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            }))
        }
        _ => return Err(ApiError::new(Problem::UpstreamTimeout)),
    };
    if websocket && response.status() == reqwest::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(payload) = payload {
            return byte_tunnel(response, payload)
                .await
                .ok_or_else(|| dev_server_down().cause("websocket upgrade failed"));
        }
    }
    Ok(stream_response(response, ResponsePolicy::default(), None))
}

fn dev_server_down() -> ApiError {
    ApiError::new(Problem::UpstreamUnreachable)
        .detail("The frontend dev server (frontend.dev_server) is not answering: is it running?")
}
