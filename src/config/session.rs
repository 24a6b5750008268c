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
    pub(super) cache: Option<bool>,
    pub(super) cache_entries: Option<usize>,
    /// Only from the environment (`GATEHOUSE_SESSION__REVOCATION_KEY`) or a file.
    #[serde(default, deserialize_with = "secret_from_scalar")]
    pub(super) revocation_key: Option<SecretString>,
    pub(super) revocation_key_file: Option<PathBuf>,
    pub(super) websocket_max_per_session: Option<u64>,
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
    /// How many sessions each instance keeps in memory (sealed), coherent through Redis key
    /// tracking; `None`: the cache is off and every call reads Redis.
    pub cache_entries: Option<std::num::NonZeroUsize>,
    /// Seals each session's refresh token a second time, so that a user who ends another
    /// of their sessions has its refresh token revoked too; `None`: such a session is only
    /// deleted.
    pub revocation_key: Option<crate::session::RevocationKey>,
    /// WebSockets one session may hold open at once on this instance; a handshake over it
    /// is refused with 429.
    pub websocket_max_per_session: usize,
}

pub(super) fn validate_session(
    raw: RawSession,
    secure_cookies: bool,
    problems: &mut Vec<String>,
) -> Option<SessionSettings> {
    let start = problems.len();
    let default_cookie = if secure_cookies {
        "__Host-gatehouse"
    } else {
        "gatehouse"
    };
    let cookie_name = raw.cookie_name.unwrap_or_else(|| default_cookie.to_owned());
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        problems.push(format!(
            "session.cookie_name `{cookie_name}` has characters a cookie name cannot have"
        ));
    }
    if !secure_cookies && cookie_name.starts_with("__Host-") {
        problems.push("session.cookie_name: the __Host- prefix needs Secure cookies, which insecure_http turns off".into());
    }
    let secs = Duration::from_secs;
    let idle_timeout = secs(raw.idle_timeout_secs.unwrap_or(30 * 60));
    let absolute_timeout = secs(raw.absolute_timeout_secs.unwrap_or(8 * 60 * 60));
    let touch_interval = secs(raw.touch_interval_secs.unwrap_or(60));
    let login_state_ttl = secs(raw.login_state_ttl_secs.unwrap_or(10 * 60));
    let refresh_skew = secs(raw.refresh_skew_secs.unwrap_or(60));
    let refresh_lock_ttl = Duration::from_millis(raw.refresh_lock_ttl_ms.unwrap_or(15_000));
    let refresh_wait = Duration::from_millis(raw.refresh_wait_ms.unwrap_or(20_000));
    if refresh_lock_ttl < Duration::from_millis(300) {
        problems.push("session.refresh_lock_ttl_ms must be at least 300".into());
    }
    if idle_timeout.is_zero() || absolute_timeout.is_zero() || login_state_ttl.is_zero() {
        problems.push("session timeouts must be greater than zero".into());
    }
    if idle_timeout > absolute_timeout {
        problems
            .push("session.idle_timeout_secs must not exceed session.absolute_timeout_secs".into());
    }
    if touch_interval >= idle_timeout {
        problems.push(
            "session.touch_interval_secs must be shorter than session.idle_timeout_secs".into(),
        );
    }

    let cache_entries = match (raw.cache.unwrap_or(true), raw.cache_entries) {
        (false, _) => None,
        (true, entries) => {
            let entries = std::num::NonZeroUsize::new(entries.unwrap_or(10_000));
            if entries.is_none() {
                problems.push(
                    "session.cache_entries must be at least 1 (turn the cache off with \
                     session.cache = false)"
                        .into(),
                );
            }
            entries
        }
    };

    let revocation_key = secret_or_file(
        "session.revocation_key",
        raw.revocation_key,
        raw.revocation_key_file.as_deref(),
        problems,
    )
    .and_then(|text| {
        let key = crate::session::RevocationKey::parse(text.expose_secret());
        if key.is_none() {
            problems.push(
                "session.revocation_key must be 32 random bytes in base64url                  (e.g. `openssl rand 32 | basenc --base64url`)"
                    .into(),
            );
        }
        key
    });

    let websocket_max_per_session = raw.websocket_max_per_session.unwrap_or(8);
    if websocket_max_per_session == 0 {
        problems.push("session.websocket_max_per_session must be at least 1".into());
    }

    if problems.len() > start {
        return None;
    }
    Some(SessionSettings {
        login_cookie_name: format!("{cookie_name}-login"),
        cookie_name,
        idle_timeout,
        absolute_timeout,
        touch_interval,
        login_state_ttl,
        refresh_skew,
        refresh_lock_ttl,
        refresh_wait,
        secure_cookies,
        cache_entries,
        revocation_key,
        websocket_max_per_session: usize::try_from(websocket_max_per_session).unwrap_or(usize::MAX),
    })
}
