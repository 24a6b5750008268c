use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::echo::{
    echoed_header as header, pattern_byte, pattern_sha256, raw_request, spawn_echo,
};
use crate::helpers::{spawn_app_with, AppOptions, Route, TestApp};

async fn app_with_routes(routes: Vec<Route>) -> TestApp {
    spawn_app_with(AppOptions {
        routes,
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn calls_reach_the_upstream_with_a_live_token_and_nothing_of_the_browser() {
    let echo = spawn_echo().await;
    let app = app_with_routes(vec![Route::new("/api", &format!("{}/v1", echo.base))]).await;
    let mut browser = app.browser();
    browser.login("alice").await;

    let spoofed = [
        ("X-Forwarded-User", "mallory"),
        ("x_forwarded_user", "mallory"),
        ("X_Forwarded_Email", "mallory@evil"),
        ("x-user-id", "mallory"),
        ("X-Auth-Request-User", "mallory"),
        ("Remote-User", "mallory"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6"),
        ("Authorization", "Bearer forged"),
        ("Connection", "keep-alive, X-Hop-Secret"),
        ("X-Hop-Secret", "hop"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Later"),
        ("Proxy-Authorization", "Basic abc"),
        ("X-Request-Id", "browser-chosen-id"),
        ("X-Trace", "not on the allow-list"),
    ];
    let mut headers: Vec<(&str, &str)> = vec![("x-csrf", "1")];
    headers.extend_from_slice(&spoofed);
    let response = browser
        .request(
            reqwest::Method::GET,
            "/api/orders/7?expand=lines&x=%20y",
            &headers,
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let seen = response.json();
    assert_eq!(seen["path"], "/v1/orders/7");
    assert_eq!(seen["query"], "expand=lines&x=%20y");

    let bearer = header(&seen, "authorization");
    assert_eq!(bearer.len(), 1, "exactly one Authorization: {bearer:?}");
    let token = bearer[0].strip_prefix("Bearer ").expect("bearer");
    assert_eq!(token, browser.tokens().await.access_token.expose_secret());
    let introspection = app.introspect(token).await;
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["sub"], "alice");

    for name in [
        "cookie",
        "x-csrf",
        "x-forwarded-user",
        "x_forwarded_user",
        "x_forwarded_email",
        "x-user-id",
        "x-auth-request-user",
        "remote-user",
        "x-real-ip",
        "forwarded",
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
    ] {
        assert!(
            header(&seen, name).is_empty(),
            "upstream saw {name}: {:?}",
            header(&seen, name)
        );
    }
    assert_eq!(header(&seen, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(header(&seen, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        vec![format!("127.0.0.1:{}", app.port).as_str()]
    );
    assert_eq!(
        header(&seen, "host"),
        vec![echo.base.trim_start_matches("http://")]
    );
    assert!(
        header(&seen, "x-trace").is_empty(),
        "a header on no allow-list stays at gatehouse (issue 23)"
    );
    let request_id = header(&seen, "x-request-id");
    assert_eq!(
        request_id,
        vec!["browser-chosen-id"],
        "a well-formed request id is propagated"
    );
    assert_eq!(response.headers["x-request-id"], "browser-chosen-id");

    let body = b"{\"order\": 42}".to_vec();
    let posted = browser
        .request(
            reqwest::Method::POST,
            "/api/orders",
            &[("x-csrf", "1"), ("content-type", "application/json")],
            Some(body.clone()),
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    let seen = posted.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], body.len());
    assert_eq!(
        seen["body_sha256"],
        crate::helpers::echo::hex(&<sha2::Sha256 as sha2::Digest>::digest(&body)[..])
    );
    assert_eq!(header(&seen, "content-type"), vec!["application/json"]);
    assert_eq!(header(&seen, "authorization").len(), 1);
}

#[tokio::test]
async fn large_bodies_stream_through_intact() {
    let echo = spawn_echo().await;
    let app = app_with_routes(vec![Route::new("/api", &echo.base).max_body_bytes(60000000)]).await;
    let mut browser = app.browser();
    browser.login("alice").await;
    const SIZE: u64 = 50 * 1024 * 1024;

    let upload: Vec<u8> = (0..SIZE).map(pattern_byte).collect();
    let response = browser.api_post("/api/upload", upload).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["body_len"], SIZE);
    assert_eq!(response.json()["body_sha256"], pattern_sha256(SIZE));

    let download = browser
        .api_get(&format!("/api/download?bytes={SIZE}"))
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(
        download.headers["content-length"],
        SIZE.to_string().as_str()
    );
    // Resp keeps bodies as text: compare the bytes' hash via a second, binary fetch.
    let bytes = browser
        .api_request(reqwest::Method::GET, &format!("/api/download?bytes={SIZE}"))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.len() as u64, SIZE);
    assert_eq!(
        crate::helpers::echo::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes)[..]),
        pattern_sha256(SIZE)
    );
}

#[tokio::test]
async fn hostile_paths_are_refused_and_never_reach_the_upstream() {
    let echo = spawn_echo().await;
    let app = app_with_routes(vec![
        Route::new("/api", &format!("{}/base", echo.base)).token("none"),
        Route::new("/api/orders", &echo.base).token("none"),
    ])
    .await;
    let hostile = [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E/admin",
        "/api/..%2fadmin",
        "/api/%2fadmin",
        "/api/%2Fadmin",
        "/api\\..\\admin",
        "/api/%5c..%5cadmin",
        "/api/x%00",
        "/api/orders%23x",
        "/api/./orders",
        "/api/orders/..",
        "/api/%252e%252e/admin",
        "/api//admin",
        "/api/x%0d%0aX-Injected:%201",
        "/api/x%7f",
        "/api/orders/%2e",
        "/api/.%2e/admin",
    ];
    for path in hostile {
        let (status, text) = raw_request(
            app.port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("application/problem+json"), "{path}: {text}");
        assert!(
            text.contains("urn:gatehouse:problem:unsafe-path"),
            "{path}: {text}"
        );
    }
    // Raw bytes the HTTP parser itself refuses.
    for path in ["/api/x\x00y", "/api/x\x7fy"] {
        let (status, _) = raw_request(
            app.port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{path:?}");
    }
    assert!(
        echo.seen().is_empty(),
        "upstream received {:?}",
        echo.seen()
    );

    let (status, text) = raw_request(
        app.port,
        "GET /api/orders/7 HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(echo.seen(), vec!["/7".to_owned()]);
}

#[tokio::test]
async fn routing_methods_and_requirements() {
    let echo = spawn_echo().await;
    let app = app_with_routes(vec![
        Route::new("/api", &format!("{}/general", echo.base)),
        Route::new("/api/orders", &format!("{}/orders", echo.base)).methods(&["GET", "post"]),
        Route::new("/api/support", &format!("{}/support", echo.base))
            .require_claim("roles", "support"),
        Route::new("/api/admin", &format!("{}/admin", echo.base)).require_scopes(&["orders:admin"]),
        Route::new("/api/profile", &format!("{}/profile", echo.base))
            .require_scopes(&["profile"])
            .require_claim_any("roles", &["user"]),
    ])
    .await;
    let mut alice = app.browser();
    alice.login("alice").await;
    let mut bob = app.browser();
    bob.login("bob").await;

    assert_eq!(
        alice.api_get("/api/orders/7").await.json()["path"],
        "/orders/7",
        "longest prefix"
    );
    assert_eq!(alice.api_get("/api/orders").await.json()["path"], "/orders");
    assert_eq!(
        alice.api_get("/api/ordersX").await.json()["path"],
        "/general/ordersX",
        "whole segments only"
    );
    assert_eq!(alice.api_get("/api").await.json()["path"], "/general");
    alice
        .api_get("/apix")
        .await
        .assert_problem(404, "not-found");

    let delete = alice
        .request(
            reqwest::Method::DELETE,
            "/api/orders/7",
            &[("x-csrf", "1")],
            None,
        )
        .await;
    delete.assert_problem(405, "method-not-allowed");
    assert_eq!(delete.headers["allow"], "GET, POST");
    assert_eq!(
        alice.api_post("/api/orders", b"x".to_vec()).await.status,
        200
    );

    assert_eq!(
        alice.api_get("/api/support/tickets").await.status,
        200,
        "alice has roles=support"
    );
    bob.api_get("/api/support/tickets")
        .await
        .assert_problem(403, "forbidden");
    alice
        .api_get("/api/admin")
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        bob.api_get("/api/profile").await.status,
        200,
        "granted scope and claim"
    );

    let mut anonymous = app.browser();
    anonymous
        .api_get("/api/orders")
        .await
        .assert_problem(401, "unauthenticated");
    alice
        .get("/api/orders")
        .await
        .assert_problem(401, "csrf-header-required");
    let seen = echo.seen();
    assert_eq!(
        seen.iter().filter(|p| p.starts_with("/support")).count(),
        1,
        "only alice's call: {seen:?}"
    );
    assert!(!seen.iter().any(|p| p.starts_with("/admin")), "{seen:?}");
    assert_eq!(
        seen.iter().filter(|p| p.starts_with("/orders")).count(),
        3,
        "the 405 never left: {seen:?}"
    );
}

#[tokio::test]
async fn optional_none_and_client_routes() {
    let echo = spawn_echo().await;
    let app = app_with_routes(vec![
        Route::new("/public", &echo.base).token("optional"),
        Route::new("/static-api", &echo.base).token("none"),
        Route::new("/service", &echo.base).token("client"),
    ])
    .await;
    let mut anonymous = app.browser();
    let seen = anonymous.api_get("/public/x").await.json();
    assert!(
        header(&seen, "authorization").is_empty(),
        "anonymous optional call carries no token"
    );

    let mut alice = app.browser();
    alice.login("alice").await;
    let seen = alice.api_get("/public/x").await.json();
    assert_eq!(
        header(&seen, "authorization").len(),
        1,
        "logged-in optional call carries the user's token"
    );
    let seen = alice.api_get("/static-api/x").await.json();
    assert!(
        header(&seen, "authorization").is_empty(),
        "none routes never carry a token"
    );

    let calls = (0..20).map(|_| {
        let http = app.http.clone();
        let url = format!("{}/service/call", app.base);
        async move {
            http.get(url)
                .header("x-csrf", "1")
                .send()
                .await
                .expect("call")
                .json::<Value>()
                .await
                .expect("json")
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let tokens: std::collections::HashSet<String> = answers
        .iter()
        .map(|seen| header(seen, "authorization")[0].to_owned())
        .collect();
    assert_eq!(tokens.len(), 1, "one client token shared by all calls");
    assert_eq!(
        app.provider_grants().await["client_credentials"],
        1,
        "fetched exactly once"
    );
    let token = tokens
        .iter()
        .next()
        .expect("token")
        .strip_prefix("Bearer ")
        .expect("bearer");
    let introspection = app.introspect(token).await;
    assert_eq!(introspection["active"], true);
    assert_eq!(introspection["client_id"], app.client_id);
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_errors() {
    let echo = spawn_echo().await;
    let closed_port = crate::helpers::processes::free_port();
    let app = app_with_routes(vec![
        Route::new("/down", &format!("http://127.0.0.1:{closed_port}")),
        Route::new("/slow", &format!("{}/slow", echo.base)).timeout_secs(1),
        Route::new("/api", &echo.base).max_body_bytes(1000),
        Route::new("/cookies", &echo.base).pass_set_cookie(true),
    ])
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;

    let down = browser.api_get("/down/x").await;
    down.assert_problem(502, "upstream-unreachable");
    assert!(
        !down.body.contains(&closed_port.to_string()),
        "no upstream internals: {}",
        down.body
    );
    browser
        .api_get("/slow?ms=3000")
        .await
        .assert_problem(504, "upstream-timeout");
    assert_eq!(browser.api_get("/slow?ms=10").await.status, 200);

    let redirect = browser.api_get("/api/redirect").await;
    assert_eq!(
        redirect.status, 302,
        "redirects are passed back, not followed"
    );
    assert_eq!(redirect.location(), Some("/elsewhere"));

    browser
        .api_post("/api/upload", vec![b'x'; 2000])
        .await
        .assert_problem(413, "payload-too-large");
    assert!(
        !echo.seen().iter().any(|p| p.starts_with("/upload")),
        "a declared oversize body never leaves"
    );
    let chunked =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 600])));
    let response = browser
        .api_request(reqwest::Method::POST, "/api/upload")
        .body(reqwest::Body::wrap_stream(chunked))
        .send()
        .await
        .expect("chunked upload");
    assert_eq!(
        response.status(),
        413,
        "a chunked body over the limit is refused too"
    );

    let stripped = browser.api_get("/api/set-cookie").await;
    assert_eq!(stripped.status, 200);
    assert!(
        stripped.set_cookies().is_empty(),
        "upstream cookies are stripped by default"
    );
    let passed = browser.api_get("/cookies/set-cookie").await;
    assert_eq!(passed.set_cookies(), vec!["upstream=1; Path=/".to_owned()]);
}

#[tokio::test]
async fn server_held_api_keys_reach_the_upstream_and_never_come_from_the_browser() {
    let echo = spawn_echo().await;
    let key = format!("orders-key-{}", crate::helpers::random_name("k"));
    crate::helpers::record_secret(&key); // the whole-run log check looks for it
    let app = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api", &echo.base)
            .inject_header_from_env("X-Api-Key", "TEST_ORDERS_API_KEY")],
        env: vec![("TEST_ORDERS_API_KEY".into(), key.clone())],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;

    let answer: Value = browser
        .api_request(reqwest::Method::GET, "/api/data")
        .header("X-Api-Key", "chosen-by-the-browser")
        .header("x_api_key", "an-underscore-spelling")
        .send()
        .await
        .expect("call")
        .json()
        .await
        .expect("json");
    assert_eq!(
        header(&answer, "x-api-key"),
        vec![key.as_str()],
        "exactly the server's key"
    );
    assert!(
        header(&answer, "x_api_key").is_empty(),
        "no spelling of it from the browser"
    );
    assert!(
        !header(&answer, "authorization").is_empty(),
        "the user's token as well"
    );
}

#[test]
fn injected_headers_are_checked_at_start_up() {
    let config = |inject: &str| {
        format!(
            "[server]\npublic_url = \"https://app.example.com\"\n\
             [providers.main]\nissuer = \"https://id.example.com\"\nclient_id = \"spa\"\n\
             [[routes]]\nprefix = \"/api\"\nupstream = \"https://api.example.com\"\n\
             [routes.inject_headers]\n{inject}\n"
        )
    };
    let env = |pairs: &[(&str, &str)]| {
        let mut env: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".into(),
            "s".into(),
        ));
        env
    };
    let problems = |inject: &str, pairs: &[(&str, &str)]| {
        gatehouse::config::load(Some(&config(inject)), env(pairs))
            .expect_err("invalid")
            .0
    };
    assert_eq!(
        problems("\"X-Api-Key\" = { env = \"MISSING_KEY\" }", &[]),
        ["routes[0].inject_headers.\"X-Api-Key\": environment variable MISSING_KEY is not set"]
    );
    assert_eq!(
        problems("\"Authorization\" = { env = \"K\" }", &[("K", "v")]),
        ["routes[0].inject_headers.\"Authorization\": gatehouse sets Authorization itself"]
    );
    assert_eq!(
        problems(
            "\"X-Api-Key\" = { env = \"K\", file = \"/k\" }",
            &[("K", "v")]
        ),
        ["routes[0].inject_headers.\"X-Api-Key\": give exactly one of env and file"]
    );
    let bad_value = problems("\"X-Api-Key\" = { env = \"K\" }", &[("K", "line\nbreak")]);
    assert_eq!(
        bad_value,
        ["routes[0].inject_headers.\"X-Api-Key\": the value is not a valid header value"]
    );
    let settings = gatehouse::config::load(
        Some(&config("\"X-Api-Key\" = { env = \"K\" }")),
        env(&[("K", "secret-value")]),
    )
    .expect("valid");
    let injected = &settings.routes[0].inject_headers[0];
    assert_eq!(injected.name, "x-api-key");
    assert!(
        !format!("{settings:?}").contains("secret-value"),
        "Debug hides it"
    );
}

#[tokio::test]
async fn server_sent_events_pass_through_one_by_one_unbuffered() {
    use futures_util::StreamExt;

    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api", &echo.base).timeout_secs(1)],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;

    // Ten events 200 ms apart: 2 s in all, twice the route's timeout, which bounds only the
    // wait for the response head. In lock-step: the upstream sends each event only once the
    // one before has arrived here, so a stream gatehouse held back would stall, whatever
    // the machine's load (a wall-clock bound per event would not tell load from buffering).
    let response = browser
        .api_request(
            reqwest::Method::GET,
            "/api/events?count=10&ms=200&lockstep=1",
        )
        .header("Accept", "text/event-stream")
        .header("Accept-Encoding", "gzip, br")
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("content-encoding").is_none());
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut ids = Vec::new();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), body.next()).await;
        let Some(chunk) = next.unwrap_or_else(|_| {
            panic!(
                "event {} held back (the upstream waits until it arrives)",
                ids.len()
            )
        }) else {
            break;
        };
        buffer.push_str(std::str::from_utf8(&chunk.expect("chunk")).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let id: u64 = event
                .lines()
                .find_map(|line| line.strip_prefix("id: "))
                .and_then(|v| v.parse().ok())
                .expect("id line");
            assert!(
                event.lines().any(|line| line.starts_with("data: ")),
                "{event}"
            );
            ids.push(id);
            echo.release_next_event();
        }
    }
    assert_eq!(ids, (0..10).collect::<Vec<u64>>(), "every event, in order");
    assert!(
        buffer.is_empty(),
        "nothing after the last event: {buffer:?}"
    );
}

#[tokio::test]
async fn max_duration_ends_a_long_stream() {
    use futures_util::StreamExt;

    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api", &echo.base).max_duration_secs(1)],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let started = std::time::Instant::now();
    let response = browser
        .api_request(reqwest::Method::GET, "/api/events?count=20&ms=200")
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    let events = text.matches("\n\n").count();
    let lasted = started.elapsed();
    assert!(
        (3..=6).contains(&events),
        "about a second's worth of the 20 events: {events}"
    );
    assert!(
        lasted < std::time::Duration::from_millis(2500),
        "ended after about a second, not four: {lasted:?}"
    );
}

/// An upstream that answers the first request on each connection, and meets the next one on
/// it as a server whose keep-alive timer fires at that moment does: it closes without an
/// answer, or (as actix does to a connection that sent nothing in time) answers 408 and
/// closes. Counts connections, answers and stale meetings.
struct StaleUpstream {
    base: String,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stale: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn spawn_stale_upstream(answer_408: bool) -> StaleUpstream {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let connections = Arc::new(AtomicUsize::new(0));
    let stale = Arc::new(AtomicUsize::new(0));
    let (counted, staled) = (connections.clone(), stale.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let staled = staled.clone();
            tokio::spawn(async move {
                let mut served = 0;
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buffer.drain(..end);
                    if served == 0 {
                        served += 1;
                        let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfresh";
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    staled.fetch_add(1, Ordering::SeqCst);
                    if answer_408 {
                        let answer = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                        let _ = socket.write_all(answer.as_bytes()).await;
                    }
                    let _ = socket.shutdown().await;
                    return;
                }
            });
        }
    });
    StaleUpstream {
        base,
        connections,
        stale,
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_already_closed_costs_an_idempotent_call_nothing() {
    use std::sync::atomic::Ordering;

    for answer_408 in [false, true] {
        let upstream = spawn_stale_upstream(answer_408).await;
        let app = app_with_routes(vec![Route::new("/api", &upstream.base).token("none")]).await;
        let mut browser = app.browser();
        let case = if answer_408 { "408 and close" } else { "close" };

        let first = browser.api_get("/api/one").await;
        assert_eq!(
            (first.status, first.body.as_str()),
            (200, "fresh"),
            "{case}"
        );
        // Time for the connection to go back to the pool, so the next call meets it. A sleep,
        // not a wait for a condition: hyper-util puts it back from a task of its own after the
        // body ends, and nothing outside its pool (the wire, the upstream, gatehouse) shows it.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let second = browser.api_get("/api/two").await;
        assert_eq!(
            (second.status, second.body.as_str()),
            (200, "fresh"),
            "{case}: the GET is sent again on a fresh connection"
        );
        assert_eq!(
            upstream.stale.load(Ordering::SeqCst),
            1,
            "{case}: the pooled connection was met"
        );
        assert_eq!(upstream.connections.load(Ordering::SeqCst), 2, "{case}");

        // A POST may have done its work before the connection went: never sent twice. (The
        // sleep as above.)
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let post = browser.api_post("/api/three", b"order".to_vec()).await;
        if answer_408 {
            assert_eq!(post.status, 408, "{case}: the upstream's answer, passed on");
        } else {
            post.assert_problem(502, "upstream-unreachable");
        }
        assert_eq!(upstream.stale.load(Ordering::SeqCst), 2, "{case}");
        assert_eq!(
            upstream.connections.load(Ordering::SeqCst),
            2,
            "{case}: no second attempt for the POST"
        );
    }
}
