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
use std::time::Duration;

use ipnet::Ipv6Net;

use crate::clock::{SharedClock, UnixMillis};
use crate::session::{SessionStore, StoreError};

/// `requests` per `per`, in a burst or spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    /// Milliseconds between two requests at the steady rate (at least 1).
    pub fn interval_ms(self) -> i64 {
        (self.per.as_millis() as i64 / i64::from(self.requests.max(1))).max(1)
    }

    /// How many tokens one store decision takes for this instance to hand out locally.
    pub fn lease_size(self) -> u32 {
        (self.requests / 50).clamp(1, MAX_LEASE)
    }

    /// How long an instance may hand out tokens it leased: they were counted when taken, so
    /// the hold bounds how far admissions drift from the count.
    pub fn lease_hold_ms(self) -> i64 {
        (self.per.as_millis() as i64 / 6).clamp(1, MAX_LEASE_HOLD_MS)
    }
}

const MAX_LEASE: u32 = 64;
const MAX_LEASE_HOLD_MS: i64 = 10_000;

/// One decision and what the response headers report about the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Tokens taken: 0 when refused, up to the lease asked for.
    pub granted: u32,
    /// Requests that would still pass right now, after the tokens taken.
    pub remaining: u32,
    /// When refused: how long until one more request would pass.
    pub retry_after_ms: i64,
    /// How long until the whole quota is available again.
    pub reset_ms: i64,
}

impl RateDecision {
    pub fn allowed(&self) -> bool {
        self.granted > 0
    }
}

/// The GCRA step on a stored TAT (absent for a new or expired bucket), taking up to `want`
/// tokens. Returns the decision and, when tokens were taken, the TAT to store (it may be
/// forgotten after `tat - now`). The Redis store's script is the same computation.
pub fn gcra(
    stored_tat: Option<i64>,
    limit: RateLimit,
    now: UnixMillis,
    want: u32,
) -> (RateDecision, Option<i64>) {
    let interval = limit.interval_ms();
    let period = interval * i64::from(limit.requests.max(1));
    let tat = stored_tat.map_or(now, |tat| tat.max(now));
    let available = (now + period - tat).div_euclid(interval);
    if available < 1 {
        let decision = RateDecision {
            granted: 0,
            remaining: 0,
            retry_after_ms: tat + interval - period - now,
            reset_ms: tat - now,
        };
        return (decision, None);
    }
    let granted = i64::from(want.max(1)).min(available);
    let new_tat = tat + interval * granted;
    let decision = RateDecision {
        granted: granted as u32,
        remaining: (available - granted) as u32,
        retry_after_ms: 0,
        reset_ms: new_tat - now,
    };
    (decision, Some(new_tat))
}

/// The Lua form of [`gcra`] for Redis: KEYS[1] the bucket, ARGV now, interval, requests,
/// tokens wanted. Returns {granted, remaining, retry_after_ms, reset_ms}.
pub const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local period = interval * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local available = math.floor((now + period - tat) / interval)
if available < 1 then
  return {0, 0, tat + interval - period - now, tat - now}
end
local granted = math.min(math.max(tonumber(ARGV[4]), 1), available)
local new_tat = tat + interval * granted
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {granted, available - granted, 0, new_tat - now}
";

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

struct Leases {
    map: HashMap<String, Lease>,
    /// The size at which the next new lease sweeps the map.
    sweep_above: usize,
}

/// The decision maker shared by every worker.
pub struct RateLimiter {
    store: Arc<dyn SessionStore>,
    clock: SharedClock,
    leases: Mutex<Leases>,
    /// Set while the store fails, so an outage is logged once, not once per request.
    store_failing: AtomicBool,
}

impl RateLimiter {
    pub fn new(store: Arc<dyn SessionStore>, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            leases: Mutex::new(Leases {
                map: HashMap::new(),
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
        let want = limit.lease_size();
        if want > 1 {
            if let Some(decision) = self.take_leased(&bucket, now) {
                return Verdict::Passed(decision);
            }
        }
        match self.store.rate_limit(&bucket, limit, now, want).await {
            Ok(decision) => {
                if self.store_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiting works again: the store answers");
                }
                if !decision.allowed() {
                    return Verdict::Limited(decision);
                }
                if decision.granted > 1 {
                    self.keep_lease(bucket, &decision, now, limit.lease_hold_ms());
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

    /// One token of a live lease, if this instance holds one for the bucket.
    fn take_leased(&self, bucket: &str, now: UnixMillis) -> Option<RateDecision> {
        let mut leases = self.leases();
        let lease = leases.map.get_mut(bucket)?;
        if lease.left == 0 || lease.expires_at <= now {
            leases.map.remove(bucket);
            return None;
        }
        lease.left -= 1;
        Some(RateDecision {
            granted: 1,
            remaining: lease.remaining_beyond + lease.left,
            retry_after_ms: 0,
            reset_ms: lease.reset_at - now,
        })
    }

    /// Keeps the tokens of a decision beyond the one this request uses.
    fn keep_lease(&self, bucket: String, decision: &RateDecision, now: UnixMillis, hold_ms: i64) {
        let mut leases = self.leases();
        if leases.map.len() >= leases.sweep_above {
            leases
                .map
                .retain(|_, lease| lease.expires_at > now && lease.left > 0);
            // Amortised: the next sweep waits until the map has doubled again.
            leases.sweep_above = (leases.map.len() * 2).max(LEASES_BEFORE_SWEEP);
        }
        leases.map.insert(
            bucket,
            Lease {
                left: decision.granted - 1,
                remaining_beyond: decision.remaining,
                expires_at: now + hold_ms,
                reset_at: now + decision.reset_ms,
            },
        );
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

    const THREE_PER_SECOND: RateLimit = RateLimit {
        requests: 3,
        per: Duration::from_secs(3),
    };

    #[test]
    fn a_burst_of_the_limit_passes_then_one_per_interval() {
        let now = 1_000_000;
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let (decision, new_tat) = gcra(tat, THREE_PER_SECOND, now, 1);
            assert!(decision.allowed());
            assert_eq!(decision.remaining, expected_remaining);
            tat = new_tat;
        }
        let (refused, unchanged) = gcra(tat, THREE_PER_SECOND, now, 1);
        assert!(!refused.allowed());
        assert_eq!(unchanged, None, "a refusal stores nothing");
        assert_eq!(refused.retry_after_ms, 1000);
        assert_eq!(retry_after_secs(&refused), 1);

        let (later, _) = gcra(tat, THREE_PER_SECOND, now + 999, 1);
        assert!(!later.allowed());
        let (after_retry, _) = gcra(tat, THREE_PER_SECOND, now + 1000, 1);
        assert!(after_retry.allowed(), "one more passes after Retry-After");
        assert_eq!(after_retry.remaining, 0);
    }

    #[test]
    fn an_idle_bucket_refills_to_the_whole_quota() {
        let (_, tat) = gcra(None, THREE_PER_SECOND, 0, 1);
        let (decision, _) = gcra(tat, THREE_PER_SECOND, 10_000, 1);
        assert!(decision.allowed());
        assert_eq!(decision.remaining, 2);
    }

    #[test]
    fn a_lease_takes_what_is_there_and_no_more() {
        let limit = RateLimit {
            requests: 600,
            per: Duration::from_secs(60),
        };
        assert_eq!(limit.lease_size(), 12);
        let (first, tat) = gcra(None, limit, 0, 12);
        assert_eq!((first.granted, first.remaining), (12, 588));
        // 590 more one at a time leave 10 in the bucket; a lease then gets those 10.
        let mut tat = tat;
        for _ in 0..578 {
            tat = gcra(tat, limit, 0, 1).1;
        }
        let (last, tat) = gcra(tat, limit, 0, 12);
        assert_eq!((last.granted, last.remaining), (10, 0));
        let (refused, _) = gcra(tat, limit, 0, 12);
        assert_eq!(refused.granted, 0);
        assert_eq!(refused.retry_after_ms, 100);
    }

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
