//! The GCRA arithmetic, exact: the steady interval `per / requests` is kept as a fraction,
//! so any quota (up to `u32::MAX` requests in up to `u32::MAX` seconds) is the limit it
//! says, however far below a millisecond its interval is.
//!
//! A bucket's theoretical arrival time (TAT) is a whole millisecond (the clock's unit) plus
//! a fraction of one in units of `1 / requests` ms. In those units the interval is exactly
//! `per_ms`, the period `per_ms × requests`, and every step is integer arithmetic. The Rust
//! form (the memory store) computes in `i128`; the Lua form (Redis, whose numbers are
//! doubles exact to 2^53) splits its one large product so no intermediate leaves that
//! range. Both round the same way: a count of tokens down, a time to wait up.

use std::time::Duration;

use crate::clock::UnixMillis;

/// `requests` per `per`, in a burst or spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

/// The longest window the exact arithmetic is kept within (config validation holds it).
pub const MAX_WINDOW_SECS: u64 = u32::MAX as u64;

impl RateLimit {
    /// The window in milliseconds (at least 1).
    pub fn per_ms(self) -> i64 {
        i64::try_from(self.per.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// How many tokens one store decision takes for this instance to hand out locally.
    pub fn lease_size(self) -> u32 {
        (self.requests / 50).clamp(1, MAX_LEASE)
    }

    /// How long an instance may hand out tokens it leased: they were counted when taken, so
    /// the hold bounds how far admissions drift from the count.
    pub fn lease_hold_ms(self) -> i64 {
        (self.per_ms() / 6).clamp(1, MAX_LEASE_HOLD_MS)
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
    /// When refused: how long until one more request would pass (rounded up).
    pub retry_after_ms: i64,
    /// How long until the whole quota is available again (rounded up).
    pub reset_ms: i64,
}

impl RateDecision {
    pub fn allowed(&self) -> bool {
        self.granted > 0
    }
}

/// A bucket's theoretical arrival time: `millis + frac / requests` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tat {
    pub millis: UnixMillis,
    /// Below `requests`.
    pub frac: u32,
    /// The quota the fraction is counted in; a bucket met under another quota (the config
    /// changed) is read as its TAT rounded up to the millisecond.
    pub requests: u32,
}

impl Tat {
    /// Whether the bucket still holds anything at `now` (else it is as good as new).
    pub fn after(&self, now: UnixMillis) -> bool {
        self.millis > now || (self.millis == now && self.frac > 0)
    }

    /// In units of `1 / requests` ms for this quota.
    fn units(self, requests: i128) -> i128 {
        let (millis, frac) = if i128::from(self.requests) == requests {
            (self.millis, self.frac)
        } else {
            (self.millis + i64::from(self.frac > 0), 0)
        };
        i128::from(millis) * requests + i128::from(frac)
    }

    fn from_units(units: i128, requests: i128) -> Self {
        Tat {
            millis: i64::try_from(units.div_euclid(requests)).unwrap_or(i64::MAX),
            frac: u32::try_from(units.rem_euclid(requests)).unwrap_or(0),
            requests: u32::try_from(requests).unwrap_or(u32::MAX),
        }
    }
}

/// `ceil(a / b)` for `b > 0`.
fn div_ceil(a: i128, b: i128) -> i128 {
    -((-a).div_euclid(b))
}

/// The GCRA step on a stored TAT (absent for a new or expired bucket), taking up to `want`
/// tokens. Returns the decision and, when tokens were taken, the TAT to store (it may be
/// forgotten after `reset_ms`). [`GCRA_SCRIPT`] is the same computation.
pub fn gcra(
    stored: Option<Tat>,
    limit: RateLimit,
    now: UnixMillis,
    want: u32,
) -> (RateDecision, Option<Tat>) {
    let requests = i128::from(limit.requests.max(1));
    // In units of 1/requests ms: the interval is the window's milliseconds.
    let interval = i128::from(limit.per_ms());
    let period = interval * requests;
    let now_units = i128::from(now) * requests;
    let tat = stored.map_or(now_units, |tat| tat.units(requests).max(now_units));
    let available = (now_units + period - tat).div_euclid(interval);
    let clamp = |units: i128| i64::try_from(units).unwrap_or(i64::MAX);
    if available < 1 {
        let decision = RateDecision {
            granted: 0,
            remaining: 0,
            retry_after_ms: clamp(div_ceil(tat + interval - period - now_units, requests)),
            reset_ms: clamp(div_ceil(tat - now_units, requests)),
        };
        return (decision, None);
    }
    let granted = i128::from(want.max(1)).min(available);
    let new_tat = tat + interval * granted;
    let decision = RateDecision {
        granted: u32::try_from(granted).unwrap_or(u32::MAX),
        remaining: u32::try_from(available - granted).unwrap_or(u32::MAX),
        retry_after_ms: 0,
        reset_ms: clamp(div_ceil(new_tat - now_units, requests)),
    };
    (decision, Some(Tat::from_units(new_tat, requests)))
}

/// The Lua form of [`gcra`] for Redis: KEYS[1] the bucket, ARGV now (ms), the window (ms),
/// requests, tokens wanted. Returns {granted, remaining, retry_after_ms, reset_ms}.
///
/// The bucket holds its TAT as `<ms>` when it is a whole millisecond (as every quota whose
/// interval is one always has) and as `<ms>+<frac>/<requests>` otherwise; it expires when
/// the TAT passes. Every intermediate stays below 2^53: `muldiv` computes `a × b / c` by
/// doubling over the 32 bits of `b`, and the rest are sums of values below 2^43.
pub const GCRA_SCRIPT: &str = include_str!("gcra.lua");

#[cfg(test)]
mod tests {
    use super::*;

    const THREE_PER_SECOND: RateLimit = RateLimit {
        requests: 3,
        per: Duration::from_secs(3),
    };

    fn per_minute(requests: u32) -> RateLimit {
        RateLimit {
            requests,
            per: Duration::from_secs(60),
        }
    }

    /// Takes the whole burst (in leases of `lease`), then returns the TAT.
    fn drain(limit: RateLimit, now: UnixMillis, lease: u32) -> Option<Tat> {
        let mut tat = None;
        let mut taken = 0u64;
        loop {
            let (decision, new_tat) = gcra(tat, limit, now, lease);
            if !decision.allowed() {
                assert_eq!(taken, u64::from(limit.requests), "exactly the burst");
                return tat;
            }
            taken += u64::from(decision.granted);
            assert_eq!(
                u64::from(decision.remaining),
                u64::from(limit.requests) - taken
            );
            tat = new_tat;
        }
    }

    /// How many single requests pass at each millisecond from `from` to `to`, with the TAT
    /// carried along.
    fn admitted_per_ms(
        limit: RateLimit,
        mut tat: Option<Tat>,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Vec<u32> {
        (from..to)
            .map(|now| {
                let mut passed = 0;
                loop {
                    let (decision, new_tat) = gcra(tat, limit, now, 1);
                    if !decision.allowed() {
                        return passed;
                    }
                    passed += 1;
                    tat = new_tat;
                }
            })
            .collect()
    }

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
        let limit = per_minute(600);
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

    /// The case: a million a minute was enforced as one request per millisecond.
    #[test]
    fn a_million_a_minute_admits_the_burst_then_one_per_60_microseconds() {
        let limit = per_minute(1_000_000);
        let start = 1_700_000_000_000;
        let tat = drain(limit, start, 64);
        assert_eq!(
            tat.map(|t| (t.millis - start, t.frac)),
            Some((60_000, 0)),
            "the empty bucket's TAT is one window ahead"
        );
        // 60 µs per request: 50 every 3 ms, i.e. 16 or 17 each millisecond.
        let per_ms = admitted_per_ms(limit, tat, start + 1, start + 3001);
        assert_eq!(per_ms.iter().sum::<u32>(), 50_000, "one per 60 µs for 3 s");
        assert!(per_ms.iter().all(|n| (16..=17).contains(n)), "{per_ms:?}");
        assert_eq!(&per_ms[..3], &[16, 17, 17], "1000/60 = 16.67 a millisecond");
    }

    #[test]
    fn six_hundred_thousand_a_minute_is_ten_a_millisecond() {
        let limit = per_minute(600_000);
        let start = 5_000;
        let tat = drain(limit, start, 64);
        let per_ms = admitted_per_ms(limit, tat, start + 1, start + 5001);
        assert!(per_ms.iter().all(|n| *n == 10), "{per_ms:?}");
        let (refused, _) = gcra(tat, limit, start, 1);
        assert_eq!(refused.retry_after_ms, 1, "100 µs, rounded up");
        assert_eq!(refused.reset_ms, 60_000);
    }

    #[test]
    fn quotas_with_no_whole_interval_keep_their_exact_rate() {
        // 7 a second (142.857… ms) and 7 million a minute (8.571… µs): over a window the
        // refill is exactly the quota, not the quota rounded to a whole interval.
        for (requests, secs) in [(7, 1), (7_000_000, 60), (u32::MAX, 1), (1_000_003, 3_600)] {
            let limit = RateLimit {
                requests,
                per: Duration::from_secs(secs),
            };
            let start = 1_000;
            let tat = drain_fast(limit, start);
            let window = limit.per_ms();
            let (decision, _) = gcra(tat, limit, start + window, requests);
            assert_eq!(
                decision.granted, requests,
                "{requests}/{secs}s: a full window later"
            );
            let (half, _) = gcra(tat, limit, start + window / 2, requests);
            let expected = u64::from(requests) * (window as u64 / 2) / window as u64;
            assert_eq!(
                u64::from(half.granted),
                expected,
                "{requests}/{secs}s at half"
            );
        }
    }

    /// The whole burst in one decision (a test shortcut for quotas too large to take in
    /// leases).
    fn drain_fast(limit: RateLimit, now: UnixMillis) -> Option<Tat> {
        let (decision, tat) = gcra(None, limit, now, limit.requests);
        assert_eq!(decision.granted, limit.requests);
        assert!(!gcra(tat, limit, now, 1).0.allowed());
        tat
    }

    #[test]
    fn tiny_quotas_are_unchanged() {
        let limit = per_minute(1);
        let (first, tat) = gcra(None, limit, 0, 1);
        assert_eq!((first.granted, first.reset_ms), (1, 60_000));
        let (refused, _) = gcra(tat, limit, 59_999, 1);
        assert_eq!((refused.retry_after_ms, refused.reset_ms), (1, 1));
        assert!(gcra(tat, limit, 60_000, 1).0.allowed());
        assert_eq!(
            tat,
            Some(Tat {
                millis: 60_000,
                frac: 0,
                requests: 1
            })
        );
        let seven = RateLimit {
            requests: 7,
            per: Duration::from_secs(1),
        };
        let tat = drain(seven, 0, 1);
        // 1000/7 ms: the next one after 142.857 ms, so at 143, then at 286 (285.71).
        let (refused, _) = gcra(tat, seven, 0, 1);
        assert_eq!(refused.retry_after_ms, 143);
        assert!(!gcra(tat, seven, 142, 1).0.allowed());
        let (one, tat) = gcra(tat, seven, 143, 1);
        assert!(one.allowed());
        assert!(!gcra(tat, seven, 285, 1).0.allowed());
        assert!(gcra(tat, seven, 286, 1).0.allowed());
    }

    #[test]
    fn a_bucket_from_another_quota_is_rounded_up_to_its_millisecond() {
        let old = Tat {
            millis: 1_000,
            frac: 1,
            requests: 7,
        };
        let limit = per_minute(600);
        let (refused, _) = gcra(Some(old), limit, 1_000 - 60_000 + 100, 1);
        assert_eq!(refused.retry_after_ms, 1, "read as 1001");
        assert!(!old.after(1_001) && old.after(1_000));
    }
}
