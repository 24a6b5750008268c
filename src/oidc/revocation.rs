//! RFC 7009 revocation of a session's refresh token at the provider. Every attempt is a
//! security event (`token.revoked` or `token.revocation_failed`, with the provider and the
//! reason, never the token), so an operator can see whether logout reached the provider.

use tracing::Instrument;

use crate::observability::spans;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::metadata::EndpointSource;
use super::{OidcError, Provider};
use crate::observability::telemetry::{SecurityEvent, SecurityLog};

/// `token.revocation_failed`'s reason when there is nowhere to send the token.
pub const NO_REVOCATION_ENDPOINT: &str = "no revocation endpoint";

impl Provider {
    /// Revokes a refresh token (which also ends its access tokens at most providers).
    /// Ok(false) when the provider has no revocation endpoint (discovered, from RFC 8414
    /// metadata, or configured). The attempt goes to `events`.
    pub async fn revoke_refresh_token(
        &self,
        refresh_token: &SecretString,
        events: &SecurityLog,
    ) -> Result<bool, OidcError> {
        let outcome = self.revoke_at_endpoint(refresh_token).await;
        let (event, reason) = match &outcome {
            Ok(Some(source)) => (SecurityEvent::TokenRevoked, source.describe().to_owned()),
            Ok(None) => (
                SecurityEvent::TokenRevocationFailed,
                NO_REVOCATION_ENDPOINT.to_owned(),
            ),
            Err(error) => (SecurityEvent::TokenRevocationFailed, error.to_string()),
        };
        events.log_for_provider(event, Some(self.name()), None, None, Some(&reason));
        outcome.map(|source| source.is_some())
    }

    /// Where the endpoint came from, when there is one and it took the token.
    async fn revoke_at_endpoint(
        &self,
        refresh_token: &SecretString,
    ) -> Result<Option<EndpointSource>, OidcError> {
        let discovered = self.current()?;
        let (Some(endpoint), Some(source)) = (
            &discovered.extra.revocation_endpoint,
            discovered.endpoint_sources.revocation,
        ) else {
            return Ok(None);
        };
        self.post_revocation(endpoint, refresh_token)
            .instrument(spans::provider_call("revocation", self.name()))
            .await?;
        Ok(Some(source))
    }

    async fn post_revocation(
        &self,
        endpoint: &Url,
        refresh_token: &SecretString,
    ) -> Result<(), OidcError> {
        let form = vec![
            ("token", refresh_token.expose_secret().to_owned()),
            ("token_type_hint", "refresh_token".to_owned()),
        ];
        let response = self
            .authenticated_form_post(endpoint.as_str(), form)?
            .send()
            .await
            .map_err(|e| OidcError::transport("revocation", e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(OidcError::BadResponse(format!(
                "revocation answered {}",
                response.status()
            )))
        }
    }
}
