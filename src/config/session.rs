//! `[session]`: the session cookie, lifetimes and refresh timing.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawSession {
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) cookie_name: Option<String>,
    pub(super) idle_timeout_secs: Option<u64>,
    pub(super) absolute_timeout_secs: Option<u64>,
    pub(super) touch_interval_secs: Option<u64>,
    pub(super) login_state_ttl_secs: Option<u64>,
    pub(super) refresh_skew_secs: Option<u64>,
    pub(super) refresh_lock_ttl_ms: Option<u64>,
    pub(super) refresh_wait_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    pub login_cookie_name: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Sliding expiry is written back at most this often per session.
    pub touch_interval: Duration,
    pub login_state_ttl: Duration,
    pub secure_cookies: bool,
    /// An access token expiring within this is refreshed before a call is forwarded.
    pub refresh_skew: Duration,
    /// The per-session refresh lock lapses after this unless renewed (it is renewed while
    /// the refresh runs); longer than the provider's HTTP timeout.
    pub refresh_lock_ttl: Duration,
    /// How long a call waits for another instance's refresh before answering 503.
    pub refresh_wait: Duration,
}
