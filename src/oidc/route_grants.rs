//! The grants that give a route its own token: a refresh for one resource (RFC 8707) and a
//! token exchange (RFC 8693). The lock around them, and where the tokens go, is `refresh`.

use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument;

use super::token_request::GrantedToken;
use super::{OidcError, Provider};
use crate::clock::UnixMillis;
use crate::config::{ExchangeSettings, ResourceIndicator, ACCESS_TOKEN_TYPE};
use crate::dpop::DpopKey;
use crate::observability::spans;
use crate::session::RouteToken;

/// RFC 8693's grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// What a route grant yields: the route's token, and (from a refresh) the rotated refresh
/// token with its lifetime.
pub struct RouteGrant {
    pub token: RouteToken,
    pub refresh_token: Option<SecretString>,
    pub refresh_token_expires_at: Option<UnixMillis>,
}

impl RouteGrant {
    fn from_granted(granted: GrantedToken, now: UnixMillis) -> Self {
        Self {
            token: RouteToken {
                expires_at: granted.expires_in.map(|d| now + d.as_millis() as i64),
                lifetime_ms: granted.expires_in.map(|d| d.as_millis() as i64),
                dpop_bound: granted.token_type.eq_ignore_ascii_case("dpop"),
                access_token: granted.access_token,
            },
            refresh_token: granted.refresh_token,
            refresh_token_expires_at: granted
                .refresh_expires_in
                .map(|secs| now + secs as i64 * 1000),
        }
    }
}

impl Provider {
    /// The refresh-token grant for one resource: an access token whose audience is that
    /// resource alone. An ID token in the answer is not used (the session's own comes from
    /// its own refresh).
    pub async fn resource_token(
        &self,
        refresh_token: &SecretString,
        resource: &ResourceIndicator,
        dpop: Option<&DpopKey>,
        now: UnixMillis,
    ) -> Result<RouteGrant, OidcError> {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose_secret().to_owned()),
            ("resource", resource.uri.clone()),
        ];
        if !resource.scopes.is_empty() {
            form.push(("scope", resource.scopes.join(" ")));
        }
        let granted = self
            .token_request(form, dpop)
            .instrument(spans::provider_call("resource_token", self.name()))
            .await?;
        Ok(RouteGrant::from_granted(granted, now))
    }

    /// The token-exchange grant: the user's access token for one of `exchange`'s audience.
    pub async fn exchange_token(
        &self,
        subject_token: &SecretString,
        exchange: &ExchangeSettings,
        dpop: Option<&DpopKey>,
        now: UnixMillis,
    ) -> Result<RouteGrant, OidcError> {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT.to_owned()),
            ("subject_token", subject_token.expose_secret().to_owned()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
            (
                "requested_token_type",
                exchange.requested_token_type.clone(),
            ),
        ];
        if let Some(audience) = &exchange.audience {
            form.push(("audience", audience.clone()));
        }
        if let Some(scope) = &exchange.scope {
            form.push(("scope", scope.clone()));
        }
        let granted = self
            .token_request(form, dpop)
            .instrument(spans::provider_call("token_exchange", self.name()))
            .await?;
        let mut grant = RouteGrant::from_granted(granted, now);
        // An exchange hands out no refresh token gatehouse would use: the next exchange
        // starts again from the user's access token.
        grant.refresh_token = None;
        grant.refresh_token_expires_at = None;
        Ok(grant)
    }
}
