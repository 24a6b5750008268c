//! The endpoints beyond openidconnect's core metadata that gatehouse calls or reports
//! (revocation, end-session, introspection), and where each came from: the operator's
//! config, the OpenID discovery document, or the provider's RFC 8414 authorization server
//! metadata. Some providers list an endpoint only in the latter (django-oauth-toolkit has
//! its revocation endpoint there alone).

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{OidcError, Provider};
use crate::config::ProviderSettings;

/// Discovery fields openidconnect's core metadata does not carry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExtraMetadata {
    pub end_session_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    pub introspection_endpoint: Option<Url>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub backchannel_logout_supported: bool,
    pub code_challenge_methods_supported: Option<Vec<String>>,
    pub pushed_authorization_request_endpoint: Option<Url>,
}

/// Where an endpoint gatehouse uses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSource {
    /// `[providers.NAME]` in gatehouse's configuration; wins over the provider's documents.
    Config,
    OpenIdConfiguration,
    Rfc8414,
}

impl EndpointSource {
    pub fn describe(self) -> &'static str {
        match self {
            EndpointSource::Config => "config",
            EndpointSource::OpenIdConfiguration => "openid-configuration",
            EndpointSource::Rfc8414 => "RFC 8414 metadata",
        }
    }
}

/// The endpoints looked for in RFC 8414 metadata when discovery lacks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalEndpoint {
    Revocation,
    EndSession,
    Introspection,
}

impl OptionalEndpoint {
    pub const ALL: [OptionalEndpoint; 3] = [
        OptionalEndpoint::Revocation,
        OptionalEndpoint::EndSession,
        OptionalEndpoint::Introspection,
    ];

    /// Its member name in both metadata documents.
    pub fn member(self) -> &'static str {
        match self {
            OptionalEndpoint::Revocation => "revocation_endpoint",
            OptionalEndpoint::EndSession => "end_session_endpoint",
            OptionalEndpoint::Introspection => "introspection_endpoint",
        }
    }

    fn slot(self, extra: &mut ExtraMetadata) -> &mut Option<Url> {
        match self {
            OptionalEndpoint::Revocation => &mut extra.revocation_endpoint,
            OptionalEndpoint::EndSession => &mut extra.end_session_endpoint,
            OptionalEndpoint::Introspection => &mut extra.introspection_endpoint,
        }
    }

    fn configured(self, settings: &ProviderSettings) -> Option<&Url> {
        match self {
            OptionalEndpoint::Revocation => settings.revocation_endpoint.as_ref(),
            OptionalEndpoint::EndSession => settings.end_session_endpoint.as_ref(),
            OptionalEndpoint::Introspection => None,
        }
    }
}

/// Where each optional endpoint came from (`None`: the provider has none we know of).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSources {
    pub revocation: Option<EndpointSource>,
    pub end_session: Option<EndpointSource>,
    pub introspection: Option<EndpointSource>,
    /// Why RFC 8414 metadata was looked for and not used (absent, unreachable, another
    /// issuer), for the operator.
    pub rfc8414_unused: Option<String>,
}

impl EndpointSources {
    pub fn get(&self, endpoint: OptionalEndpoint) -> Option<EndpointSource> {
        *self.slot(endpoint)
    }

    fn slot(&self, endpoint: OptionalEndpoint) -> &Option<EndpointSource> {
        match endpoint {
            OptionalEndpoint::Revocation => &self.revocation,
            OptionalEndpoint::EndSession => &self.end_session,
            OptionalEndpoint::Introspection => &self.introspection,
        }
    }

    fn set(&mut self, endpoint: OptionalEndpoint, source: EndpointSource) {
        let slot = match endpoint {
            OptionalEndpoint::Revocation => &mut self.revocation,
            OptionalEndpoint::EndSession => &mut self.end_session,
            OptionalEndpoint::Introspection => &mut self.introspection,
        };
        *slot = Some(source);
    }
}

/// RFC 8414 §3: the well-known segment goes between the host and the issuer's path (its
/// trailing `/` removed): `https://id.example/tenant` → `https://id.example/.well-known/
/// oauth-authorization-server/tenant`.
pub fn rfc8414_url(issuer: &str) -> Result<Url, OidcError> {
    let mut url = Url::parse(issuer)
        .map_err(|e| OidcError::Discovery(format!("issuer `{issuer}` is not a URL: {e}")))?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// An endpoint a metadata document names: an absolute http(s) URL, or nothing.
fn endpoint_in(document: &Value, member: &str) -> Option<Url> {
    document
        .get(member)
        .and_then(Value::as_str)
        .and_then(|text| Url::parse(text).ok())
        .filter(|url| matches!(url.scheme(), "https" | "http"))
}

impl Provider {
    /// Completes the optional endpoints in `extra` (as the openid-configuration named them):
    /// the configured ones win; what discovery lacks is taken from RFC 8414 metadata, which
    /// is fetched only then and used only when it names `named_issuer` (the issuer the
    /// openid-configuration named) or the configured issuer exactly. Never fails: without
    /// usable metadata an endpoint stays absent.
    pub(super) async fn resolve_endpoints(
        &self,
        extra: &mut ExtraMetadata,
        named_issuer: &str,
    ) -> EndpointSources {
        let mut sources = EndpointSources::default();
        for endpoint in OptionalEndpoint::ALL {
            let slot = endpoint.slot(extra);
            if let Some(url) = endpoint.configured(&self.settings) {
                *slot = Some(url.clone());
                sources.set(endpoint, EndpointSource::Config);
            } else if slot.is_some() {
                sources.set(endpoint, EndpointSource::OpenIdConfiguration);
            }
        }
        let missing: Vec<OptionalEndpoint> = OptionalEndpoint::ALL
            .into_iter()
            .filter(|endpoint| sources.get(*endpoint).is_none())
            .collect();
        if missing.is_empty() {
            return sources;
        }
        match self.rfc8414_metadata(named_issuer).await {
            Ok(document) => {
                for endpoint in missing {
                    if let Some(url) = endpoint_in(&document, endpoint.member()) {
                        tracing::debug!(
                            provider = %self.name(),
                            endpoint = endpoint.member(),
                            "endpoint taken from RFC 8414 metadata"
                        );
                        *endpoint.slot(extra) = Some(url);
                        sources.set(endpoint, EndpointSource::Rfc8414);
                    }
                }
            }
            Err(reason) => {
                tracing::debug!(provider = %self.name(), %reason, "RFC 8414 metadata not used");
                sources.rfc8414_unused = Some(reason);
            }
        }
        sources
    }

    async fn rfc8414_metadata(&self, named_issuer: &str) -> Result<Value, String> {
        let url = rfc8414_url(&self.settings.issuer).map_err(|e| e.to_string())?;
        let (document, _): (Value, _) = self
            .get_json(url.as_str())
            .await
            .map_err(|e| e.to_string())?;
        match document.get("issuer").and_then(Value::as_str) {
            Some(issuer) if issuer == self.settings.issuer || issuer == named_issuer => {
                Ok(document)
            }
            other => Err(format!(
                "{url} names issuer `{}`, not `{}`",
                other.unwrap_or_default(),
                self.settings.issuer
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_well_known_segment_goes_between_host_and_issuer_path() {
        for (issuer, expected) in [
            (
                "https://id.example.com",
                "https://id.example.com/.well-known/oauth-authorization-server",
            ),
            (
                "https://id.example.com/",
                "https://id.example.com/.well-known/oauth-authorization-server",
            ),
            (
                "https://id.example.com/realms/app",
                "https://id.example.com/.well-known/oauth-authorization-server/realms/app",
            ),
            (
                "https://id.example.com/o/",
                "https://id.example.com/.well-known/oauth-authorization-server/o",
            ),
            (
                "http://127.0.0.1:8000/tenant/v2.0",
                "http://127.0.0.1:8000/.well-known/oauth-authorization-server/tenant/v2.0",
            ),
        ] {
            assert_eq!(rfc8414_url(issuer).expect("URL").as_str(), expected);
        }
    }

    #[test]
    fn only_absolute_http_urls_count_as_endpoints() {
        let document = serde_json::json!({
            "revocation_endpoint": "https://id.example.com/revoke",
            "end_session_endpoint": "/logout",
            "introspection_endpoint": "javascript:alert(1)",
        });
        assert!(endpoint_in(&document, "revocation_endpoint").is_some());
        assert!(endpoint_in(&document, "end_session_endpoint").is_none());
        assert!(endpoint_in(&document, "introspection_endpoint").is_none());
        assert!(endpoint_in(&document, "registration_endpoint").is_none());
    }
}
