//! The OpenID Connect relying party: login, callback, logout. No HTTP framework types here;
//! handlers translate requests into these calls.

pub mod backchannel;
mod error;
pub mod flows;
pub mod metadata;
pub mod online_check;
pub mod operator;
mod par;
pub mod provider;
pub mod refresh;
mod refresh_grant;
pub mod refresh_target;
pub mod return_to;
mod revocation;
mod route_grants;
pub mod step_up;
mod token_request;
mod userinfo;

use tracing::Instrument;

use crate::observability::spans;
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreIdToken};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClaimsVerificationError, CsrfToken,
    IdTokenVerifier, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, Scope,
    SignatureVerificationError, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use url::Url;

use crate::clock::UnixMillis;
use crate::dpop::DpopKey;
use crate::session::{Authentication, LoginState, SessionDpopKey, TokenSet};
use error::token_error;
pub use error::OidcError;
pub use provider::{Discovered, Provider};
pub use refresh_grant::RefreshedTokens;
pub use route_grants::{RouteGrant, TOKEN_EXCHANGE_GRANT};
use step_up::LoginRequirements;

use crate::config::PROTOCOL_CLAIMS;

/// A login about to leave for the provider.
pub struct AuthorizationRequest {
    pub url: Url,
    /// The `state` value sent to the provider; the login state is stored under its hash.
    pub state: String,
    pub login: LoginState,
}

/// What a successful callback yields.
pub struct LoginOutcome {
    pub sub: String,
    pub provider_sid: Option<String>,
    pub claims: Map<String, Value>,
    pub tokens: TokenSet,
    pub authentication: Authentication,
    /// RFC 9449: the key the tokens are bound to, when the provider uses DPoP.
    pub dpop_key: Option<crate::session::SessionDpopKey>,
}

/// Every configured provider, keyed by name, one of them the default.
pub struct Providers {
    pub by_name: BTreeMap<String, Arc<Provider>>,
    pub default: String,
}

impl Providers {
    pub fn get(&self, name: Option<&str>) -> Option<&Arc<Provider>> {
        self.by_name.get(name.unwrap_or(&self.default))
    }

    pub fn all_ready(&self) -> bool {
        self.by_name.values().all(|p| p.is_ready())
    }
}

fn to_chrono(millis: UnixMillis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
}

impl Provider {
    /// Builds the authorization request: PKCE S256, fresh `state` and `nonce`.
    pub fn begin_login(
        &self,
        return_to: String,
        prompt: Option<String>,
        step_up: LoginRequirements,
        now: UnixMillis,
    ) -> Result<AuthorizationRequest, OidcError> {
        let discovered = self.current()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.settings.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        // RFC 8707: the grant covers every route's resource, each then one refresh away.
        for scope in &self.settings.resource_scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        for resource in &self.settings.resources {
            request = request.add_extra_param("resource", resource.clone());
        }
        for (key, value) in &self.settings.extra_authorize_params {
            if (key != "prompt" || prompt.is_none()) && !step_up.sets(key) {
                request = request.add_extra_param(key.clone(), value.clone());
            }
        }
        for (key, value) in step_up.authorize_params() {
            request = request.add_extra_param(key, value);
        }
        if let Some(prompt) = &prompt {
            request = request.add_extra_param("prompt", prompt.clone());
        }
        let (url, state, nonce) = request.url();
        Ok(AuthorizationRequest {
            url,
            state: state.secret().clone(),
            login: LoginState {
                provider: self.settings.name.clone(),
                pkce_verifier: SecretString::from(verifier.secret().clone()),
                nonce: SecretString::from(nonce.secret().clone()),
                return_to,
                prompt,
                created_at: now,
                acr_values: step_up.acr_values,
                max_age: step_up.max_age,
            },
        })
    }

    /// RFC 9207: when the provider says it sends `iss`, it must be there and be ours; when
    /// it is there anyway, it must still be ours (mix-up defence).
    pub fn check_response_issuer(&self, iss: Option<&str>) -> Result<(), OidcError> {
        let discovered = self.current()?;
        match iss {
            Some(iss) if iss == self.settings.issuer => Ok(()),
            // A tenant's issuer under the multi-tenant template, from an allowed tenant.
            Some(iss)
                if self
                    .settings
                    .issuer_template
                    .as_deref()
                    .is_some_and(|template| {
                        crate::config::presets::tenant_of(template, iss).is_some_and(|tenant| {
                            crate::config::presets::check_tenant_issuer(
                                template,
                                iss,
                                Some(&tenant),
                                &self.settings.allowed_tenants,
                            )
                            .is_ok()
                        })
                    }) =>
            {
                Ok(())
            }
            Some(_) => Err(OidcError::IssuerMismatch),
            None if discovered
                .extra
                .authorization_response_iss_parameter_supported =>
            {
                Err(OidcError::IssuerMismatch)
            }
            None => Ok(()),
        }
    }

    /// Exchanges the code (client auth + PKCE verifier), validates the ID token fully and
    /// gathers the user's claims.
    pub async fn complete_login(
        &self,
        code: &str,
        login: &LoginState,
        now: UnixMillis,
    ) -> Result<LoginOutcome, OidcError> {
        let discovered = self.current()?;
        let mut request = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Discovery(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(
                login.pkce_verifier.expose_secret().to_owned(),
            ));
        for (key, value) in self.assertion_params(token_endpoint(&discovered)?)? {
            request = request.add_extra_param(key, value);
        }
        // RFC 9449: a new key for the new session, proven on the code exchange.
        let dpop = match self.settings.dpop {
            true => {
                Some(DpopKey::generate().map_err(|e| OidcError::ClientAssertion(e.to_string()))?)
            }
            false => None,
        };
        let response: provider::TokenResponse = match &dpop {
            Some((key, _)) => request
                .request_async(&|http_request| self.send_with_proof(http_request, key))
                .instrument(spans::provider_call("code_exchange", self.name()))
                .await
                .map_err(token_error)?,
            None => request
                .request_async(&self.http)
                .instrument(spans::provider_call("code_exchange", self.name()))
                .await
                .map_err(token_error)?,
        };
        let dpop_bound = dpop.is_some() && is_dpop(response.token_type());
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::BadResponse("token response has no id_token".into()))?;
        let nonce = Nonce::new(login.nonce.expose_secret().to_owned());
        let id_claims = self
            .verify_id_token(id_token, Some(&nonce), response.access_token(), now)
            .await?;
        let sub = id_claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::InvalidIdToken("no sub".into()))?
            .to_owned();
        let provider_sid = id_claims
            .get("sid")
            .and_then(Value::as_str)
            .map(str::to_owned);

        let authentication = Authentication::from_id_token(&id_claims);
        let mut claims: Map<String, Value> = id_claims
            .into_iter()
            .filter(|(k, _)| !PROTOCOL_CLAIMS.contains(&k.as_str()))
            .collect();
        if let Some(userinfo) = self
            .fetch_userinfo(
                &discovered,
                response.access_token(),
                &sub,
                dpop.as_ref().filter(|_| dpop_bound).map(|(key, _)| key),
            )
            .await?
        {
            for (key, value) in userinfo {
                if !PROTOCOL_CLAIMS.contains(&key.as_str()) && key != "sub" {
                    claims.insert(key, value);
                }
            }
        }

        Ok(LoginOutcome {
            sub,
            provider_sid,
            claims,
            tokens: TokenSet {
                access_token: SecretString::from(response.access_token().secret().clone()),
                access_token_expires_at: response.expires_in().map(|d| now + d.as_millis() as i64),
                access_token_lifetime_ms: response.expires_in().map(|d| d.as_millis() as i64),
                refresh_token_expires_at: refresh_expiry(&response, now),
                refresh_token: response
                    .refresh_token()
                    .map(|t| SecretString::from(t.secret().clone())),
                id_token: SecretString::from(id_token.to_string()),
                scope: granted_scope(&response),
                dpop_bound,
            },
            authentication,
            dpop_key: dpop.map(|(key, stored)| SessionDpopKey::new(stored, key)),
        })
    }

    /// Signature (asymmetric algorithms the provider advertises only), `iss`, `aud`/`azp`,
    /// `exp` and `iat` within the configured skew, `nonce` when given, and `at_hash`. One
    /// JWKS refetch when the token names a key we do not have.
    pub async fn verify_id_token(
        &self,
        id_token: &CoreIdToken,
        nonce: Option<&Nonce>,
        access_token: &AccessToken,
        now: UnixMillis,
    ) -> Result<Map<String, Value>, OidcError> {
        match self.verify_id_token_once(id_token, nonce, access_token, now) {
            Err(VerifyFailure::UnknownKey) if self.refetch_jwks_if_due().await => self
                .verify_id_token_once(id_token, nonce, access_token, now)
                .map_err(VerifyFailure::into_error),
            other => other.map_err(VerifyFailure::into_error),
        }
    }

    fn verify_id_token_once(
        &self,
        id_token: &CoreIdToken,
        nonce: Option<&Nonce>,
        access_token: &AccessToken,
        now: UnixMillis,
    ) -> Result<Map<String, Value>, VerifyFailure> {
        let discovered = self
            .current()
            .map_err(|e| VerifyFailure::Other(e.to_string()))?;
        let skew = self.settings.clock_skew.as_millis() as i64;
        let verifier: IdTokenVerifier<'_, _> = discovered
            .client
            .id_token_verifier()
            .set_allowed_algs(discovered.signing_algs.clone())
            // A tenant template is no issuer a token can name: checked below with `tid`.
            .require_issuer_match(self.settings.issuer_template.is_none())
            // `exp` is checked against this time with no leeway of its own.
            .set_time_fn(move || to_chrono(now - skew))
            .set_issue_time_verifier_fn(move |iat| {
                let iat = iat.timestamp_millis();
                if iat > now + skew {
                    Err("issued in the future".to_owned())
                } else {
                    Ok(())
                }
            });
        let claims = match nonce {
            Some(nonce) => id_token.claims(&verifier, nonce),
            // Tokens from a refresh may omit the nonce; only that path passes None.
            None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        };
        if let Err(error) = claims {
            return Err(match error {
                ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                ) => VerifyFailure::UnknownKey,
                other => VerifyFailure::Other(error_chain(&other)),
            });
        }
        let claims = claims.map_err(|e| VerifyFailure::Other(e.to_string()))?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|e| VerifyFailure::Other(e.to_string()))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| VerifyFailure::Other(e.to_string()))?;
            let actual = AccessTokenHash::from_token(access_token, alg, key)
                .map_err(|e| VerifyFailure::Other(e.to_string()))?;
            if actual != *expected {
                return Err(VerifyFailure::Other(
                    "at_hash does not match the access token".into(),
                ));
            }
        }
        // The signature is verified; read the payload as JSON to keep every claim.
        let compact = id_token.to_string();
        let payload = compact
            .split('.')
            .nth(1)
            .and_then(|part| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok())
            .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
            .ok_or_else(|| VerifyFailure::Other("payload is not a JSON object".into()))?;
        if let Some(template) = &self.settings.issuer_template {
            crate::config::presets::check_tenant_issuer(
                template,
                payload
                    .get("iss")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                payload.get("tid").and_then(Value::as_str),
                &self.settings.allowed_tenants,
            )
            .map_err(VerifyFailure::Other)?;
        }
        Ok(payload)
    }

    /// `client_secret_basic` per RFC 6749 §2.3.1: both parts form-urlencoded first.
    fn basic_auth_header(&self) -> String {
        let encode =
            |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let pair = format!(
            "{}:{}",
            encode(&self.settings.client_id),
            encode(self.settings.client_secret.expose_secret())
        );
        format!("Basic {}", STANDARD.encode(pair))
    }

    /// Where the browser goes after gatehouse has ended its session: the provider's
    /// end-session endpoint when it has one, else the configured post-logout URL.
    pub fn logout_redirect(&self, id_token: Option<&SecretString>) -> Url {
        let Ok(discovered) = self.current() else {
            return self.settings.post_logout_redirect.clone();
        };
        let Some(endpoint) = &discovered.extra.end_session_endpoint else {
            return self.settings.post_logout_redirect.clone();
        };
        let mut url = endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            if let (Some(id_token), true) = (id_token, self.settings.end_session_id_token_hint) {
                query.append_pair("id_token_hint", id_token.expose_secret());
            }
            query.append_pair("client_id", &self.settings.client_id);
            query.append_pair(
                "post_logout_redirect_uri",
                self.settings.post_logout_redirect.as_str(),
            );
        }
        url
    }
}

enum VerifyFailure {
    UnknownKey,
    Other(String),
}

impl VerifyFailure {
    fn into_error(self) -> OidcError {
        match self {
            VerifyFailure::UnknownKey => {
                OidcError::InvalidIdToken("signed with an unknown key".into())
            }
            VerifyFailure::Other(reason) => OidcError::InvalidIdToken(reason),
        }
    }
}

impl Provider {
    /// A token for gatehouse itself (client-credentials grant) and how long it lives.
    pub async fn client_credentials_token(
        &self,
        scopes: &[String],
    ) -> Result<(SecretString, Option<std::time::Duration>), OidcError> {
        let discovered = self.current()?;
        let mut request = discovered
            .client
            .exchange_client_credentials()
            .map_err(|e| OidcError::Discovery(format!("no token endpoint: {e}")))?;
        for scope in scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        for (key, value) in self.assertion_params(token_endpoint(&discovered)?)? {
            request = request.add_extra_param(key, value);
        }
        let response: provider::TokenResponse = request
            .request_async(&self.http)
            .instrument(spans::provider_call("client_credentials", self.name()))
            .await
            .map_err(token_error)?;
        Ok((
            SecretString::from(response.access_token().secret().clone()),
            response.expires_in(),
        ))
    }
}

/// Whether a token response's `token_type` is DPoP (RFC 9449 §5: case-insensitive).
fn is_dpop(token_type: &openidconnect::core::CoreTokenType) -> bool {
    token_type.as_ref().eq_ignore_ascii_case("dpop")
}

/// The token endpoint's URL: the audience of a client assertion for a token request.
fn token_endpoint(discovered: &Discovered) -> Result<&str, OidcError> {
    discovered
        .metadata
        .token_endpoint()
        .map(|url| url.url().as_str())
        .ok_or_else(|| OidcError::Discovery("no token endpoint".into()))
}

/// The scopes a token response says were granted, space separated.
fn granted_scope(response: &provider::TokenResponse) -> Option<String> {
    response.scopes().map(|scopes| {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// When the refresh token in a response expires, if the provider said.
fn refresh_expiry(response: &provider::TokenResponse, now: UnixMillis) -> Option<UnixMillis> {
    let extra = response.extra_fields().extra_fields();
    extra
        .refresh_expires_in
        .or(extra.refresh_token_expires_in)
        .filter(|secs| *secs > 0)
        .map(|secs| now + secs as i64 * 1000)
}

/// An error with its causes, for the log (verification errors carry no secrets).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
