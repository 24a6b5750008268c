//! The admin listener's `/metrics`: exact counts after a scripted session, bounded series,
//! and what each listener serves.

use std::time::Duration;

use futures_util::future::join_all;
use prometheus_parse::Scrape;

use crate::helpers::echo::spawn_echo;
use crate::helpers::processes::{free_port, listening_ports, serve_command, spawn_in_nursery};
use crate::helpers::scrape::{admin, declared_total, scrape, value};
use crate::helpers::{
    config_dir, shared_provider, spawn_app_with, AppOptions, RateLimits, Route, SessionKeys,
    TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);

async fn app_with_admin(api: Route, rate_limits: RateLimits) -> TestApp {
    spawn_app_with(AppOptions {
        admin: true,
        routes: vec![api],
        rate_limits,
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_scripted_session_is_counted_exactly() {
    let echo = spawn_echo().await;
    // Four API calls pass (three, then the one that refreshes); the fifth is refused.
    let app = app_with_admin(
        Route::new("/api", &echo.base),
        RateLimits::new().api(4, 86400),
    )
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    for _ in 0..3 {
        assert_eq!(browser.api_get("/api/data").await.status, 200);
    }
    app.clock.advance(HOUR + Duration::from_secs(1));
    assert_eq!(browser.api_get("/api/data").await.status, 200);
    // No anti-forgery header.
    let forged = browser.get("/api/data").await;
    assert_eq!(forged.status, 401, "{}", forged.body);
    let limited = browser.api_get("/api/data").await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(
        browser.api_post("/auth/logout", Vec::new()).await.status,
        200
    );

    let scrape = scrape(&app).await;
    let requests = "gatehouse_http_requests_total";
    let proxy = [("kind", "proxy"), ("route", "/api"), ("method", "GET")];
    let with_status = |status: &'static str| {
        let mut labels = proxy.to_vec();
        labels.push(("status", status));
        value(&scrape, requests, &labels)
    };
    assert_eq!(with_status("200"), 4.0);
    assert_eq!(with_status("401"), 1.0);
    assert_eq!(with_status("429"), 1.0);
    assert_eq!(value(&scrape, requests, &proxy), 6.0);
    assert_eq!(
        value(
            &scrape,
            requests,
            &[
                ("kind", "auth"),
                ("route", "logout"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("kind", "auth"), ("route", "callback")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "gatehouse_http_request_duration_seconds",
            &[("kind", "proxy"), ("route", "/api")]
        ),
        6.0
    );
    assert_eq!(
        value(
            &scrape,
            "gatehouse_upstream_request_duration_seconds",
            &[("route", "/api"), ("outcome", "ok")]
        ),
        4.0
    );
    let provider = ("provider", "main");
    assert_eq!(
        value(
            &scrape,
            "gatehouse_logins_total",
            &[provider, ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        declared_total(&scrape, "gatehouse_logins_total", &[("outcome", "failed")]),
        0.0
    );
    assert_eq!(
        value(
            &scrape,
            "gatehouse_token_refreshes_total",
            &[provider, ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(value(&scrape, "gatehouse_token_refreshes_total", &[]), 1.0);
    assert_eq!(
        value(
            &scrape,
            "gatehouse_logouts_total",
            &[provider, ("kind", "user")]
        ),
        1.0
    );
    assert_eq!(value(&scrape, "gatehouse_logouts_total", &[]), 1.0);
    assert_eq!(
        value(&scrape, "gatehouse_rate_limited_total", &[("limit", "api")]),
        1.0
    );
    assert_eq!(value(&scrape, "gatehouse_rate_limited_total", &[]), 1.0);
    let event = |name: &'static str| {
        value(
            &scrape,
            "gatehouse_security_events_total",
            &[("event", name)],
        )
    };
    for (name, count) in [
        ("login.started", 1.0),
        ("login.succeeded", 1.0),
        ("login.failed", 0.0),
        ("logout.completed", 1.0),
        ("csrf.rejected", 1.0),
        ("session.rejected", 0.0),
        ("backchannel_logout.received", 0.0),
        ("refresh.succeeded", 1.0),
        ("refresh.failed", 0.0),
        ("authz.denied", 0.0),
        ("rate_limit.hit", 1.0),
        ("session.ended_by_user", 0.0),
    ] {
        assert_eq!(event(name), count, "{name}");
    }
    // Every event of the catalogue has its series, zero or not.
    let events = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "gatehouse_security_events_total")
        .count();
    assert_eq!(
        events,
        gatehouse::observability::telemetry::SecurityEvent::ALL.len()
    );
    assert_eq!(value(&scrape, "gatehouse_provider_up", &[provider]), 1.0);
    assert_eq!(value(&scrape, "gatehouse_build_info", &[]), 1.0);
    assert!(
        value(
            &scrape,
            "gatehouse_store_operation_duration_seconds",
            &[("op", "insert")]
        ) >= 1.0
    );
    assert!(
        value(
            &scrape,
            "gatehouse_store_operation_duration_seconds",
            &[("op", "fetch")]
        ) >= 1.0
    );
    assert_eq!(
        declared_total(&scrape, "gatehouse_store_errors_total", &[]),
        0.0
    );
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "gatehouse_sessions_active"));
    assert!(value(&scrape, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&scrape, "process_open_fds", &[]) > 0.0);
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "process_cpu_seconds_total"));
}

#[tokio::test]
async fn unknown_paths_and_proxied_sub_paths_add_no_series() {
    let echo = spawn_echo().await;
    let app = app_with_admin(
        Route::new("/api", &echo.base).token("none"),
        RateLimits::off(),
    )
    .await;
    let get = |path: String, csrf: bool| {
        let mut request = app.http.get(format!("{}{path}", app.base));
        if csrf {
            request = request.header("x-csrf", "1");
        }
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    assert_eq!(get("/no/such/thing-0".into(), false).await, 404);
    assert_eq!(get("/api/items/0".into(), true).await, 200);
    let series = |scrape: &Scrape| scrape.samples.len();
    let before = series(&scrape(&app).await);

    for batch in (1..1000).collect::<Vec<_>>().chunks(50) {
        let unknown = batch
            .iter()
            .map(|i| get(format!("/no/such/thing-{i}"), false));
        let proxied = batch.iter().map(|i| get(format!("/api/items/{i}"), true));
        let statuses = join_all(unknown.chain(proxied)).await;
        assert_eq!(statuses.iter().filter(|s| **s == 404).count(), batch.len());
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), batch.len());
    }

    let after = scrape(&app).await;
    assert_eq!(series(&after), before);
    assert_eq!(
        value(
            &after,
            "gatehouse_http_requests_total",
            &[
                ("kind", "frontend"),
                ("route", "unmatched"),
                ("status", "404")
            ]
        ),
        1000.0
    );
    assert_eq!(
        value(
            &after,
            "gatehouse_http_requests_total",
            &[("kind", "proxy"), ("route", "/api"), ("status", "200")]
        ),
        1000.0
    );
}

#[tokio::test]
async fn each_listener_serves_only_its_own_paths() {
    let echo = spawn_echo().await;
    let app = app_with_admin(
        Route::new("/api", &echo.base).token("none"),
        RateLimits::new(),
    )
    .await;
    let status = |url: String, accept: &'static str| {
        let request = app.http.get(url).header("accept", accept);
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    let public = &app.base;
    let admin = admin(&app);
    // Not even the SPA fallback answers /metrics on the public listener.
    assert_eq!(status(format!("{public}/metrics"), "text/html").await, 404);
    assert_eq!(status(format!("{public}/metrics"), "*/*").await, 404);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(status(format!("{admin}{path}"), "*/*").await, 200, "{path}");
    }
    for path in [
        "/",
        "/index.html",
        "/auth/login",
        "/auth/user",
        "/api/x",
        "/metrics/x",
    ] {
        assert_eq!(
            status(format!("{admin}{path}"), "text/html").await,
            404,
            "{path}"
        );
    }

    // OpenMetrics when the scraper asks for it.
    let response = app
        .http
        .get(format!("{admin}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("scrape");
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/openmetrics-text")));
    let text = response.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE gatehouse_http_requests counter\n"));
}

#[tokio::test]
async fn without_admin_bind_nothing_listens() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api", &echo.base)],
        ..AppOptions::default()
    })
    .await;
    assert!(app.admin_base.is_none());
    assert!(app.settings.admin.bind.is_none());

    // The real binary's listening sockets: the admin listener adds one, and without its bind
    // only the public port listens.
    for admin in [true, false] {
        let ports = listening_ports_of_binary(admin).await;
        assert_eq!(
            ports.len(),
            if admin { 2 } else { 1 },
            "admin {admin}: {ports:?}"
        );
    }
}

/// Starts the binary (memory store, the admin listener or not), waits until it answers, and
/// returns the ports it listens on; the public one is checked to be among them.
async fn listening_ports_of_binary(admin: bool) -> Vec<u16> {
    let dir = config_dir("");
    let port = free_port();
    let admin_table = if admin {
        "[admin]\nbind = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let config = format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         workers = 1\nshutdown_timeout_secs = 1\n{admin_table}\
         [providers.main]\nissuer = \"{}\"\nclient_id = \"listener-tests\"\n",
        shared_provider().issuer
    );
    std::fs::write(dir.join("gatehouse.toml"), config).expect("config");
    let (command, stderr) = serve_command(&dir, "not-used");
    let mut child = spawn_in_nursery(command);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health = http.get(format!("http://127.0.0.1:{port}/healthz")).send();
        if health.await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().expect("status").is_none(),
            "gatehouse did not come up: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ports = listening_ports(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(ports.contains(&port), "the public port {port}: {ports:?}");
    ports
}
