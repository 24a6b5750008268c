//! Rate limits shared by every instance: the Generic Cell Rate Algorithm (GCRA), one
//! atomic decision against the session store (a Lua script on one key in Redis, a map in
//! process memory). The handler asks "may this bucket pass?" and maps a refusal to 429; it
//! never counts.
//!
//! GCRA keeps one number per bucket, the theoretical arrival time (TAT) of the next request
//! at the steady rate. A limit of `requests` per `per` admits a burst of `requests` at once
//! and then one request every `per / requests`; unlike a fixed window it has no edge at
//! which twice the limit passes, and unlike a sliding log it stores no list.
//!
//! A bucket does not cost a store round trip per request: a decision may take several
//! tokens at once (a lease: a 50th of the quota, at most 64), which this instance then hands
//! out locally for a sixth of the window (at most 10 s). Leased tokens are counted in the
//! shared bucket when they are taken, so the store's count never exceeds the limit; an
//! instance may hand out a counted token up to that hold later, so over one window an
//! instance can admit at most one lease more than the limit allows (2 %). A lease an
//! instance does not use up is lost to the client. Quotas under 100 lease one token at a
//! time: every decision goes to the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::Ipv6Net;

use crate::clock::{SharedClock, UnixMillis};
use crate::session::{RateBuckets, StoreError};

mod gcra;
pub use gcra::{gcra, RateDecision, RateLimit, Tat, GCRA_SCRIPT, MAX_WINDOW_SECS};

/// Which limit a request counts against, and under what name its policy is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitName<'a> {
    Login,
    Api,
    /// A route's own limit, named by its prefix.
    Route(&'a str),
}

impl LimitName<'_> {
    /// The policy identifier in the `RateLimit-Policy` and `RateLimit` headers.
    pub fn policy(&self) -> &str {
        match self {
            LimitName::Login => "login",
            LimitName::Api => "api",
            LimitName::Route(prefix) => prefix,
        }
    }
}

/// Who a request is counted for.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A session's store key (already a hash of its id).
    Session(&'a str),
    ClientIp(IpAddr),
}

/// The store bucket for one (limit, subject): one key per decision. The session key is a
/// hash already; an IP is not secret. An IPv6 client is counted by its /64: one subscriber
/// or host usually holds a whole /64 and could otherwise take a fresh address per request.
pub fn bucket(name: LimitName<'_>, subject: Subject<'_>) -> String {
    let scope = match name {
        LimitName::Login => "login".to_owned(),
        LimitName::Api => "api".to_owned(),
        LimitName::Route(prefix) => format!("route{prefix}"),
    };
    match subject {
        Subject::Session(key) => format!("{scope}|s|{key}"),
        Subject::ClientIp(IpAddr::V4(ip)) => format!("{scope}|ip|{ip}"),
        Subject::ClientIp(IpAddr::V6(ip)) => {
            let network = Ipv6Net::new(ip, 64).map_or(ip, |net| net.trunc().addr());
            format!("{scope}|ip|{network}/64")
        }
    }
}

/// What a check came to.
#[derive(Debug, Clone, Copy)]
pub enum Verdict {
    Passed(RateDecision),
    Limited(RateDecision),
    /// The store did not answer: the call passes unchecked (the session lookup fails closed
    /// on its own; a limiter must not turn a store hiccup into an outage).
    Unchecked,
}

/// Tokens this instance took from a bucket and has not handed out yet.
struct Lease {
    left: u32,
    /// What the store said was left in the bucket besides this lease.
    remaining_beyond: u32,
    expires_at: UnixMillis,
    reset_at: UnixMillis,
}

/// Leases beyond this many make the next new lease sweep out the expired ones.
const LEASES_BEFORE_SWEEP: usize = 4096;

/// How long calls wait for another call's lease (asking the store for their own token
/// meanwhile) before they lease themselves: a lease call whose caller went away never ends.
const REFILL_TIMEOUT_MS: i64 = 1_000;

struct Leases {
    map: HashMap<String, Lease>,
    /// Buckets for which a call of this instance is asking the store for a new lease, and
    /// since when. Meanwhile the other calls ask for one token each: were they all to lease,
    /// every lease but the last one stored would be counted in the store and never used.
    refilling: HashMap<String, UnixMillis>,
    /// The size at which the next new lease sweeps the map.
    sweep_above: usize,
}

/// What this instance's leases hold for a call.
enum FromLease {
    Token(RateDecision),
    /// Another call is fetching a new lease: ask the store for this call's token only.
    Refilling,
    /// Nothing: this call asks the store for a new lease.
    Lease,
}

/// The decision maker shared by every worker.
pub struct RateLimiter {
    store: Arc<dyn RateBuckets>,
    clock: SharedClock,
    leases: Mutex<Leases>,
    /// Set while the store fails, so an outage is logged once, not once per request.
    store_failing: AtomicBool,
}

impl RateLimiter {
    pub fn new(store: Arc<dyn RateBuckets>, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            leases: Mutex::new(Leases {
                map: HashMap::new(),
                refilling: HashMap::new(),
                sweep_above: LEASES_BEFORE_SWEEP,
            }),
            store_failing: AtomicBool::new(false),
        }
    }

    pub async fn check(
        &self,
        name: LimitName<'_>,
        subject: Subject<'_>,
        limit: RateLimit,
    ) -> Verdict {
        let bucket = bucket(name, subject);
        let now = self.clock.now_millis();
        let mut want = limit.lease_size();
        if want > 1 {
            match self.take_leased(&bucket, now) {
                FromLease::Token(decision) => return Verdict::Passed(decision),
                FromLease::Refilling => want = 1,
                FromLease::Lease => {}
            }
        }
        let leasing = want > 1;
        let result = self.store.rate_limit(&bucket, limit, now, want).await;
        if leasing {
            let granted = result.as_ref().ok().filter(|d| d.granted > 1);
            self.lease_back(bucket, granted, now, limit.lease_hold_ms());
        }
        match result {
            Ok(decision) => {
                if self.store_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiting works again: the store answers");
                }
                if !decision.allowed() {
                    return Verdict::Limited(decision);
                }
                Verdict::Passed(RateDecision {
                    remaining: decision.remaining + decision.granted - 1,
                    ..decision
                })
            }
            Err(error) => {
                if !self.store_failing.swap(true, Ordering::Relaxed) {
                    log_outage(&error);
                }
                Verdict::Unchecked
            }
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One token of a live lease, if this instance holds one for the bucket; else whether
    /// another call is already fetching one.
    fn take_leased(&self, bucket: &str, now: UnixMillis) -> FromLease {
        let mut leases = self.leases();
        if let Some(lease) = leases.map.get_mut(bucket) {
            if lease.left > 0 && lease.expires_at > now {
                lease.left -= 1;
                return FromLease::Token(RateDecision {
                    granted: 1,
                    remaining: lease.remaining_beyond + lease.left,
                    retry_after_ms: 0,
                    reset_ms: lease.reset_at - now,
                });
            }
            leases.map.remove(bucket);
        }
        match leases.refilling.get_mut(bucket) {
            Some(since) if now - *since < REFILL_TIMEOUT_MS => FromLease::Refilling,
            Some(since) => {
                *since = now;
                FromLease::Lease
            }
            None => {
                leases.refilling.insert(bucket.to_owned(), now);
                FromLease::Lease
            }
        }
    }

    /// Ends this call's refill of the bucket, keeping the tokens of its decision beyond the
    /// one it uses (added to what a lease stored meanwhile still holds).
    fn lease_back(
        &self,
        bucket: String,
        decision: Option<&RateDecision>,
        now: UnixMillis,
        hold_ms: i64,
    ) {
        let mut leases = self.leases();
        leases.refilling.remove(&bucket);
        let Some(decision) = decision else { return };
        if leases.map.len() >= leases.sweep_above {
            leases
                .map
                .retain(|_, lease| lease.expires_at > now && lease.left > 0);
            leases
                .refilling
                .retain(|_, since| now - *since < REFILL_TIMEOUT_MS);
            // Amortised: the next sweep waits until the map has doubled again.
            leases.sweep_above = (leases.map.len() * 2).max(LEASES_BEFORE_SWEEP);
        }
        let mut lease = Lease {
            left: decision.granted - 1,
            remaining_beyond: decision.remaining,
            expires_at: now + hold_ms,
            reset_at: now + decision.reset_ms,
        };
        if let Some(earlier) = leases.map.get(&bucket) {
            if earlier.left > 0 && earlier.expires_at > now {
                // Tokens are never held past the earlier lease's hold.
                lease.left += earlier.left;
                lease.expires_at = lease.expires_at.min(earlier.expires_at);
            }
        }
        leases.map.insert(bucket, lease);
    }
}

fn log_outage(error: &StoreError) {
    tracing::warn!(
        %error,
        "rate limits are not enforced while the store does not answer; calls pass unchecked"
    );
}

/// The headers of the IETF HTTPAPI rate-limit-headers draft, for a checked request:
/// `RateLimit-Policy: "api";q=600;w=60` and `RateLimit: "api";r=599;t=1`.
pub fn headers(
    name: LimitName<'_>,
    limit: RateLimit,
    decision: &RateDecision,
) -> [(&'static str, String); 2] {
    let policy = name.policy();
    let reset_secs = if decision.allowed() {
        ceil_secs(decision.reset_ms)
    } else {
        retry_after_secs(decision)
    };
    [
        (
            "ratelimit-policy",
            format!(
                "\"{policy}\";q={};w={}",
                limit.requests,
                limit.per.as_secs().max(1)
            ),
        ),
        (
            "ratelimit",
            format!("\"{policy}\";r={};t={reset_secs}", decision.remaining),
        ),
    ]
}

/// The headers of a request that passed its limit, kept in the request's extensions until
/// the response (whatever it is) goes out.
#[derive(Debug, Clone)]
pub struct RateLimitHeaders(pub [(&'static str, String); 2]);

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(decision: &RateDecision) -> i64 {
    ceil_secs(decision.retry_after_ms).max(1)
}

fn ceil_secs(ms: i64) -> i64 {
    (ms.max(0) + 999) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use std::time::Duration;

    const THREE_PER_SECOND: RateLimit = RateLimit {
        requests: 3,
        per: Duration::from_secs(3),
    };

    #[tokio::test]
    async fn a_lease_serves_calls_without_the_store_and_is_counted_there() {
        let store = Arc::new(crate::session::memory::MemoryStore::new());
        let clock = Arc::new(crate::clock::OffsetClock::new());
        let limiter = RateLimiter::new(store.clone(), clock.clone());
        let limit = RateLimit {
            requests: 600,
            per: Duration::from_secs(60),
        };
        let subject = Subject::Session("k");
        let mut remaining = Vec::new();
        for _ in 0..12 {
            match limiter.check(LimitName::Api, subject, limit).await {
                Verdict::Passed(decision) => remaining.push(decision.remaining),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(remaining, (588..600).rev().collect::<Vec<u32>>());
        // The store counted all twelve at the first call.
        let bucket = bucket(LimitName::Api, subject);
        let now = clock.now_millis();
        let direct = store
            .rate_limit(&bucket, limit, now, 1)
            .await
            .expect("decide");
        assert_eq!(direct.remaining, 587);
        // The lease is used up: the next call takes a new one from the store.
        let Verdict::Passed(next) = limiter.check(LimitName::Api, subject, limit).await else {
            panic!("refused")
        };
        assert_eq!(next.remaining, 586);
        let direct = store
            .rate_limit(&bucket, limit, now, 1)
            .await
            .expect("decide");
        assert_eq!(direct.remaining, 586 - 12);
        // The rest of that lease expires with its hold (a sixth of the window): the next
        // call goes to the store again.
        clock.advance(Duration::from_secs(11));
        let probe = |now| {
            let store = store.clone();
            let bucket = bucket.clone();
            async move {
                store
                    .rate_limit(&bucket, limit, now, 1)
                    .await
                    .expect("decide")
            }
        };
        let before = probe(clock.now_millis()).await.remaining;
        let _ = limiter.check(LimitName::Api, subject, limit).await;
        let after = probe(clock.now_millis()).await.remaining;
        assert_eq!(after, before - 12 - 1, "a new lease of 12 was taken");
    }

    /// A clock that moves only when told to.
    struct ManualClock(std::sync::atomic::AtomicI64);

    impl Clock for ManualClock {
        fn now_millis(&self) -> UnixMillis {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Passes for `subject` until the first refusal.
    async fn passes(limiter: &RateLimiter, limit: RateLimit) -> u32 {
        let mut passed = 0;
        while let Verdict::Passed(_) = limiter
            .check(LimitName::Api, Subject::Session("k"), limit)
            .await
        {
            passed += 1;
        }
        passed
    }

    #[tokio::test]
    async fn a_high_quota_passes_its_burst_then_its_steady_rate_through_leases() {
        let clock = Arc::new(ManualClock(1_700_000_000_000.into()));
        let store = Arc::new(crate::session::memory::MemoryStore::new());
        let limiter = RateLimiter::new(store, clock.clone());
        // 10 a millisecond (an interval of 100 µs), leased 64 at a time.
        let limit = RateLimit {
            requests: 60_000,
            per: Duration::from_secs(6),
        };
        assert_eq!(passes(&limiter, limit).await, 60_000, "the burst, exactly");
        for _ in 0..50 {
            clock.0.fetch_add(1, Ordering::SeqCst);
            assert_eq!(passes(&limiter, limit).await, 10, "10 a millisecond");
        }
        clock.0.fetch_add(100, Ordering::SeqCst);
        assert_eq!(passes(&limiter, limit).await, 1_000);
    }

    #[test]
    fn small_quotas_go_to_the_store_every_time() {
        for requests in [1, 3, 30, 99] {
            let limit = RateLimit {
                requests,
                per: Duration::from_secs(60),
            };
            assert_eq!(limit.lease_size(), 1, "{requests}");
        }
        let huge = RateLimit {
            requests: 1_000_000,
            per: Duration::from_secs(1),
        };
        assert_eq!(huge.lease_size(), 64);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let client = |text: &str| Subject::ClientIp(text.parse().expect("ip"));
        assert_eq!(
            bucket(LimitName::Login, client("2001:db8:1:2:aaaa::1")),
            bucket(LimitName::Login, client("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            bucket(LimitName::Login, client("2001:db8:1:2::1")),
            bucket(LimitName::Login, client("2001:db8:1:3::1"))
        );
        assert_eq!(
            bucket(LimitName::Api, client("203.0.113.7")),
            "api|ip|203.0.113.7"
        );
    }

    #[test]
    fn headers_follow_the_draft() {
        let (decision, _) = gcra(None, THREE_PER_SECOND, 0, 1);
        let [policy, state] = headers(LimitName::Api, THREE_PER_SECOND, &decision);
        assert_eq!(policy, ("ratelimit-policy", "\"api\";q=3;w=3".to_owned()));
        assert_eq!(state, ("ratelimit", "\"api\";r=2;t=1".to_owned()));
    }
}
