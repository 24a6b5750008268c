//! One contract, three stores: every case runs against Redis, Redis with the session cache,
//! and the in-memory store (and once more behind the timing decorator). Each narrow store trait has its cases: sessions and one-time
//! records through the session manager that seals them, locks, replay memory, rate buckets
//! and health directly.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::clock::{Clock, OffsetClock};
use gatehouse::config::RedisSettings;
use gatehouse::observability::metrics::{Metrics, Timed};
use gatehouse::oidc::Providers;
use gatehouse::ratelimit::RateLimit;
use gatehouse::session::memory::MemoryStore;
use gatehouse::session::redis::RedisStore;
use gatehouse::session::{
    public_id, Claims, IdlePolicy, Locks, LoginBinding, LoginBindings, LoginState, LoginStateError,
    LogoutContinuation, RateBuckets, ReplayMemory, RevocationKey, SessionData, SessionManager,
    SessionStore, StoreHealth, TokenSet,
};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{random_name, shared_redis};

const IDLE: Duration = Duration::from_secs(60);
const TOUCH: Duration = Duration::from_secs(10);

fn policy() -> IdlePolicy {
    IdlePolicy {
        idle_timeout: IDLE,
        touch_interval: TOUCH,
    }
}

/// One implementation under contract: the store, and the session manager over it.
struct Subject {
    store: Arc<dyn SessionStore>,
    sessions: SessionManager,
    /// Whether the store has a session cache (that serves).
    cached: bool,
}

impl Subject {
    fn new(store: Arc<dyn SessionStore>, cached: bool) -> Self {
        let sessions = SessionManager::new(store.clone(), policy());
        Self {
            store,
            sessions,
            cached,
        }
    }
}

fn redis_store() -> Subject {
    let store = RedisStore::new(&RedisSettings::standalone(
        SecretString::from(shared_redis().url()),
        &random_name("contract"),
    ))
    .expect("store");
    Subject::new(Arc::new(store), false)
}

/// Redis with the session cache, once the cache serves (Redis tracks its keys).
async fn cached_redis_store() -> Subject {
    let store = RedisStore::with_cache(
        &RedisSettings::standalone(
            SecretString::from(shared_redis().url()),
            &random_name("contract"),
        ),
        std::num::NonZeroUsize::new(100).expect("capacity"),
    )
    .expect("store");
    crate::helpers::wait_until_cache_serves(&store).await;
    Subject::new(Arc::new(store), true)
}

fn memory_store() -> Subject {
    Subject::new(Arc::new(MemoryStore::new()), false)
}

/// The in-memory store behind the timing decorator: every trait passes through it unchanged.
fn timed_memory_store() -> Subject {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let providers = Arc::new(Providers {
        by_name: Default::default(),
        default: "main".into(),
    });
    let metrics = Metrics::new([], providers, store.clone());
    Subject::new(Arc::new(Timed::new(store, metrics)), false)
}

fn session(sub: &str, sid: &str, now: i64, absolute: Duration) -> SessionData {
    let mut claims = serde_json::Map::new();
    claims.insert("name".into(), serde_json::json!(sub.to_uppercase()));
    SessionData {
        provider: "main".into(),
        sub: sub.into(),
        provider_sid: Some(sid.into()),
        claims: Claims::from_map(&claims),
        authentication: Default::default(),
        tokens: TokenSet {
            access_token_lifetime_ms: None,
            access_token: SecretString::from(format!("access-{sub}-{now}")),
            access_token_expires_at: Some(now + 300_000),
            refresh_token: Some(SecretString::from(format!("refresh-{sub}-{now}"))),
            refresh_token_expires_at: None,
            id_token: SecretString::from("header.payload.signature".to_owned()),
            scope: Some("openid profile".into()),
            dpop_bound: false,
        },
        logout_sid: "logout-sid".into(),
        created_at: now,
        absolute_expires_at: now + absolute.as_millis() as i64,
        device: "Firefox on Linux".into(),
        route_tokens: Default::default(),
        dpop_key: None,
        memo: Default::default(),
    }
}

async fn alive(sessions: &SessionManager, cookie: &str, now: i64) -> bool {
    sessions.load(cookie, now).await.expect("load").is_some()
}

async fn round_trip(sessions: SessionManager, clock: OffsetClock) {
    let now = clock.now_millis();
    let handle = sessions
        .create(
            &session("alice", "sid-1", now, Duration::from_secs(3600)),
            now,
        )
        .await
        .expect("create");
    let cookie = handle.cookie_value();
    let loaded = sessions
        .load(cookie.expose_secret(), now)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(loaded.data.sub, "alice");
    assert_eq!(loaded.data.claims.to_map()["name"], "ALICE");
    assert_eq!(
        loaded.data.tokens.access_token.expose_secret(),
        &format!("access-alice-{now}")
    );
    assert_eq!(loaded.store_key, handle.store_key());
    assert_eq!(loaded.idle_expires_at, now + IDLE.as_millis() as i64);

    // Same id, another secret: the payload does not open, which reads as no session.
    let (id, _) = cookie
        .expose_secret()
        .split_once('.')
        .expect("id.secret")
        .to_owned();
    let forged = format!("{id}.{}", "Z".repeat(43));
    assert!(!alive(&sessions, &forged, now).await);
    assert!(!alive(&sessions, "garbage", now).await);
    assert!(sessions
        .load(&format!("{}.{}", "A".repeat(43), "A".repeat(43)), now)
        .await
        .expect("load")
        .is_none());
}

async fn idle_timeout_slides_with_use(sessions: SessionManager, clock: OffsetClock) {
    let now = clock.now_millis();
    let cookie = sessions
        .create(&session("alice", "s", now, Duration::from_secs(3600)), now)
        .await
        .expect("create")
        .cookie_value();
    let cookie = cookie.expose_secret();

    // Within the touch interval nothing is written back.
    clock.advance(Duration::from_secs(5));
    let early = sessions
        .load(cookie, clock.now_millis())
        .await
        .expect("load")
        .expect("alive");
    assert_eq!(
        early.idle_expires_at,
        now + IDLE.as_millis() as i64,
        "not touched yet"
    );

    clock.advance(Duration::from_secs(40)); // 45 s idle: alive, and now touched
    let at = clock.now_millis();
    let touched = sessions
        .load(cookie, at)
        .await
        .expect("load")
        .expect("alive");
    assert_eq!(touched.idle_expires_at, at + IDLE.as_millis() as i64);

    clock.advance(Duration::from_secs(50)); // 95 s since creation, 50 s since last use
    assert!(
        alive(&sessions, cookie, clock.now_millis()).await,
        "use kept it alive"
    );

    clock.advance(Duration::from_secs(61));
    assert!(
        !alive(&sessions, cookie, clock.now_millis()).await,
        "idle timeout ended it"
    );
    assert!(
        !alive(&sessions, cookie, clock.now_millis()).await,
        "stays ended"
    );
}

async fn absolute_lifetime_ends_even_a_busy_session(sessions: SessionManager, clock: OffsetClock) {
    let now = clock.now_millis();
    let cookie = sessions
        .create(&session("alice", "s", now, Duration::from_secs(100)), now)
        .await
        .expect("create")
        .cookie_value();
    let cookie = cookie.expose_secret();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(30));
        let loaded = sessions
            .load(cookie, clock.now_millis())
            .await
            .expect("load")
            .expect("alive");
        assert!(
            loaded.idle_expires_at <= now + 100_000,
            "idle expiry never passes the absolute one"
        );
    }
    clock.advance(Duration::from_secs(11)); // 101 s
    assert!(!alive(&sessions, cookie, clock.now_millis()).await);
}

async fn delete_by_user_and_by_provider_session(sessions: SessionManager, clock: OffsetClock) {
    let now = clock.now_millis();
    let hour = Duration::from_secs(3600);
    let mut alice = Vec::new();
    for sid in ["a1", "a2", "a2"] {
        alice.push(
            sessions
                .create(&session("alice", sid, now, hour), now)
                .await
                .expect("create")
                .cookie_value(),
        );
    }
    let bob = sessions
        .create(&session("bob", "b1", now, hour), now)
        .await
        .expect("create")
        .cookie_value();

    assert_eq!(
        sessions
            .delete_by_provider_sid("main", "a2", now)
            .await
            .expect("by sid"),
        2
    );
    assert!(alive(&sessions, alice[0].expose_secret(), now).await);
    assert!(!alive(&sessions, alice[1].expose_secret(), now).await);
    assert_eq!(
        sessions
            .delete_by_provider_sid("main", "a2", now)
            .await
            .expect("by sid"),
        0
    );
    assert_eq!(
        sessions
            .delete_by_sub("other-provider", "alice", now)
            .await
            .expect("by sub"),
        0
    );

    assert_eq!(
        sessions
            .delete_by_sub("main", "alice", now)
            .await
            .expect("by sub"),
        1
    );
    assert!(!alive(&sessions, alice[0].expose_secret(), now).await);
    assert!(
        alive(&sessions, bob.expose_secret(), now).await,
        "bob untouched"
    );

    let bob_key = sessions
        .load(bob.expose_secret(), now)
        .await
        .expect("load")
        .expect("bob")
        .store_key;
    assert!(sessions.delete(&bob_key).await.expect("delete"));
    assert!(
        !sessions.delete(&bob_key).await.expect("delete"),
        "already gone"
    );
    assert_eq!(
        sessions
            .delete_by_sub("main", "bob", now)
            .await
            .expect("by sub"),
        0,
        "index entry went with it"
    );
}

async fn login_state_is_single_use_and_bound_to_one_browser(
    sessions: SessionManager,
    clock: OffsetClock,
) {
    let now = clock.now_millis();
    let state = LoginState {
        provider: "main".into(),
        pkce_verifier: SecretString::from("verifier".to_owned()),
        nonce: SecretString::from("nonce".to_owned()),
        return_to: "/back".into(),
        prompt: None,
        created_at: now,
        acr_values: vec![],
        max_age: None,
    };
    let binding = LoginBinding::generate();
    let value = binding.cookie_value().expose_secret().to_owned();
    let browser = || LoginBindings::parse(Some(&value));
    let ttl = Duration::from_secs(600);
    sessions
        .put_login_state("state-1", &binding, &state, ttl, now)
        .await
        .expect("put");
    let (taken, opened_by) = sessions
        .take_login_state("state-1", &browser(), now)
        .await
        .expect("take");
    assert_eq!(opened_by, 0);
    assert_eq!(taken.return_to, "/back");
    assert_eq!(taken.pkce_verifier.expose_secret(), "verifier");
    assert!(matches!(
        sessions.take_login_state("state-1", &browser(), now).await,
        Err(LoginStateError::NotFound)
    ));

    sessions
        .put_login_state("state-2", &binding, &state, ttl, now)
        .await
        .expect("put");
    let mut other = LoginBindings::default();
    other.push(LoginBinding::generate());
    match sessions.take_login_state("state-2", &other, now).await {
        Err(LoginStateError::WrongBrowser { return_to }) => assert_eq!(return_to, "/back"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(
            sessions.take_login_state("state-2", &browser(), now).await,
            Err(LoginStateError::NotFound)
        ),
        "burnt"
    );

    sessions
        .put_login_state("state-3", &binding, &state, ttl, now)
        .await
        .expect("put");
    assert!(matches!(
        sessions
            .take_login_state("state-3", &LoginBindings::default(), now)
            .await,
        Err(LoginStateError::WrongBrowser { .. })
    ));

    // Several logins in flight: each opens with its own binding, in any order.
    let mut bindings = LoginBindings::default();
    for (index, name) in ["tab-a", "tab-b", "tab-c"].into_iter().enumerate() {
        let binding = LoginBinding::generate();
        let mut own = state.clone();
        own.return_to = format!("/{name}");
        sessions
            .put_login_state(name, &binding, &own, ttl, now)
            .await
            .expect("put");
        bindings.push(binding);
        assert_eq!(bindings.len(), index + 1);
    }
    for (name, position) in [("tab-b", 1), ("tab-c", 2), ("tab-a", 0)] {
        let (taken, opened_by) = sessions
            .take_login_state(name, &bindings, now)
            .await
            .expect("take");
        assert_eq!(
            (taken.return_to.as_str(), opened_by),
            (&*format!("/{name}"), position)
        );
    }
}

async fn a_logout_continuation_is_single_use_and_lives_a_minute(
    sessions: SessionManager,
    clock: OffsetClock,
) {
    let continuation = |id_token: &str| LogoutContinuation {
        provider: "main".into(),
        id_token: SecretString::from(id_token.to_owned()),
    };
    let ttl = Duration::from_secs(60);
    let token = sessions
        .put_logout_continuation(continuation("id-token-1"), ttl, clock.now_millis())
        .await
        .expect("put");
    let token = token.expose_secret().to_owned();
    let taken = sessions
        .take_logout_continuation(&token, clock.now_millis())
        .await
        .expect("take")
        .expect("there");
    assert_eq!(
        (taken.provider.as_str(), taken.id_token.expose_secret()),
        ("main", "id-token-1")
    );
    assert!(sessions
        .take_logout_continuation(&token, clock.now_millis())
        .await
        .expect("take")
        .is_none());

    // Past its minute (gatehouse's clock), it leads nowhere.
    let token = sessions
        .put_logout_continuation(continuation("id-token-2"), ttl, clock.now_millis())
        .await
        .expect("put");
    clock.advance(Duration::from_secs(61));
    assert!(sessions
        .take_logout_continuation(token.expose_secret(), clock.now_millis())
        .await
        .expect("take")
        .is_none());

    // The right id with another secret opens nothing (and uses the record up).
    let token = sessions
        .put_logout_continuation(continuation("id-token-3"), ttl, clock.now_millis())
        .await
        .expect("put");
    let (id, _) = token.expose_secret().split_once('.').expect("id.secret");
    let forged = format!(
        "{id}.{}",
        LoginBinding::generate().cookie_value().expose_secret()
    );
    for token in [forged.as_str(), id, "", ".", "x.y", &"A".repeat(87)] {
        assert!(sessions
            .take_logout_continuation(token, clock.now_millis())
            .await
            .expect("take")
            .is_none());
    }
}

async fn replacing_tokens_keeps_the_session(sessions: SessionManager, clock: OffsetClock) {
    let now = clock.now_millis();
    let data = session("alice", "s", now, Duration::from_secs(3600));
    let cookie = sessions
        .create(&data, now)
        .await
        .expect("create")
        .cookie_value();
    let mut refreshed = data.clone();
    refreshed.tokens.access_token = SecretString::from("new-access".to_owned());
    assert!(sessions
        .replace(cookie.expose_secret(), &refreshed, now)
        .await
        .expect("replace"));
    let loaded = sessions
        .load(cookie.expose_secret(), now)
        .await
        .expect("load")
        .expect("alive");
    assert_eq!(
        loaded.data.tokens.access_token.expose_secret(),
        "new-access"
    );

    sessions.delete(&loaded.store_key).await.expect("delete");
    assert!(
        !sessions
            .replace(cookie.expose_secret(), &refreshed, now)
            .await
            .expect("replace"),
        "no resurrection"
    );
    assert!(!alive(&sessions, cookie.expose_secret(), now).await);
}

/// The revocation envelope is written at insert, follows the refresh token through
/// `replace_sealed` (and goes when there is none), and opens to the latest refresh token when
/// the session is ended from elsewhere; the device label stays as the login set it.
async fn revocation_envelopes_follow_the_tokens_and_the_device_stays(
    plain: SessionManager,
    clock: OffsetClock,
) {
    let key = gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    let sessions = plain
        .clone()
        .with_revocation_key(Some(RevocationKey::parse(&key).expect("key")));
    let now = clock.now_millis();
    let data = session("alice", "s", now, Duration::from_secs(3600));
    let handle = sessions.create(&data, now).await.expect("create");
    let (store_key, cookie) = (handle.store_key(), handle.cookie_value());
    let record = |sessions: &SessionManager, store_key: String| {
        let store = sessions.records().clone();
        async move {
            store
                .fetch(&store_key, now, policy())
                .await
                .expect("fetch")
                .expect("alive")
                .record
        }
    };
    let first = record(&sessions, store_key.clone()).await;
    assert_eq!(first.device, "Firefox on Linux");
    let envelope = first.revocation.clone().expect("an envelope at insert");
    let refresh = format!("refresh-alice-{now}");
    assert!(
        !envelope
            .windows(refresh.len())
            .any(|w| w == refresh.as_bytes()),
        "sealed, not plain"
    );
    let summary = sessions
        .records()
        .summary(&store_key)
        .await
        .expect("summary")
        .expect("present");
    assert_eq!(summary.device, "Firefox on Linux");
    let listed = sessions
        .list_for_user("main", "alice", &store_key, now)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].current);
    assert_eq!(listed[0].device, "Firefox on Linux");
    assert_eq!(listed[0].id, public_id(&store_key));
    assert_ne!(listed[0].id, store_key);

    // A refresh rotates the refresh token: the envelope follows in the same write.
    let mut refreshed = data.clone();
    refreshed.tokens.refresh_token = Some(SecretString::from("rotated-refresh".to_owned()));
    assert!(sessions
        .replace(cookie.expose_secret(), &refreshed, now)
        .await
        .expect("replace"));
    let second = record(&sessions, store_key.clone()).await;
    assert_eq!(second.device, "Firefox on Linux", "the device stays");
    let second_envelope = second.revocation.clone().expect("still an envelope");
    assert_ne!(second_envelope, envelope, "replaced");

    // Without a refresh token there is nothing to revoke: the envelope goes.
    let mut no_refresh = refreshed.clone();
    no_refresh.tokens.refresh_token = None;
    assert!(sessions
        .replace(cookie.expose_secret(), &no_refresh, now)
        .await
        .expect("replace"));
    assert_eq!(record(&sessions, store_key.clone()).await.revocation, None);
    assert!(sessions
        .replace(cookie.expose_secret(), &refreshed, now)
        .await
        .expect("replace"));

    // Ended from elsewhere: the envelope opens to the latest refresh token, once.
    let ended = sessions
        .end_other(&store_key, now)
        .await
        .expect("end")
        .expect("it existed");
    let revocable = ended.expect("the envelope opens");
    assert_eq!(revocable.provider, "main");
    assert_eq!(revocable.refresh_token.expose_secret(), "rotated-refresh");
    assert!(!alive(&sessions, cookie.expose_secret(), now).await);
    assert!(sessions
        .end_other(&store_key, now)
        .await
        .expect("end")
        .is_none());

    // Without the key: no envelope is written, and ending only deletes.
    let handle = plain.create(&data, now).await.expect("create");
    let record_without = record(&plain, handle.store_key()).await;
    assert_eq!(record_without.revocation, None);
    assert_eq!(record_without.device, "Firefox on Linux");
    // Another key does not open an envelope.
    let other_key = gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    let with_other = plain
        .clone()
        .with_revocation_key(Some(RevocationKey::parse(&other_key).expect("key")));
    let sealed_elsewhere = sessions.create(&data, now).await.expect("create");
    assert!(matches!(
        with_other
            .end_other(&sealed_elsewhere.store_key(), now)
            .await
            .expect("end"),
        Some(None)
    ));
    assert!(matches!(
        plain
            .end_other(&handle.store_key(), now)
            .await
            .expect("end"),
        Some(None)
    ));
}

async fn locks_have_one_owner_and_lapse(store: Arc<dyn Locks>, clock: OffsetClock) {
    let now = clock.now_millis();
    let ttl = Duration::from_secs(10);
    assert!(store.try_lock("s1", "a", ttl, now).await.expect("lock"));
    assert!(
        !store.try_lock("s1", "b", ttl, now).await.expect("lock"),
        "held by a"
    );
    assert!(
        store.try_lock("s2", "b", ttl, now).await.expect("lock"),
        "locks are per name"
    );
    assert!(
        !store.renew_lock("s1", "b", ttl, now).await.expect("renew"),
        "b does not own s1"
    );
    assert!(store.renew_lock("s1", "a", ttl, now).await.expect("renew"));
    store.unlock("s1", "b").await.expect("unlock");
    assert!(
        !store.try_lock("s1", "b", ttl, now).await.expect("lock"),
        "a foreign unlock does nothing"
    );
    store.unlock("s1", "a").await.expect("unlock");
    assert!(
        store
            .try_lock("s1", "b", Duration::from_millis(300), now)
            .await
            .expect("lock"),
        "free after unlock"
    );
    // Lapses without renewal (real time for Redis, the clock for memory).
    tokio::time::sleep(Duration::from_millis(400)).await;
    clock.advance(Duration::from_millis(400));
    assert!(
        store
            .try_lock("s1", "c", ttl, clock.now_millis())
            .await
            .expect("lock"),
        "lapsed"
    );
}

async fn remember_once_detects_replays(store: Arc<dyn ReplayMemory>, clock: OffsetClock) {
    let now = clock.now_millis();
    let ttl = Duration::from_secs(60);
    assert!(store
        .remember_once("jti-1", ttl, now)
        .await
        .expect("remember"));
    assert!(
        !store
            .remember_once("jti-1", ttl, now)
            .await
            .expect("remember"),
        "second sighting"
    );
    assert!(store
        .remember_once("jti-2", ttl, now)
        .await
        .expect("remember"));
}

async fn rate_limits_admit_a_burst_then_the_steady_rate(
    store: Arc<dyn RateBuckets>,
    clock: OffsetClock,
) {
    let limit = RateLimit {
        requests: 3,
        per: Duration::from_secs(3),
    };
    let now = clock.now_millis();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let decision = store.rate_limit("b1", limit, now, 1).await.expect("decide");
        assert!(decision.allowed());
        remaining.push(decision.remaining);
    }
    assert_eq!(remaining, vec![2, 1, 0]);
    let refused = store.rate_limit("b1", limit, now, 1).await.expect("decide");
    assert!(!refused.allowed());
    assert_eq!(refused.retry_after_ms, 1000);
    assert!(
        store
            .rate_limit("b2", limit, now, 1)
            .await
            .expect("decide")
            .allowed(),
        "buckets are apart"
    );
    // A refusal is not counted: one interval later exactly one more passes.
    let later = now + 1000;
    assert!(store
        .rate_limit("b1", limit, later, 1)
        .await
        .expect("decide")
        .allowed());
    assert!(!store
        .rate_limit("b1", limit, later, 1)
        .await
        .expect("decide")
        .allowed());
    // Idle for the whole period: the full burst again.
    let idle = later + 3000;
    let decision = store
        .rate_limit("b1", limit, idle, 1)
        .await
        .expect("decide");
    assert!(decision.allowed());
    assert_eq!(decision.remaining, 2);

    // A lease takes several tokens at once, never more than the bucket holds.
    let lease = store.rate_limit("b3", limit, now, 2).await.expect("decide");
    assert_eq!((lease.granted, lease.remaining), (2, 1));
    let rest = store.rate_limit("b3", limit, now, 2).await.expect("decide");
    assert_eq!((rest.granted, rest.remaining), (1, 0));
    assert!(!store
        .rate_limit("b3", limit, now, 2)
        .await
        .expect("decide")
        .allowed());
}

async fn health_answers_and_tells_of_its_cache(store: Arc<dyn StoreHealth>, cached: bool) {
    store.ping().await.expect("ping");
    let statistics = store.cache_statistics();
    assert_eq!(
        statistics.is_some(),
        cached,
        "statistics exactly with a cache"
    );
    if let Some(statistics) = statistics {
        assert!(
            statistics.serving,
            "the cache serves once Redis tracks its keys"
        );
    }
}

macro_rules! contract {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;

            #[tokio::test]
            async fn round_trip() {
                super::round_trip($make.sessions, OffsetClock::new()).await;
            }
            #[tokio::test]
            async fn idle_timeout_slides_with_use() {
                super::idle_timeout_slides_with_use($make.sessions, OffsetClock::new()).await;
            }
            #[tokio::test]
            async fn absolute_lifetime_ends_even_a_busy_session() {
                super::absolute_lifetime_ends_even_a_busy_session(
                    $make.sessions,
                    OffsetClock::new(),
                )
                .await;
            }
            #[tokio::test]
            async fn delete_by_user_and_by_provider_session() {
                super::delete_by_user_and_by_provider_session($make.sessions, OffsetClock::new())
                    .await;
            }
            #[tokio::test]
            async fn login_state_is_single_use_and_bound_to_one_browser() {
                super::login_state_is_single_use_and_bound_to_one_browser(
                    $make.sessions,
                    OffsetClock::new(),
                )
                .await;
            }
            #[tokio::test]
            async fn a_logout_continuation_is_single_use_and_lives_a_minute() {
                super::a_logout_continuation_is_single_use_and_lives_a_minute(
                    $make.sessions,
                    OffsetClock::new(),
                )
                .await;
            }
            #[tokio::test]
            async fn locks_have_one_owner_and_lapse() {
                super::locks_have_one_owner_and_lapse($make.store, OffsetClock::new()).await;
            }
            #[tokio::test]
            async fn remember_once_detects_replays() {
                super::remember_once_detects_replays($make.store, OffsetClock::new()).await;
            }
            #[tokio::test]
            async fn rate_limits_admit_a_burst_then_the_steady_rate() {
                super::rate_limits_admit_a_burst_then_the_steady_rate(
                    $make.store,
                    OffsetClock::new(),
                )
                .await;
            }
            #[tokio::test]
            async fn revocation_envelopes_follow_the_tokens_and_the_device_stays() {
                super::revocation_envelopes_follow_the_tokens_and_the_device_stays(
                    $make.sessions,
                    OffsetClock::new(),
                )
                .await;
            }
            #[tokio::test]
            async fn health_answers_and_tells_of_its_cache() {
                let subject = $make;
                super::health_answers_and_tells_of_its_cache(subject.store, subject.cached).await;
            }
            #[tokio::test]
            async fn replacing_tokens_keeps_the_session() {
                super::replacing_tokens_keeps_the_session($make.sessions, OffsetClock::new()).await;
            }
        }
    };
}

contract!(redis_store, redis_store());
contract!(memory_store, memory_store());
contract!(cached_redis_store, cached_redis_store().await);
contract!(timed_memory_store, timed_memory_store());
