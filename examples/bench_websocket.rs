//! WebSocket load for `bench/run` (wrk speaks no WebSocket).
//!
//! `bench_websocket serve --port N` runs an echo server on 127.0.0.1:N (every text or binary
//! message comes back as it is).
//!
//! `bench_websocket load --url ws://… [--connections 32] [--seconds 10] [--warmup 2]
//! [--size 128] [--header "Name: value"]…` opens the connections, then each sends a binary
//! message of `--size` bytes and waits for its echo, over and over. It prints one line:
//! `RESULT messages=… duration_us=… p50_us=… p99_us=… errors=… total=…` for the measured
//! seconds (`total` counts the warm-up's messages too, for CPU time over the whole run).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match args.first().map(String::as_str) {
        Some("serve") => runtime.block_on(serve(number(&args, "--port", 0) as u16)),
        Some("load") => runtime.block_on(load(&args)),
        _ => {
            eprintln!("usage: bench_websocket serve --port N | load --url ws://… [options]");
            std::process::exit(2);
        }
    }
}

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn number(args: &[String], name: &str, default: u64) -> u64 {
    value(args, name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} wants a number"))
    })
}

async fn serve(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!(
        "{{\"ready\":true,\"port\":{}}}",
        listener.local_addr().expect("addr").port()
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = socket.next().await {
                let echo = matches!(message, Message::Text(_) | Message::Binary(_));
                if echo && socket.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn load(args: &[String]) {
    let url = value(args, "--url").expect("--url");
    let connections = number(args, "--connections", 32) as usize;
    let seconds = number(args, "--seconds", 10);
    let warmup = number(args, "--warmup", 2);
    let size = number(args, "--size", 128) as usize;
    let headers: Vec<(String, String)> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--header")
        .filter_map(|(i, _)| args.get(i + 1))
        .filter_map(|h| h.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();

    let measure_from = Instant::now() + Duration::from_secs(warmup);
    let until = measure_from + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut request = url.into_client_request().expect("a ws:// URL");
        for (name, value) in &headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("header name"),
                value.parse().expect("header value"),
            );
        }
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut total = 0u64;
            let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await else {
                return (latencies, 1u64, total);
            };
            let payload = vec![42u8; size];
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                if socket.send(Message::Binary(payload.clone())).await.is_err() {
                    return (latencies, 1, total);
                }
                match socket.next().await {
                    Some(Ok(Message::Binary(echo))) if echo.len() == size => total += 1,
                    _ => return (latencies, 1, total),
                }
                if sent >= measure_from {
                    latencies.push(sent.elapsed().as_micros() as u64);
                }
            }
            let _ = socket.close(None).await;
            (latencies, 0, total)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut total = 0;
    for task in tasks {
        let (latencies, failed, messages) = task.await.expect("a load task");
        all.extend(latencies);
        errors += failed;
        total += messages;
    }
    all.sort_unstable();
    let percentile = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "RESULT messages={} duration_us={} p50_us={} p99_us={} errors={} total={}",
        all.len(),
        seconds * 1_000_000,
        percentile(0.50),
        percentile(0.99),
        errors,
        total
    );
}
