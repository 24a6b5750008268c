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
mod client;
mod cluster_tracking;
mod connection;
mod node;
mod nodes;
mod reconnecting;
mod resp3;
mod short_lived;
mod slots;
mod tracking;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::{AsyncCommands, ErrorKind, RedisError, Script};

use self::cache::{CachedSession, SessionCache};
use self::client::ForgetOnDrop;
use self::connection::{Connection, Connector};
use self::slots::hash_slot;
use super::store::*;
use crate::clock::UnixMillis;
use crate::config::RedisSettings;
use crate::ratelimit::{RateDecision, RateLimit, GCRA_SCRIPT};

const INSERT: &str = include_str!("scripts/insert.lua");

/// Slides a session's idle expiry (at most once per touch interval, so not on most reads);
/// never recreates a session deleted meanwhile. ARGV: now, idle ms.
const TOUCH: &str = include_str!("scripts/touch.lua");

/// ARGV: sealed payload, absolute expiry, now, revocation envelope ('' removes it).
const REPLACE_SEALED: &str = include_str!("scripts/replace_sealed.lua");

const RENEW_LOCK: &str = include_str!("scripts/renew_lock.lua");

const UNLOCK: &str = include_str!("scripts/unlock.lua");

/// Adds a member to an index and makes the index live at least as long as the session.
const INDEX_ADD: &str = include_str!("scripts/index_add.lua");

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

impl SessionRecords for RedisStore {
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
            // The Redis key is spelled out only when Redis is asked (not on a cache hit), or
            // on a cluster, for its slot: an entry is served only while its slot's master
            // vouches for it.
            let slot = match &self.cache {
                Some(cache) if cache.routed() => hash_slot(&self.session_key(key)),
                _ => 0,
            };
            let cached = self.cache.as_ref().and_then(|cache| cache.get(key, slot));
            let found = match cached {
                Some(cached) => Some((cached.record, cached.last_touch, Some(cached.memo))),
                None => {
                    let mut ticket = self.cache.as_ref().map(|cache| cache.ticket(slot));
                    let session_key = self.session_key(key);
                    let at_node = match ticket.as_ref().and_then(|t| t.read_at()) {
                        Some(address) => self.read_record_at(address, &session_key).await,
                        None => None,
                    };
                    let read = match at_node {
                        Some(read) => read,
                        None => {
                            // Read the ordinary way; on a cluster it fills nothing (see `nodes`).
                            if self.cache.as_ref().is_some_and(|cache| cache.routed()) {
                                ticket = None;
                            }
                            self.read_record(&session_key).await
                        }
                    };
                    match read? {
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
}
