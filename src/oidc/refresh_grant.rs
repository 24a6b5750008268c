//! The refresh-token grant itself (the lock around it is in `refresh`).

use tracing::Instrument;

use crate::observability::spans;
use openidconnect::{OAuth2TokenResponse, TokenResponse};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{granted_scope, provider, refresh_expiry, token_endpoint, token_error};
use super::{OidcError, Provider};
use crate::clock::UnixMillis;

/// What a refresh yields; absent members mean "keep what the session has".
pub struct RefreshedTokens {
    pub access_token: SecretString,
    pub access_token_expires_at: Option<UnixMillis>,
    pub access_token_lifetime_ms: Option<i64>,
    pub refresh_token: Option<SecretString>,
    pub refresh_token_expires_at: Option<UnixMillis>,
    pub id_token: Option<SecretString>,
    pub scope: Option<String>,
}

impl Provider {
    /// The refresh-token grant. A new ID token, when the provider sends one, is validated
    /// like the first (its nonce may be absent) and must name the same user.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        sub: &str,
        now: UnixMillis,
    ) -> Result<RefreshedTokens, OidcError> {
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
                let claims = self
                    .verify_id_token(id_token, None, response.access_token(), now)
                    .await?;
                if claims.get("sub").and_then(Value::as_str) != Some(sub) {
                    return Err(OidcError::InvalidIdToken(
                        "refreshed ID token names another user".into(),
                    ));
                }
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
        })
    }
}
