//! Redis session store, shared by every gatehouse instance.
//!
//! Layout (every key carries its own hash tag; no command or script touches two keys, so
//! the layout works unchanged on Redis Cluster):
//! - `<prefix>:s:{<hash of session id>}` — hash: `c` sealed payload, `p` provider, `u` sub,
//!   `i` provider sid, `t0` created, `ta` absolute expiry, `ts` last touch (ms), `d` device
//!   label, `v` revocation envelope (refresh token sealed under the server-held revocation
//!   key, only with one). Its TTL is the idle timeout, capped by the absolute expiry.
//! - `<prefix>:x:{<hash of provider+sub or provider+sid>}` — set of session keys (no secrets).
//! - `<prefix>:l:{<hash of state>}` — sealed login state, consumed with GETDEL.
//! - `<prefix>:r:{<limit>|<subject>}` — a rate-limit bucket's theoretical arrival time (ms),
//!   expiring when the bucket is full again.
//!
//! Every failure to reach Redis is `StoreError::Unavailable` (503 with Retry-After at the
//! edge), never a missing session: a failover costs retries, not logins.

mod cache;
mod connection;
mod tracking;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::{AsyncCommands, ErrorKind, RedisError, Script};

use self::cache::{CachedSession, SessionCache};
use self::connection::{Connection, Connector};
use super::store::*;
use crate::clock::UnixMillis;
use crate::config::RedisSettings;
use crate::ratelimit::{RateDecision, RateLimit, GCRA_SCRIPT};

const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[1], 'p', ARGV[2], 'u', ARGV[3], 't0', ARGV[5], 'ta', ARGV[6], 'ts', ARGV[5], 'd', ARGV[8])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'i', ARGV[4]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'v', ARGV[9]) end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
";

/// Slides a session's idle expiry (at most once per touch interval, so not on most reads);
/// never recreates a session deleted meanwhile. ARGV: now, idle ms.
const TOUCH: &str = r"
local ta = redis.call('HGET', KEYS[1], 'ta')
if not ta then return 0 end
redis.call('HSET', KEYS[1], 'ts', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.max(1, math.min(tonumber(ARGV[2]), tonumber(ta) - tonumber(ARGV[1]))))
return 1
";

/// ARGV: sealed payload, absolute expiry, now, revocation envelope ('' removes it).
const REPLACE_SEALED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[1], 'ta', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'v', ARGV[4]) else redis.call('HDEL', KEYS[1], 'v') end
local left = tonumber(ARGV[2]) - tonumber(ARGV[3])
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or left < ttl then redis.call('PEXPIRE', KEYS[1], left) end
return 1
";

const RENEW_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// Adds a member to an index and makes the index live at least as long as the session.
const INDEX_ADD: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

pub struct RedisStore {
    connector: Arc<Connector>,
    /// Sessions as last read, kept coherent by Redis's invalidations; `None`: every read
    /// goes to Redis.
    cache: Option<Arc<SessionCache>>,
    prefix: String,
    min_replicas_ack: u32,
    min_replicas_timeout: Duration,
    /// Whether the last command failed to reach Redis: the log says so once per outage.
    unreachable: AtomicBool,
    /// Where Redis is, for the log: hosts and ports, no credentials.
    target: String,
    insert: Script,
    touch: Script,
    replace_sealed: Script,
    index_add: Script,
    renew_lock: Script,
    unlock: Script,
    gcra: Script,
}

impl RedisStore {
    /// Connects lazily: gatehouse starts (not ready) while Redis is still coming up.
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let connector = Connector::new(settings).map_err(|e| {
            StoreError::Unavailable(format!("redis settings rejected: {}", describe(&e)))
        })?;
        Ok(Self {
            connector: Arc::new(connector),
            cache: None,
            prefix: settings.key_prefix.clone(),
            min_replicas_ack: settings.min_replicas_ack,
            min_replicas_timeout: settings.min_replicas_timeout,
            unreachable: AtomicBool::new(false),
            target: connection::describe_target(&settings.topology),
            insert: Script::new(INSERT),
            touch: Script::new(TOUCH),
            replace_sealed: Script::new(REPLACE_SEALED),
            index_add: Script::new(INDEX_ADD),
            renew_lock: Script::new(RENEW_LOCK),
            unlock: Script::new(UNLOCK),
            gcra: Script::new(GCRA_SCRIPT),
        })
    }

    /// The store with a session cache of up to `entries` sessions, kept coherent by Redis
    /// key tracking (see `cache`), on a thread of its own. On a cluster the cache stays off
    /// (tracking is per node there).
    pub fn with_cache(settings: &RedisSettings, entries: NonZeroUsize) -> Result<Self, StoreError> {
        let mut store = Self::new(settings)?;
        if !store.connector.supports_tracking() {
            tracing::info!("session cache off: Redis Cluster tracks keys per node");
            return Ok(store);
        }
        let cache = Arc::new(SessionCache::new(entries));
        // A thread of its own, blocking: a reader can then see an invalidation waiting in
        // its socket before this thread has run (see `tracking`).
        let (weak, connector) = (Arc::downgrade(&cache), store.connector.clone());
        let session_prefix = format!("{}:s:", store.prefix);
        let (target, connect_timeout) = (store.target.clone(), settings.connect_timeout);
        std::thread::Builder::new()
            .name("session-cache".into())
            .spawn(move || {
                // Only for asking the sentinels where the master is.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "session cache off: no runtime for its thread");
                        return;
                    }
                };
                let endpoint = || {
                    runtime
                        .block_on(connector.tracking_endpoint())
                        .map_err(|e| describe(&e))
                };
                tracking::run(weak, endpoint, &session_prefix, connect_timeout, &target);
            })
            .map_err(|e| StoreError::Unavailable(format!("session cache thread: {e}")))?;
        store.cache = Some(cache);
        Ok(store)
    }

    fn forget_cached(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key);
        }
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}:s:{{{key}}}", self.prefix)
    }

    fn index_key(&self, index_id: &str) -> String {
        format!("{}:x:{{{index_id}}}", self.prefix)
    }

    /// The refresh lock sits in the same hash slot as the session it guards.
    fn lock_key(&self, name: &str) -> String {
        format!("{}:k:{{{name}}}", self.prefix)
    }

    fn remembered_key(&self, name: &str) -> String {
        format!("{}:j:{{{name}}}", self.prefix)
    }

    fn rate_key(&self, bucket: &str) -> String {
        format!("{}:r:{{{bucket}}}", self.prefix)
    }

    fn login_key(&self, key: &str) -> String {
        format!("{}:l:{{{key}}}", self.prefix)
    }

    /// Runs `op` on a connection; when it could not reach Redis it is tried once more, as
    /// the connection manager (or the Sentinel lookup) has reconnected meanwhile.
    async fn run<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let result = match self.attempt(&op).await {
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.attempt(&op).await
            }
            other => other,
        };
        self.settle(result)
    }

    /// For commands whose retry after a lost reply could do harm (see the callers).
    async fn run_once<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let result = self.attempt(op).await;
        self.settle(result)
    }

    async fn attempt<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let connection = self.connector.get().await?;
        let result = op(connection).await;
        if let Err(error) = &result {
            self.connector.failed(error);
        }
        result
    }

    /// Logs the start and the end of an outage once each, and maps the error.
    fn settle<T>(&self, result: Result<T, RedisError>) -> StoreResult<T> {
        match result {
            Ok(value) => {
                if self.unreachable.load(Ordering::Relaxed)
                    && self.unreachable.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(redis = %self.target, "redis answers again");
                }
                Ok(value)
            }
            Err(error) => {
                let reason = describe(&error);
                if is_transient(&error) || is_unreachable(&error) {
                    if !self.unreachable.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            redis = %self.target,
                            %reason,
                            "redis unreachable: answering 503 until it is back"
                        );
                    }
                } else {
                    tracing::warn!(%reason, "redis command failed");
                }
                Err(StoreError::Unavailable(reason))
            }
        }
    }

    /// `WAIT`s for `redis.min_replicas_ack` replicas to hold what this connection wrote to
    /// the node that serves `key`; whether enough did.
    async fn replicated(&self, key: &str) -> StoreResult<bool> {
        if self.min_replicas_ack == 0 {
            return Ok(true);
        }
        let acknowledged: i64 = self
            .run_once(|mut conn| async move {
                let mut wait = redis::cmd("WAIT");
                wait.arg(self.min_replicas_ack)
                    .arg(millis(self.min_replicas_timeout).max(1));
                conn.query_at_key(wait, key).await
            })
            .await?;
        Ok(acknowledged >= i64::from(self.min_replicas_ack))
    }

    /// The session hash's fields, decoded; `None` when the key does not exist.
    async fn read_record(
        &self,
        session_key: &str,
    ) -> StoreResult<Option<(SessionRecord, UnixMillis)>> {
        let fields: Vec<Option<Vec<u8>>> = self
            .run(|mut conn| async move {
                redis::cmd("HMGET")
                    .arg(session_key)
                    .arg(&["c", "p", "u", "i", "t0", "ta", "ts", "d", "v"])
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if fields.first().is_none_or(|c| c.is_none()) {
            return Ok(None);
        }
        record_from_fields(&fields).map(Some)
    }

    /// `SET key value NX PX ttl`: whether the key was absent (and is now set).
    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<bool> {
        let set: Option<String> = self
            .run_once(|mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl).max(1))
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Runs a single-key script (EVALSHA, loading it on first use), retried once on a
    /// dropped connection.
    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        add_args: impl Fn(&mut redis::ScriptInvocation<'_>),
    ) -> StoreResult<T> {
        self.run(|mut conn| {
            let mut invocation = script.key(key);
            add_args(&mut invocation);
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }

    async fn index_members(&self, index_id: &str, now: UnixMillis) -> StoreResult<Vec<String>> {
        let index_key = self.index_key(index_id);
        let members: Vec<String> = self
            .run(|mut conn| {
                let index_key = index_key.clone();
                async move { conn.smembers(index_key).await }
            })
            .await?;
        let mut live = Vec::with_capacity(members.len());
        for member in members {
            let absolute: Option<i64> = self
                .run(|mut conn| {
                    let key = self.session_key(&member);
                    async move { conn.hget(key, "ta").await }
                })
                .await?;
            match absolute {
                Some(ta) if ta > now => live.push(member),
                _ => {
                    // Dangling entry of a session that expired on its own.
                    let _: StoreResult<()> = self
                        .run_once(|mut conn| {
                            let index_key = index_key.clone();
                            async move { conn.srem(index_key, member).await }
                        })
                        .await;
                }
            }
        }
        live.sort();
        Ok(live)
    }
}

/// Drops a session's cache entry when a write to it ends, however it ends (an error, or the
/// request going away mid-write): Redis's invalidation would come too, a moment later.
struct ForgetOnDrop<'a>(&'a RedisStore, &'a str);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.forget_cached(self.1);
    }
}

/// Why Redis failed, fit for the log and `/readyz`. A server's reply can quote a command's
/// arguments (sealed payloads, keys), so only connection-level errors keep their text.
fn describe(error: &RedisError) -> String {
    match error.kind() {
        ErrorKind::Io
        | ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel
        | ErrorKind::EmptySentinelList => error.to_string(),
        ErrorKind::Server(kind) => format!("redis answered {kind:?}"),
        kind => format!("{kind:?}"),
    }
}

/// Failures where the command may not have reached Redis, or Redis is between masters.
fn is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::BusyLoading
            )
        )
}

fn is_unreachable(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::EmptySentinelList
            | ErrorKind::AuthenticationFailed
    )
}

fn field_string(value: &Option<Vec<u8>>, name: &str) -> StoreResult<String> {
    match value {
        Some(bytes) => String::from_utf8(bytes.clone())
            .map_err(|_| StoreError::Corrupt(format!("field {name} is not text"))),
        None => Err(StoreError::Corrupt(format!("field {name} missing"))),
    }
}

fn field_millis(value: &Option<Vec<u8>>, name: &str) -> StoreResult<UnixMillis> {
    field_string(value, name)?
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("field {name} is not a number")))
}

/// Decodes the `c p u i t0 ta ts d v` fields.
fn record_from_fields(fields: &[Option<Vec<u8>>]) -> StoreResult<(SessionRecord, UnixMillis)> {
    if fields.len() != 9 {
        return Err(StoreError::Corrupt("unexpected field count".into()));
    }
    let record = SessionRecord {
        sealed: fields[0]
            .clone()
            .ok_or_else(|| StoreError::Corrupt("payload missing".into()))?,
        provider: field_string(&fields[1], "p")?,
        sub: field_string(&fields[2], "u")?,
        provider_sid: fields[3]
            .as_ref()
            .map(|_| field_string(&fields[3], "i"))
            .transpose()?,
        created_at: field_millis(&fields[4], "t0")?,
        absolute_expires_at: field_millis(&fields[5], "ta")?,
        device: fields[7]
            .as_ref()
            .map(|_| field_string(&fields[7], "d"))
            .transpose()?
            .unwrap_or_default(),
        revocation: fields[8].clone().filter(|v| !v.is_empty()),
    };
    Ok((record, field_millis(&fields[6], "ts")?))
}

fn millis(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl SessionStore for RedisStore {
    fn insert<'a>(
        &'a self,
        key: &'a str,
        record: &'a SessionRecord,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let ttl = millis(idle.idle_timeout)
                .min(record.absolute_expires_at - now)
                .max(1);
            let session_key = self.session_key(key);
            let inserted: i64 = self
                .eval(&self.insert, &session_key, |invocation| {
                    invocation
                        .arg(&record.sealed)
                        .arg(&record.provider)
                        .arg(&record.sub)
                        .arg(record.provider_sid.as_deref().unwrap_or(""))
                        .arg(now)
                        .arg(record.absolute_expires_at)
                        .arg(ttl)
                        .arg(&record.device)
                        .arg(record.revocation.as_deref().unwrap_or_default());
                })
                .await?;
            if inserted == 0 {
                return Err(StoreError::Corrupt("session key collision".into()));
            }
            let index_ttl = (record.absolute_expires_at - now).max(1);
            let mut index_ids = vec![sub_index_id(&record.provider, &record.sub)];
            if let Some(sid) = &record.provider_sid {
                index_ids.push(sid_index_id(&record.provider, sid));
            }
            for index_id in index_ids {
                let index_key = self.index_key(&index_id);
                let _: i64 = self
                    .eval(&self.index_add, &index_key, |invocation| {
                        invocation.arg(key).arg(index_ttl);
                    })
                    .await?;
            }
            // Only a session that survives a failover is handed out: with fewer replicas
            // holding it than asked for, the login fails (503) rather than the session later.
            if !self.replicated(&session_key).await? {
                let _ = self.remove(key).await;
                return Err(StoreError::Unavailable(format!(
                    "fewer than {} replica(s) acknowledged the new session",
                    self.min_replicas_ack
                )));
            }
            Ok(())
        }
        .boxed()
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<Option<FetchedSession>>> {
        async move {
            // A plain read on the hot path; the expiry checks use the injected clock, and
            // the write-back of sliding expiry happens only when the touch interval passed.
            // From the cache when Redis vouches for it; the clock checks below apply either way.
            // The Redis key is spelled out only when Redis is asked (not on a cache hit).
            let cached = self.cache.as_ref().and_then(|cache| cache.get(key));
            let found = match cached {
                Some(cached) => Some((cached.record, cached.last_touch, Some(cached.memo))),
                None => {
                    let ticket = self.cache.as_ref().map(|cache| cache.ticket());
                    match self.read_record(&self.session_key(key)).await? {
                        None => None,
                        Some((record, last_touch)) => {
                            let record = Arc::new(record);
                            let memo = match (&self.cache, ticket) {
                                (Some(cache), Some(ticket)) => {
                                    let entry = CachedSession {
                                        record: record.clone(),
                                        last_touch,
                                        memo: Memo::default(),
                                    };
                                    let memo = entry.memo.clone();
                                    cache.fill(key, ticket, entry).then_some(memo)
                                }
                                _ => None,
                            };
                            Some((record, last_touch, memo))
                        }
                    }
                }
            };
            let Some((record, mut last_touch, memo)) = found else {
                return Ok(None);
            };
            let idle_ms = millis(idle.idle_timeout);
            if now >= record.absolute_expires_at || now - last_touch >= idle_ms {
                // Expired by the clock; Redis's TTL removes it too, this is only sooner.
                self.forget_cached(key);
                let session_key = self.session_key(key);
                let _: StoreResult<i64> = self
                    .run_once(|mut conn| async move { conn.del(session_key).await })
                    .await;
                return Ok(None);
            }
            if now - last_touch >= millis(idle.touch_interval) {
                let touched: StoreResult<i64> = self
                    .eval(&self.touch, &self.session_key(key), |invocation| {
                        invocation.arg(now).arg(idle_ms);
                    })
                    .await;
                self.forget_cached(key);
                if touched? == 0 {
                    return Ok(None);
                }
                last_touch = now;
            }
            let idle_expires_at = (last_touch + idle_ms).min(record.absolute_expires_at);
            Ok(Some(FetchedSession {
                record,
                idle_expires_at,
                memo,
            }))
        }
        .boxed()
    }

    fn replace_sealed<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        revocation: Option<&'a [u8]>,
        absolute_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let session_key = self.session_key(key);
            let _forget = ForgetOnDrop(self, key);
            let replaced: i64 = self
                .eval(&self.replace_sealed, &session_key, |invocation| {
                    invocation
                        .arg(sealed)
                        .arg(absolute_expires_at)
                        .arg(now)
                        .arg(revocation.unwrap_or_default());
                })
                .await?;
            // The provider has already rotated the refresh token, so these tokens are the
            // only valid ones whatever WAIT says: keep them, and say that a failover now
            // could lose them.
            if replaced == 1 && !self.replicated(&session_key).await? {
                tracing::warn!(
                    replicas = self.min_replicas_ack,
                    "refreshed tokens are stored, but not yet on the replicas asked for"
                );
            }
            Ok(replaced == 1)
        }
        .boxed()
    }

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

    fn count(&self) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            // SCAN, not KEYS: it does not block the server. A cluster is scanned master by
            // master; one server (or the Sentinel master) is the only node.
            let pattern = format!("{}:s:*", self.prefix);
            let masters = self
                .run(|mut conn| async move { conn.masters().await })
                .await?;
            let nodes: Vec<Option<&(String, u16)>> = if masters.is_empty() {
                vec![None]
            } else {
                masters.iter().map(Some).collect()
            };
            let mut total: u64 = 0;
            for node in nodes {
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = self
                        .run(|mut conn| {
                            let mut scan = redis::cmd("SCAN");
                            scan.arg(cursor)
                                .arg("MATCH")
                                .arg(&pattern)
                                .arg("COUNT")
                                .arg(1000);
                            async move { conn.query_on(scan, node).await }
                        })
                        .await?;
                    total += keys.len() as u64;
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(total)
        }
        .boxed()
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let session_key = self.session_key(key);
            let _forget = ForgetOnDrop(self, key);
            let fields: (Option<String>, Option<String>, Option<String>) = self
                .run(|mut conn| {
                    let session_key = session_key.clone();
                    async move {
                        redis::cmd("HMGET")
                            .arg(session_key)
                            .arg(&["p", "u", "i"])
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            let deleted: i64 = self
                .run(|mut conn| {
                    let session_key = session_key.clone();
                    async move { conn.del(session_key).await }
                })
                .await?;
            if let (Some(provider), Some(sub), sid) = fields {
                let mut index_ids = vec![sub_index_id(&provider, &sub)];
                if let Some(sid) = sid {
                    index_ids.push(sid_index_id(&provider, &sid));
                }
                for index_id in index_ids {
                    let index_key = self.index_key(&index_id);
                    let _: i64 = self
                        .run(|mut conn| {
                            let index_key = index_key.clone();
                            async move { conn.srem(index_key, key).await }
                        })
                        .await?;
                }
            }
            Ok(deleted == 1)
        }
        .boxed()
    }

    fn keys_by_sub<'a>(
        &'a self,
        provider: &'a str,
        sub: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        async move { self.index_members(&sub_index_id(provider, sub), now).await }.boxed()
    }

    fn keys_by_sid<'a>(
        &'a self,
        provider: &'a str,
        sid: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        async move { self.index_members(&sid_index_id(provider, sid), now).await }.boxed()
    }

    fn summary<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionSummary>>> {
        async move {
            let session_key = self.session_key(key);
            let Some((record, last_touch)) = self.read_record(&session_key).await? else {
                return Ok(None);
            };
            Ok(Some(SessionSummary {
                key: key.to_owned(),
                provider: record.provider,
                sub: record.sub,
                provider_sid: record.provider_sid,
                created_at: record.created_at,
                absolute_expires_at: record.absolute_expires_at,
                last_seen_at: last_touch,
                device: record.device,
            }))
        }
        .boxed()
    }

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

    fn cache_statistics(&self) -> Option<CacheStatistics> {
        self.cache.as_ref().map(|cache| cache.statistics())
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            self.run_once(|mut conn| async move {
                redis::cmd("PING").query_async::<()>(&mut conn).await
            })
            .await
        }
        .boxed()
    }
}
