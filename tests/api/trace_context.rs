//! W3C Trace Context: a valid `traceparent` is continued upstream with gatehouse's own span
//! as the parent; anything else is replaced by a new trace, never forwarded.

use serde_json::Value;

use crate::helpers::echo::{echoed_header as header, raw_request, spawn_echo, EchoUpstream};
use crate::helpers::{captured_logs, spawn_app_with, AppOptions, Route, TestApp};
use gatehouse::edge::trace_context::parse_traceparent;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn app_with_echo() -> (TestApp, EchoUpstream) {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api/echo", &format!("{}/v1", echo.base)).token("none")],
        ..AppOptions::default()
    })
    .await;
    (app, echo)
}

/// The one `traceparent` the upstream received, split: (trace id, parent id, flags).
fn upstream_traceparent(seen: &Value) -> (String, String, String) {
    let values = header(seen, "traceparent");
    assert_eq!(
        values.len(),
        1,
        "exactly one traceparent upstream: {values:?}"
    );
    let parsed = parse_traceparent(values[0].as_bytes())
        .unwrap_or_else(|| panic!("upstream got a malformed traceparent {:?}", values[0]));
    (
        parsed.trace_id.to_owned(),
        parsed.parent_id.to_owned(),
        parsed.flags.to_owned(),
    )
}

/// A proxied GET sent exactly as written; the upstream's report of what it received.
async fn raw_echo(app: &TestApp, extra_headers: &str) -> Value {
    let (status, text) = raw_request(
        app.port,
        &format!(
            "GET /api/echo/t HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\n{extra_headers}Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body = text.split_once("\r\n\r\n").expect("a body").1;
    let json = &body[body.find('{').expect("JSON")..=body.rfind('}').expect("JSON")];
    serde_json::from_str(json).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn a_valid_traceparent_is_continued_with_a_new_parent_id_and_its_tracestate() {
    let (app, _echo) = app_with_echo().await;
    let send = |traceparent: &'static str, tracestate: Option<&'static str>| {
        let mut request = app
            .http
            .get(format!("{}/api/echo/orders", app.base))
            .header("x-csrf", "1")
            .header("traceparent", traceparent);
        if let Some(state) = tracestate {
            request = request.header("tracestate", state);
        }
        request.send()
    };
    let tracestate = "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE";
    let response = send(VALID, Some(tracestate)).await.expect("answer");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let seen: Value = response.json().await.expect("JSON");
    let (trace_id, parent_id, flags) = upstream_traceparent(&seen);
    assert_eq!(trace_id, TRACE_ID, "the trace goes on");
    assert_ne!(parent_id, PARENT_ID, "gatehouse is a new span in it");
    assert_eq!(flags, "01");
    assert_eq!(
        header(&seen, "tracestate"),
        vec![tracestate],
        "passed as it came"
    );

    // Another call in the same trace: another span; unsampled stays unsampled.
    let seen: Value = send(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        None,
    )
    .await
    .expect("answer")
    .json()
    .await
    .expect("JSON");
    let (again, other_parent, flags) = upstream_traceparent(&seen);
    assert_eq!(again, TRACE_ID);
    assert_ne!(other_parent, parent_id, "a new span id per request");
    assert_ne!(other_parent, PARENT_ID);
    assert_eq!(flags, "00");
    assert!(header(&seen, "tracestate").is_empty());

    // Every line of the request carries the trace id.
    let logs = captured_logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&request_id)).collect();
    assert!(!lines.is_empty(), "no log line for request {request_id}");
    for line in lines {
        assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
    }
}

#[tokio::test]
async fn malformed_traceparents_are_replaced_never_forwarded() {
    let (app, _echo) = app_with_echo().await;
    let malformed = [
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", // trace id too short
        "00-4bf92f3577b34da6a3ce929d0e0e47360-00f067aa0ba902b7-01", // too long
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", // parent id too short
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper-case hex
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // all-zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // another version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00", // extra field
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // bad separators
        "00-4bf92f3577b34da6a3ce929d0e0e4736--00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-xy",
        "garbage",
    ];
    for bad in malformed {
        let seen = raw_echo(
            &app,
            &format!("traceparent: {bad}\r\ntracestate: congo=t61rcWkgMzE\r\n"),
        )
        .await;
        let (trace_id, parent_id, flags) = upstream_traceparent(&seen);
        assert_ne!(trace_id, TRACE_ID, "{bad}: a new trace");
        assert_ne!(
            trace_id.to_ascii_uppercase(),
            TRACE_ID.to_ascii_uppercase(),
            "{bad}"
        );
        assert_ne!(parent_id, PARENT_ID, "{bad}");
        assert_eq!(flags, "01", "{bad}");
        assert!(
            header(&seen, "tracestate").is_empty(),
            "{bad}: tracestate belongs to the replaced trace"
        );
    }

    // The header twice, even both valid: which one would be the parent? A new trace.
    let seen = raw_echo(
        &app,
        &format!(
            "traceparent: {VALID}\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
        ),
    )
    .await;
    let (trace_id, _, _) = upstream_traceparent(&seen);
    assert_ne!(trace_id, TRACE_ID);
    assert_ne!(trace_id, "0af7651916cd43dd8448eb211c80319c");

    // A valid one sent raw, in another case of the header name, is continued.
    let seen = raw_echo(&app, &format!("TraceParent: {VALID}\r\n")).await;
    assert_eq!(upstream_traceparent(&seen).0, TRACE_ID);
}

#[tokio::test]
async fn a_request_without_traceparent_gets_a_fresh_trace_upstream() {
    let (app, _echo) = app_with_echo().await;
    let first = raw_echo(&app, "").await;
    // tracestate alone belongs to no trace: dropped.
    let second = raw_echo(&app, "tracestate: congo=t61rcWkgMzE\r\n").await;
    let (first_trace, _, flags) = upstream_traceparent(&first);
    let (second_trace, _, _) = upstream_traceparent(&second);
    assert_eq!(flags, "01");
    assert_ne!(first_trace, second_trace, "a new trace per request");
    assert!(header(&second, "tracestate").is_empty());
}

#[tokio::test]
async fn problem_bodies_carry_the_trace_id() {
    let (app, _echo) = app_with_echo().await;
    // No anti-forgery header: 401 before anything else runs.
    let response = app
        .http
        .get(format!("{}/api/echo/x", app.base))
        .header("traceparent", VALID)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["type"], "urn:gatehouse:problem:csrf-header-required");
    assert_eq!(body["trace_id"], TRACE_ID, "{body}");
    let request_id = body["request_id"].as_str().expect("request id").to_owned();
    let logs = captured_logs();
    assert!(
        logs.lines().any(|l| l.contains(&request_id)
            && l.contains("event=\"csrf.rejected\"")
            && l.contains(TRACE_ID)),
        "the security event carries the trace id"
    );

    let (status, text) = raw_request(
        app.port,
        "GET /api/echo/x HTTP/1.1\r\nHost: x\r\ntraceparent: 00-zz-zz-01\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").expect("body").1.trim())
        .expect("problem JSON");
    let trace_id = body["trace_id"].as_str().expect("a trace id");
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert!(!text.contains("00-zz-zz-01"), "never echoed");
}
