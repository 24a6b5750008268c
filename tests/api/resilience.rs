//! Outages: the provider not up yet, Redis not answering. Neither may log anybody out.

use std::time::Duration;

use serde_json::json;

use crate::helpers::processes::{ProviderOptions, ProviderProcess, RedisServer};
use crate::helpers::{spawn_app_with, AppOptions, Preset, RedisKeys, RegisteredClient};

#[tokio::test]
async fn gatehouse_waits_for_its_provider_and_is_not_ready_until_then() {
    // Everything is configured before the provider exists.
    let provider_port = {
        let probe = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        probe.local_addr().expect("addr").port()
    };
    let issuer = format!("http://127.0.0.2:{provider_port}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let client = RegisteredClient {
        client_id: "early-bird".into(),
        client_secret: "early-bird-secret".into(),
    };
    let static_clients = json!([{
        "client_id": client.client_id, "client_secret": client.client_secret,
        "redirect_uris": [format!("{base}/auth/callback")],
        "post_logout_redirect_uris": [format!("{base}/")],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
    }])
    .to_string();
    let app = spawn_app_with(AppOptions {
        preset: Some(Preset {
            issuer: issuer.clone(),
            client,
            listener,
        }),
        ..AppOptions::default()
    })
    .await;

    // Until discovery's first attempt fails, the reason is "discovery pending".
    let mut browser = app.browser();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = browser.get("/readyz").await;
        if ready.json()["providers"]["main"]["reason"] != "discovery pending" {
            break ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no discovery attempt within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["providers"]["main"]["ready"], false);
    assert!(
        ready.json()["providers"]["main"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("connection")),
        "{}",
        ready.body
    );
    assert_eq!(
        browser.get("/healthz").await.status,
        200,
        "alive, just not ready"
    );
    // A browser navigated to the login: it goes back to the app, which is told why.
    let login = browser.start_login(None).await;
    assert_eq!(login.status, 302, "{}", login.transcript());
    assert_eq!(
        login.location(),
        Some("/?login_error=temporarily_unavailable")
    );

    let _provider = ProviderProcess::start(&ProviderOptions {
        port: Some(provider_port),
        static_clients: Some(static_clients),
        ..ProviderOptions::default()
    });
    app.wait_until_ready().await; // discovery retries with backoff (capped well below this wait)
    browser.login("alice").await;
    assert_eq!(browser.api_get("/auth/user").await.json()["sub"], "alice");
}

#[tokio::test]
async fn redis_outage_answers_503_and_keeps_the_session() {
    let redis = RedisServer::start();
    let app = spawn_app_with(AppOptions {
        redis_url: Some(redis.url()),
        redis: RedisKeys::new()
            .connect_timeout_ms(300)
            .response_timeout_ms(300),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie_before = browser.session_cookie();

    redis.pause();
    let during = browser.api_get("/auth/user").await;
    during.assert_problem(503, "session-store-unavailable");
    assert_eq!(during.headers["retry-after"], "1");
    assert!(
        during.set_cookies().is_empty(),
        "an outage must not touch the cookie"
    );
    let not_ready = browser.get("/readyz").await;
    assert_eq!(not_ready.status, 503);
    let login = browser.start_login(None).await;
    login.assert_problem(503, "session-store-unavailable");
    redis.resume();

    assert_eq!(browser.session_cookie(), cookie_before);
    let after = browser.api_get("/auth/user").await;
    assert_eq!(
        after.status, 200,
        "same session after the outage: {}",
        after.body
    );
    assert_eq!(after.json()["sub"], "alice");
}
