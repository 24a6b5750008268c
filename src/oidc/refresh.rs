//! Race-free token refresh. Providers rotate refresh tokens and revoke the whole grant when
//! an old one is replayed, so two refreshes with the same token would log the user out. One
//! refresh per session runs at a time across every instance sharing the store: a store lock
//! with an owner token, renewed while the refresh runs, and a re-read of the session after
//! winning it (someone else may have refreshed meanwhile). Others wait and reuse the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::refresh_target::{applied_skew, RefreshTarget};
use super::{OidcError, Providers};
use crate::clock::{SharedClock, UnixMillis};
use crate::config::{RouteSettings, SessionSettings};
use crate::observability::metrics::{LogoutKind, Metrics, RefreshOutcome};
use crate::observability::telemetry::{SecurityEvent, SecurityLog};
use crate::session::crypto::{b64, random_bytes};
use crate::session::held_locks::HeldLocks;
use crate::session::{
    absolute_expiry, LoadedSession, Locks, SessionData, SessionError, SessionManager,
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

    /// The session with an access token that is good for at least the skew, refreshing it
    /// when needed. `cookie` is the browser's session cookie (it opens the session).
    pub async fn fresh_session(
        &self,
        cookie: &str,
        session: LoadedSession,
    ) -> Result<LoadedSession, RefreshError> {
        self.fresh(cookie, session, RefreshTarget::Session).await
    }

    /// The session with the token `route`'s calls carry good for the skew: its own, the
    /// route's resource token (RFC 8707; the session's own is then not needed), or the
    /// route's exchanged token (RFC 8693, exchanged from a fresh own token).
    pub async fn fresh_for_route(
        &self,
        cookie: &str,
        session: LoadedSession,
        route: &RouteSettings,
    ) -> Result<LoadedSession, RefreshError> {
        match (&route.resource, &route.exchange) {
            (Some(resource), _) => {
                self.fresh(cookie, session, RefreshTarget::Resource(resource))
                    .await
            }
            (None, Some(settings)) => {
                let session = self.fresh_session(cookie, session).await?;
                let target = RefreshTarget::Exchange {
                    prefix: &route.prefix,
                    settings,
                };
                self.fresh(cookie, session, target).await
            }
            (None, None) => self.fresh_session(cookie, session).await,
        }
    }

    /// The session with `target`'s token good for at least the skew: obtained or renewed
    /// under the session's one refresh lock (whatever the target, so a rotating refresh
    /// token is spent by one grant at a time), or reused when another call just did.
    pub async fn fresh(
        &self,
        cookie: &str,
        session: LoadedSession,
        target: RefreshTarget<'_>,
    ) -> Result<LoadedSession, RefreshError> {
        if !target.needs_refresh(&session, self.skew_ms, self.clock.now_millis()) {
            return Ok(session);
        }
        let due = target.held(&session.data).map(|held| held.token.clone());
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
                        .refresh_holding_lock(
                            cookie,
                            &latest.store_key,
                            &owner,
                            due.as_ref(),
                            target,
                        )
                        .await;
                    if let Err(error) = self.locks.unlock(&latest.store_key, &owner).await {
                        // It lapses on its own within the lock TTL.
                        tracing::warn!(%error, "could not release the refresh lock");
                    }
                    self.held.released(&latest.store_key, &owner);
                    return outcome;
                }
                Ok(false) => {}
                Err(error) => return self.fall_back(latest, now, error.to_string(), target),
            }
            // Someone else is refreshing: wait for their result.
            tokio::time::sleep(WAIT_POLL).await;
            let now = self.clock.now_millis();
            match self.sessions.load(cookie, now).await {
                Ok(Some(current))
                    if !target.needs_refresh(&current, self.skew_ms, now)
                        || target.refreshed_meanwhile(due.as_ref(), &current, now) =>
                {
                    self.metrics
                        .refresh(&current.data.provider, RefreshOutcome::Waited);
                    return Ok(current);
                }
                Ok(Some(current)) => latest = current,
                Ok(None) => return Err(RefreshError::SessionEnded("session ended during refresh")),
                Err(error) => return self.fall_back(latest, now, error.to_string(), target),
            }
            if Instant::now() >= deadline {
                return self.fall_back(
                    latest,
                    now,
                    "timed out waiting for another refresh".into(),
                    target,
                );
            }
        }
    }

    /// A transient failure: the old token if it is still valid, else 503.
    fn fall_back(
        &self,
        session: LoadedSession,
        now: UnixMillis,
        reason: String,
        target: RefreshTarget<'_>,
    ) -> Result<LoadedSession, RefreshError> {
        self.metrics
            .refresh(&session.data.provider, RefreshOutcome::Transient);
        if target.still_valid(&session, now) {
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
        due: Option<&SecretString>,
        target: RefreshTarget<'_>,
    ) -> Result<LoadedSession, RefreshError> {
        let now = self.clock.now_millis();
        // The fencing re-read: the token may have been refreshed between our read and the lock.
        let Some(current) = self.sessions.load(cookie, now).await? else {
            return Err(RefreshError::SessionEnded("session ended"));
        };
        if !target.needs_refresh(&current, self.skew_ms, now)
            || target.refreshed_meanwhile(due, &current, now)
        {
            self.metrics
                .refresh(&current.data.provider, RefreshOutcome::Waited);
            return Ok(current);
        }
        if target.uses_refresh_token() && current.data.tokens.refresh_token.is_none() {
            if target.still_valid(&current, now) {
                return Ok(current);
            }
            if !matches!(target, RefreshTarget::Session) {
                // Nothing to obtain a resource's token with; the session itself may go on.
                return Err(RefreshError::Unavailable(
                    "no refresh token to obtain the resource's token with".into(),
                ));
            }
            if self.sessions.delete(store_key).await? {
                self.metrics
                    .logouts(&current.data.provider, LogoutKind::Expired, 1);
            }
            return Err(RefreshError::SessionEnded(
                "access token expired and there is no refresh token",
            ));
        }
        let Some(provider) = self.providers.get(Some(&current.data.provider)) else {
            return Err(RefreshError::SessionEnded(
                "the session's provider is no longer configured",
            ));
        };
        if let Some(held) = target.held(&current.data) {
            let applied = applied_skew(self.skew_ms, held.lifetime_ms);
            if applied < self.skew_ms {
                // Someone who raised refresh_skew_secs to refresh sooner sees why it came later.
                tracing::debug!(
                    configured_skew_secs = self.skew_ms as f64 / 1000.0,
                    applied_skew_secs = applied as f64 / 1000.0,
                    "refresh later than refresh_skew_secs: the skew is capped at half the \
                     access token's lifetime"
                );
            }
        }

        let dpop = current.data.dpop_key.as_ref().and_then(|key| key.key());
        let renewal = target.renew(provider, &current.data, dpop, now);
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
            result = renewal => result,
            // The keeper loops forever; should it ever stop, treat it as a transient failure.
            _ = keep_lock => Err(OidcError::Transport {
                what: "refresh lock keeper stopped".into(),
                source: None,
            }),
        };

        let now = self.clock.now_millis();
        match result {
            Ok(renewed) => {
                let mut data = SessionData::clone(&current.data);
                target.apply(&mut data, renewed);
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
                    target.describe(),
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
                self.fall_back(current, now, error.to_string(), target)
            }
        }
    }
}
