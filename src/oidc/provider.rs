//! One configured OpenID Provider: discovery, the JWKS cache, and the client built from them.
//!
//! openidconnect keeps the JWKS a client was built with, so the discovered state sits behind
//! a swappable pointer: re-discovery on a timer, and one rate-limited JWKS refetch when an ID
//! token names a key we do not know (the provider rotated its keys).

use tracing::Instrument;

use crate::observability::spans;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AuthType, ClientId, ClientSecret, EmptyAdditionalClaims, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdTokenFields, RedirectUrl, StandardErrorResponse, StandardTokenResponse,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::metadata::EndpointSources;
pub use super::metadata::ExtraMetadata;
use super::OidcError;
use crate::config::{ClientAuthMethod, ProviderSettings, PushedAuthorization};

/// Token response members beyond the standard ones that gatehouse uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraTokenFields {
    /// Keycloak and others say how long the refresh token lives; a session never outlives it.
    pub refresh_expires_in: Option<u64>,
    /// The same, as Entra ID and others spell it.
    pub refresh_token_expires_in: Option<u64>,
}

impl openidconnect::ExtraTokenFields for ExtraTokenFields {}

pub type TokenResponse = StandardTokenResponse<
    IdTokenFields<
        EmptyAdditionalClaims,
        ExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

/// The client built from discovery (typestate: auth URL set, token and userinfo URLs maybe).
pub type OidcClient = openidconnect::Client<
    EmptyAdditionalClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

pub struct Discovered {
    pub metadata: CoreProviderMetadata,
    /// The optional endpoints here are the ones in use: configured, discovered, or from
    /// RFC 8414 metadata (`endpoint_sources` says which).
    pub extra: ExtraMetadata,
    pub endpoint_sources: EndpointSources,
    pub client: OidcClient,
    /// Asymmetric algorithms the provider advertises for ID tokens; nothing else is accepted.
    pub signing_algs: Vec<CoreJwsSigningAlgorithm>,
}

/// How often a JWKS refetch for an unknown key may happen.
const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Re-discovery keeps metadata and keys fresh even when no unknown key is seen.
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(30 * 60);

pub struct Provider {
    pub settings: ProviderSettings,
    pub(super) http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    last_jwks_refetch: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    /// The token endpoint's latest `DPoP-Nonce` (RFC 9449 §8), sent with the next proof.
    dpop_nonce: Mutex<Option<String>>,
}

pub fn is_asymmetric(alg: &CoreJwsSigningAlgorithm) -> bool {
    use CoreJwsSigningAlgorithm::*;
    matches!(
        alg,
        RsaSsaPkcs1V15Sha256
            | RsaSsaPkcs1V15Sha384
            | RsaSsaPkcs1V15Sha512
            | EcdsaP256Sha256
            | EcdsaP384Sha384
            | EcdsaP521Sha512
            | RsaSsaPssSha256
            | RsaSsaPssSha384
            | RsaSsaPssSha512
            | EdDsa
    )
}

impl Provider {
    pub fn new(settings: ProviderSettings) -> Result<Self, OidcError> {
        // Never follow redirects (SSRF) and bound every exchange with the provider.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.http_timeout)
            .connect_timeout(settings.http_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OidcError::HttpClient(e.without_url()))?;
        Ok(Self {
            settings,
            http,
            discovered: RwLock::new(None),
            last_jwks_refetch: Mutex::new(None),
            last_error: Mutex::new(None),
            dpop_nonce: Mutex::new(None),
        })
    }

    pub(super) fn dpop_nonce(&self) -> Option<String> {
        self.dpop_nonce
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn remember_dpop_nonce(&self, nonce: &str) {
        // A nonce is opaque but printable (RFC 9449 §8: NQCHAR); anything else is not kept.
        if !nonce.is_empty()
            && nonce.len() <= 512
            && nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        {
            *self.dpop_nonce.lock().unwrap_or_else(|p| p.into_inner()) = Some(nonce.to_owned());
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether a logout goes on to an end-session endpoint that takes `id_token_hint`.
    pub fn wants_id_token_hint(&self) -> bool {
        self.settings.end_session_id_token_hint
            && self
                .current()
                .is_ok_and(|discovered| discovered.extra.end_session_endpoint.is_some())
    }

    pub fn current(&self) -> Result<Arc<Discovered>, OidcError> {
        self.discovered
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| OidcError::NotReady(self.settings.name.clone()))
    }

    pub fn is_ready(&self) -> bool {
        self.current().is_ok()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn install(&self, discovered: Discovered) {
        *self.discovered.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(discovered));
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<(T, serde_json::Value), OidcError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .instrument(spans::provider_call("metadata", self.name()))
            .await
            .map_err(|e| OidcError::transport(&format!("GET {url}"), e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(OidcError::Discovery(format!("GET {url} answered {status}")));
        }
        let value: serde_json::Value = response.json().await.map_err(|e| {
            OidcError::Discovery(format!("GET {url}: not JSON: {}", without_url(&e)))
        })?;
        let typed = serde_json::from_value(value.clone())
            .map_err(|e| OidcError::Discovery(format!("GET {url}: unexpected document: {e}")))?;
        Ok((typed, value))
    }

    /// Fetches discovery metadata and keys and installs a fresh client.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let issuer = &self.settings.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (metadata, raw): (CoreProviderMetadata, _) = self.get_json(&url).await?;
        let named = raw
            .get("issuer")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let named = named.as_deref();
        // A multi-tenant issuer (Entra ID) announces a `{tenantid}` template instead;
        // ID tokens are then checked against it with their `tid`.
        let template = self.settings.issuer_template.as_deref();
        if named != Some(issuer.as_str()) && (template.is_none() || named != template) {
            return Err(OidcError::Discovery(format!(
                "discovery document names issuer `{}`, configured is `{issuer}` (they must \
                 match exactly{})",
                named.unwrap_or_default(),
                match template {
                    Some(template) => format!(", or be the tenant template `{template}`"),
                    None => String::new(),
                }
            )));
        }
        let mut extra: ExtraMetadata = serde_json::from_value(raw)
            .map_err(|e| OidcError::Discovery(format!("discovery document: {e}")))?;
        if let Some(methods) = &extra.code_challenge_methods_supported {
            if !methods.iter().any(|m| m == "S256") {
                return Err(OidcError::Discovery(
                    "provider does not support PKCE S256".into(),
                ));
            }
        }
        if self.settings.pushed_authorization == PushedAuthorization::Always
            && extra.pushed_authorization_request_endpoint.is_none()
        {
            return Err(OidcError::Discovery(
                "pushed_authorization = \"always\", but the provider advertises no pushed \
                 authorization request endpoint"
                    .into(),
            ));
        }
        let sources = self
            .resolve_endpoints(&mut extra, named.unwrap_or_default())
            .await;
        let jwks = self.fetch_jwks(&metadata).await?;
        self.install(self.build(metadata.set_jwks(jwks), extra, sources)?);
        Ok(())
    }

    async fn fetch_jwks(
        &self,
        metadata: &CoreProviderMetadata,
    ) -> Result<CoreJsonWebKeySet, OidcError> {
        let (jwks, _): (CoreJsonWebKeySet, _) = self.get_json(metadata.jwks_uri().as_str()).await?;
        Ok(jwks)
    }

    fn build(
        &self,
        metadata: CoreProviderMetadata,
        extra: ExtraMetadata,
        endpoint_sources: EndpointSources,
    ) -> Result<Discovered, OidcError> {
        let signing_algs: Vec<_> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| is_asymmetric(alg))
            .cloned()
            .collect();
        if signing_algs.is_empty() {
            return Err(OidcError::Discovery(
                "provider advertises no asymmetric ID token signing algorithm".into(),
            ));
        }
        let redirect = RedirectUrl::new(self.settings.redirect_uri.to_string())
            .map_err(|e| OidcError::Discovery(format!("redirect URI: {e}")))?;
        // With private_key_jwt the client has no secret: oauth2 then puts only client_id in
        // the body, and each request adds its own signed assertion (`assertion_params`).
        let secret = match self.settings.client_auth_method {
            ClientAuthMethod::PrivateKeyJwt => None,
            _ => Some(ClientSecret::new(
                self.settings.client_secret.expose_secret().to_owned(),
            )),
        };
        let client = OidcClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect)
        .set_auth_type(match self.settings.client_auth_method {
            ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuthMethod::ClientSecretPost | ClientAuthMethod::PrivateKeyJwt => {
                AuthType::RequestBody
            }
        });
        Ok(Discovered {
            metadata,
            extra,
            endpoint_sources,
            client,
            signing_algs,
        })
    }

    /// The form parameters that authenticate the client with `private_key_jwt` for a call
    /// to `endpoint`: a fresh assertion each time (its own `jti`, 60 s of validity, the
    /// endpoint's URL as audience). Empty for the other methods, which authenticate
    /// otherwise.
    pub(super) fn assertion_params(
        &self,
        endpoint: &str,
    ) -> Result<Vec<(&'static str, String)>, OidcError> {
        let Some(key) = &self.settings.client_key else {
            return Ok(Vec::new());
        };
        let assertion = key
            .assertion(&self.settings.client_id, endpoint)
            .map_err(OidcError::ClientAssertion)?;
        Ok(vec![
            (
                "client_assertion_type",
                crate::client_key::ASSERTION_TYPE.to_owned(),
            ),
            ("client_assertion", assertion),
        ])
    }

    /// A form POST to one of the provider's endpoints (token, revocation) carrying the
    /// client's authentication the way its settings say: the Basic header, the secret in
    /// the form, or a fresh `private_key_jwt` assertion for that endpoint.
    pub(super) fn authenticated_form_post(
        &self,
        endpoint: &str,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<reqwest::RequestBuilder, OidcError> {
        let mut request = self.http.post(endpoint);
        match self.settings.client_auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                request = request.header(reqwest::header::AUTHORIZATION, self.basic_auth_header());
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", self.settings.client_id.clone()));
                form.push((
                    "client_secret",
                    self.settings.client_secret.expose_secret().to_owned(),
                ));
            }
            ClientAuthMethod::PrivateKeyJwt => {
                form.push(("client_id", self.settings.client_id.clone()));
                form.extend(self.assertion_params(endpoint)?);
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        Ok(request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body))
    }

    /// Refetches the JWKS at most once per interval; returns whether new keys were installed.
    pub async fn refetch_jwks_if_due(&self) -> bool {
        {
            let mut last = self
                .last_jwks_refetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH_MIN_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let Ok(current) = self.current() else {
            return false;
        };
        match self.fetch_jwks(&current.metadata).await {
            Ok(jwks) => match self.build(
                current.metadata.clone().set_jwks(jwks),
                current.extra.clone(),
                current.endpoint_sources.clone(),
            ) {
                Ok(discovered) => {
                    self.install(discovered);
                    tracing::info!(provider = %self.name(), "refetched provider signing keys");
                    true
                }
                Err(e) => {
                    tracing::warn!(provider = %self.name(), error = %e, "refetched keys unusable");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(provider = %self.name(), error = %e, "JWKS refetch failed");
                false
            }
        }
    }

    /// Discovers with backoff until it works, then re-discovers on a timer, for as long as
    /// the provider is configured: a reload that removes or replaces it ends the loop (the
    /// task holds it only while discovering). Readiness stays false until the first success.
    pub async fn keep_discovered(self: Arc<Self>) {
        let provider = Arc::downgrade(&self);
        drop(self);
        let mut delay = Duration::from_millis(250);
        loop {
            let Some(this) = provider.upgrade() else {
                return;
            };
            let wait = match this.discover().await {
                Ok(()) => {
                    tracing::info!(provider = %this.name(), issuer = %this.settings.issuer, "provider metadata loaded");
                    delay = Duration::from_millis(250);
                    REDISCOVERY_INTERVAL
                }
                Err(e) => {
                    tracing::warn!(
                        provider = %this.name(),
                        issuer = %this.settings.issuer,
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "provider discovery failed; not ready"
                    );
                    *this.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                    let wait = delay;
                    delay = (delay * 2).min(Duration::from_secs(30));
                    wait
                }
            };
            drop(this);
            tokio::time::sleep(wait).await;
        }
    }
}

/// reqwest errors print the URL, which for some calls carries parameters; keep the cause.
pub(super) fn without_url(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    if let Some(status) = error.status() {
        text.push_str(&format!(" ({status})"));
    }
    text
}
