//! The session cache: sessions read from Redis stay in process, still sealed, for as long as
//! Redis vouches for them. A tracking connection (`CLIENT TRACKING ON BCAST PREFIX
//! <prefix>:s:` over RESP3, see `tracking`) hears of every change to any session key, from
//! any instance or operator command, and drops that entry here.
//!
//! An entry is only ever served while the invalidation channel is known to be whole: tracking
//! is on, the connection answered a PING within `STALE_AFTER`, and no invalidation is
//! waiting unread in its socket. When the channel breaks (connection lost, Redis restarted,
//! a failover), the cache is emptied and bypassed until tracking is re-established, because
//! an entry may have missed its invalidation meanwhile.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;

use super::resp3::Frame;
use super::tracking::{Channel, TrackingListener, STALE_AFTER};
use crate::clock::UnixMillis;
use crate::session::store::{CacheStatistics, Memo, SessionRecord};

/// A session hash as read from Redis: the sealed payload and its metadata, and the session
/// manager's memo of it (the opened session, for the cookie that opened it).
#[derive(Clone)]
pub(super) struct CachedSession {
    pub(super) record: Arc<SessionRecord>,
    pub(super) last_touch: UnixMillis,
    pub(super) memo: Memo,
}

pub(super) struct SessionCache {
    entries: Mutex<LruCache<String, CachedSession>>,
    /// Bumped by every invalidation: a read that overlapped one does not fill the cache.
    invalidations: AtomicU64,
    /// Whether tracking is on for the current connection.
    tracking: AtomicBool,
    /// Until when (ms since `epoch`) the last heartbeat vouches for the channel.
    vouched_until: AtomicI64,
    epoch: Instant,
    hits: AtomicU64,
    misses: AtomicU64,
    channel: Arc<Channel>,
}

/// What a reader noted before asking Redis, so that it fills the cache only if nothing was
/// invalidated meanwhile.
#[derive(Clone, Copy)]
pub(super) struct ReadTicket(u64);

impl SessionCache {
    pub(super) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            invalidations: AtomicU64::new(0),
            tracking: AtomicBool::new(false),
            vouched_until: AtomicI64::new(0),
            epoch: Instant::now(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            channel: Arc::new(Channel::new()),
        }
    }

    fn since_epoch(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    fn serving(&self) -> bool {
        self.tracking.load(Ordering::Acquire)
            && self.since_epoch() < self.vouched_until.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, CachedSession>> {
        // A panic while holding the lock cannot leave an entry half-written: LruCache's
        // operations complete or do not happen.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, key: &str) -> Option<CachedSession> {
        // The channel check comes first: an invalidation it finds waiting may be this key's.
        let found = if self.serving() && self.channel.quiet() {
            self.lock().get(key).cloned()
        } else {
            None
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(super) fn statistics(&self) -> CacheStatistics {
        CacheStatistics {
            serving: self.serving(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    pub(super) fn ticket(&self) -> ReadTicket {
        ReadTicket(self.invalidations.load(Ordering::Acquire))
    }

    /// Keeps what a read found, unless the channel is down or anything was invalidated since
    /// the read began (it might have been this key, changed after Redis answered).
    /// Whether it was kept.
    pub(super) fn fill(&self, key: &str, ticket: ReadTicket, session: CachedSession) -> bool {
        if !self.serving() {
            return false;
        }
        let mut entries = self.lock();
        let unchanged = self.invalidations.load(Ordering::Acquire) == ticket.0;
        if unchanged {
            entries.put(key.to_owned(), session);
        }
        unchanged
    }

    /// Drops one entry (this instance changed or deleted the session).
    pub(super) fn invalidate(&self, key: &str) {
        let mut entries = self.lock();
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        entries.pop(key);
    }

    fn invalidate_all(&self) {
        let mut entries = self.lock();
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl TrackingListener for SessionCache {
    fn channel(&self) -> Arc<Channel> {
        self.channel.clone()
    }

    /// Tracking is on (since `since`): whatever was cached before may have missed an
    /// invalidation.
    fn go_live(&self, since: Instant) {
        self.invalidate_all();
        self.vouch(since);
        self.tracking.store(true, Ordering::Release);
    }

    fn go_dark(&self) {
        self.tracking.store(false, Ordering::Release);
        self.invalidate_all();
    }

    /// An `invalidate` push's keys (or nil, after FLUSHALL/FLUSHDB: everything).
    fn apply_invalidation(&self, session_prefix: &str, keys: Option<&Frame>) {
        match keys {
            Some(Frame::Array(keys)) => {
                for key in keys {
                    let key = match key {
                        Frame::Bulk(bytes) => String::from_utf8_lossy(bytes),
                        _ => {
                            self.invalidate_all();
                            continue;
                        }
                    };
                    match key.strip_prefix(session_prefix) {
                        Some(tagged) => self.invalidate(strip_hash_tag(tagged)),
                        None => self.invalidate_all(),
                    }
                }
            }
            _ => self.invalidate_all(),
        }
    }

    /// Entries are served until `since + STALE_AFTER` unless the next heartbeat says more.
    fn vouch(&self, since: Instant) {
        let since_ms = match since.checked_duration_since(self.epoch) {
            Some(after) => after.as_millis() as i64,
            None => -(self.epoch.duration_since(since).as_millis() as i64),
        };
        self.vouched_until
            .store(since_ms + STALE_AFTER.as_millis() as i64, Ordering::Release);
    }
}

/// `{<key>}` → `<key>`: the cache is keyed like the store's API, the session key itself.
fn strip_hash_tag(tagged: &str) -> &str {
    tagged
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or(tagged)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn session(last_touch: UnixMillis) -> CachedSession {
        CachedSession {
            record: Arc::new(SessionRecord {
                sealed: vec![1, 2, 3],
                provider: "main".into(),
                sub: "alice".into(),
                provider_sid: None,
                created_at: 0,
                absolute_expires_at: 10,
                device: "Firefox on Linux".into(),
                revocation: None,
            }),
            last_touch,
            memo: Memo::default(),
        }
    }

    /// A cache whose channel is a socket pair; the other end is returned, to play Redis.
    fn live_cache_with_peer(capacity: usize) -> (SessionCache, UnixStream) {
        let cache = SessionCache::new(NonZeroUsize::new(capacity).expect("capacity"));
        let (ours, redis) = UnixStream::pair().expect("socket pair");
        cache.channel.open(ours.as_raw_fd());
        std::mem::forget(ours); // lives as long as the test process
        cache.go_live(Instant::now());
        (cache, redis)
    }

    fn live_cache(capacity: usize) -> SessionCache {
        let (cache, redis) = live_cache_with_peer(capacity);
        std::mem::forget(redis);
        cache
    }

    #[test]
    fn an_invalidation_waiting_in_the_socket_stops_serving_at_once() {
        let (cache, mut redis) = live_cache_with_peer(10);
        cache.fill("k", cache.ticket(), session(1));
        assert!(cache.get("k").is_some());
        redis.write_all(b">2\r\n").expect("write");
        assert!(cache.get("k").is_none(), "unread bytes: read Redis instead");
    }

    #[test]
    fn a_read_that_overlapped_an_invalidation_is_not_kept() {
        let cache = live_cache(10);
        let ticket = cache.ticket();
        cache.invalidate("other");
        cache.fill("k", ticket, session(1));
        assert!(cache.get("k").is_none());
        let ticket = cache.ticket();
        cache.fill("k", ticket, session(2));
        assert_eq!(cache.get("k").map(|s| s.last_touch), Some(2));
    }

    #[test]
    fn nothing_is_served_while_the_channel_is_down_or_unvouched() {
        let cache = live_cache(10);
        cache.fill("k", cache.ticket(), session(1));
        assert!(cache.get("k").is_some());
        cache.go_dark();
        assert!(cache.get("k").is_none());
        assert_eq!(cache.len(), 0, "emptied, not just hidden");

        let cache = live_cache(10);
        cache.fill("k", cache.ticket(), session(1));
        cache.vouch(Instant::now() - STALE_AFTER * 2);
        assert!(cache.get("k").is_none(), "no recent heartbeat, no cache");
    }

    #[test]
    fn pushes_drop_the_keys_they_name_and_a_flush_drops_all() {
        let cache = live_cache(10);
        for key in ["a", "b", "c"] {
            cache.fill(key, cache.ticket(), session(1));
        }
        let pushed = |key: &str| Frame::Bulk(format!("gh:s:{{{key}}}").into_bytes());
        cache.apply_invalidation("gh:s:", Some(&Frame::Array(vec![pushed("a")])));
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
        cache.apply_invalidation("gh:s:", Some(&Frame::Null));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_least_recently_used_entry_leaves_first() {
        let cache = live_cache(2);
        cache.fill("a", cache.ticket(), session(1));
        cache.fill("b", cache.ticket(), session(1));
        assert!(cache.get("a").is_some());
        cache.fill("c", cache.ticket(), session(1));
        assert!(cache.get("b").is_none());
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
    }
}
