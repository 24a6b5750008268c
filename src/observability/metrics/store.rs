//! The store, timed: one decorator for every narrow store trait.

use tracing::Instrument;

use super::*;
use crate::observability::spans;

// ---------------------------------------------------------------------------------------
// The store, timed
// ---------------------------------------------------------------------------------------

/// Times every operation of the store it wraps (`op` = the method's name, the values
/// docs/metrics.md lists) and counts the ones that fail. It implements each narrow trait
/// its inner store does, so it wraps a whole store or any one part of it.
pub struct Timed<S: ?Sized> {
    inner: Arc<S>,
    metrics: Metrics,
}

impl<S: ?Sized> Timed<S> {
    pub fn new(inner: Arc<S>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }
}

impl<S: ?Sized + Send + Sync> Timed<S> {
    /// Awaits one operation of the inner store and records how long it took.
    fn time<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        future: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        Box::pin(
            async move {
                let started = Instant::now();
                let result = future.await;
                self.metrics
                    .store_operation(op, started.elapsed(), result.is_err());
                result
            }
            .instrument(spans::store_call(op)),
        )
    }
}

impl<S: SessionRecords + ?Sized> SessionRecords for Timed<S> {
    fn insert<'a>(
        &'a self,
        key: &'a str,
        record: &'a SessionRecord,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.time("insert", self.inner.insert(key, record, now, idle))
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<Option<FetchedSession>>> {
        self.time("fetch", self.inner.fetch(key, now, idle))
    }

    fn replace_sealed<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        revocation: Option<&'a [u8]>,
        absolute_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.time(
            "replace_sealed",
            self.inner
                .replace_sealed(key, sealed, revocation, absolute_expires_at, now),
        )
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        self.time("remove", self.inner.remove(key))
    }

    fn count(&self) -> BoxFuture<'_, StoreResult<u64>> {
        self.time("count", self.inner.count())
    }

    fn keys_by_sub<'a>(
        &'a self,
        provider: &'a str,
        sub: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.time("keys_by_sub", self.inner.keys_by_sub(provider, sub, now))
    }

    fn keys_by_sid<'a>(
        &'a self,
        provider: &'a str,
        sid: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.time("keys_by_sid", self.inner.keys_by_sid(provider, sid, now))
    }

    fn summary<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionSummary>>> {
        self.time("summary", self.inner.summary(key))
    }
}

impl<S: OneTimeRecords + ?Sized> OneTimeRecords for Timed<S> {
    fn put_login_state<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.time(
            "put_login_state",
            self.inner.put_login_state(key, sealed, ttl, now),
        )
    }

    fn take_login_state<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Option<Vec<u8>>>> {
        self.time("take_login_state", self.inner.take_login_state(key, now))
    }
}

impl<S: Locks + ?Sized> Locks for Timed<S> {
    fn try_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.time("try_lock", self.inner.try_lock(name, owner, ttl, now))
    }

    fn renew_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.time("renew_lock", self.inner.renew_lock(name, owner, ttl, now))
    }

    fn unlock<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.time("unlock", self.inner.unlock(name, owner))
    }
}

impl<S: ReplayMemory + ?Sized> ReplayMemory for Timed<S> {
    fn remember_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.time("remember_once", self.inner.remember_once(name, ttl, now))
    }
}

impl<S: RateBuckets + ?Sized> RateBuckets for Timed<S> {
    fn rate_limit<'a>(
        &'a self,
        bucket: &'a str,
        limit: RateLimit,
        now: UnixMillis,
        want: u32,
    ) -> BoxFuture<'a, StoreResult<RateDecision>> {
        self.time(
            "rate_limit",
            self.inner.rate_limit(bucket, limit, now, want),
        )
    }
}

impl<S: StoreHealth + ?Sized> StoreHealth for Timed<S> {
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.time("ping", self.inner.ping())
    }

    fn cache_statistics(&self) -> Option<CacheStatistics> {
        self.inner.cache_statistics()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ratelimit::RateLimit;
    use crate::session::memory::MemoryStore;
    use crate::session::SessionStore;

    /// The `op` values docs/metrics.md lists, one per store method.
    const DOCUMENTED: [&str; 16] = [
        "insert",
        "fetch",
        "replace_sealed",
        "try_lock",
        "renew_lock",
        "unlock",
        "remember_once",
        "count",
        "remove",
        "keys_by_sub",
        "keys_by_sid",
        "summary",
        "put_login_state",
        "take_login_state",
        "ping",
        "rate_limit",
    ];

    #[tokio::test]
    async fn every_operation_is_timed_under_its_documented_name() {
        let inner: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let providers = Arc::new(Providers {
            by_name: BTreeMap::new(),
            default: "main".into(),
        });
        let metrics = Metrics::new([], providers, inner.clone());
        let store = Timed::new(inner, metrics.clone());
        let idle = IdlePolicy {
            idle_timeout: Duration::from_secs(60),
            touch_interval: Duration::from_secs(10),
        };
        let record = SessionRecord {
            sealed: vec![1],
            provider: "main".into(),
            sub: "alice".into(),
            provider_sid: Some("sid".into()),
            created_at: 0,
            absolute_expires_at: 60_000,
            device: String::new(),
            revocation: None,
        };
        let ttl = Duration::from_secs(1);
        let limit = RateLimit {
            requests: 1,
            per: Duration::from_secs(1),
        };
        store.insert("k", &record, 0, idle).await.expect("insert");
        store.fetch("k", 0, idle).await.expect("fetch");
        store
            .replace_sealed("k", &[2], None, 60_000, 0)
            .await
            .expect("replace");
        store.keys_by_sub("main", "alice", 0).await.expect("sub");
        store.keys_by_sid("main", "sid", 0).await.expect("sid");
        store.summary("k").await.expect("summary");
        store.count().await.expect("count");
        store.remove("k").await.expect("remove");
        store.put_login_state("l", &[1], ttl, 0).await.expect("put");
        store.take_login_state("l", 0).await.expect("take");
        store.try_lock("n", "a", ttl, 0).await.expect("lock");
        store.renew_lock("n", "a", ttl, 0).await.expect("renew");
        store.unlock("n", "a").await.expect("unlock");
        store.remember_once("j", ttl, 0).await.expect("remember");
        store.rate_limit("b", limit, 0, 1).await.expect("rate");
        store.ping().await.expect("ping");
        assert_eq!(store.cache_statistics(), None, "passed through, not timed");

        let scrape = metrics.render(false);
        let mut timed: Vec<&str> = scrape
            .lines()
            .filter(|line| line.starts_with("gatehouse_store_operation_duration_seconds_count"))
            .filter_map(|line| line.split("op=\"").nth(1)?.split('"').next())
            .collect();
        timed.sort_unstable();
        let mut documented = DOCUMENTED.to_vec();
        documented.sort_unstable();
        assert_eq!(timed, documented);
    }
}
