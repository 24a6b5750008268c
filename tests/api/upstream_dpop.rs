//! DPoP (RFC 9449) per provider: a key per session, bound tokens, and a fresh proof on every
//! proxied call and WebSocket handshake, checked by an upstream that validates proofs as a
//! real API does (`helpers::token_upstream`).

use std::collections::HashSet;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::helpers::echo::{echoed_header, spawn_echo};
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::token_upstream::{spawn_token_upstream, TokenUpstream};
use crate::helpers::{
    record_secret, shared_provider, spawn_app_with, AppOptions, Route, SessionKeys, TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);

async fn dpop_app(
    provider: Option<&ProviderProcess>,
    orders: &TokenUpstream,
    echo: &str,
) -> TestApp {
    spawn_app_with(AppOptions {
        provider,
        routes: vec![
            Route::new("/orders", &orders.base)
                .resource(&orders.audience)
                .websocket(),
            Route::new("/api", echo),
        ],
        session: SessionKeys::long(),
        main_dpop: true,
        ..AppOptions::default()
    })
    .await
}

async fn logged_in(app: &TestApp) -> String {
    let mut browser = app.browser();
    browser.login("alice").await;
    browser.session_cookie().expect("cookie")
}

async fn call(app: &TestApp, path: &str, cookie: &str) -> (u16, Value) {
    let response = app.get_with_session(path, cookie).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The session's DPoP key thumbprint, its stored form recorded for the log check.
async fn session_key(app: &TestApp, cookie: &str) -> (String, String) {
    let session = app.session_for(cookie).await.expect("session");
    let key = session
        .data
        .dpop_key
        .as_ref()
        .expect("the session has a DPoP key");
    let stored = key.stored().expose_secret().to_owned();
    record_secret(&stored);
    (key.key().expect("parses").thumbprint().to_owned(), stored)
}

#[tokio::test]
async fn every_call_carries_a_fresh_proof_the_upstream_accepts_and_a_stolen_token_is_useless() {
    let orders = spawn_token_upstream(&shared_provider().issuer, None).await;
    let echo = spawn_echo().await;
    let app = dpop_app(None, &orders, &echo.base).await;
    let cookie = logged_in(&app).await;
    let (jkt, stored_key) = session_key(&app, &cookie).await;

    for i in 0..5 {
        let (status, body) = call(&app, &format!("/orders/item/{i}?q=1"), &cookie).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["claims"]["cnf"]["jkt"],
            jkt.as_str(),
            "bound to the session's key"
        );
        assert_eq!(body["proof"]["htm"], "GET");
        assert_eq!(body["proof"]["htu"], format!("{}/item/{i}", orders.base));
    }
    let seen = orders.seen();
    assert!(seen
        .iter()
        .all(|s| s.refusal.is_none() && s.scheme == "DPoP"));
    let jtis: HashSet<String> = seen
        .iter()
        .map(|s| {
            s.proof.as_ref().expect("proof")["jti"]
                .as_str()
                .expect("jti")
                .to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 5, "no two proofs share a jti");
    let token = seen.last().expect("seen").token.clone();
    record_secret(&token);

    // The token lifted from the upstream's logs, replayed without the key.
    let at = |scheme: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "authorization",
            format!("{scheme} {token}").parse().expect("value"),
        );
        headers
    };
    assert!(
        orders.judge("GET", "/item/0", &at("Bearer")).is_some(),
        "as Bearer: refused"
    );
    assert!(
        orders.judge("GET", "/item/0", &at("DPoP")).is_some(),
        "without a proof: refused"
    );
    let (thief, _) = gatehouse::dpop::DpopKey::generate().expect("key");
    let mut with_own_proof = at("DPoP");
    let proof = thief
        .proof(
            &gatehouse::dpop::ProofTarget {
                method: "GET",
                url: &format!("{}/item/0", orders.base),
                nonce: None,
                access_token: Some(&SecretString::from(token.clone())),
            },
            gatehouse::dpop::wall_clock_secs(),
        )
        .expect("proof");
    with_own_proof.insert("dpop", proof.parse().expect("value"));
    let refusal = orders.judge("GET", "/item/0", &with_own_proof);
    assert_eq!(
        refusal.as_deref(),
        Some("proof key is not the token's cnf.jkt")
    );

    // Neither the key nor the token is readable in Redis.
    for values in app.redis_dump().await.values() {
        for value in values {
            for secret in [&stored_key, &token] {
                let needle = secret.as_bytes();
                assert!(
                    !value.windows(needle.len()).any(|w| w == needle),
                    "found in Redis"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_upstream_nonce_challenge_is_answered_once_and_the_nonce_kept() {
    let orders = spawn_token_upstream(&shared_provider().issuer, None).await;
    let echo = spawn_echo().await;
    let app = dpop_app(None, &orders, &echo.base).await;
    let cookie = logged_in(&app).await;
    assert_eq!(call(&app, "/orders/a", &cookie).await.0, 200);

    orders.require_nonce("upstream-nonce-1");
    let (status, body) = call(&app, "/orders/b", &cookie).await;
    assert_eq!(status, 200, "served after one retry: {body}");
    assert_eq!(body["proof"]["nonce"], "upstream-nonce-1");
    let refusals: Vec<_> = orders
        .seen()
        .iter()
        .filter_map(|s| s.refusal.clone())
        .collect();
    assert_eq!(
        refusals,
        vec!["use_dpop_nonce".to_owned()],
        "one challenge, one retry"
    );

    assert_eq!(call(&app, "/orders/c", &cookie).await.0, 200);
    let refusals = orders.seen().iter().filter(|s| s.refusal.is_some()).count();
    assert_eq!(refusals, 1, "the nonce was kept for the next call");
}

#[tokio::test]
async fn the_providers_nonce_flow_works_and_a_refresh_keeps_the_binding() {
    let provider = ProviderProcess::start(&ProviderOptions {
        dpop_nonce: true,
        ..ProviderOptions::default()
    });
    let orders = spawn_token_upstream(&provider.issuer, None).await;
    let echo = spawn_echo().await;
    let app = dpop_app(Some(&provider), &orders, &echo.base).await;
    let cookie = logged_in(&app).await;
    let (jkt, _) = session_key(&app, &cookie).await;
    let session = app.session_for(&cookie).await.expect("session");
    assert!(
        session.data.tokens.dpop_bound,
        "the code exchange came back DPoP-bound"
    );
    let own = session.data.tokens.access_token.expose_secret().to_owned();
    record_secret(&own);
    assert_eq!(app.introspect(&own).await["cnf"]["jkt"], jkt.as_str());

    let (status, body) = call(&app, "/orders/a", &cookie).await;
    assert_eq!(status, 200, "{body}");
    let first = orders.seen().last().expect("seen").token.clone();

    // Both tokens due: the resource token and the session's own refresh with proofs (and
    // the provider's nonce), and stay bound to the same key.
    app.clock.advance(HOUR + Duration::from_secs(1));
    let (status, body) = call(&app, "/orders/a", &cookie).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["claims"]["cnf"]["jkt"], jkt.as_str());
    assert_ne!(
        orders.seen().last().expect("seen").token,
        first,
        "a new token"
    );
    let response = app.get_with_session("/api/data", &cookie).await;
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.expect("json");
    let authorization = echoed_header(&echoed, "authorization");
    assert!(authorization[0].starts_with("DPoP "), "{authorization:?}");
    assert_eq!(echoed_header(&echoed, "dpop").len(), 1, "with a proof");
    let refreshed = authorization[0].trim_start_matches("DPoP ").to_owned();
    record_secret(&refreshed);
    assert_ne!(refreshed, own, "the session's own token was refreshed");
    assert_eq!(app.introspect(&refreshed).await["cnf"]["jkt"], jkt.as_str());
    let grants = app.provider_grants().await;
    assert_eq!(
        grants["refresh_token_errors"].as_u64().unwrap_or(0),
        0,
        "{grants}"
    );
    assert_eq!(
        grants["authorization_code_errors"].as_u64().unwrap_or(0),
        1,
        "the code exchange met the provider's use_dpop_nonce once, then carried its nonce: {grants}"
    );
}

#[tokio::test]
async fn a_websocket_handshake_carries_the_bound_token_and_its_proof() {
    let orders = spawn_token_upstream(&shared_provider().issuer, None).await;
    let echo = spawn_echo().await;
    let app = dpop_app(None, &orders, &echo.base).await;
    let cookie = logged_in(&app).await;
    let (jkt, _) = session_key(&app, &cookie).await;

    // The test upstream judges the handshake and answers it as a plain request.
    let response = app
        .http
        .get(format!("{}/orders/socket", app.base))
        .header("origin", &app.base)
        .header("cookie", format!("{}={cookie}", app.cookie_name()))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("gatehouse answers");
    assert_eq!(response.status(), 200);
    let seen = orders.seen();
    let handshake = seen.last().expect("the handshake reached the upstream");
    assert_eq!(handshake.refusal, None);
    assert_eq!(handshake.scheme, "DPoP");
    assert_eq!(handshake.claims["cnf"]["jkt"], jkt.as_str());
    let proof = handshake.proof.as_ref().expect("proof");
    assert_eq!(proof["htm"], "GET");
    assert_eq!(proof["htu"], format!("{}/socket", orders.base));
}
