//! Shared by the session-cache tests (one Redis, a cluster, Sentinel): warming a session in
//! an instance's cache, reading its hit counter, and making sessions of its own for a sub.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::{proxied_call, TestApp};

/// How many calls this instance's session cache has served.
pub fn hits(app: &TestApp) -> u64 {
    app.store.cache_statistics().expect("a cache").hits
}

/// How many sessions this instance's session cache holds.
pub fn entries(app: &TestApp) -> usize {
    app.store.cache_statistics().expect("a cache").entries
}

/// One proxied call: whether it was served from `app`'s cache (its hit counter moved; only
/// meaningful while no other call runs on `app`), and its status.
pub async fn call_counting_hits(app: &TestApp, cookie: &str) -> (u16, bool) {
    let before = hits(app);
    let (status, _, _) = proxied_call(app, cookie).await;
    (status, hits(app) > before)
}

/// Calls on `app` until one is served from its cache. (A read that overlaps any
/// invalidation, e.g. the one Redis broadcasts for the session's own creation, does not
/// fill the cache; the next read does.)
/// Under load the tracker thread may not have read a PONG yet, and then calls read Redis
/// until it has (that is the cache being careful), so this retries for up to 2 s.
pub async fn warm(app: &TestApp, cookie: &str) {
    if !try_warm(app, cookie, Duration::from_secs(2)).await {
        panic!("calls for 2 s and none was served from the cache");
    }
}

/// Like `warm`, for up to `patience`; whether a call was served from the cache.
pub async fn try_warm(app: &TestApp, cookie: &str, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let (status, hit) = call_counting_hits(app, cookie).await;
        assert_eq!(status, 200, "warming a live session");
        if hit {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session of its own for `sub`, a copy of a real login's session with another sub and
/// provider sid (made through the store's own code, as a login would): its cookie and its
/// store key (the hash tag of its Redis key).
pub async fn copy_session(app: &TestApp, template: &str, sub: &str, sid: &str) -> (String, String) {
    let manager = app.session_manager();
    let now = gatehouse::clock::Clock::now_millis(&app.clock);
    let loaded = manager
        .load(template, now)
        .await
        .expect("load")
        .expect("template");
    let mut data = gatehouse::session::SessionData::clone(&loaded.data);
    data.sub = sub.to_owned();
    data.provider_sid = Some(sid.to_owned());
    let handle = manager.create(&data, now).await.expect("create");
    (
        handle.cookie_value().expose_secret().to_owned(),
        handle.store_key(),
    )
}

/// The Redis key of a session with this store key.
pub fn session_redis_key(app: &TestApp, store_key: &str) -> String {
    format!("{}:s:{{{store_key}}}", app.key_prefix)
}
