//! Trace export over OTLP/HTTP: the gatehouse binary with `[telemetry] otlp_endpoint` sends
//! one trace per request — the server span, its provider and store calls, its upstream call
//! — under the browser's trace id; a collector that hangs costs requests nothing, and what
//! could not be queued is counted.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::echo::{echoed_header, spawn_echo};
use crate::helpers::gatehouse_process::GatehouseProcess;
use crate::helpers::otlp_receiver::{
    attribute, hanging_receiver, hex, spans_as_text, OtlpReceiver,
};
use crate::helpers::processes::{artifacts_dir, ProviderOptions, ProviderProcess};
use crate::helpers::scrape::{scrape_at, value};
use crate::helpers::{
    random_name, record_secret, spawn_app_with, AppOptions, Route, SessionKeys, Telemetry,
};
use gatehouse::edge::trace_context::parse_traceparent;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn in_trace(spans: &[Span], trace_id: &str) -> Vec<Span> {
    spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .cloned()
        .collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// What the receiver got goes where the whole-run secret check reads.
fn keep_for_secret_check(spans: &[Span]) -> String {
    let text = spans_as_text(spans);
    std::fs::write(
        artifacts_dir().join(format!("{}.txt", random_name("otlp-spans-"))),
        &text,
    )
    .expect("write spans");
    text
}

#[tokio::test]
async fn a_proxied_call_with_a_refresh_is_one_trace_under_the_browsers_trace_id() {
    let receiver = OtlpReceiver::start().await;
    let echo = spawn_echo().await;
    // Two-second access tokens, refreshed in their last second.
    let provider = ProviderProcess::start(&ProviderOptions {
        access_token_ttl_secs: 2,
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        routes: vec![Route::new("/api", &echo.base).token("user")],
        session: SessionKeys::long().refresh_skew_secs(1),
        telemetry: Some(Telemetry::otlp(&receiver.endpoint)),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let before = browser.tokens().await;
    let gatehouse = GatehouseProcess::start(&app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let response = app
        .http
        .get(format!("{}/api/orders?code=not-a-code", gatehouse.base))
        .header("x-csrf", "1")
        .header("traceparent", TRACEPARENT)
        .header("cookie", format!("{}={cookie}", app.cookie_name()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200, "{}", gatehouse.logs());
    let seen: Value = response.json().await.expect("JSON");
    let after = browser.tokens().await;
    assert_ne!(
        before.access_token.expose_secret(),
        after.access_token.expose_secret(),
        "the call refreshed the session's tokens"
    );

    let spans = receiver
        .wait_for(|spans| {
            let trace = in_trace(spans, TRACE_ID);
            ["request", "provider.refresh", "upstream GET"]
                .iter()
                .all(|name| !named(&trace, name).is_empty())
        })
        .await;
    let trace = in_trace(&spans, TRACE_ID);
    let server = named(&trace, "request");
    assert_eq!(server.len(), 1, "one server span for the one request");
    let server = server[0];
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT_ID,
        "the server span continues the browser's span"
    );
    let server_id = hex(&server.span_id);

    let refresh = named(&trace, "provider.refresh");
    assert_eq!(refresh.len(), 1, "one refresh");
    assert_eq!(refresh[0].kind, SpanKind::Client as i32);
    assert_eq!(hex(&refresh[0].parent_span_id), server_id);
    assert_eq!(
        attribute(&refresh[0].attributes, "gatehouse.provider").as_deref(),
        Some("main")
    );

    let upstream = named(&trace, "upstream GET");
    assert_eq!(upstream.len(), 1, "one upstream call");
    assert_eq!(upstream[0].kind, SpanKind::Client as i32);
    assert_eq!(hex(&upstream[0].parent_span_id), server_id);
    assert_eq!(
        attribute(&upstream[0].attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    // The upstream's traceparent: the browser's trace, the upstream span as its parent.
    let sent = echoed_header(&seen, "traceparent");
    assert_eq!(sent.len(), 1);
    let sent = parse_traceparent(sent[0].as_bytes()).expect("a valid traceparent");
    assert_eq!(sent.trace_id, TRACE_ID);
    assert_eq!(sent.parent_id, hex(&upstream[0].span_id));

    // The store's operations are in the trace, each under the request.
    let store: Vec<&Span> = trace
        .iter()
        .filter(|s| s.name.starts_with("store."))
        .collect();
    assert!(
        !store.is_empty(),
        "store spans: {:?}",
        trace.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for span in &store {
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert!(
            trace
                .iter()
                .any(|parent| parent.span_id == span.parent_span_id),
            "{} has its parent in the trace",
            span.name
        );
    }
    // The log carries the same trace id.
    assert!(gatehouse.logs().contains(TRACE_ID), "{}", gatehouse.logs());

    // No attribute or event holds a token, the cookie or a code.
    let text = keep_for_secret_check(&spans);
    for secret in [
        cookie.as_str(),
        before.access_token.expose_secret(),
        after.access_token.expose_secret(),
        before
            .refresh_token
            .as_ref()
            .expect("refresh token")
            .expose_secret(),
        after
            .refresh_token
            .as_ref()
            .expect("refresh token")
            .expose_secret(),
        before.id_token.expose_secret(),
        "not-a-code",
    ] {
        record_secret(secret);
        assert!(!text.contains(secret), "a secret in the spans:\n{text}");
    }
}

/// Medians of `n` GETs of `url`, in milliseconds.
async fn median_ms(http: &reqwest::Client, url: &str, n: usize) -> f64 {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = http
            .get(url)
            .header("x-csrf", "1")
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[n / 2]
}

#[tokio::test]
async fn a_collector_that_hangs_costs_requests_nothing_and_the_dropped_spans_are_counted() {
    let echo = spawn_echo().await;
    let options = || AppOptions {
        routes: vec![Route::new("/open", &echo.base).token("none")],
        admin: true,
        ..AppOptions::default()
    };
    let plain = spawn_app_with(options()).await;
    let hanging = spawn_app_with(AppOptions {
        telemetry: Some(
            Telemetry::otlp(&hanging_receiver().await)
                .queue_size(8)
                .export_timeout_secs(60),
        ),
        share: Some(&plain),
        ..options()
    })
    .await;
    let off = GatehouseProcess::start(&plain).await;
    let exporting = GatehouseProcess::start(&hanging).await;
    let http = reqwest::Client::new();
    // The first spans go out in an export that now waits for the collector's answer.
    let _ = median_ms(&http, &format!("{}/open/warm-up", exporting.base), 3).await;
    let _ = median_ms(&http, &format!("{}/open/warm-up", off.base), 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut exporter_off = Vec::new();
    let mut exporter_stuck = Vec::new();
    for _ in 0..5 {
        exporter_off.push(median_ms(&http, &format!("{}/open/x", off.base), 20).await);
        exporter_stuck.push(median_ms(&http, &format!("{}/open/x", exporting.base), 20).await);
    }
    exporter_off.sort_by(|a, b| a.total_cmp(b));
    exporter_stuck.sort_by(|a, b| a.total_cmp(b));
    let (off_ms, stuck_ms) = (exporter_off[2], exporter_stuck[2]);
    println!("median latency: exporter off {off_ms:.2} ms, collector hanging {stuck_ms:.2} ms");
    assert!(
        stuck_ms < off_ms * 3.0 + 20.0,
        "a hanging collector slowed requests: {stuck_ms:.2} ms against {off_ms:.2} ms"
    );

    let admin = exporting.admin_base.as_deref().expect("admin listener");
    let dropped = value(
        &scrape_at(&http, admin).await,
        "gatehouse_trace_spans_dropped_total",
        &[],
    );
    // 100 requests of two spans each (server, upstream) against a queue of 8.
    assert!(
        dropped >= 150.0,
        "dropped spans counted: {dropped}; {}",
        exporting.logs()
    );
    let off_admin = off.admin_base.as_deref().expect("admin listener");
    assert_eq!(
        value(
            &scrape_at(&http, off_admin).await,
            "gatehouse_trace_spans_dropped_total",
            &[]
        ),
        0.0,
        "nothing is dropped without export"
    );
}
