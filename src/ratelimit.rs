//! Rate limits shared by every instance: the Generic Cell Rate Algorithm (GCRA), one
//! atomic decision per request against the session store (a Lua script on one key in Redis,
//! a map in process memory). The handler asks "may this bucket pass?" and maps a refusal to
//! 429; it never counts.
//!
//! GCRA keeps one number per bucket, the theoretical arrival time (TAT) of the next request
//! at the steady rate. A limit of `requests` per `per` admits a burst of `requests` at once
//! and then one request every `per / requests`; unlike a fixed window it has no edge at
//! which twice the limit passes, and unlike a sliding log it stores no list.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
}

/// One decision and what the response headers report about the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests that would still pass right now, after this one.
    pub remaining: u32,
    /// When refused: how long until one more request would pass.
    pub retry_after_ms: i64,
    /// How long until the whole quota is available again.
    pub reset_ms: i64,
}

/// The GCRA step on a stored TAT (absent for a new or expired bucket). Returns the decision
/// and, when the request passes, the TAT to store (it may be forgotten after `tat - now`).
/// The Redis store's script is the same computation.
pub fn gcra(
    stored_tat: Option<i64>,
    limit: RateLimit,
    now: UnixMillis,
) -> (RateDecision, Option<i64>) {
    let interval = limit.interval_ms();
    let period = interval * i64::from(limit.requests.max(1));
    let tat = stored_tat.map_or(now, |tat| tat.max(now));
    let new_tat = tat + interval;
    let allow_at = new_tat - period;
    if allow_at > now {
        let decision = RateDecision {
            allowed: false,
            remaining: 0,
            retry_after_ms: allow_at - now,
            reset_ms: tat - now,
        };
        return (decision, None);
    }
    let decision = RateDecision {
        allowed: true,
        remaining: ((period - (new_tat - now)) / interval).max(0) as u32,
        retry_after_ms: 0,
        reset_ms: new_tat - now,
    };
    (decision, Some(new_tat))
}

/// The Lua form of [`gcra`] for Redis: KEYS[1] the bucket, ARGV now, interval, requests.
/// Returns {allowed, remaining, retry_after_ms, reset_ms}.
pub const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local period = interval * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((period - (new_tat - now)) / interval), 0, new_tat - now}
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

/// The decision maker shared by every worker.
pub struct RateLimiter {
    store: Arc<dyn SessionStore>,
    clock: SharedClock,
    /// Set while the store fails, so an outage is logged once, not once per request.
    store_failing: AtomicBool,
}

impl RateLimiter {
    pub fn new(store: Arc<dyn SessionStore>, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
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
        match self
            .store
            .rate_limit(&bucket, limit, self.clock.now_millis())
            .await
        {
            Ok(decision) => {
                if self.store_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiting works again: the store answers");
                }
                if decision.allowed {
                    Verdict::Passed(decision)
                } else {
                    Verdict::Limited(decision)
                }
            }
            Err(error) => {
                if !self.store_failing.swap(true, Ordering::Relaxed) {
                    log_outage(&error);
                }
                Verdict::Unchecked
            }
        }
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
    let reset_secs = if decision.allowed {
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

    const THREE_PER_SECOND: RateLimit = RateLimit {
        requests: 3,
        per: Duration::from_secs(3),
    };

    #[test]
    fn a_burst_of_the_limit_passes_then_one_per_interval() {
        let now = 1_000_000;
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let (decision, new_tat) = gcra(tat, THREE_PER_SECOND, now);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = new_tat;
        }
        let (refused, unchanged) = gcra(tat, THREE_PER_SECOND, now);
        assert!(!refused.allowed);
        assert_eq!(unchanged, None, "a refusal stores nothing");
        assert_eq!(refused.retry_after_ms, 1000);
        assert_eq!(retry_after_secs(&refused), 1);

        let (later, _) = gcra(tat, THREE_PER_SECOND, now + 999);
        assert!(!later.allowed);
        let (after_retry, _) = gcra(tat, THREE_PER_SECOND, now + 1000);
        assert!(after_retry.allowed, "one more passes after Retry-After");
        assert_eq!(after_retry.remaining, 0);
    }

    #[test]
    fn an_idle_bucket_refills_to_the_whole_quota() {
        let (_, tat) = gcra(None, THREE_PER_SECOND, 0);
        let (decision, _) = gcra(tat, THREE_PER_SECOND, 10_000);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 2);
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
        let (decision, _) = gcra(None, THREE_PER_SECOND, 0);
        let [policy, state] = headers(LimitName::Api, THREE_PER_SECOND, &decision);
        assert_eq!(policy, ("ratelimit-policy", "\"api\";q=3;w=3".to_owned()));
        assert_eq!(state, ("ratelimit", "\"api\";r=2;t=1".to_owned()));
    }
}
