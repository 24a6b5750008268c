//! Token lifecycle: refresh without races, provider-side revocation and outages,
//! back-channel logout, session lifetimes, operator commands.

use std::collections::HashSet;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::helpers::echo::{spawn_echo, EchoUpstream};
use crate::helpers::logout_tokens::{logout_claims, post_logout_token, sign, unix_now};
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::provider_logout::confirm_end_session;
use crate::helpers::{
    gatehouse_cli, proxied_call as api_call, spawn_app_with, AppOptions, Browser, Route,
    SessionKeys, TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);

/// An app with a route to `echo`; `session` usually starts from `SessionKeys::long()`, so
/// that moving the clock past token expiry ends no session.
async fn app(
    echo: &EchoUpstream,
    provider: Option<&ProviderProcess>,
    session: SessionKeys,
) -> TestApp {
    spawn_app_with(AppOptions {
        provider,
        routes: vec![Route::new("/api", &echo.base)],
        session,
        ..AppOptions::default()
    })
    .await
}

async fn second_instance(first: &TestApp, echo: &EchoUpstream, session: SessionKeys) -> TestApp {
    spawn_app_with(AppOptions {
        share: Some(first),
        routes: vec![Route::new("/api", &echo.base)],
        session,
        ..AppOptions::default()
    })
    .await
}

async fn provider_control(issuer: &str, path: &str) {
    let response = reqwest::Client::new()
        .post(format!("{issuer}{path}"))
        .send()
        .await
        .expect("provider control");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
}

async fn grants(app: &TestApp) -> (u64, u64) {
    let counts = app.provider_grants().await;
    (
        counts["refresh_token"].as_u64().unwrap_or(0),
        counts["refresh_token_errors"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn fifty_concurrent_calls_with_an_expired_token_share_one_refresh() {
    let echo = spawn_echo().await;
    let app = app(&echo, None, SessionKeys::long()).await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let old = browser.tokens().await;

    app.clock.advance(HOUR + Duration::from_secs(1));
    let calls = (0..50).map(|_| api_call(&app, &cookie));
    let results = futures_util::future::join_all(calls).await;
    assert!(
        results.iter().all(|(status, ..)| *status == 200),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let bearers: HashSet<_> = results
        .iter()
        .map(|(_, bearer, _)| bearer.clone().expect("bearer"))
        .collect();
    assert_eq!(bearers.len(), 1, "every call used the one refreshed token");
    let new_token = bearers.into_iter().next().expect("token");
    assert_ne!(
        new_token,
        format!("Bearer {}", old.access_token.expose_secret())
    );
    assert_eq!(
        grants(&app).await,
        (1, 0),
        "exactly one refresh at the provider, no failures"
    );
    assert_eq!(
        app.introspect(new_token.trim_start_matches("Bearer "))
            .await["active"],
        true
    );
    let stored = browser.tokens().await;
    assert_ne!(
        stored
            .refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        old.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        "the rotated refresh token was stored"
    );
}

#[tokio::test]
async fn two_instances_refresh_once_between_them() {
    let echo = spawn_echo().await;
    let first = app(&echo, None, SessionKeys::long()).await;
    let second = second_instance(&first, &echo, SessionKeys::long()).await;
    let mut browser = first.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");

    first.clock.advance(HOUR + Duration::from_secs(1));
    second.clock.advance(HOUR + Duration::from_secs(1));
    let calls = (0..50).map(|i| api_call(if i % 2 == 0 { &first } else { &second }, &cookie));
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(|(status, ..)| *status == 200));
    let bearers: HashSet<_> = results
        .iter()
        .map(|(_, bearer, _)| bearer.clone().expect("bearer"))
        .collect();
    assert_eq!(bearers.len(), 1);
    assert_eq!(
        grants(&first).await,
        (1, 0),
        "one refresh across both instances"
    );
}

#[tokio::test]
async fn a_refresh_slower_than_the_lock_expiry_still_happens_once() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let app = app(
        &echo,
        Some(&provider),
        SessionKeys::long().refresh_lock_ttl_ms(600),
    )
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");

    provider_control(&provider.issuer, "/__test/token-delay?ms=2000").await;
    app.clock.advance(HOUR + Duration::from_secs(1));
    let calls = (0..10).map(|_| api_call(&app, &cookie));
    let results = futures_util::future::join_all(calls).await;
    provider_control(&provider.issuer, "/__test/token-delay?ms=0").await;
    assert!(
        results.iter().all(|(status, ..)| *status == 200),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(
        grants(&app).await,
        (1, 0),
        "the lock was renewed while the provider was slow"
    );
    let (status, _, _) = api_call(&app, &cookie).await;
    assert_eq!(status, 200, "the session still works afterwards");
}

/// A provider of its own issuing access tokens that live `ttl_secs`, an app on it with a
/// route to an echo upstream, and alice's session cookie.
async fn logged_in_with_token_lifetime(
    ttl_secs: u64,
    session: SessionKeys,
) -> (ProviderProcess, TestApp, String) {
    let provider = ProviderProcess::start(&ProviderOptions {
        access_token_ttl_secs: ttl_secs,
        ..ProviderOptions::default()
    });
    let echo = spawn_echo().await;
    let app = app(&echo, Some(&provider), session).await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    (provider, app, cookie)
}

/// Issue 9's refresh storm: a token endpoint slower than the skew hands back a token that is
/// already inside the skew (its expiry counts from when the request was sent). The calls
/// that waited for that refresh use the new token instead of refreshing it again.
#[tokio::test]
async fn a_slow_token_endpoint_still_gets_one_refresh_for_ten_calls() {
    let (provider, app, cookie) =
        logged_in_with_token_lifetime(6, SessionKeys::long().refresh_skew_secs(2)).await;

    provider_control(&provider.issuer, "/__test/token-delay?ms=4000").await;
    // Inside the skew (6 s token, refreshed from 4 s on), not yet expired.
    app.clock.advance(Duration::from_millis(4500));
    let started = std::time::Instant::now();
    let calls = (0..10).map(|_| api_call(&app, &cookie));
    let results = futures_util::future::join_all(calls).await;
    let took = started.elapsed();
    provider_control(&provider.issuer, "/__test/token-delay?ms=0").await;
    assert!(
        results.iter().all(|(status, ..)| *status == 200),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(
        grants(&app).await,
        (1, 0),
        "exactly one refresh, took {took:?}"
    );
    let bearers: HashSet<_> = results
        .iter()
        .map(|(_, bearer, _)| bearer.clone().expect("bearer"))
        .collect();
    assert_eq!(bearers.len(), 1, "every call used the one refreshed token");
}

/// A skew longer than the token's lifetime would refresh every token on every call; it is
/// capped at half the lifetime.
#[tokio::test]
async fn the_skew_never_exceeds_half_the_token_lifetime() {
    let (_provider, app, cookie) =
        logged_in_with_token_lifetime(60, SessionKeys::long().refresh_skew_secs(120)).await;

    for _ in 0..3 {
        assert_eq!(api_call(&app, &cookie).await.0, 200);
    }
    assert_eq!(
        grants(&app).await,
        (0, 0),
        "a fresh 60 s token is used as it is"
    );
    app.clock.advance(Duration::from_secs(31));
    assert_eq!(api_call(&app, &cookie).await.0, 200);
    assert_eq!(
        grants(&app).await,
        (1, 0),
        "past half its life it is refreshed"
    );
}

#[tokio::test]
async fn a_revoked_grant_ends_the_session() {
    let echo = spawn_echo().await;
    let app = app(&echo, None, SessionKeys::long()).await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    assert_eq!(api_call(&app, &cookie).await.0, 200);

    provider_control(
        &app.issuer,
        &format!(
            "/__test/revoke-grants?client_id={}&sub=alice",
            app.client_id
        ),
    )
    .await;
    app.clock.advance(HOUR + Duration::from_secs(1));
    let (status, _, headers) = api_call(&app, &cookie).await;
    assert_eq!(status, 401);
    assert!(
        headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("Max-Age=0")),
        "cookie cleared"
    );
    assert_eq!(app.session_key_count().await, 0, "session deleted");
    browser
        .api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn a_provider_outage_answers_503_and_keeps_the_session() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let app = app(
        &echo,
        Some(&provider),
        SessionKeys::long().refresh_skew_secs(120),
    )
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let old = format!(
        "Bearer {}",
        browser.tokens().await.access_token.expose_secret()
    );

    provider_control(&provider.issuer, "/__test/token-down?on=1").await;
    // Inside the skew but not yet expired: the refresh fails, the old token still serves.
    app.clock.advance(HOUR - Duration::from_secs(60));
    let (status, bearer, _) = api_call(&app, &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(bearer.as_deref(), Some(old.as_str()));

    // Expired and the provider still down: 503 with Retry-After, the session stays.
    app.clock.advance(Duration::from_secs(120));
    let (status, _, headers) = api_call(&app, &cookie).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert!(headers.get("set-cookie").is_none());
    assert_eq!(
        browser.api_get("/auth/user").await.status,
        200,
        "still logged in"
    );

    provider_control(&provider.issuer, "/__test/token-down?on=0").await;
    let (status, bearer, _) = api_call(&app, &cookie).await;
    assert_eq!(status, 200, "works again once the provider is back");
    assert_ne!(bearer.as_deref(), Some(old.as_str()));
    assert_eq!(grants(&app).await.0, 1);
}

/// Completes RP-initiated logout at the provider directly (the user logs out there), so
/// the provider sends its back-channel logout token to gatehouse.
async fn log_out_at_provider(browser: &Browser<'_>) {
    let app = browser.app;
    let id_token = browser.tokens().await.id_token.expose_secret().to_owned();
    let mut end_session = url::Url::parse(&format!("{}/session/end", app.issuer)).expect("url");
    end_session
        .query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("post_logout_redirect_uri", &format!("{}/", app.base));
    confirm_end_session(&browser.provider_http, &app.issuer, end_session.as_str()).await;
}

#[tokio::test]
async fn back_channel_logout_from_the_provider_ends_the_session_everywhere() {
    let echo = spawn_echo().await;
    let first = app(&echo, None, SessionKeys::long()).await;
    let second = second_instance(&first, &echo, SessionKeys::long()).await;
    let mut alice = first.browser();
    alice.login("alice").await;
    let mut alice_elsewhere = first.browser(); // another provider session of alice's
    alice_elsewhere.login("alice").await;
    let mut bob = first.browser();
    bob.login("bob").await;
    let alice_cookie = alice.session_cookie().expect("cookie");
    assert_eq!(api_call(&second, &alice_cookie).await.0, 200);

    log_out_at_provider(&alice).await;

    assert_eq!(
        api_call(&first, &alice_cookie).await.0,
        401,
        "ended at the instance the provider called"
    );
    assert_eq!(
        api_call(&second, &alice_cookie).await.0,
        401,
        "and at the other instance"
    );
    let other = alice_elsewhere.session_cookie().expect("cookie");
    assert_eq!(
        api_call(&second, &other).await.0,
        200,
        "only the provider session that logged out"
    );
    assert_eq!(
        api_call(&second, &bob.session_cookie().expect("cookie"))
            .await
            .0,
        200
    );
}

async fn provider_sid(app: &TestApp, cookie: &str) -> String {
    app.session_for(cookie)
        .await
        .expect("session")
        .data
        .provider_sid
        .clone()
        .expect("provider sid")
}

#[tokio::test]
async fn hostile_logout_tokens_are_refused_and_end_nothing() {
    let echo = spawn_echo().await;
    let app = app(&echo, None, SessionKeys::long()).await;
    let mut alice = app.browser();
    alice.login("alice").await;
    let cookie = alice.session_cookie().expect("cookie");
    let sid = provider_sid(&app, &cookie).await;
    let now = unix_now();
    let claims = |jti: &str| logout_claims(&app, &sid, jti, now);
    let with = |jti: &str, change: &dyn Fn(&mut Value)| {
        let mut c = claims(jti);
        change(&mut c);
        c
    };
    let remove = |member: &'static str| {
        move |c: &mut Value| {
            c.as_object_mut().expect("object").remove(member);
        }
    };

    // Validly signed by the provider's own key, each with one thing wrong.
    let mut hostile = Vec::new();
    for (what, header, claims) in [
        (
            "wrong aud",
            json!({}),
            with("j1", &|c| c["aud"] = json!("someone-else")),
        ),
        (
            "wrong iss",
            json!({}),
            with("j2", &|c| c["iss"] = json!("https://evil.example")),
        ),
        ("nonce", json!({}), with("j3", &|c| c["nonce"] = json!("n"))),
        ("no events", json!({}), with("j4", &remove("events"))),
        (
            "old iat",
            json!({}),
            with("j5", &|c| c["iat"] = json!(now - 3600)),
        ),
        ("wrong typ", json!({"typ": "at+jwt"}), claims("j6")),
        ("neither sid nor sub", json!({}), with("j7", &remove("sid"))),
    ] {
        hostile.push((what, sign(&app.issuer, header, claims).await));
    }
    let valid = sign(&app.issuer, json!({}), claims("j-valid")).await;
    let mut bad_signature = valid.clone();
    let last = bad_signature.pop().expect("char");
    bad_signature.push(if last == 'A' { 'B' } else { 'A' });
    let unsigned = {
        let mut parts = valid.split('.');
        let _ = parts.next();
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none"}"#,
        );
        format!("{header}.{}.", parts.next().expect("payload"))
    };
    hostile.push(("bad signature", bad_signature));
    hostile.push(("alg none", unsigned));
    hostile.push(("not a JWT", "garbage".to_owned()));

    for (what, token) in &hostile {
        let response = post_logout_token(&app, token).await;
        assert_eq!(response.status, 400, "{what}: {}", response.body);
        assert_eq!(response.json()["error"], "invalid_request", "{what}");
        assert_eq!(response.headers["cache-control"], "no-store");
        assert_eq!(
            api_call(&app, &cookie).await.0,
            200,
            "{what} ended the session"
        );
    }

    let accepted = post_logout_token(&app, &valid).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(accepted.headers["cache-control"], "no-store");
    assert_eq!(
        api_call(&app, &cookie).await.0,
        401,
        "the valid token ended it"
    );

    let mut again = app.browser();
    again.login("alice").await;
    let replayed = post_logout_token(&app, &valid).await;
    assert_eq!(replayed.status, 400, "replay refused");
    assert_eq!(
        api_call(&app, &again.session_cookie().expect("cookie"))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn idle_and_absolute_lifetimes_end_sessions() {
    let echo = spawn_echo().await;
    let idle = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api", &echo.base)],
        session: SessionKeys::new()
            .idle_timeout_secs(120)
            .absolute_timeout_secs(300)
            .touch_interval_secs(60),
        ..AppOptions::default()
    })
    .await;
    let mut browser = idle.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    for _ in 0..2 {
        idle.clock.advance(Duration::from_secs(100));
        assert_eq!(api_call(&idle, &cookie).await.0, 200, "use keeps it alive");
    }
    idle.clock.advance(Duration::from_secs(121));
    assert_eq!(api_call(&idle, &cookie).await.0, 401, "idle timeout");

    let mut busy = idle.browser();
    busy.login("alice").await;
    let cookie = busy.session_cookie().expect("cookie");
    for _ in 0..2 {
        idle.clock.advance(Duration::from_secs(100));
        assert_eq!(api_call(&idle, &cookie).await.0, 200);
    }
    idle.clock.advance(Duration::from_secs(101));
    assert_eq!(
        api_call(&idle, &cookie).await.0,
        401,
        "absolute lifetime, however busy"
    );
}

#[tokio::test]
async fn a_session_ends_with_its_refresh_token() {
    let provider = ProviderProcess::start(&ProviderOptions {
        refresh_token_ttl_secs: 200,
        ..ProviderOptions::default()
    });
    let echo = spawn_echo().await;
    let app = app(&echo, Some(&provider), SessionKeys::long()).await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let user = browser.api_get("/auth/user").await.json();
    assert!(
        user["session"]["expires_in"]
            .as_i64()
            .is_some_and(|s| s <= 200),
        "{user}"
    );
    app.clock.advance(Duration::from_secs(150));
    assert_eq!(api_call(&app, &cookie).await.0, 200);
    app.clock.advance(Duration::from_secs(51));
    assert_eq!(
        api_call(&app, &cookie).await.0,
        401,
        "never outlives the refresh token"
    );
}

#[tokio::test]
async fn operators_revoke_every_session_of_a_user() {
    let echo = spawn_echo().await;
    let first = app(&echo, None, SessionKeys::long()).await;
    let second = second_instance(&first, &echo, SessionKeys::long()).await;
    let mut alice_cookies = Vec::new();
    for _ in 0..3 {
        let mut browser = first.browser();
        browser.login("alice").await;
        alice_cookies.push(browser.session_cookie().expect("cookie"));
    }
    let mut bob = first.browser();
    bob.login("bob").await;
    let bob_cookie = bob.session_cookie().expect("cookie");

    let (ok, listed) = gatehouse_cli(&first, &["sessions", "list", "--sub", "alice"]);
    assert!(ok, "{listed}");
    assert_eq!(
        listed.lines().filter(|l| l.contains(" alice ")).count(),
        3,
        "{listed}"
    );
    assert!(
        listed.contains("Unknown device"),
        "the device column: {listed}"
    );
    let (ok, count) = gatehouse_cli(&first, &["sessions", "count"]);
    assert!(ok, "{count}");
    assert_eq!(count.trim(), "4");

    let (ok, revoked) = gatehouse_cli(&first, &["sessions", "revoke", "--sub", "alice"]);
    assert!(ok, "{revoked}");
    assert!(revoked.contains("revoked 3 session(s)"), "{revoked}");
    for cookie in &alice_cookies {
        assert_eq!(api_call(&first, cookie).await.0, 401);
        assert_eq!(api_call(&second, cookie).await.0, 401);
    }
    assert_eq!(api_call(&first, &bob_cookie).await.0, 200, "bob untouched");
    assert_eq!(api_call(&second, &bob_cookie).await.0, 200);

    let sid = first
        .session_for(&bob_cookie)
        .await
        .expect("bob")
        .data
        .provider_sid
        .clone()
        .expect("sid");
    let (ok, revoked) = gatehouse_cli(&first, &["sessions", "revoke", "--sid", &sid]);
    assert!(ok && revoked.contains("revoked 1 session(s)"), "{revoked}");
    assert_eq!(api_call(&second, &bob_cookie).await.0, 401);
}

#[tokio::test]
async fn a_key_rotated_in_at_the_provider_is_fetched_once_and_trusted() {
    // Its own provider: the rotation must not surprise other tests.
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let app = app(&echo, Some(&provider), SessionKeys::long()).await;
    let mut alice = app.browser();
    alice.login("alice").await;
    let cookie = alice.session_cookie().expect("cookie");
    let sid = provider_sid(&app, &cookie).await;
    let now = unix_now();
    let claims = |jti: &str| logout_claims(&app, &sid, jti, now);
    let jwks_fetches = || async {
        let answer: Value = reqwest::Client::new()
            .get(format!("{}/__test/requests?path=/jwks", provider.issuer))
            .send()
            .await
            .expect("request count")
            .json()
            .await
            .expect("json");
        answer["count"].as_u64().expect("count")
    };
    let fetched_at_start = jwks_fetches().await;
    assert!(fetched_at_start >= 1, "the key set was fetched at start-up");

    let rotated: Value = reqwest::Client::new()
        .post(format!("{}/__test/rotate-key", provider.issuer))
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("json");
    let kid = rotated["kid"].as_str().expect("kid");
    let token = sign(&provider.issuer, json!({"kid": kid}), claims("rotated-1")).await;
    let response = post_logout_token(&app, &token).await;
    assert_eq!(
        response.status, 200,
        "the new key was fetched: {}",
        response.body
    );
    assert_eq!(api_call(&app, &cookie).await.0, 401);
    assert_eq!(
        jwks_fetches().await,
        fetched_at_start + 1,
        "the unknown key cost one fetch of the key set"
    );

    // A key the provider never published is refused, and (refetches being rate-limited)
    // does not make gatehouse hammer the provider's JWKS endpoint.
    let mut bob = app.browser();
    bob.login("bob").await;
    let bob_cookie = bob.session_cookie().expect("cookie");
    let bob_sid = provider_sid(&app, &bob_cookie).await;
    let mut forged = claims("unpublished-1");
    forged["sid"] = json!(bob_sid);
    let token = sign(&provider.issuer, json!({"kid": "unpublished"}), forged).await;
    assert_eq!(post_logout_token(&app, &token).await.status, 400);
    assert_eq!(api_call(&app, &bob_cookie).await.0, 200);
    assert_eq!(
        jwks_fetches().await,
        fetched_at_start + 1,
        "no further fetch for a key that is nowhere"
    );
}
