//! The session cache on a Redis Cluster and through a Sentinel failover: warm sessions on
//! every master are served without Redis, and yet a logout, a revocation or a back-channel
//! logout at one instance ends the session at another on its very next call; while slots
//! move between masters nothing stale is served; a master's broken tracking connection
//! costs only that master's entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::echo::{spawn_echo, EchoUpstream};
use crate::helpers::logout_tokens::{logout_claims, post_logout_token, sign, unix_now};
use crate::helpers::session_cache::{
    call_counting_hits, copy_session, entries, session_redis_key, try_warm, warm,
};
use crate::helpers::topologies::{RedisCluster, SentinelBed};
use crate::helpers::{
    gatehouse_cli, proxied_call, spawn_app_with, wait_until_cache_serves, AppOptions, Browser,
    RateLimits, RedisKeys, RedisTopology, Route, SessionKeys, TestApp,
};

/// The name gatehouse's tracking connections give themselves.
const TRACKING_CLIENT: &str = "gatehouse-session-cache";

/// An instance on `topology` with a route to `echo`, no rate limits and the cache on; it
/// returns once its cache serves (every master tracked).
async fn instance(
    topology: &RedisTopology,
    echo: &EchoUpstream,
    share: Option<&TestApp>,
    redis: RedisKeys,
) -> TestApp {
    let app = spawn_app_with(AppOptions {
        share,
        public_url: share.map(|first| first.base.clone()),
        redis_topology: Some(topology.clone()),
        redis,
        routes: vec![Route::new("/api", &echo.base)],
        rate_limits: RateLimits::off(),
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await;
    wait_until_cache_serves(app.store.as_ref()).await;
    app
}

async fn start_cluster() -> Arc<RedisCluster> {
    Arc::new(
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("cluster"),
    )
}

/// A real login's session cookie, to copy sessions from.
async fn template(app: &TestApp) -> String {
    let mut browser = app.browser();
    browser.login("template").await;
    browser.session_cookie().expect("cookie")
}

/// A session made for this test, and where it lives.
struct Placed {
    cookie: String,
    sub: String,
    sid: String,
    redis_key: String,
    master: u16,
}

async fn placed_session(
    app: &TestApp,
    cluster: &RedisCluster,
    template: &str,
    name: &str,
) -> Placed {
    let (sub, sid) = (format!("user-{name}"), format!("sid-{name}"));
    let (cookie, store_key) = copy_session(app, template, &sub, &sid).await;
    let redis_key = session_redis_key(app, &store_key);
    let master = cluster.master_port_for_key(&redis_key);
    Placed {
        cookie,
        sub,
        sid,
        redis_key,
        master,
    }
}

/// `per_master` sessions on each master.
async fn sessions_on_every_master(
    app: &TestApp,
    cluster: &RedisCluster,
    template: &str,
    per_master: usize,
) -> Vec<Placed> {
    let mut placed: Vec<Placed> = Vec::new();
    let mut n = 0;
    while cluster
        .ports()
        .iter()
        .any(|port| placed.iter().filter(|p| p.master == *port).count() < per_master)
    {
        n += 1;
        let session = placed_session(app, cluster, template, &format!("p{n}")).await;
        if placed.iter().filter(|p| p.master == session.master).count() < per_master {
            placed.push(session);
        }
    }
    placed
}

/// Ends `session` through `b` in one of the three ways, by `round`: a logout, the
/// operator's `sessions revoke --sub`, or the provider's back-channel logout.
async fn end_session(b: &TestApp, session: &Placed, round: usize) {
    match round % 3 {
        0 => {
            let mut browser = Browser::new(b);
            browser
                .cookies
                .insert(b.cookie_name().to_owned(), session.cookie.clone());
            let user = browser.api_get("/auth/user").await.json();
            let logout = user["session"]["logout_url"].as_str().expect("logout_url");
            assert_eq!(browser.get(logout).await.status, 302);
        }
        1 => {
            let (ok, out) = gatehouse_cli(b, &["sessions", "revoke", "--sub", &session.sub]);
            assert!(ok && out.contains("revoked 1 session(s)"), "{out}");
        }
        _ => {
            let claims = logout_claims(b, &session.sid, &format!("jti-{round}"), unix_now());
            let token = sign(&b.issuer, json!({}), claims).await;
            assert_eq!(post_logout_token(b, &token).await.status, 200);
        }
    }
}

#[tokio::test]
async fn on_a_cluster_a_session_ended_at_one_instance_is_401_at_the_next_call_to_another() {
    let cluster = start_cluster().await;
    let topology = RedisTopology::cluster(&cluster.seed_urls());
    let echo = spawn_echo().await;
    let a = instance(&topology, &echo, None, RedisKeys::new()).await;
    let b = instance(&topology, &echo, Some(&a), RedisKeys::new()).await;
    let template = template(&a).await;

    // A bystander on every master stays cached through all rounds.
    let bystanders = sessions_on_every_master(&a, &cluster, &template, 1).await;
    let mut misses = Vec::new();
    let mut ended_on: BTreeMap<u16, usize> = BTreeMap::new();
    for round in 0..200 {
        let session = placed_session(&a, &cluster, &template, &format!("r{round}")).await;
        // Before each round every session is warm in A's cache.
        warm(&a, &session.cookie).await;
        for bystander in &bystanders {
            warm(&a, &bystander.cookie).await;
        }
        end_session(&b, &session, round).await;
        let (status, _, _) = proxied_call(&a, &session.cookie).await;
        if status != 401 {
            misses.push((round, status));
        }
        *ended_on.entry(session.master).or_default() += 1;
    }
    eprintln!("cluster revocation: sessions ended per master {ended_on:?}");
    assert!(
        misses.is_empty(),
        "calls after the end answered: {misses:?}"
    );
    assert_eq!(ended_on.len(), 3, "sessions on every master: {ended_on:?}");
    for bystander in &bystanders {
        assert_eq!(call_counting_hits(&a, &bystander.cookie).await, (200, true));
    }
}

fn hits_and_misses(app: &TestApp) -> (u64, u64) {
    let statistics = app.store.cache_statistics().expect("a cache");
    (statistics.hits, statistics.misses)
}

/// One call during the resharding: when it started and ended, and what it answered.
struct Call {
    session: usize,
    started: Instant,
    finished: Instant,
    status: u16,
}

#[tokio::test]
async fn while_slots_move_nothing_stale_is_served_and_moved_sessions_are_cached_again() {
    let cluster = start_cluster().await;
    let topology = RedisTopology::cluster(&cluster.seed_urls());
    let echo = spawn_echo().await;
    let a = instance(&topology, &echo, None, RedisKeys::new()).await;
    let b = instance(&topology, &echo, Some(&a), RedisKeys::new()).await;
    let template = template(&a).await;
    let ports = cluster.ports();
    let (from, to) = (ports[0], ports[1]);

    // Six sessions on the first master (their slots will move), two on each other one.
    let mut sessions: Vec<Placed> = Vec::new();
    let mut n = 0;
    while sessions.iter().filter(|s| s.master == from).count() < 6
        || sessions.iter().filter(|s| s.master != from).count() < 4
    {
        n += 1;
        let session = placed_session(&a, &cluster, &template, &format!("m{n}")).await;
        let moving = session.master == from;
        let wanted = if moving { 6 } else { 4 };
        if sessions
            .iter()
            .filter(|s| (s.master == from) == moving)
            .count()
            < wanted
        {
            sessions.push(session);
        }
    }
    for session in &sessions {
        warm(&a, &session.cookie).await;
    }
    let moving: Vec<usize> = (0..sessions.len())
        .filter(|i| sessions[*i].master == from)
        .collect();

    // When each ended session's end began and was answered.
    let ends: Mutex<BTreeMap<usize, (Instant, Instant)>> = Mutex::new(BTreeMap::new());
    let calls: Mutex<Vec<Call>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let callers = sessions.iter().enumerate().map(|(i, session)| {
        let (a, b, stop, calls) = (&a, &b, &stop, &calls);
        async move {
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, _, _) =
                    proxied_call(if n % 3 == 0 { b } else { a }, &session.cookie).await;
                n += 1;
                calls.lock().expect("calls").push(Call {
                    session: i,
                    started,
                    finished: Instant::now(),
                    status,
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    // Each moving session's slot moves in three steps with a pause between them; the first
    // three moving sessions are ended through B, one in each phase of their slot's move,
    // and A's very next call must be 401.
    let immediate: Mutex<Vec<(usize, u16)>> = Mutex::new(Vec::new());
    let mover = {
        let (cluster, sessions, moving) = (cluster.clone(), &sessions, &moving);
        let (a, b, ends, stop, immediate) = (&a, &b, &ends, &stop, &immediate);
        async move {
            let pause = || tokio::time::sleep(Duration::from_millis(150));
            for (k, &i) in moving.iter().enumerate() {
                let slot = cluster.key_slot(&sessions[i].redis_key);
                let end_in_phase = |phase: usize| k < 3 && k == phase;
                let end = |i: usize| async move {
                    let began = Instant::now();
                    end_session(b, &sessions[i], k).await;
                    ends.lock()
                        .expect("ends")
                        .insert(i, (began, Instant::now()));
                    let (status, _, _) = proxied_call(a, &sessions[i].cookie).await;
                    immediate.lock().expect("immediate").push((i, status));
                };
                cluster.begin_slot_move(slot, from, to);
                pause().await;
                if end_in_phase(0) {
                    end(i).await;
                }
                let moved = cluster.migrate_slot_keys(slot, from, to);
                assert!(moved >= 1 || k == 0, "the session's key moved");
                pause().await;
                if end_in_phase(1) {
                    end(i).await;
                }
                cluster.finish_slot_move(slot, to);
                if end_in_phase(2) {
                    end(i).await;
                }
                pause().await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            stop.store(true, Ordering::Relaxed);
        }
    };
    let (hits_before, misses_before) = hits_and_misses(&a);
    tokio::join!(futures_util::future::join_all(callers), mover);
    let (hits_after, misses_after) = hits_and_misses(&a);
    eprintln!(
        "resharding with the cache: A served {} calls from its cache and read Redis for {}",
        hits_after - hits_before,
        misses_after - misses_before
    );

    let immediate = immediate.into_inner().expect("immediate");
    assert_eq!(immediate.len(), 3);
    assert!(
        immediate.iter().all(|(_, status)| *status == 401),
        "A's next call after an end during the move: {immediate:?}"
    );
    let ends = ends.into_inner().expect("ends");
    let calls = calls.into_inner().expect("calls");
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for call in &calls {
        *statuses.entry(call.status).or_default() += 1;
        let expected: &[u16] = match ends.get(&call.session) {
            Some((_, answered)) if call.started > *answered => &[401],
            Some((began, _)) if call.finished >= *began => &[200, 401],
            _ => &[200],
        };
        if !expected.contains(&call.status) {
            wrong.push((call.session, call.status));
        }
    }
    eprintln!("resharding with the cache: calls {statuses:?}");
    assert!(
        wrong.is_empty(),
        "calls that answered other than their session's state says: {wrong:?}"
    );
    for &i in &moving {
        assert_eq!(
            cluster.master_port_for_key(&sessions[i].redis_key),
            to,
            "session {i} moved"
        );
    }
    // The moved sessions that are still alive are served from A's cache again.
    for &i in moving.iter().skip(3) {
        assert!(
            try_warm(&a, &sessions[i].cookie, Duration::from_secs(5)).await,
            "moved session {i} is cached again"
        );
    }
    for (i, session) in sessions.iter().enumerate() {
        let expected = if ends.contains_key(&i) { 401 } else { 200 };
        assert_eq!(
            proxied_call(&a, &session.cookie).await.0,
            expected,
            "session {i}"
        );
    }
}

#[tokio::test]
async fn a_killed_tracking_connection_drops_only_its_masters_entries() {
    let cluster = start_cluster().await;
    let topology = RedisTopology::cluster(&cluster.seed_urls());
    let echo = spawn_echo().await;
    let a = instance(&topology, &echo, None, RedisKeys::new()).await;
    let template = template(&a).await;
    let sessions = sessions_on_every_master(&a, &cluster, &template, 3).await;
    for session in &sessions {
        warm(&a, &session.cookie).await;
    }
    let killed = cluster.ports()[0];
    let (on_killed, elsewhere): (Vec<&Placed>, Vec<&Placed>) =
        sessions.iter().partition(|s| s.master == killed);
    let before = entries(&a);

    let tracking = cluster.client_ids_named(killed, TRACKING_CLIENT);
    assert_eq!(tracking.len(), 1, "one tracking connection on the master");
    cluster.kill_client(killed, &tracking[0]);
    // While nobody listens on that master, one of its sessions is deleted there.
    let deleted = on_killed[0];
    assert_eq!(cluster.delete_key(killed, &deleted.redis_key), 1);

    let deadline = Instant::now() + Duration::from_secs(2);
    while entries(&a) > before - on_killed.len() {
        assert!(
            Instant::now() < deadline,
            "the master's entries were not dropped: {} of {before} left",
            entries(&a)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for session in &elsewhere {
        assert_eq!(
            call_counting_hits(&a, &session.cookie).await,
            (200, true),
            "a session on another master is still served from the cache"
        );
    }
    assert_eq!(
        call_counting_hits(&a, &deleted.cookie).await,
        (401, false),
        "no stale 200 after CLIENT KILL"
    );
    for session in &on_killed[1..] {
        let (status, hit) = call_counting_hits(&a, &session.cookie).await;
        assert_eq!((status, hit), (200, false), "its entry was dropped");
    }
    // Tracking comes back on that master, and its sessions are cached again.
    wait_until_cache_serves(a.store.as_ref()).await;
    assert_eq!(cluster.client_ids_named(killed, TRACKING_CLIENT).len(), 1);
    for session in &on_killed[1..] {
        warm(&a, &session.cookie).await;
    }
}

#[tokio::test]
async fn a_logout_during_a_sentinel_failover_is_seen_by_every_cached_instance() {
    let bed = Arc::new(
        tokio::task::spawn_blocking(|| SentinelBed::start("cached"))
            .await
            .expect("sentinel bed"),
    );
    let topology = RedisTopology::sentinel(bed.master_name(), &bed.sentinel_urls());
    let redis = RedisKeys::new()
        .connect_timeout_ms(500)
        .response_timeout_ms(1000);
    let echo = spawn_echo().await;
    let a = instance(&topology, &echo, None, redis.clone()).await;
    let b = instance(&topology, &echo, Some(&a), redis).await;

    let mut cookies = Vec::new();
    for user in ["kept", "logged-out", "revoked"] {
        let mut browser = a.browser();
        browser.login(user).await;
        cookies.push(browser.session_cookie().expect("cookie"));
    }
    for cookie in &cookies {
        warm(&a, cookie).await;
        warm(&b, cookie).await;
    }
    let mut logout_browser = Browser::new(&b);
    logout_browser
        .cookies
        .insert(b.cookie_name().to_owned(), cookies[1].clone());
    let user = logout_browser.api_get("/auth/user").await.json();
    let logout_url = user["session"]["logout_url"]
        .as_str()
        .expect("logout_url")
        .to_owned();

    let old_port = bed.master_port();
    let killer = bed.clone();
    tokio::task::spawn_blocking(move || killer.kill_master())
        .await
        .expect("kill");
    // The logout and the revocation are tried from the moment of the kill until they go
    // through (Redis answers 503 meanwhile).
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match logout_browser.get(&logout_url).await.status {
            302 => break,
            503 => refused += 1,
            other => panic!("logout during the failover answered {other}"),
        }
        assert!(Instant::now() < deadline, "the logout never went through");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let (ok, out) = gatehouse_cli(&b, &["sessions", "revoke", "--sub", "revoked"]);
        if ok && out.contains("revoked 1 session(s)") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revocation never went through: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiter = bed.clone();
    tokio::task::spawn_blocking(move || {
        waiter.wait_for_promotion(old_port, Duration::from_secs(30))
    })
    .await
    .expect("promotion");
    eprintln!("sentinel failover with the cache: {refused} logout attempt(s) refused meanwhile");
    assert!(refused > 0, "the logout met the failover window");

    // Once an instance answers again, the ended sessions are 401 there and stay so; the kept
    // one is served, from the cache again once tracking follows the new master.
    for app in [&a, &b] {
        let mut seen: BTreeSet<(usize, u16)> = BTreeSet::new();
        for (i, cookie) in cookies.iter().enumerate() {
            let status = loop {
                match proxied_call(app, cookie).await.0 {
                    503 => {
                        assert!(Instant::now() < deadline, "no answer after the failover");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    status => break status,
                }
            };
            seen.insert((i, status));
        }
        assert_eq!(
            seen,
            BTreeSet::from([(0, 200), (1, 401), (2, 401)]),
            "what an instance answers after the failover"
        );
        wait_until_cache_serves(app.store.as_ref()).await;
        warm(app, &cookies[0]).await;
        for cookie in &cookies[1..] {
            assert_eq!(proxied_call(app, cookie).await.0, 401);
        }
    }
}
