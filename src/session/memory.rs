//! Single-process session store: the embedded default when no Redis is configured. Sessions
//! vanish with the process and are not shared between instances.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::store::*;
use crate::clock::UnixMillis;
use crate::ratelimit::{gcra, RateDecision, RateLimit, Tat};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Entry>,
    indices: HashMap<String, HashSet<String>>,
    login_states: HashMap<String, (Vec<u8>, UnixMillis)>,
    locks: HashMap<String, (String, UnixMillis)>,
    remembered: HashMap<String, UnixMillis>,
    /// Rate-limit buckets: their theoretical arrival time.
    rate_buckets: HashMap<String, Tat>,
    writes: u64,
}

struct Entry {
    record: SessionRecord,
    last_touch: UnixMillis,
    expires_at: UnixMillis,
}

fn millis(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Inner {
    fn sweep_now_and_then(&mut self, now: UnixMillis) {
        self.writes += 1;
        if self.writes % 256 != 0 {
            return;
        }
        self.sessions.retain(|_, e| e.expires_at > now);
        self.login_states.retain(|_, (_, exp)| *exp > now);
        self.locks.retain(|_, (_, exp)| *exp > now);
        self.remembered.retain(|_, exp| *exp > now);
        self.rate_buckets.retain(|_, tat| tat.after(now));
        let sessions = &self.sessions;
        self.indices.retain(|_, members| {
            members.retain(|key| sessions.contains_key(key));
            !members.is_empty()
        });
    }

    fn unindex(&mut self, key: &str, record: &SessionRecord) {
        let mut index_ids = vec![sub_index_id(&record.provider, &record.sub)];
        if let Some(sid) = &record.provider_sid {
            index_ids.push(sid_index_id(&record.provider, sid));
        }
        for id in index_ids {
            if let Some(members) = self.indices.get_mut(&id) {
                members.remove(key);
                if members.is_empty() {
                    self.indices.remove(&id);
                }
            }
        }
    }

    fn live_keys(&self, index_id: &str, now: UnixMillis) -> Vec<String> {
        let mut keys: Vec<String> = self
            .indices
            .get(index_id)
            .map(|members| {
                members
                    .iter()
                    .filter(|k| self.sessions.get(*k).is_some_and(|e| e.expires_at > now))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing every session, so keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SessionRecords for MemoryStore {
    fn insert<'a>(
        &'a self,
        key: &'a str,
        record: &'a SessionRecord,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let result = (|| {
            let mut inner = self.lock();
            inner.sweep_now_and_then(now);
            if inner.sessions.get(key).is_some_and(|e| e.expires_at > now) {
                return Err(StoreError::Corrupt("session key collision".into()));
            }
            let expires_at = (now + millis(idle.idle_timeout)).min(record.absolute_expires_at);
            inner.sessions.insert(
                key.to_owned(),
                Entry {
                    record: record.clone(),
                    last_touch: now,
                    expires_at,
                },
            );
            let sub_id = sub_index_id(&record.provider, &record.sub);
            inner
                .indices
                .entry(sub_id)
                .or_default()
                .insert(key.to_owned());
            if let Some(sid) = &record.provider_sid {
                let sid_id = sid_index_id(&record.provider, sid);
                inner
                    .indices
                    .entry(sid_id)
                    .or_default()
                    .insert(key.to_owned());
            }
            Ok(())
        })();
        async move { result }.boxed()
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<Option<FetchedSession>>> {
        let result = (|| {
            let mut inner = self.lock();
            let idle_ms = millis(idle.idle_timeout);
            let Some(entry) = inner.sessions.get_mut(key) else {
                return Ok(None);
            };
            let expired = now >= entry.record.absolute_expires_at
                || now - entry.last_touch >= idle_ms
                || now >= entry.expires_at;
            if expired {
                let record = entry.record.clone();
                inner.sessions.remove(key);
                inner.unindex(key, &record);
                return Ok(None);
            }
            if now - entry.last_touch >= millis(idle.touch_interval) {
                entry.last_touch = now;
                entry.expires_at = (now + idle_ms).min(entry.record.absolute_expires_at);
            }
            Ok(Some(FetchedSession {
                record: Arc::new(entry.record.clone()),
                idle_expires_at: (entry.last_touch + idle_ms).min(entry.record.absolute_expires_at),
                memo: None,
            }))
        })();
        async move { result }.boxed()
    }

    fn replace_sealed<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        revocation: Option<&'a [u8]>,
        absolute_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let replaced = match self.lock().sessions.get_mut(key) {
            Some(entry) if entry.expires_at > now => {
                entry.record.sealed = sealed.to_vec();
                entry.record.revocation = revocation.map(<[u8]>::to_vec);
                entry.record.absolute_expires_at = absolute_expires_at;
                entry.expires_at = entry.expires_at.min(absolute_expires_at);
                true
            }
            _ => false,
        };
        async move { Ok(replaced) }.boxed()
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let mut inner = self.lock();
        let existed = match inner.sessions.remove(key) {
            Some(entry) => {
                inner.unindex(key, &entry.record);
                true
            }
            None => false,
        };
        drop(inner);
        async move { Ok(existed) }.boxed()
    }

    fn count(&self) -> BoxFuture<'_, StoreResult<u64>> {
        let count = self.lock().sessions.len() as u64;
        async move { Ok(count) }.boxed()
    }

    fn keys_by_sub<'a>(
        &'a self,
        provider: &'a str,
        sub: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        let keys = self.lock().live_keys(&sub_index_id(provider, sub), now);
        async move { Ok(keys) }.boxed()
    }

    fn keys_by_sid<'a>(
        &'a self,
        provider: &'a str,
        sid: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        let keys = self.lock().live_keys(&sid_index_id(provider, sid), now);
        async move { Ok(keys) }.boxed()
    }

    fn summary<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionSummary>>> {
        let summary = self.lock().sessions.get(key).map(|e| SessionSummary {
            key: key.to_owned(),
            provider: e.record.provider.clone(),
            sub: e.record.sub.clone(),
            provider_sid: e.record.provider_sid.clone(),
            created_at: e.record.created_at,
            absolute_expires_at: e.record.absolute_expires_at,
            last_seen_at: e.last_touch,
            device: e.record.device.clone(),
        });
        async move { Ok(summary) }.boxed()
    }
}

impl OneTimeRecords for MemoryStore {
    fn put_login_state<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let mut inner = self.lock();
        inner.sweep_now_and_then(now);
        inner
            .login_states
            .insert(key.to_owned(), (sealed.to_vec(), now + millis(ttl)));
        drop(inner);
        async move { Ok(()) }.boxed()
    }

    fn take_login_state<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Option<Vec<u8>>>> {
        let taken = self
            .lock()
            .login_states
            .remove(key)
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(sealed, _)| sealed);
        async move { Ok(taken) }.boxed()
    }
}

impl Locks for MemoryStore {
    fn try_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let mut inner = self.lock();
        let free = inner
            .locks
            .get(name)
            .is_none_or(|(_, expires_at)| *expires_at <= now);
        if free {
            inner
                .locks
                .insert(name.to_owned(), (owner.to_owned(), now + millis(ttl)));
        }
        drop(inner);
        async move { Ok(free) }.boxed()
    }

    fn renew_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let renewed = match self.lock().locks.get_mut(name) {
            Some((holder, expires_at)) if holder == owner && *expires_at > now => {
                *expires_at = now + millis(ttl);
                true
            }
            _ => false,
        };
        async move { Ok(renewed) }.boxed()
    }

    fn unlock<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        let mut inner = self.lock();
        if inner
            .locks
            .get(name)
            .is_some_and(|(holder, _)| holder == owner)
        {
            inner.locks.remove(name);
        }
        drop(inner);
        async move { Ok(()) }.boxed()
    }
}

impl ReplayMemory for MemoryStore {
    fn remember_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let mut inner = self.lock();
        inner.sweep_now_and_then(now);
        let first = inner
            .remembered
            .get(name)
            .is_none_or(|expires_at| *expires_at <= now);
        if first {
            inner.remembered.insert(name.to_owned(), now + millis(ttl));
        }
        drop(inner);
        async move { Ok(first) }.boxed()
    }
}

impl RateBuckets for MemoryStore {
    fn rate_limit<'a>(
        &'a self,
        bucket: &'a str,
        limit: RateLimit,
        now: UnixMillis,
        want: u32,
    ) -> BoxFuture<'a, StoreResult<RateDecision>> {
        let mut inner = self.lock();
        inner.sweep_now_and_then(now);
        let stored = inner.rate_buckets.get(bucket).copied();
        let (decision, new_tat) = gcra(stored, limit, now, want);
        if let Some(tat) = new_tat {
            inner.rate_buckets.insert(bucket.to_owned(), tat);
        }
        drop(inner);
        async move { Ok(decision) }.boxed()
    }
}

impl StoreHealth for MemoryStore {
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        async { Ok(()) }.boxed()
    }
}
