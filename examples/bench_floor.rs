//! The floor of gatehouse's stack for `bench/run`: actix-web in front, hyper-util's pooled
//! client behind, and nothing else: no session, no cookie, no header filtering, no logging.
//!
//! `bench_floor --port N --upstream http://127.0.0.1:M` answers every request by sending
//! its method and path to the upstream and streaming the answer back. It tells how much of
//! a proxied call's cost is the framework and the client, and how much is gatehouse's own.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

type Upstream = Client<HttpConnector, Empty<bytes::Bytes>>;

struct Target {
    client: Upstream,
    base: String,
}

async fn forward(request: HttpRequest, target: web::Data<Target>) -> HttpResponse {
    let uri = format!(
        "{}{}",
        target.base,
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let upstream_request = http::Request::builder()
        .method(request.method().as_str())
        .uri(uri)
        .body(Empty::new())
        .expect("a request");
    match target.client.request(upstream_request).await {
        Ok(response) => {
            let (head, body) = response.into_parts();
            let mut builder = HttpResponse::build(
                actix_web::http::StatusCode::from_u16(head.status.as_u16()).expect("a status"),
            );
            for (name, value) in &head.headers {
                if name != http::header::CONNECTION && name != http::header::TRANSFER_ENCODING {
                    builder.append_header((name.as_str(), value.as_bytes()));
                }
            }
            let stream = body
                .into_data_stream()
                .map_err(actix_web::error::ErrorBadGateway);
            builder.streaming(stream)
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

fn value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = value(&args, "--port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let base = value(&args, "--upstream")
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
        .trim_end_matches('/')
        .to_owned();
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client = Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(connector);
            App::new()
                .app_data(web::Data::new(Target {
                    client,
                    base: base.clone(),
                }))
                .default_service(web::to(forward))
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
