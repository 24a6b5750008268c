//! Least privilege per upstream: a token per audience (RFC 8707 resource indicators) and
//! tokens exchanged per route (RFC 8693), checked by upstreams that validate tokens as a
//! real API does (`helpers::token_upstream`). DPoP is in `upstream_dpop`.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::token_upstream::{spawn_token_upstream, TokenUpstream};
use crate::helpers::{
    record_secret, shared_provider, spawn_app_with, AppOptions, Route, SessionKeys, TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);
const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Two upstreams, each its own resource (its base URL), and an app with a route to each.
async fn two_resources() -> (TokenUpstream, TokenUpstream) {
    let issuer = &shared_provider().issuer;
    (
        spawn_token_upstream(issuer, None).await,
        spawn_token_upstream(issuer, None).await,
    )
}

fn resource_routes(orders: &TokenUpstream, invoices: &TokenUpstream) -> Vec<Route> {
    vec![
        Route::new("/orders", &orders.base)
            .resource(&orders.audience)
            .scopes(&["orders:read"]),
        Route::new("/invoices", &invoices.base).resource(&invoices.audience),
    ]
}

async fn resource_app(orders: &TokenUpstream, invoices: &TokenUpstream) -> TestApp {
    spawn_app_with(AppOptions {
        routes: resource_routes(orders, invoices),
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await
}

/// Status and body of a proxied GET.
async fn call(app: &TestApp, path: &str, cookie: &str) -> (u16, Value) {
    let response = app.get_with_session(path, cookie).await;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn logged_in(app: &TestApp) -> String {
    let mut browser = app.browser();
    browser.login("alice").await;
    browser.session_cookie().expect("cookie")
}

/// The last token an upstream accepted (recorded as a secret for the log check).
fn last_token(upstream: &TokenUpstream) -> String {
    let seen = upstream.seen();
    let last = seen.last().expect("the upstream was called");
    assert_eq!(last.refusal, None, "the upstream accepted the call");
    record_secret(&last.token);
    last.token.clone()
}

fn count(grants: &Value, key: &str) -> u64 {
    grants[key].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn each_upstream_receives_a_token_for_its_own_resource_only() {
    let (orders, invoices) = two_resources().await;
    let app = resource_app(&orders, &invoices).await;
    let cookie = logged_in(&app).await;

    let (status, body) = call(&app, "/orders/list", &cookie).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["claims"]["aud"], orders.audience.as_str());
    assert_eq!(body["claims"]["sub"], "alice");
    assert_eq!(body["claims"]["scope"], "orders:read");
    let (status, body) = call(&app, "/invoices/list", &cookie).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["claims"]["aud"], invoices.audience.as_str());

    let orders_token = last_token(&orders);
    let invoices_token = last_token(&invoices);
    let own = app.session_for(&cookie).await.expect("session");
    let own = own.data.tokens.access_token.expose_secret().to_owned();
    assert_ne!(orders_token, invoices_token);
    assert!(
        orders_token != own && invoices_token != own,
        "not the session's own token"
    );

    // Route A's token presented at B's upstream, as a thief in A's logs would.
    let refused = reqwest::Client::new()
        .get(format!("{}/list", invoices.base))
        .bearer_auth(&orders_token)
        .send()
        .await
        .expect("invoices answers");
    assert_eq!(refused.status(), 401);
    let refusal = invoices.seen().last().and_then(|s| s.refusal.clone());
    assert!(
        refusal.is_some_and(|r| r.starts_with("aud")),
        "refused for its audience"
    );

    // Ten more calls: the tokens are reused, not fetched again.
    for _ in 0..5 {
        assert_eq!(call(&app, "/orders/list", &cookie).await.0, 200);
        assert_eq!(call(&app, "/invoices/list", &cookie).await.0, 200);
    }
    let grants = app.provider_grants().await;
    assert_eq!(
        count(&grants, &format!("refresh_token {}", orders.audience)),
        1
    );
    assert_eq!(
        count(&grants, &format!("refresh_token {}", invoices.audience)),
        1
    );
}

#[tokio::test]
async fn refreshing_one_resource_token_leaves_the_other_alone() {
    let (orders, invoices) = two_resources().await;
    let app = resource_app(&orders, &invoices).await;
    let cookie = logged_in(&app).await;
    assert_eq!(call(&app, "/orders/a", &cookie).await.0, 200);
    assert_eq!(call(&app, "/invoices/a", &cookie).await.0, 200);
    let orders_before = last_token(&orders);
    let invoices_before = last_token(&invoices);

    app.clock.advance(HOUR + Duration::from_secs(1));
    assert_eq!(call(&app, "/orders/a", &cookie).await.0, 200);
    let orders_after = last_token(&orders);
    assert_ne!(orders_before, orders_after, "A's token was renewed");

    let session = app.session_for(&cookie).await.expect("session");
    let held = session
        .data
        .route_tokens
        .get(gatehouse::session::RouteTokenFor::Resource(
            &invoices.audience,
        ))
        .expect("B's token is still held");
    assert_eq!(
        held.access_token.expose_secret(),
        invoices_before,
        "B's token untouched by A's refresh"
    );
    let grants = app.provider_grants().await;
    assert_eq!(
        count(&grants, &format!("refresh_token {}", orders.audience)),
        2
    );
    assert_eq!(
        count(&grants, &format!("refresh_token {}", invoices.audience)),
        1
    );
}

#[tokio::test]
async fn fifty_calls_on_two_instances_refresh_each_resource_once_and_keep_the_grant() {
    let (orders, invoices) = two_resources().await;
    let first = resource_app(&orders, &invoices).await;
    let second = spawn_app_with(AppOptions {
        share: Some(&first),
        routes: resource_routes(&orders, &invoices),
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await;
    let cookie = logged_in(&first).await;
    assert_eq!(call(&first, "/orders/a", &cookie).await.0, 200);
    assert_eq!(call(&second, "/invoices/a", &cookie).await.0, 200);

    // Both resource tokens due on both instances.
    first.clock.advance(HOUR + Duration::from_secs(1));
    second.clock.advance(HOUR + Duration::from_secs(1));
    let calls = (0..50).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        let path = if i % 4 < 2 {
            "/orders/x"
        } else {
            "/invoices/x"
        };
        call(app, path, &cookie)
    });
    let results = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = results.iter().map(|(status, _)| *status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let grants = first.provider_grants().await;
    assert_eq!(
        count(&grants, &format!("refresh_token {}", orders.audience)),
        2,
        "one refresh for A (after the first fetch): {grants}"
    );
    assert_eq!(
        count(&grants, &format!("refresh_token {}", invoices.audience)),
        2,
        "one refresh for B: {grants}"
    );
    assert_eq!(
        count(&grants, "refresh_token_errors"),
        0,
        "no refresh token replayed"
    );
    assert_eq!(count(&grants, "refresh_token"), 4);

    // The grant lives: the session's own token refreshes with the rotated refresh token.
    let session = first.session_for(&cookie).await.expect("session");
    let refresh_token = session
        .data
        .tokens
        .refresh_token
        .clone()
        .expect("refresh token");
    let introspected = first.introspect(refresh_token.expose_secret()).await;
    assert_eq!(
        introspected["active"], true,
        "the rotated refresh token is live"
    );
    first.clock.advance(HOUR + Duration::from_secs(1));
    second.clock.advance(HOUR + Duration::from_secs(1));
    assert_eq!(call(&second, "/orders/x", &cookie).await.0, 200);
    assert_eq!(
        count(&first.provider_grants().await, "refresh_token_errors"),
        0
    );
}

async fn exchange_app(provider: Option<&ProviderProcess>, downstream: &TokenUpstream) -> TestApp {
    spawn_app_with(AppOptions {
        provider,
        routes: vec![Route::new("/reports", &downstream.base)
            .exchange(&downstream.audience, Some("reports:read"))],
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await
}

#[tokio::test]
async fn an_exchange_route_carries_the_exchanged_token_once_per_lifetime() {
    let issuer = &shared_provider().issuer;
    let downstream = spawn_token_upstream(issuer, Some("urn:gatehouse:test:reports")).await;
    let app = exchange_app(None, &downstream).await;
    let cookie = logged_in(&app).await;

    for _ in 0..10 {
        let (status, body) = call(&app, "/reports/q", &cookie).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["claims"]["aud"], "urn:gatehouse:test:reports");
        assert_eq!(body["claims"]["sub"], "alice");
        assert_eq!(body["claims"]["act"]["sub"], app.client_id.as_str());
        assert_eq!(body["claims"]["scope"], "reports:read");
    }
    let exchanged = last_token(&downstream);
    let grants = app.provider_grants().await;
    assert_eq!(count(&grants, EXCHANGE_GRANT), 1, "ten calls, one exchange");

    // The exchanged token lives 300 s: past it, the next call exchanges again.
    app.clock.advance(Duration::from_secs(301));
    assert_eq!(call(&app, "/reports/q", &cookie).await.0, 200);
    assert_ne!(last_token(&downstream), exchanged);
    assert_eq!(count(&app.provider_grants().await, EXCHANGE_GRANT), 2);
}

async fn exchange_failure(provider: &ProviderProcess, mode: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/__test/exchange-failure?mode={mode}",
            provider.issuer
        ))
        .send()
        .await
        .expect("provider control");
    assert!(response.status().is_success());
}

#[tokio::test]
async fn a_refused_exchange_ends_the_session_and_a_transient_failure_keeps_it() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let downstream =
        spawn_token_upstream(&provider.issuer, Some("urn:gatehouse:test:reports")).await;
    let app = exchange_app(Some(&provider), &downstream).await;

    let cookie = logged_in(&app).await;
    exchange_failure(&provider, "down").await;
    let response = app.get_with_session("/reports/q", &cookie).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        app.get_with_session("/auth/user", &cookie).await.status(),
        200,
        "a transient failure keeps the session"
    );
    exchange_failure(&provider, "off").await;
    assert_eq!(
        call(&app, "/reports/q", &cookie).await.0,
        200,
        "served once it is back"
    );

    let cookie = logged_in(&app).await;
    exchange_failure(&provider, "invalid_grant").await;
    assert_eq!(
        app.get_with_session("/reports/q", &cookie).await.status(),
        401
    );
    assert_eq!(
        app.get_with_session("/auth/user", &cookie).await.status(),
        401,
        "invalid_grant ends the session"
    );
    exchange_failure(&provider, "off").await;
}

#[tokio::test]
async fn no_route_token_is_in_the_clear_in_redis() {
    let (orders, invoices) = two_resources().await;
    let app = resource_app(&orders, &invoices).await;
    let cookie = logged_in(&app).await;
    assert_eq!(call(&app, "/orders/a", &cookie).await.0, 200);
    assert_eq!(call(&app, "/invoices/a", &cookie).await.0, 200);
    let tokens = [last_token(&orders), last_token(&invoices)];
    let dump = app.redis_dump().await;
    for values in dump.values() {
        for value in values {
            for token in &tokens {
                let needle = token.as_bytes();
                assert!(
                    !value.windows(needle.len()).any(|w| w == needle),
                    "a resource token is readable in Redis"
                );
            }
        }
    }
}

#[tokio::test]
async fn check_config_online_reports_what_the_provider_offers_for_tokens_per_upstream() {
    let issuer = &shared_provider().issuer;
    let routes = format!(
        "dpop = true\n{}\n{}",
        Route::new("/orders", "https://orders.internal")
            .resource("https://orders.example")
            .toml(),
        Route::new("/reports", "https://reports.internal")
            .exchange("https://reports.internal", None)
            .toml()
    );
    let output = crate::helpers::check_online::check_online(issuer, &routes);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "resource indicators (RFC 8707): not advertised in discovery (no standard member); 1 route resource(s) asked for at login",
        "token exchange (RFC 8693): yes",
        "DPoP (RFC 9449): dpop_signing_alg_values_supported ES256",
        EXCHANGE_GRANT,
    ] {
        assert!(stdout.contains(expected), "`{expected}` missing from:\n{stdout}");
    }
    assert!(
        !stdout.contains("dpop = true, but"),
        "no DPoP warning: {stdout}"
    );
}

#[tokio::test]
async fn a_resource_token_the_provider_cannot_issue_now_answers_503_and_keeps_the_session() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let orders = spawn_token_upstream(&provider.issuer, None).await;
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        routes: vec![Route::new("/orders", &orders.base).resource(&orders.audience)],
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await;
    let cookie = logged_in(&app).await;
    let control = |on: &'static str| {
        let url = format!("{}/__test/token-down?on={on}", provider.issuer);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .send()
                .await
                .expect("control");
            assert!(response.status().is_success());
        }
    };
    control("1").await;
    let response = app.get_with_session("/orders/a", &cookie).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        app.get_with_session("/auth/user", &cookie).await.status(),
        200
    );
    control("0").await;
    assert_eq!(
        call(&app, "/orders/a", &cookie).await.0,
        200,
        "served once it is back"
    );
    last_token(&orders);
}

#[tokio::test]
async fn a_sessions_token_bytes_count_its_route_tokens_too() {
    let (orders, invoices) = two_resources().await;
    let app = resource_app(&orders, &invoices).await;
    let cookie = logged_in(&app).await;
    assert_eq!(call(&app, "/orders/a", &cookie).await.0, 200);
    assert_eq!(call(&app, "/invoices/a", &cookie).await.0, 200);
    let route_tokens = last_token(&orders).len() + last_token(&invoices).len();

    let session = app.session_for(&cookie).await.expect("session");
    let own = &session.data.tokens;
    let own_bytes = own.access_token.expose_secret().len()
        + own
            .refresh_token
            .as_ref()
            .expect("refresh token")
            .expose_secret()
            .len()
        + own.id_token.expose_secret().len();
    assert_eq!(session.data.route_tokens.token_bytes(), route_tokens);
    // What bench/run subtracts from a session's Redis bytes: every token it carries.
    assert_eq!(session.data.token_bytes(), own_bytes + route_tokens);
}
