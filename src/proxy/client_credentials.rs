//! gatehouse's own access token (client-credentials grant) for `client` routes: cached until
//! shortly before it expires, and fetched once however many calls want it at the same time.

use std::sync::Arc;

use secrecy::SecretString;

use crate::clock::UnixMillis;
use crate::oidc::{OidcError, Provider};

/// Renew this long before the provider's expiry, so no call carries a token about to lapse.
const RENEW_BEFORE_MS: i64 = 30_000;
/// Lifetime assumed when the provider does not say.
const DEFAULT_LIFETIME_MS: i64 = 60_000;

struct Cached {
    token: SecretString,
    renew_at: UnixMillis,
}

pub struct ClientTokenCache {
    provider: Arc<Provider>,
    scopes: Vec<String>,
    // An async mutex held across the fetch is the single flight: callers that arrive during
    // a fetch wait for it and then find the fresh token.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl ClientTokenCache {
    pub fn new(provider: Arc<Provider>, scopes: Vec<String>) -> Self {
        Self {
            provider,
            scopes,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn token(&self, now: UnixMillis) -> Result<SecretString, OidcError> {
        let mut cached = self.cached.lock().await;
        if let Some(entry) = cached.as_ref() {
            if now < entry.renew_at {
                return Ok(entry.token.clone());
            }
        }
        let (token, expires_in) = self.provider.client_credentials_token(&self.scopes).await?;
        let lifetime = expires_in
            .map(|d| d.as_millis() as i64)
            .unwrap_or(DEFAULT_LIFETIME_MS);
        let renew_at = now + (lifetime - RENEW_BEFORE_MS).max(lifetime / 2);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at,
        });
        Ok(token)
    }
}
