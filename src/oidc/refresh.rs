//! Race-free token refresh. Providers rotate refresh tokens and revoke the whole grant when
//! an old one is replayed, so two refreshes with the same token would log the user out. One
//! refresh per session runs at a time across every instance sharing the store: a store lock
//! with an owner token, renewed while the refresh runs, and a re-read of the session after
//! winning it (someone else may have refreshed meanwhile). Others wait and reuse the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{OidcError, Providers};
use crate::clock::{SharedClock, UnixMillis};
use crate::config::SessionSettings;
use crate::observability::metrics::{LogoutKind, Metrics, RefreshOutcome};
use crate::observability::telemetry::{SecurityEvent, SecurityLog};
use crate::session::crypto::{b64, random_bytes};
use crate::session::held_locks::HeldLocks;
use crate::session::{
    absolute_expiry, LoadedSession, Locks, SessionData, SessionError, SessionManager, TokenSet,
};

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider refused the refresh token (`invalid_grant`), or there is none and the
    /// access token has expired: the session is over.
    #[error("session ended: {0}")]
    SessionEnded(&'static str),
    /// The provider or the store had a hiccup and the old access token has expired: try
    /// again shortly. The session stays.
    #[error("token refresh temporarily impossible: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// How often a waiting call looks whether the refresh it waits for is done.
const WAIT_POLL: Duration = Duration::from_millis(25);

pub struct TokenRefresher {
    sessions: SessionManager,
    /// The refresh lock: one refresh per session across every instance.
    locks: Arc<dyn Locks>,
    /// The refresh locks this process holds now (released at shutdown if cut off).
    held: HeldLocks,
    providers: Arc<Providers>,
    clock: SharedClock,
    skew_ms: i64,
    lock_ttl: Duration,
    wait: Duration,
    absolute_timeout: Duration,
    metrics: Metrics,
    events: SecurityLog,
}

impl TokenRefresher {
    pub fn new(
        sessions: SessionManager,
        locks: Arc<dyn Locks>,
        providers: Arc<Providers>,
        clock: SharedClock,
        settings: &SessionSettings,
        metrics: Metrics,
        events: SecurityLog,
    ) -> Self {
        Self {
            sessions,
            locks,
            held: HeldLocks::default(),
            providers,
            clock,
            skew_ms: settings.refresh_skew.as_millis() as i64,
            lock_ttl: settings.refresh_lock_ttl,
            wait: settings.refresh_wait,
            absolute_timeout: settings.absolute_timeout,
            metrics,
            events,
        }
    }

    /// Records the locks this refresher takes in `held` (shared by the refreshers of every
    /// configuration a reload builds), for the shutdown to release.
    pub fn holding_locks_in(mut self, held: HeldLocks) -> Self {
        self.held = held;
        self
    }

    fn skew_for(&self, tokens: &TokenSet) -> i64 {
        applied_skew(self.skew_ms, tokens.access_token_lifetime_ms)
    }

    fn needs_refresh(&self, session: &LoadedSession, now: UnixMillis) -> bool {
        let tokens = &session.data.tokens;
        tokens
            .access_token_expires_at
            .is_some_and(|expires_at| expires_at - self.skew_for(tokens) <= now)
    }

    /// Whether the session holds a new access token, not the one this call found due, that
    /// is still unexpired: a refresh that just ran produced it, and it is used as it is. A
    /// slow token endpoint can hand back a token already inside the skew (its expiry counts
    /// from when the request was sent); refreshing it again would only repeat that.
    fn refreshed_meanwhile(due: &SecretString, current: &LoadedSession, now: UnixMillis) -> bool {
        let same = current
            .data
            .tokens
            .access_token
            .expose_secret()
            .as_bytes()
            .ct_eq(due.expose_secret().as_bytes());
        !bool::from(same) && Self::still_valid(current, now)
    }

    fn still_valid(session: &LoadedSession, now: UnixMillis) -> bool {
        session
            .data
            .tokens
            .access_token_expires_at
            .is_none_or(|expires_at| expires_at > now)
    }

    /// The session with an access token that is good for at least the skew, refreshing it
    /// when needed. `cookie` is the browser's session cookie (it opens the session).
    pub async fn fresh_session(
        &self,
        cookie: &str,
        session: LoadedSession,
    ) -> Result<LoadedSession, RefreshError> {
        if !self.needs_refresh(&session, self.clock.now_millis()) {
            return Ok(session);
        }
        let due = session.data.tokens.access_token.clone();
        let owner = b64(&random_bytes()[..16]);
        let deadline = Instant::now() + self.wait;
        let mut latest = session;
        loop {
            let now = self.clock.now_millis();
            match self
                .locks
                .try_lock(&latest.store_key, &owner, self.lock_ttl, now)
                .await
            {
                Ok(true) => {
                    self.held.taken(&latest.store_key, &owner);
                    let outcome = self
                        .refresh_holding_lock(cookie, &latest.store_key, &owner, &due)
                        .await;
                    if let Err(error) = self.locks.unlock(&latest.store_key, &owner).await {
                        // It lapses on its own within the lock TTL.
                        tracing::warn!(%error, "could not release the refresh lock");
                    }
                    self.held.released(&latest.store_key, &owner);
                    return outcome;
                }
                Ok(false) => {}
                Err(error) => return self.fall_back(latest, now, error.to_string()),
            }
            // Someone else is refreshing: wait for their result.
            tokio::time::sleep(WAIT_POLL).await;
            let now = self.clock.now_millis();
            match self.sessions.load(cookie, now).await {
                Ok(Some(current))
                    if !self.needs_refresh(&current, now)
                        || Self::refreshed_meanwhile(&due, &current, now) =>
                {
                    self.metrics
                        .refresh(&current.data.provider, RefreshOutcome::Waited);
                    return Ok(current);
                }
                Ok(Some(current)) => latest = current,
                Ok(None) => return Err(RefreshError::SessionEnded("session ended during refresh")),
                Err(error) => return self.fall_back(latest, now, error.to_string()),
            }
            if Instant::now() >= deadline {
                return self.fall_back(latest, now, "timed out waiting for another refresh".into());
            }
        }
    }

    /// A transient failure: the old access token if it is still valid, else 503.
    fn fall_back(
        &self,
        session: LoadedSession,
        now: UnixMillis,
        reason: String,
    ) -> Result<LoadedSession, RefreshError> {
        self.metrics
            .refresh(&session.data.provider, RefreshOutcome::Transient);
        if Self::still_valid(&session, now) {
            tracing::warn!(%reason, "token refresh failed; using the still-valid access token");
            Ok(session)
        } else {
            Err(RefreshError::Unavailable(reason))
        }
    }

    async fn refresh_holding_lock(
        &self,
        cookie: &str,
        store_key: &str,
        owner: &str,
        due: &SecretString,
    ) -> Result<LoadedSession, RefreshError> {
        let now = self.clock.now_millis();
        // The fencing re-read: the token may have been refreshed between our read and the lock.
        let Some(current) = self.sessions.load(cookie, now).await? else {
            return Err(RefreshError::SessionEnded("session ended"));
        };
        if !self.needs_refresh(&current, now) || Self::refreshed_meanwhile(due, &current, now) {
            self.metrics
                .refresh(&current.data.provider, RefreshOutcome::Waited);
            return Ok(current);
        }
        let Some(refresh_token) = current.data.tokens.refresh_token.clone() else {
            if Self::still_valid(&current, now) {
                return Ok(current);
            }
            if self.sessions.delete(store_key).await? {
                self.metrics
                    .logouts(&current.data.provider, LogoutKind::Expired, 1);
            }
            return Err(RefreshError::SessionEnded(
                "access token expired and there is no refresh token",
            ));
        };
        let Some(provider) = self.providers.get(Some(&current.data.provider)) else {
            return Err(RefreshError::SessionEnded(
                "the session's provider is no longer configured",
            ));
        };
        let applied = self.skew_for(&current.data.tokens);
        if applied < self.skew_ms {
            // Someone who raised refresh_skew_secs to refresh sooner sees why it came later.
            tracing::debug!(
                configured_skew_secs = self.skew_ms as f64 / 1000.0,
                applied_skew_secs = applied as f64 / 1000.0,
                "refresh later than refresh_skew_secs: the skew is capped at half the access \
                 token's lifetime"
            );
        }

        let refresh = provider.refresh(&refresh_token, &current.data.sub, now);
        let keep_lock = async {
            loop {
                tokio::time::sleep(self.lock_ttl / 3).await;
                let renewed = self
                    .locks
                    .renew_lock(store_key, owner, self.lock_ttl, self.clock.now_millis())
                    .await;
                if !matches!(renewed, Ok(true)) {
                    tracing::warn!("refresh lock lost while refreshing");
                    std::future::pending::<()>().await;
                }
            }
        };
        let result = tokio::select! {
            result = refresh => result,
            // The keeper loops forever; should it ever stop, treat it as a transient failure.
            _ = keep_lock => Err(OidcError::Transport {
                what: "refresh lock keeper stopped".into(),
                source: None,
            }),
        };

        let now = self.clock.now_millis();
        match result {
            Ok(tokens) => {
                let mut data = SessionData::clone(&current.data);
                data.tokens.access_token = tokens.access_token;
                data.tokens.access_token_expires_at = tokens.access_token_expires_at;
                data.tokens.access_token_lifetime_ms = tokens.access_token_lifetime_ms;
                if let Some(rotated) = tokens.refresh_token {
                    data.tokens.refresh_token = Some(rotated);
                }
                if tokens.refresh_token_expires_at.is_some() {
                    data.tokens.refresh_token_expires_at = tokens.refresh_token_expires_at;
                }
                if let Some(id_token) = tokens.id_token {
                    data.tokens.id_token = id_token;
                }
                if tokens.scope.is_some() {
                    data.tokens.scope = tokens.scope;
                }
                data.absolute_expires_at = absolute_expiry(
                    data.created_at,
                    self.absolute_timeout,
                    data.tokens.refresh_token_expires_at,
                );
                // Stored before the lock is released: the next refresh uses the new token.
                if !self.sessions.replace(cookie, &data, now).await? {
                    return Err(RefreshError::SessionEnded("session ended during refresh"));
                }
                self.metrics.refresh(&data.provider, RefreshOutcome::Ok);
                self.events.log(
                    SecurityEvent::RefreshSucceeded,
                    Some(&data.sub),
                    Some(store_key),
                    None,
                );
                Ok(LoadedSession {
                    store_key: current.store_key,
                    data: Arc::new(data),
                    idle_expires_at: current.idle_expires_at,
                })
            }
            Err(error) if error.is_invalid_grant() => {
                self.events.log(
                    SecurityEvent::RefreshFailed,
                    Some(&current.data.sub),
                    Some(store_key),
                    Some("invalid_grant"),
                );
                self.metrics
                    .refresh(&current.data.provider, RefreshOutcome::InvalidGrant);
                if self.sessions.delete(store_key).await? {
                    self.metrics
                        .logouts(&current.data.provider, LogoutKind::Expired, 1);
                }
                Err(RefreshError::SessionEnded(
                    "the provider refused the refresh token",
                ))
            }
            Err(error) => {
                self.events.log(
                    SecurityEvent::RefreshFailed,
                    Some(&current.data.sub),
                    Some(store_key),
                    Some("transient"),
                );
                self.fall_back(current, now, error.to_string())
            }
        }
    }
}

/// How long before its expiry an access token is refreshed: the configured skew, capped at
/// half the token's lifetime (its `expires_in`), or every call would refresh a token that
/// was just issued (a 60 s skew and 60 s tokens: a refresh per call).
pub fn applied_skew(configured_ms: i64, lifetime_ms: Option<i64>) -> i64 {
    match lifetime_ms {
        Some(lifetime) if lifetime > 0 => configured_ms.min(lifetime / 2),
        _ => configured_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::applied_skew;

    #[test]
    fn the_skew_is_capped_at_half_the_access_tokens_lifetime() {
        // (configured, lifetime, applied), milliseconds.
        for (configured, lifetime, applied) in [
            (60_000, Some(3_600_000), 60_000),
            (60_000, Some(120_000), 60_000),
            (60_000, Some(60_000), 30_000),
            (600_000, Some(300_000), 150_000),
            (60_000, Some(1_000), 500),
            (60_000, None, 60_000),
            (60_000, Some(0), 60_000),
            (60_000, Some(-5), 60_000),
            (0, Some(60_000), 0),
        ] {
            assert_eq!(
                applied_skew(configured, lifetime),
                applied,
                "skew {configured} ms, lifetime {lifetime:?} ms"
            );
        }
    }
}
