//! The storage contract, one narrow trait per kind of record. Stores only ever see sealed (encrypted) session payloads and
//! hashed keys; the crypto lives in [`super::SessionManager`], so both implementations
//! behave the same and one contract test suite covers them.

use futures_util::future::BoxFuture;
use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::clock::UnixMillis;
use crate::ratelimit::{RateDecision, RateLimit};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store did not answer (connection refused, timeout, failover). Callers
    /// answer 503 and keep the session: an outage must never log anybody out. The text is
    /// a redacted description of the Redis error (`redis::client::describe`), not the error
    /// itself: a server error can quote a script's arguments, which may be sealed sessions.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store returned malformed data: {0}")]
    Corrupt(String),
}

/// What the store keeps for one session: the sealed payload plus the plain metadata the
/// operator commands and indices need (no secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub sealed: Vec<u8>,
    pub provider: String,
    pub sub: String,
    pub provider_sid: Option<String>,
    pub created_at: UnixMillis,
    pub absolute_expires_at: UnixMillis,
    /// A coarse label of the device the session logged in from ("Firefox on Windows"),
    /// for the user's list of their sessions. Empty in sessions stored before it was kept.
    pub device: String,
    /// The refresh token (and provider) sealed under the server-held revocation key, so
    /// that a user can end this session from another one and have its refresh token revoked
    /// (`session.revocation_key`); `None` without that key or without a refresh token.
    pub revocation: Option<Vec<u8>>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("sealed_len", &self.sealed.len())
            .field("provider", &self.provider)
            .field("device", &self.device)
            .field("revocation", &self.revocation.as_ref().map(|_| "<present>"))
            .field("created_at", &self.created_at)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct FetchedSession {
    pub record: Arc<SessionRecord>,
    /// When the session ends if it stays idle from now on.
    pub idle_expires_at: UnixMillis,
    /// Where the session manager may keep what it made of this record (the opened session)
    /// for as long as the store's cache holds the record unchanged; `None` without a cache.
    pub memo: Option<Memo>,
}

/// One slot per cached record, filled at most once (see `FetchedSession::memo`).
pub type Memo = Arc<OnceLock<Arc<dyn Any + Send + Sync>>>;

#[derive(Debug, Clone, Copy)]
pub struct IdlePolicy {
    pub idle_timeout: Duration,
    /// Sliding expiry is written back at most this often, to spare the store a write per read.
    pub touch_interval: Duration,
}

/// A session listed for an operator: no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub key: String,
    pub provider: String,
    pub sub: String,
    pub provider_sid: Option<String>,
    pub created_at: UnixMillis,
    pub absolute_expires_at: UnixMillis,
    pub last_seen_at: UnixMillis,
    pub device: String,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How a store's session cache is doing (for tests, metrics and `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatistics {
    /// Whether entries are being served: Redis tracks the keys and answered lately.
    pub serving: bool,
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

/// The sessions themselves: sealed records, their sliding expiry and their indices by
/// provider `sub` and `sid`.
pub trait SessionRecords: Send + Sync + 'static {
    /// Stores a new session under `key` (fails if the key exists) and indexes it by
    /// provider `sub` and `sid`.
    fn insert<'a>(
        &'a self,
        key: &'a str,
        record: &'a SessionRecord,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Reads a live session; slides its idle expiry when the touch interval has passed. An
    /// idle or absolutely expired session is removed and reported as absent.
    fn fetch<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<Option<FetchedSession>>>;

    /// Swaps the sealed payload of a session that still exists (tokens refreshed under the
    /// refresh lock) and its revocation envelope (in the same write; `None` removes it), and
    /// sets its absolute expiry (a refresh token may end sooner than the session would).
    /// Returns false when the session is gone: nothing is resurrected.
    fn replace_sealed<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        revocation: Option<&'a [u8]>,
        absolute_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Deletes a session and its index entries. Returns whether it existed.
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<bool>>;

    /// How many sessions the store holds (operator command; may scan).
    fn count(&self) -> BoxFuture<'_, StoreResult<u64>>;

    fn keys_by_sub<'a>(
        &'a self,
        provider: &'a str,
        sub: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>>;

    fn keys_by_sid<'a>(
        &'a self,
        provider: &'a str,
        sid: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>>;

    fn summary<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionSummary>>>;
}

/// Sealed one-time records (login states, logout continuations).
pub trait OneTimeRecords: Send + Sync + 'static {
    /// Login state, single use: `take` returns it at most once.
    fn put_login_state<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<()>>;

    fn take_login_state<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Option<Vec<u8>>>>;
}

/// Named locks with one owner that lapse unless renewed (the refresh lock).
pub trait Locks: Send + Sync + 'static {
    /// Takes the named lock for `owner` unless someone holds it. The lock lapses after `ttl`
    /// unless renewed, so a crashed holder cannot block others for long.
    fn try_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Extends a lock `owner` still holds; false when it lapsed or passed to someone else.
    fn renew_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Releases a lock if `owner` still holds it.
    fn unlock<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>>;
}

/// Names seen lately (logout token ids), to refuse a replay.
pub trait ReplayMemory: Send + Sync + 'static {
    /// True the first time a name is seen within `ttl` (replay detection for logout tokens).
    fn remember_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>>;
}

/// Rate-limit buckets, one atomic decision per call.
pub trait RateBuckets: Send + Sync + 'static {
    /// One rate-limit decision for `bucket` (GCRA, see [`crate::ratelimit`]), atomic across
    /// every instance sharing the store: takes up to `want` tokens, or none when the bucket
    /// is empty (a refused request is not counted).
    fn rate_limit<'a>(
        &'a self,
        bucket: &'a str,
        limit: RateLimit,
        now: UnixMillis,
        want: u32,
    ) -> BoxFuture<'a, StoreResult<RateDecision>>;
}

/// Whether the store answers, and how its session cache is doing.
pub trait StoreHealth: Send + Sync + 'static {
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>>;

    /// The session cache's state, or `None` for a store without one.
    fn cache_statistics(&self) -> Option<CacheStatistics> {
        None
    }
}

/// A store that holds every kind of record: what start-up builds and decorates. Code that
/// needs one kind takes only that trait (an `Arc<dyn SessionStore>` coerces to any of them).
pub trait SessionStore:
    SessionRecords + OneTimeRecords + Locks + ReplayMemory + RateBuckets + StoreHealth
{
}

impl<S> SessionStore for S where
    S: SessionRecords + OneTimeRecords + Locks + ReplayMemory + RateBuckets + StoreHealth + ?Sized
{
}

pub(crate) fn sub_index_id(provider: &str, sub: &str) -> String {
    super::crypto::hash_id(
        "gatehouse/index/sub",
        &[provider.as_bytes(), sub.as_bytes()],
    )
}

pub(crate) fn sid_index_id(provider: &str, sid: &str) -> String {
    super::crypto::hash_id(
        "gatehouse/index/sid",
        &[provider.as_bytes(), sid.as_bytes()],
    )
}
