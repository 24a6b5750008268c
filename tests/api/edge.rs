//! The edge (issue 9): path parameters that hide dot segments, request-head limits,
//! rate limits shared through Redis, and the client IP behind trusted proxies.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::echo::{echoed_header, raw_request, spawn_echo, EchoUpstream};
use crate::helpers::{
    captured_logs, random_name, spawn_app_with, AppOptions, RateLimits, RedisKeys, Resp, Route,
    ServerKeys, TestApp,
};

fn echo_route(echo: &EchoUpstream, prefix: &str) -> Route {
    Route::new(prefix, &format!("{}/v1", echo.base))
}

fn retry_after(resp: &Resp) -> u64 {
    resp.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {}", resp.transcript()))
}

fn header<'a>(resp: &'a Resp, name: &str) -> &'a str {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name}: {}", resp.transcript()))
}

// ---------------------------------------------------------------------------------------
// Matrix parameters
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn dot_segments_hidden_behind_path_parameters_never_reach_the_upstream() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![echo_route(&echo, "/api/echo").token("none")],
        ..AppOptions::default()
    })
    .await;
    let payloads = [
        "/api/echo/..;/admin",
        "/api/echo/.;/admin",
        "/api/echo/..;jsessionid=x/admin",
        "/api/echo/%2e%2e;/admin",
        "/api/echo/..%3b/admin",
        "/api/echo/..%3B/admin",
        "/api/echo/%2E.;x/admin",
        "/api/echo/.%2e;/admin",
        "/api/echo/x%3bjsessionid=1/admin",
        "/api/echo/..;a=b;c=d/admin",
        "/api/echo/..;",
        "/api/echo/%c0%ae%c0%ae;/admin",
        "/api/echo/%c0%ae%c0%ae/admin",
        "/api/echo/x/..;/..;/admin",
    ];
    for path in payloads {
        let (status, text) = raw_request(
            app.port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(
            text.contains("urn:gatehouse:problem:unsafe-path"),
            "{path}: {text}"
        );
    }
    assert!(
        echo.seen().is_empty(),
        "upstream received {:?}",
        echo.seen()
    );

    // A path parameter on an ordinary segment is the upstream's business.
    let (status, text) = raw_request(
        app.port,
        "GET /api/echo/orders;v=2/7 HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(echo.seen(), vec!["/v1/orders;v=2/7".to_owned()]);
}

// ---------------------------------------------------------------------------------------
// The request head
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![echo_route(&echo, "/api/echo").token("none")],
        ..AppOptions::default()
    })
    .await;
    let request = |size: usize| {
        format!(
            "GET /api/echo/big HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        )
    };
    let (status, text) = raw_request(app.port, &request(20 * 1024)).await;
    assert_eq!(status, 431, "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(
        text.contains("urn:gatehouse:problem:request-header-too-large"),
        "{text}"
    );
    // Many small headers add up the same way.
    let many: String = (0..400)
        .map(|i| format!("X-Part-{i}: {}\r\n", "b".repeat(40)))
        .collect();
    let (status, text) = raw_request(
        app.port,
        &format!("GET /api/echo/many HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\n{many}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431, "{text}");
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());

    let (status, text) = raw_request(app.port, &request(15 * 1024)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(echo.seen(), vec!["/v1/big".to_owned()]);
}

/// Sends a request head a few bytes at a time; returns how long until the server closed
/// the connection, and whether the client was still sending then.
async fn trickle(port: u16, prelude: &[u8], give_up: Duration) -> (Duration, bool, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(prelude).await.expect("prelude");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let mut line = 0;
    loop {
        if started.elapsed() > give_up {
            return (started.elapsed(), true, "never closed".into());
        }
        // One header byte every 200 ms: never a whole head.
        let _ = stream
            .write_all(
                format!("X-Slow-{line}: 1\r\n")
                    .as_bytes()
                    .get(..1)
                    .unwrap_or(b"x"),
            )
            .await;
        line += 1;
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    started.elapsed(),
                    true,
                    String::from_utf8_lossy(&received).into_owned(),
                )
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let app = spawn_app_with(AppOptions {
        server: ServerKeys::new().header_timeout_ms(1000),
        ..AppOptions::default()
    })
    .await;
    let (took, still_sending, answer) = trickle(
        app.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(still_sending);
    assert_ne!(answer, "never closed", "the connection stayed open");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );

    // The same on a kept-alive connection, after a first request was answered: actix times
    // only a connection's first head; gatehouse cuts the connection off once keep-alive (5 s)
    // and the header timeout have passed since the last response.
    let (took, still_sending, answer) = trickle(
        app.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(15),
    )
    .await;
    assert!(still_sending);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "the trickled request was never answered: {answer}"
    );
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "closed after {took:?}"
    );

    // A client that sends its head in time is served.
    let (status, _) = raw_request(
        app.port,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------------------------------
// Rate limits and the client IP
// ---------------------------------------------------------------------------------------

async fn login_start(app: &TestApp, forwarded_for: Option<&str>) -> Resp {
    let mut browser = app.browser();
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|ip| vec![("x-forwarded-for", ip)])
        .unwrap_or_default();
    browser
        .request(reqwest::Method::GET, "/auth/login", &headers, None)
        .await
}

#[tokio::test]
async fn login_starts_are_limited_per_client_ip() {
    let app = spawn_app_with(AppOptions {
        server: ServerKeys::new().trusted_proxies(&["127.0.0.1"]),
        rate_limits: RateLimits::new().login(3, 3),
        ..AppOptions::default()
    })
    .await;
    let first = Some("198.51.100.1");
    for remaining in [2, 1, 0] {
        let resp = login_start(&app, first).await;
        assert_eq!(resp.status, 302, "{}", resp.transcript());
        assert_eq!(header(&resp, "ratelimit-policy"), "\"login\";q=3;w=3");
        assert!(
            header(&resp, "ratelimit").starts_with(&format!("\"login\";r={remaining};t=")),
            "{}",
            resp.transcript()
        );
    }
    let request_id = random_name("limited-");
    let limited = app
        .browser()
        .request(
            reqwest::Method::GET,
            "/auth/login",
            &[
                ("x-forwarded-for", "198.51.100.1"),
                ("x-request-id", &request_id),
            ],
            None,
        )
        .await;
    limited.assert_problem(429, "rate-limited");
    let wait = retry_after(&limited);
    assert!(wait >= 1, "Retry-After {wait}");
    assert_eq!(header(&limited, "ratelimit-policy"), "\"login\";q=3;w=3");
    assert!(header(&limited, "ratelimit").starts_with("\"login\";r=0;t="));
    assert!(
        captured_logs()
            .lines()
            .any(|l| l.contains(&request_id) && l.contains("event=\"rate_limit.hit\"")),
        "the security event is logged with the request"
    );

    // Another client behind the same trusted proxy has its own count.
    let other = login_start(&app, Some("198.51.100.2")).await;
    assert_eq!(other.status, 302, "{}", other.transcript());

    // The callback counts against the same limit.
    let callback = app
        .http
        .get(format!("{}/auth/callback?code=x&state=y", app.base))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 429);

    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = login_start(&app, first).await;
    assert_eq!(again.status, 302, "{}", again.transcript());
}

#[tokio::test]
async fn two_instances_share_one_login_count() {
    let limits = RateLimits::new().login(4, 60);
    let first = spawn_app_with(AppOptions {
        rate_limits: limits.clone(),
        ..AppOptions::default()
    })
    .await;
    // Behind one public URL, as instances behind a load balancer are (the provider checks
    // the redirect URI when the authorization request is pushed).
    let second = spawn_app_with(AppOptions {
        share: Some(&first),
        rate_limits: limits,
        public_url: Some(first.base.clone()),
        ..AppOptions::default()
    })
    .await;
    for app in [&first, &second, &first, &second] {
        assert_eq!(login_start(app, None).await.status, 302);
    }
    login_start(&second, None)
        .await
        .assert_problem(429, "rate-limited");
    login_start(&first, None)
        .await
        .assert_problem(429, "rate-limited");
}

#[tokio::test]
async fn a_spoofed_forwarded_for_changes_neither_the_limit_nor_the_logs_nor_the_upstream() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![echo_route(&echo, "/api/echo").token("none")],
        rate_limits: RateLimits::new().api(3, 60),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    let spoofs = ["6.6.6.6", "7.7.7.7, 8.8.8.8", "unknown", "9.9.9.9"];
    let mut statuses = Vec::new();
    for (i, spoof) in spoofs.iter().enumerate() {
        let request_id = random_name(&format!("spoof{i}-"));
        let resp = browser
            .request(
                reqwest::Method::GET,
                "/api/echo/who",
                &[
                    ("x-csrf", "1"),
                    ("x-forwarded-for", spoof),
                    ("x-request-id", &request_id),
                ],
                None,
            )
            .await;
        statuses.push(resp.status);
        if resp.status == 200 {
            assert_eq!(
                echoed_header(&resp.json(), "x-forwarded-for"),
                vec!["127.0.0.1"]
            );
        }
        let logs = captured_logs();
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&request_id)).collect();
        assert!(!lines.is_empty(), "no log line for {request_id}");
        for line in lines {
            assert!(line.contains("client_ip=127.0.0.1"), "{line}");
            assert!(
                !line.contains(spoof.split(',').next().unwrap_or(spoof)),
                "{line}"
            );
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 429], "one count for one peer");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted_and_forwarded() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        server: ServerKeys::new().trusted_proxies(&["127.0.0.0/8", "10.0.0.0/8"]),
        routes: vec![echo_route(&echo, "/api/echo").token("none")],
        rate_limits: RateLimits::new().api(2, 60),
        ..AppOptions::default()
    })
    .await;
    let call = |chain: &'static str| {
        let mut browser = app.browser();
        async move {
            browser
                .request(
                    reqwest::Method::GET,
                    "/api/echo/who",
                    &[("x-csrf", "1"), ("x-forwarded-for", chain)],
                    None,
                )
                .await
        }
    };
    // The client may write anything to the left; the proxies append the real address.
    let resp = call("6.6.6.6, 203.0.113.9, 10.0.0.5").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        echoed_header(&resp.json(), "x-forwarded-for"),
        vec!["203.0.113.9"]
    );
    assert_eq!(call("7.7.7.7, 203.0.113.9").await.status, 200);
    call("203.0.113.9")
        .await
        .assert_problem(429, "rate-limited");
    assert_eq!(call("203.0.113.10").await.status, 200);
}

#[tokio::test]
async fn api_calls_are_limited_per_session_with_route_overrides_and_survive_a_restart() {
    let echo = spawn_echo().await;
    let routes = vec![
        echo_route(&echo, "/api/echo"),
        echo_route(&echo, "/api/own").rate_limit(1, 60),
        echo_route(&echo, "/api/free").rate_limit_off(),
    ];
    let limits = RateLimits::new().api(3, 60);
    let app = spawn_app_with(AppOptions {
        routes: routes.clone(),
        rate_limits: limits.clone(),
        ..AppOptions::default()
    })
    .await;
    let mut alice = app.browser();
    alice.login("alice").await;
    let mut bob = app.browser();
    bob.login("bob").await;

    for remaining in [2, 1, 0] {
        let resp = alice.api_get("/api/echo/x").await;
        assert_eq!(resp.status, 200, "{}", resp.transcript());
        assert_eq!(header(&resp, "ratelimit-policy"), "\"api\";q=3;w=60");
        assert!(header(&resp, "ratelimit").starts_with(&format!("\"api\";r={remaining};")));
    }
    let limited = alice.api_get("/api/echo/x").await;
    limited.assert_problem(429, "rate-limited");
    assert!(retry_after(&limited) >= 1);

    // Another session of the same client IP has its own count.
    assert_eq!(bob.api_get("/api/echo/x").await.status, 200);
    // A route with its own limit counts apart from the default one.
    let own = alice.api_get("/api/own/x").await;
    assert_eq!(own.status, 200, "{}", own.transcript());
    assert_eq!(header(&own, "ratelimit-policy"), "\"/api/own\";q=1;w=60");
    alice
        .api_get("/api/own/x")
        .await
        .assert_problem(429, "rate-limited");
    for _ in 0..5 {
        let free = alice.api_get("/api/free/x").await;
        assert_eq!(free.status, 200);
        assert!(free.headers.get("ratelimit").is_none());
    }

    // The counts live in Redis: an instance started afresh on it still refuses.
    let restarted = spawn_app_with(AppOptions {
        share: Some(&app),
        routes,
        rate_limits: limits,
        ..AppOptions::default()
    })
    .await;
    let cookie = alice.session_cookie().expect("cookie");
    let resp = restarted.get_with_session("/api/echo/x", &cookie).await;
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn without_redis_the_limiter_lets_calls_through_and_says_so_once() {
    let redis = crate::helpers::processes::RedisServer::start();
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        redis_url: Some(redis.url()),
        redis: RedisKeys::new()
            .connect_timeout_ms(200)
            .response_timeout_ms(200),
        routes: vec![echo_route(&echo, "/api/open").token("none")],
        rate_limits: RateLimits::new().api(1, 60),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    assert_eq!(browser.api_get("/api/open/x").await.status, 200);
    browser
        .api_get("/api/open/x")
        .await
        .assert_problem(429, "rate-limited");

    redis.stop();
    let request_ids: Vec<String> = (0..3)
        .map(|i| random_name(&format!("outage{i}-")))
        .collect();
    for request_id in &request_ids {
        let resp = browser
            .request(
                reqwest::Method::GET,
                "/api/open/x",
                &[("x-csrf", "1"), ("x-request-id", request_id)],
                None,
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.transcript());
    }
    let logs = captured_logs();
    let warnings = logs
        .lines()
        .filter(|l| l.contains("rate limits are not enforced"))
        .filter(|l| request_ids.iter().any(|id| l.contains(id.as_str())))
        .count();
    assert_eq!(warnings, 1, "the outage is logged once, not per call");

    // Once Redis is back, the limit holds again (a fresh Redis: the count starts over).
    redis.restart();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(browser.api_get("/api/open/x").await.status);
    }
    assert_eq!(statuses, vec![200, 429]);
}

/// Quotas of 100 and more are leased a few tokens at a time (here 2) so a busy session does
/// not cost a Redis round trip per call; two instances together still admit no more than
/// the limit, and what one instance leased and never used is all a client can lose.
#[tokio::test]
async fn leased_tokens_never_let_instances_together_exceed_the_limit() {
    let echo = spawn_echo().await;
    let routes = vec![echo_route(&echo, "/api/echo")];
    let limits = RateLimits::new().api(100, 3600);
    let first = spawn_app_with(AppOptions {
        routes: routes.clone(),
        rate_limits: limits.clone(),
        ..AppOptions::default()
    })
    .await;
    let second = spawn_app_with(AppOptions {
        share: Some(&first),
        routes,
        rate_limits: limits,
        ..AppOptions::default()
    })
    .await;
    let mut browser = first.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let mut admitted = 0;
    let mut remaining_seen = Vec::new();
    for i in 0..110 {
        let app = if i % 3 == 0 { &second } else { &first };
        let response = app.get_with_session("/api/echo/x", &cookie).await;
        if response.status() == 200 {
            admitted += 1;
            let state = response.headers()["ratelimit"]
                .to_str()
                .expect("ascii")
                .to_owned();
            remaining_seen.push(state);
        } else {
            assert_eq!(response.status(), 429);
        }
    }
    assert!(
        (98..=100).contains(&admitted),
        "{admitted} admitted of a limit of 100"
    );
    for app in [&first, &second] {
        assert_eq!(
            app.get_with_session("/api/echo/x", &cookie).await.status(),
            429
        );
    }
    assert!(
        remaining_seen
            .first()
            .is_some_and(|s| s.starts_with("\"api\";r=99;")),
        "{remaining_seen:?}"
    );
}
