//! A real upstream API for proxy tests: it reports what it received.
//!
//! - any path: JSON `{method, path, query, headers: [[name, value]…], body_len, body_sha256}`
//! - `/slow?ms=N`: waits N ms first
//! - `/redirect`: 302 to `/elsewhere`
//! - `/download?bytes=N`: N bytes of a fixed pattern, streamed
//! - `/set-cookie`: answers with a `Set-Cookie`
//! - `/cache-control?value=V`: answers with `Cache-Control: V`
//! - `/events?count=N&ms=M`: server-sent events; with `&lockstep=1` each after the first
//!   waits for [`EchoUpstream::release_next_event`]
//! - `/challenge?www_authenticate=V`: 401 with `WWW-Authenticate: V`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct EchoUpstream {
    pub base: String,
    seen: Arc<Mutex<Vec<String>>>,
    events_released: Arc<tokio::sync::Semaphore>,
}

impl EchoUpstream {
    /// Paths (with query) of every request that reached the upstream.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }

    /// Lets a lock-step event stream send its next event.
    pub fn release_next_event(&self) {
        self.events_released.add_permits(1);
    }
}

/// The values of one request header as the echo upstream reports it (any case of the name).
pub fn echoed_header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|pair| pair[1].as_str())
        .collect()
}

pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 7)) as u8
}

pub fn pattern_sha256(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut i = 0;
    while i < len {
        buf.clear();
        let end = (i + 64 * 1024).min(len);
        buf.extend((i..end).map(pattern_byte));
        hasher.update(&buf);
        i = end;
    }
    hex(&hasher.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn handle(
    req: HttpRequest,
    mut body: web::Payload,
    seen: web::Data<Arc<Mutex<Vec<String>>>>,
    events_released: web::Data<Arc<tokio::sync::Semaphore>>,
) -> HttpResponse {
    let path_and_query = match req.query_string() {
        "" => req.path().to_owned(),
        q => format!("{}?{q}", req.path()),
    };
    seen.lock().expect("seen").push(path_and_query);
    let query: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();

    let mut hasher = Sha256::new();
    let mut body_len: u64 = 0;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return HttpResponse::BadRequest().finish();
        };
        body_len += chunk.len() as u64;
        hasher.update(&chunk);
    }

    match req.path() {
        "/slow" => {
            let ms = query.get("ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        "/redirect" => {
            return HttpResponse::Found()
                .insert_header(("Location", "/elsewhere"))
                .finish()
        }
        "/cache-control" => {
            let value = query.get("value").cloned().unwrap_or_default();
            return HttpResponse::Ok()
                .insert_header(("Cache-Control", value))
                .body("cached as the upstream says");
        }
        "/challenge" => {
            let value = query.get("www_authenticate").cloned().unwrap_or_default();
            return HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", value))
                .body("the upstream's own 401");
        }
        "/set-cookie" => {
            return HttpResponse::Ok()
                .insert_header(("Set-Cookie", "upstream=1; Path=/"))
                .body("cookie set");
        }
        // Server-sent events: `count` events, `ms` apart, each carrying when it was sent
        // (Unix ms), so a client can tell how late it arrived. In lock-step, each event
        // after the first also waits until the client lets it go.
        "/events" => {
            let count: u64 = query
                .get("count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            let ms: u64 = query.get("ms").and_then(|v| v.parse().ok()).unwrap_or(200);
            let released = query
                .get("lockstep")
                .is_some_and(|v| v == "1")
                .then(|| events_released.get_ref().clone());
            let events = futures_util::stream::unfold(0u64, move |i| {
                let released = released.clone();
                async move {
                    if i == count {
                        return None;
                    }
                    if let (Some(released), true) = (released, i > 0) {
                        released.acquire().await.expect("open").forget();
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let sent = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("time")
                        .as_millis();
                    let event = format!("id: {i}\ndata: {sent}\n\n");
                    Some((Ok::<_, std::io::Error>(web::Bytes::from(event)), i + 1))
                }
            });
            return HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header(("Cache-Control", "no-cache"))
                .streaming(events);
        }
        "/download" => {
            let len: u64 = query.get("bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
            let chunks =
                futures_util::stream::iter((0..len).step_by(64 * 1024).map(move |start| {
                    let end = (start + 64 * 1024).min(len);
                    Ok::<_, std::io::Error>(web::Bytes::from(
                        (start..end).map(pattern_byte).collect::<Vec<u8>>(),
                    ))
                }));
            return HttpResponse::Ok().body(actix_web::body::SizedStream::new(len, chunks));
        }
        _ => {}
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": req.query_string(),
        "headers": headers,
        "body_len": body_len,
        "body_sha256": hex(&hasher.finalize()),
    }))
}

pub async fn spawn_echo() -> EchoUpstream {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let data = web::Data::new(seen.clone());
    let events_released = Arc::new(tokio::sync::Semaphore::new(0));
    let released = web::Data::new(events_released.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(released.clone())
            .default_service(web::to(handle))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind echo");
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    EchoUpstream {
        base: format!("http://127.0.0.1:{port}"),
        seen,
        events_released,
    }
}

/// Sends a request exactly as written (reqwest would normalise a hostile path away) and
/// returns the status code and the whole response text.
pub async fn raw_request(port: u16, request_line_and_headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(request_line_and_headers.as_bytes())
        .await
        .expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    (status_of(&text), text)
}

/// The status code of a raw HTTP/1.1 response (0 when there is none).
pub fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
