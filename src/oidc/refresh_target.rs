//! What a refresh renews — the session's own access token, or one of its route tokens —
//! and how each is read from a session and written back into it.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{OidcError, Provider, RefreshedTokens, RouteGrant};
use crate::clock::UnixMillis;
use crate::config::{ExchangeSettings, ResourceIndicator};
use crate::dpop::DpopKey;
use crate::session::{LoadedSession, RouteTokenFor, SessionData};

/// What a refresh renews.
#[derive(Clone, Copy)]
pub enum RefreshTarget<'a> {
    /// The session's own access token (refresh grant).
    Session,
    /// A token for one resource alone (refresh grant with `resource`, RFC 8707).
    Resource(&'a ResourceIndicator),
    /// A route's exchanged token (RFC 8693), from the session's own access token.
    Exchange {
        prefix: &'a str,
        settings: &'a ExchangeSettings,
    },
}

/// What a grant for a target yielded.
pub(super) enum Renewed {
    Session(RefreshedTokens),
    Route(RouteGrant),
}

/// A token as the refresh logic sees it: the value, its expiry, its lifetime.
pub(super) struct Held<'s> {
    pub token: &'s SecretString,
    pub expires_at: Option<UnixMillis>,
    pub lifetime_ms: Option<i64>,
}

impl RefreshTarget<'_> {
    fn route_key(&self) -> Option<RouteTokenFor<'_>> {
        match self {
            Self::Session => None,
            Self::Resource(resource) => Some(RouteTokenFor::Resource(&resource.uri)),
            Self::Exchange { prefix, .. } => Some(RouteTokenFor::Exchange(prefix)),
        }
    }

    /// The target's token in `data`, if it has one.
    pub(super) fn held<'s>(&self, data: &'s SessionData) -> Option<Held<'s>> {
        match self.route_key() {
            None => Some(Held {
                token: &data.tokens.access_token,
                expires_at: data.tokens.access_token_expires_at,
                lifetime_ms: data.tokens.access_token_lifetime_ms,
            }),
            Some(key) => data.route_tokens.get(key).map(|token| Held {
                token: &token.access_token,
                expires_at: token.expires_at,
                lifetime_ms: token.lifetime_ms,
            }),
        }
    }

    /// Whether the session's token is missing or expires within the skew.
    pub(super) fn needs_refresh(
        &self,
        session: &LoadedSession,
        skew_ms: i64,
        now: UnixMillis,
    ) -> bool {
        match self.held(&session.data) {
            None => true,
            Some(held) => held.expires_at.is_some_and(|expires_at| {
                expires_at - applied_skew(skew_ms, held.lifetime_ms) <= now
            }),
        }
    }

    pub(super) fn still_valid(&self, session: &LoadedSession, now: UnixMillis) -> bool {
        self.held(&session.data)
            .is_some_and(|held| held.expires_at.is_none_or(|expires_at| expires_at > now))
    }

    /// Whether the session holds a token other than the one found due (`due`; `None`: there
    /// was none) that is still unexpired: a refresh that just ran produced it.
    pub(super) fn refreshed_meanwhile(
        &self,
        due: Option<&SecretString>,
        current: &LoadedSession,
        now: UnixMillis,
    ) -> bool {
        let Some(held) = self.held(&current.data) else {
            return false;
        };
        let same = due.is_some_and(|due| {
            bool::from(
                held.token
                    .expose_secret()
                    .as_bytes()
                    .ct_eq(due.expose_secret().as_bytes()),
            )
        });
        !same && self.still_valid(current, now)
    }

    /// The event's reason: which kind of token was renewed (`None`: the session's own).
    pub(super) fn describe(&self) -> Option<&'static str> {
        match self {
            Self::Session => None,
            Self::Resource(_) => Some("resource token"),
            Self::Exchange { .. } => Some("token exchange"),
        }
    }

    /// Whether this target's grant spends the refresh token (a rotating provider then hands
    /// out a new one).
    pub(super) fn uses_refresh_token(&self) -> bool {
        !matches!(self, Self::Exchange { .. })
    }

    /// The grant for this target.
    pub(super) async fn renew(
        &self,
        provider: &Provider,
        data: &SessionData,
        dpop: Option<&DpopKey>,
        now: UnixMillis,
    ) -> Result<Renewed, OidcError> {
        let refresh_token = || {
            data.tokens
                .refresh_token
                .as_ref()
                .ok_or(OidcError::Rejected {
                    error: "invalid_grant".into(),
                    description: Some("the session holds no refresh token".into()),
                })
        };
        match self {
            Self::Session => provider
                .refresh(refresh_token()?, &data.sub, dpop, now)
                .await
                .map(Renewed::Session),
            Self::Resource(resource) => provider
                .resource_token(refresh_token()?, resource, dpop, now)
                .await
                .map(Renewed::Route),
            Self::Exchange { settings, .. } => provider
                .exchange_token(&data.tokens.access_token, settings, dpop, now)
                .await
                .map(Renewed::Route),
        }
    }

    /// `data` with what the grant yielded.
    pub(super) fn apply(&self, data: &mut SessionData, renewed: Renewed) {
        match renewed {
            Renewed::Session(tokens) => {
                data.tokens.access_token = tokens.access_token;
                data.tokens.access_token_expires_at = tokens.access_token_expires_at;
                data.tokens.access_token_lifetime_ms = tokens.access_token_lifetime_ms;
                data.tokens.dpop_bound = tokens.dpop_bound;
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
            }
            Renewed::Route(grant) => {
                if let Some(rotated) = grant.refresh_token {
                    data.tokens.refresh_token = Some(rotated);
                }
                if grant.refresh_token_expires_at.is_some() {
                    data.tokens.refresh_token_expires_at = grant.refresh_token_expires_at;
                }
                if let Some(key) = self.route_key() {
                    data.route_tokens.insert(key, grant.token);
                }
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
