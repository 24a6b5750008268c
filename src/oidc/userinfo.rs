//! The userinfo endpoint (OpenID Connect Core §5.3), read once at login.

use openidconnect::AccessToken;
use secrecy::SecretString;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::provider::without_url;
use super::{Discovered, OidcError, Provider};
use crate::dpop::{wall_clock_secs, DpopKey, ProofTarget};
use crate::observability::spans;

impl Provider {
    /// The userinfo claims for `sub`, when the provider has a userinfo endpoint. A token
    /// bound to `dpop` goes as `DPoP` with a proof (one retry on `use_dpop_nonce`).
    pub(super) async fn fetch_userinfo(
        &self,
        discovered: &Discovered,
        access_token: &AccessToken,
        sub: &str,
        dpop: Option<&DpopKey>,
    ) -> Result<Option<Map<String, Value>>, OidcError> {
        let Some(endpoint) = discovered.metadata.userinfo_endpoint() else {
            return Ok(None);
        };
        let mut nonce: Option<String> = None;
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            let mut request = self
                .http
                .get(endpoint.url().as_str())
                .header(reqwest::header::ACCEPT, "application/json");
            request = match dpop {
                Some(key) => {
                    let token = SecretString::from(access_token.secret().clone());
                    let proof = key
                        .proof(
                            &ProofTarget {
                                method: "GET",
                                url: endpoint.url().as_str(),
                                nonce: nonce.as_deref(),
                                access_token: Some(&token),
                            },
                            wall_clock_secs(),
                        )
                        .map_err(|e| OidcError::ClientAssertion(e.to_string()))?;
                    request
                        .header(
                            reqwest::header::AUTHORIZATION,
                            format!("DPoP {}", access_token.secret()),
                        )
                        .header("dpop", proof)
                }
                None => request.bearer_auth(access_token.secret()),
            };
            let response = request
                .send()
                .instrument(spans::provider_call("userinfo", self.name()))
                .await
                .map_err(|e| OidcError::transport("userinfo", e))?;
            let challenged = dpop.is_some()
                && attempts == 1
                && response.status() == reqwest::StatusCode::UNAUTHORIZED
                && response.headers().contains_key("dpop-nonce");
            if !challenged {
                break response;
            }
            nonce = response
                .headers()
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        };
        if !response.status().is_success() {
            return Err(OidcError::BadResponse(format!(
                "userinfo answered {}",
                response.status()
            )));
        }
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            // Signed or encrypted userinfo: the ID token claims stand alone.
            return Ok(None);
        }
        let userinfo: Map<String, Value> = response
            .json()
            .await
            .map_err(|e| OidcError::BadResponse(format!("userinfo: {}", without_url(&e))))?;
        if userinfo.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(OidcError::BadResponse(
                "userinfo sub differs from the ID token".into(),
            ));
        }
        Ok(Some(userinfo))
    }
}
