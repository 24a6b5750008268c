//! `[rate_limits]` and a route's `rate_limit`: requests per window, or off.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawRateLimits {
    pub(super) login: Option<RawLimit>,
    pub(super) api: Option<RawLimit>,
}

/// A rate limit: a `{ requests, per_secs }` table, or `"off"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawLimit {
    Word(String),
    Table {
        requests: Option<i64>,
        per_secs: Option<i64>,
    },
}

/// Limits over all instances (kept in the store). `None`: off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// Per client IP, on `/auth/login` and `/auth/callback`.
    pub login: Option<RateLimit>,
    /// Per session (per client IP without one), over every route without its own limit.
    pub api: Option<RateLimit>,
}

/// A route's limit: the `[rate_limits.api]` default, its own, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRateLimit {
    Default,
    Own(RateLimit),
    Off,
}

pub(super) const DEFAULT_LOGIN_LIMIT: RateLimit = RateLimit {
    requests: 30,
    per: Duration::from_secs(60),
};

pub(super) const DEFAULT_API_LIMIT: RateLimit = RateLimit {
    requests: 600,
    per: Duration::from_secs(60),
};

/// A `[rate_limits.*]` table, `"off"`, or absent (the default).
pub(super) fn validate_limit(
    raw: Option<RawLimit>,
    default: RateLimit,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<RateLimit> {
    match raw {
        None => Some(default),
        Some(raw) => match parse_limit(raw, Some(default), what, problems) {
            RouteRateLimit::Own(limit) => Some(limit),
            RouteRateLimit::Off | RouteRateLimit::Default => None,
        },
    }
}

/// `"off"`, or `{ requests, per_secs }` with both positive; a missing member takes the
/// default's when there is one.
pub(super) fn parse_limit(
    raw: RawLimit,
    default: Option<RateLimit>,
    what: &str,
    problems: &mut Vec<String>,
) -> RouteRateLimit {
    match raw {
        RawLimit::Word(word) if word == "off" => RouteRateLimit::Off,
        RawLimit::Word(word) => {
            problems.push(format!(
                "{what}: `{word}` is neither \"off\" nor a {{ requests, per_secs }} table"
            ));
            RouteRateLimit::Off
        }
        RawLimit::Table { requests, per_secs } => {
            let requests = requests.or(default.map(|d| i64::from(d.requests)));
            let per_secs = per_secs.or(default.map(|d| d.per.as_secs() as i64));
            let (Some(requests), Some(per_secs)) = (requests, per_secs) else {
                problems.push(format!("{what}: both requests and per_secs are needed"));
                return RouteRateLimit::Off;
            };
            let mut ok = true;
            if requests <= 0 || requests > i64::from(u32::MAX) {
                problems.push(format!(
                    "{what}.requests must be a positive number (got {requests})"
                ));
                ok = false;
            }
            if per_secs <= 0 || per_secs as u64 > crate::ratelimit::MAX_WINDOW_SECS {
                problems.push(format!(
                    "{what}.per_secs must be greater than zero and at most {} (got {per_secs})",
                    crate::ratelimit::MAX_WINDOW_SECS
                ));
                ok = false;
            }
            if !ok {
                return RouteRateLimit::Off;
            }
            RouteRateLimit::Own(RateLimit {
                requests: requests as u32,
                per: Duration::from_secs(per_secs as u64),
            })
        }
    }
}

pub(super) fn validate_rate_limits(
    raw: RawRateLimits,
    problems: &mut Vec<String>,
) -> RateLimitSettings {
    RateLimitSettings {
        login: validate_limit(
            raw.login,
            DEFAULT_LOGIN_LIMIT,
            "rate_limits.login",
            problems,
        ),
        api: validate_limit(raw.api, DEFAULT_API_LIMIT, "rate_limits.api", problems),
    }
}
