//! The session cache: warm sessions are served without Redis, and yet a logout, a
//! revocation, a back-channel logout or a refresh at any instance takes effect at every
//! other instance on its very next call; a broken invalidation channel empties the cache.

use std::time::Duration;

use serde_json::json;

use crate::helpers::echo::{spawn_echo, EchoUpstream};
use crate::helpers::logout_tokens::{logout_claims, post_logout_token, sign, unix_now};
use crate::helpers::processes::RedisServer;
use crate::helpers::session_cache::{self, hits, warm};
use crate::helpers::{
    gatehouse_cli, proxied_call, spawn_app_with, wait_until_cache_serves, AppOptions, Browser,
    RateLimits, Route, SessionKeys, TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);
/// An instance with no rate limits and a route to `echo`.
async fn instance(
    echo: &EchoUpstream,
    share: Option<&TestApp>,
    redis_url: Option<String>,
    session: SessionKeys,
) -> TestApp {
    let app = spawn_app_with(AppOptions {
        share,
        redis_url,
        routes: vec![Route::new("/api", &echo.base)],
        rate_limits: RateLimits::off(),
        session,
        ..AppOptions::default()
    })
    .await;
    wait_until_cache_serves(app.store.as_ref()).await;
    app
}

/// A proxied call: its status and the bearer the upstream saw.
async fn api_call(app: &TestApp, cookie: &str) -> (u16, Option<String>) {
    let (status, bearer, _) = proxied_call(app, cookie).await;
    (status, bearer)
}

/// A session of its own for `sub` (its cookie).
async fn copy_session(app: &TestApp, template: &str, sub: &str, sid: &str) -> String {
    session_cache::copy_session(app, template, sub, sid).await.0
}

#[tokio::test]
async fn logouts_revocations_and_back_channel_logouts_end_a_cached_session_at_once() {
    let echo = spawn_echo().await;
    let a = instance(&echo, None, None, SessionKeys::long()).await;
    let b = instance(&echo, Some(&a), None, SessionKeys::long()).await;
    let mut browser = a.browser();
    browser.login("template").await;
    let template = browser.session_cookie().expect("cookie");

    let mut misses = Vec::new();
    for round in 0..200 {
        let sub = format!("user{round}");
        let sid = format!("sid-{round}");
        let cookie = copy_session(&a, &template, &sub, &sid).await;
        warm(&a, &cookie).await;
        match round % 3 {
            // A logout through B, with the sid the SPA got from /auth/user.
            0 => {
                let mut other = Browser::new(&b);
                other
                    .cookies
                    .insert(b.cookie_name().to_owned(), cookie.clone());
                let user = other.api_get("/auth/user").await.json();
                let logout = user["session"]["logout_url"].as_str().expect("logout_url");
                assert_eq!(other.get(logout).await.status, 302);
            }
            // The operator's command.
            1 => {
                let (ok, out) = gatehouse_cli(&b, &["sessions", "revoke", "--sub", &sub]);
                assert!(ok && out.contains("revoked 1 session(s)"), "{out}");
            }
            // The provider's back-channel logout, delivered to B.
            _ => {
                let claims = logout_claims(&b, &sid, &format!("jti-{round}"), unix_now());
                let token = sign(&b.issuer, json!({}), claims).await;
                assert_eq!(post_logout_token(&b, &token).await.status, 200);
            }
        }
        let (status, _) = api_call(&a, &cookie).await;
        if status != 401 {
            misses.push((round, status));
        }
    }
    assert!(
        misses.is_empty(),
        "calls after the end answered: {misses:?}"
    );
}

#[tokio::test]
async fn a_refresh_at_one_instance_reaches_the_others_cache() {
    let echo = spawn_echo().await;
    let a = instance(&echo, None, None, SessionKeys::long()).await;
    let b = instance(&echo, Some(&a), None, SessionKeys::long()).await;
    let mut browser = a.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    warm(&a, &cookie).await;
    let (_, old_bearer) = api_call(&a, &cookie).await;

    b.clock.advance(HOUR + Duration::from_secs(1));
    let (status, new_bearer) = api_call(&b, &cookie).await;
    assert_eq!(status, 200);
    assert_ne!(new_bearer, old_bearer, "B refreshed");
    let (status, seen_at_a) = api_call(&a, &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(seen_at_a, new_bearer, "A's next call carries B's new token");

    // Later A must refresh too: with B's rotated refresh token, not the one it cached.
    a.clock.advance(2 * HOUR);
    let (status, third) = api_call(&a, &cookie).await;
    assert_eq!(status, 200);
    assert_ne!(third, new_bearer);
    let grants = a.provider_grants().await;
    assert_eq!(grants["refresh_token"], 2, "{grants}");
    assert_eq!(
        grants["refresh_token_errors"].as_u64().unwrap_or(0),
        0,
        "no refresh with a used refresh token: {grants}"
    );
}

#[tokio::test]
async fn a_broken_invalidation_channel_never_serves_a_stale_session() {
    let redis = RedisServer::start();
    let echo = spawn_echo().await;
    let a = instance(&echo, None, Some(redis.url()), SessionKeys::long()).await;
    let mut browser = a.browser();
    browser.login("alice").await;
    let template = browser.session_cookie().expect("cookie");
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    // The tracking connection is cut, and the session deleted while nobody listens.
    let cookie = copy_session(&a, &template, "bob", "sid-bob").await;
    warm(&a, &cookie).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    let tracking: Vec<&str> = clients
        .lines()
        .filter(|line| line.contains(" flags=tB "))
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("id="))
        .collect();
    assert_eq!(tracking.len(), 1, "one tracking connection: {clients}");
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(tracking[0])
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:s:*", a.key_prefix))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(
        api_call(&a, &cookie).await.0,
        401,
        "no stale 200 after CLIENT KILL"
    );

    // Redis restarted (without persistence): every session is gone.
    wait_until_cache_serves(a.store.as_ref()).await;
    browser.login("carol").await;
    let cookie = browser.session_cookie().expect("cookie");
    warm(&a, &cookie).await;
    redis.restart();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(api_call(&a, &cookie).await.0);
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "after a restart the session is gone, never served stale: {statuses:?}"
    );
    assert!(statuses.contains(&401), "{statuses:?}");
}

#[tokio::test]
async fn an_idle_timeout_ends_a_cached_session_on_time() {
    let echo = spawn_echo().await;
    let a = instance(
        &echo,
        None,
        None,
        SessionKeys::new()
            .idle_timeout_secs(120)
            .touch_interval_secs(60)
            .absolute_timeout_secs(86400),
    )
    .await;
    let mut browser = a.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    warm(&a, &cookie).await;

    // A use after the touch interval slides the idle expiry (and writes it to Redis).
    a.clock.advance(Duration::from_secs(100));
    assert_eq!(api_call(&a, &cookie).await.0, 200);
    warm(&a, &cookie).await;
    // 119 s idle since that use: still alive (the entry was cached just before).
    a.clock.advance(Duration::from_secs(119));
    assert_eq!(
        api_call(&a, &cookie).await.0,
        200,
        "slid by the use at 100 s"
    );
    warm(&a, &cookie).await;
    // Idle for longer than the timeout: over, though the entry is in the cache (warm just
    // proved it; the clock check does not depend on where the record came from).
    a.clock.advance(Duration::from_secs(121));
    assert_eq!(api_call(&a, &cookie).await.0, 401);
}

#[tokio::test]
async fn a_cached_session_opens_only_for_the_cookie_that_holds_its_secret() {
    let echo = spawn_echo().await;
    let a = instance(&echo, None, None, SessionKeys::long()).await;
    let mut browser = a.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    // Warm: the record is cached and its opened form kept for this cookie.
    warm(&a, &cookie).await;
    warm(&a, &cookie).await;

    // The same session id (so the same cache entry) with any other secret is no session.
    let (id, secret) = cookie.split_once('.').expect("id.secret");
    let mut other = secret.as_bytes().to_vec();
    other[0] = if other[0] == b'A' { b'B' } else { b'A' };
    let forged = format!("{id}.{}", String::from_utf8(other).expect("ascii"));
    // Until one forged call has found the cached entry (under load a call may read Redis
    // instead): every one of them is refused.
    let mut reached_the_cache = false;
    for _ in 0..100 {
        let before = hits(&a);
        assert_eq!(api_call(&a, &forged).await.0, 401);
        if hits(&a) > before {
            reached_the_cache = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        reached_the_cache,
        "the forged cookie reached the cached entry"
    );
    assert_eq!(
        api_call(&a, &cookie).await.0,
        200,
        "the real cookie still works"
    );
}
