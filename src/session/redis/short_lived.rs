//! The Redis store's short-lived keys (one-time records, locks, replay memory, rate buckets)
//! and its health; the sessions themselves are in `mod.rs`.

use super::*;

impl OneTimeRecords for RedisStore {
    fn put_login_state<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        ttl: Duration,
        _now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let login_key = self.login_key(key);
            self.run(|mut conn| {
                let login_key = login_key.clone();
                async move {
                    redis::cmd("SET")
                        .arg(login_key)
                        .arg(sealed)
                        .arg("PX")
                        .arg(millis(ttl).max(1))
                        .query_async::<()>(&mut conn)
                        .await
                }
            })
            .await
        }
        .boxed()
    }

    fn take_login_state<'a>(
        &'a self,
        key: &'a str,
        _now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Option<Vec<u8>>>> {
        async move {
            let login_key = self.login_key(key);
            // GETDEL is atomic: a replayed callback finds nothing. Not retried: a retry after a
            // lost reply could report "absent" for a state that was just consumed — which is
            // the safe outcome anyway.
            self.run_once(|mut conn| async move {
                redis::cmd("GETDEL")
                    .arg(login_key)
                    .query_async(&mut conn)
                    .await
            })
            .await
        }
        .boxed()
    }
}

impl Locks for RedisStore {
    fn try_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        _now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            // Not retried blindly: a lost reply to a successful SET would leave us believing
            // someone else holds the lock, which only makes us wait — the safe side.
            self.set_if_absent(&self.lock_key(name), owner, ttl).await
        }
        .boxed()
    }

    fn renew_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        _now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let lock_key = self.lock_key(name);
            let renewed: i64 = self
                .eval(&self.renew_lock, &lock_key, |invocation| {
                    invocation.arg(owner).arg(millis(ttl).max(1));
                })
                .await?;
            Ok(renewed == 1)
        }
        .boxed()
    }

    fn unlock<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let lock_key = self.lock_key(name);
            let _: i64 = self
                .eval(&self.unlock, &lock_key, |invocation| {
                    invocation.arg(owner);
                })
                .await?;
            Ok(())
        }
        .boxed()
    }
}

impl ReplayMemory for RedisStore {
    fn remember_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
        _now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            self.set_if_absent(&self.remembered_key(name), "1", ttl)
                .await
        }
        .boxed()
    }
}

impl RateBuckets for RedisStore {
    fn rate_limit<'a>(
        &'a self,
        bucket: &'a str,
        limit: RateLimit,
        now: UnixMillis,
        want: u32,
    ) -> BoxFuture<'a, StoreResult<RateDecision>> {
        async move {
            let key = self.rate_key(bucket);
            let (granted, remaining, retry_after_ms, reset_ms): (i64, i64, i64, i64) = self
                .eval(&self.gcra, &key, |invocation| {
                    invocation
                        .arg(now)
                        .arg(limit.per_ms())
                        .arg(limit.requests.max(1))
                        .arg(want);
                })
                .await?;
            Ok(RateDecision {
                granted: u32::try_from(granted.max(0)).unwrap_or(0),
                remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                retry_after_ms,
                reset_ms,
            })
        }
        .boxed()
    }
}

impl StoreHealth for RedisStore {
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            self.run_once(|mut conn| async move {
                redis::cmd("PING").query_async::<()>(&mut conn).await
            })
            .await
        }
        .boxed()
    }

    fn cache_statistics(&self) -> Option<CacheStatistics> {
        self.cache.as_ref().map(|cache| cache.statistics())
    }
}
