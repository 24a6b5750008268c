//! The refresh-token grant itself (the lock around it is in `refresh`).

use std::str::FromStr;

use openidconnect::core::CoreIdToken;
use tracing::Instrument;

use crate::observability::spans;
use openidconnect::{OAuth2TokenResponse, TokenResponse};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{granted_scope, provider, refresh_expiry, token_endpoint, token_error};
use super::{OidcError, Provider};
use crate::clock::UnixMillis;
use crate::dpop::DpopKey;

/// What a refresh yields; absent members mean "keep what the session has".
pub struct RefreshedTokens {
    pub access_token: SecretString,
    pub access_token_expires_at: Option<UnixMillis>,
    pub access_token_lifetime_ms: Option<i64>,
    pub refresh_token: Option<SecretString>,
    pub refresh_token_expires_at: Option<UnixMillis>,
    pub id_token: Option<SecretString>,
    pub scope: Option<String>,
    /// `token_type` was DPoP: the new access token is bound to the session's key.
    pub dpop_bound: bool,
}

impl Provider {
    /// The refresh-token grant. A new ID token, when the provider sends one, is validated
    /// like the first (its nonce may be absent) and must name the same user. With `dpop`,
    /// the request carries a proof of that key (and the new tokens are bound to it).
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        sub: &str,
        dpop: Option<&DpopKey>,
        now: UnixMillis,
    ) -> Result<RefreshedTokens, OidcError> {
        if dpop.is_some() {
            return self.refresh_with_proof(refresh_token, sub, dpop, now).await;
        }
        let discovered = self.current()?;
        let token = openidconnect::RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut request = discovered
            .client
            .exchange_refresh_token(&token)
            .map_err(|e| OidcError::Discovery(format!("no token endpoint: {e}")))?;
        for (key, value) in self.assertion_params(token_endpoint(&discovered)?)? {
            request = request.add_extra_param(key, value);
        }
        let response: provider::TokenResponse = request
            .request_async(&self.http)
            .instrument(spans::provider_call("refresh", self.name()))
            .await
            .map_err(token_error)?;
        let id_token = match response.id_token() {
            Some(id_token) => {
                self.check_refreshed_id_token(id_token, response.access_token(), sub, now)
                    .await?;
                Some(SecretString::from(id_token.to_string()))
            }
            None => None,
        };
        Ok(RefreshedTokens {
            access_token: SecretString::from(response.access_token().secret().clone()),
            access_token_expires_at: response.expires_in().map(|d| now + d.as_millis() as i64),
            access_token_lifetime_ms: response.expires_in().map(|d| d.as_millis() as i64),
            refresh_token: response
                .refresh_token()
                .map(|t| SecretString::from(t.secret().clone())),
            refresh_token_expires_at: refresh_expiry(&response, now),
            id_token,
            scope: granted_scope(&response),
            dpop_bound: false,
        })
    }

    /// The same grant through gatehouse's own token request, which carries DPoP proofs.
    async fn refresh_with_proof(
        &self,
        refresh_token: &SecretString,
        sub: &str,
        dpop: Option<&DpopKey>,
        now: UnixMillis,
    ) -> Result<RefreshedTokens, OidcError> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose_secret().to_owned()),
        ];
        let granted = self
            .token_request(form, dpop)
            .instrument(spans::provider_call("refresh", self.name()))
            .await?;
        let id_token = match granted.id_token {
            Some(text) => {
                let id_token = CoreIdToken::from_str(text.expose_secret()).map_err(|_| {
                    OidcError::InvalidIdToken("refreshed ID token unreadable".into())
                })?;
                let access_token = openidconnect::AccessToken::new(
                    granted.access_token.expose_secret().to_owned(),
                );
                self.check_refreshed_id_token(&id_token, &access_token, sub, now)
                    .await?;
                Some(text)
            }
            None => None,
        };
        Ok(RefreshedTokens {
            dpop_bound: granted.token_type.eq_ignore_ascii_case("dpop"),
            access_token_expires_at: granted.expires_in.map(|d| now + d.as_millis() as i64),
            access_token_lifetime_ms: granted.expires_in.map(|d| d.as_millis() as i64),
            access_token: granted.access_token,
            refresh_token: granted.refresh_token,
            refresh_token_expires_at: granted
                .refresh_expires_in
                .map(|secs| now + secs as i64 * 1000),
            id_token,
            scope: granted.scope,
        })
    }

    async fn check_refreshed_id_token(
        &self,
        id_token: &CoreIdToken,
        access_token: &openidconnect::AccessToken,
        sub: &str,
        now: UnixMillis,
    ) -> Result<(), OidcError> {
        let claims = self
            .verify_id_token(id_token, None, access_token, now)
            .await?;
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(OidcError::InvalidIdToken(
                "refreshed ID token names another user".into(),
            ));
        }
        Ok(())
    }
}
