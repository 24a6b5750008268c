//! The session store, timed.

use super::*;

// ---------------------------------------------------------------------------------------
// The session store, timed
// ---------------------------------------------------------------------------------------

/// Times every operation of the store it wraps (`op` = the method's name) and counts the
/// ones that fail.
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    metrics: Metrics,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn SessionStore>, metrics: Metrics) -> Arc<dyn SessionStore> {
        Arc::new(Self { inner, metrics })
    }

    fn timed<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        future: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = future.await;
            self.metrics
                .store_operation(op, started.elapsed(), result.is_err());
            result
        })
    }
}

impl SessionStore for MeteredStore {
    fn insert<'a>(
        &'a self,
        key: &'a str,
        record: &'a SessionRecord,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.timed("insert", self.inner.insert(key, record, now, idle))
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<Option<FetchedSession>>> {
        self.timed("fetch", self.inner.fetch(key, now, idle))
    }

    fn replace_sealed<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        revocation: Option<&'a [u8]>,
        absolute_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed(
            "replace_sealed",
            self.inner
                .replace_sealed(key, sealed, revocation, absolute_expires_at, now),
        )
    }

    fn try_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("try_lock", self.inner.try_lock(name, owner, ttl, now))
    }

    fn renew_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("renew_lock", self.inner.renew_lock(name, owner, ttl, now))
    }

    fn unlock<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.timed("unlock", self.inner.unlock(name, owner))
    }

    fn remember_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("remember_once", self.inner.remember_once(name, ttl, now))
    }

    fn count(&self) -> BoxFuture<'_, StoreResult<u64>> {
        self.timed("count", self.inner.count())
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("remove", self.inner.remove(key))
    }

    fn keys_by_sub<'a>(
        &'a self,
        provider: &'a str,
        sub: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.timed("keys_by_sub", self.inner.keys_by_sub(provider, sub, now))
    }

    fn keys_by_sid<'a>(
        &'a self,
        provider: &'a str,
        sid: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.timed("keys_by_sid", self.inner.keys_by_sid(provider, sid, now))
    }

    fn summary<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionSummary>>> {
        self.timed("summary", self.inner.summary(key))
    }

    fn put_login_state<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.timed(
            "put_login_state",
            self.inner.put_login_state(key, sealed, ttl, now),
        )
    }

    fn take_login_state<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Option<Vec<u8>>>> {
        self.timed("take_login_state", self.inner.take_login_state(key, now))
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.timed("ping", self.inner.ping())
    }

    fn cache_statistics(&self) -> Option<CacheStatistics> {
        self.inner.cache_statistics()
    }

    fn rate_limit<'a>(
        &'a self,
        bucket: &'a str,
        limit: RateLimit,
        now: UnixMillis,
        want: u32,
    ) -> BoxFuture<'a, StoreResult<RateDecision>> {
        self.timed(
            "rate_limit",
            self.inner.rate_limit(bucket, limit, now, want),
        )
    }
}
