//! `gatehouse check-config --online`: asks each configured provider what it supports,
//! before the first user finds out. Only GETs: the discovery document and the keys. Nothing
//! is redeemed, registered or changed at the provider.

use openidconnect::core::CoreJwsSigningAlgorithm;
use serde_json::Value;
use url::Url;

use super::metadata::{EndpointSources, OptionalEndpoint};
use super::provider::{is_asymmetric, ExtraMetadata, Provider};
use super::TOKEN_EXCHANGE_GRANT;
use crate::config::{
    ClientAuthMethod, ProviderSettings, PushedAuthorization, RouteSettings, TokenPolicy,
};
use crate::dpop::DPOP_ALG;

/// What one provider said: problems make the check fail; facts are for the operator.
#[derive(Debug, Default)]
pub struct ProviderCheck {
    pub problems: Vec<String>,
    /// What it supports, one line each.
    pub supports: Vec<String>,
    /// What works less well with it than the configuration expects; not a failure.
    pub warnings: Vec<String>,
    /// What to register at the provider for this client, as (what, value).
    pub register: Vec<(&'static str, String)>,
}

pub fn auth_method_name(method: ClientAuthMethod) -> &'static str {
    match method {
        ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
        ClientAuthMethod::ClientSecretPost => "client_secret_post",
        ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
    }
}

fn strings(document: &Value, member: &str) -> Option<Vec<String>> {
    document.get(member)?.as_array().map(|values| {
        values
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    })
}

/// A feature the provider may simply not mention: absent is "not advertised", not "no".
fn advertised(supported: bool) -> &'static str {
    if supported {
        "yes"
    } else {
        "not advertised"
    }
}

/// One optional endpoint: its URL and where it came from, or that nobody names it.
fn endpoint_line(
    label: &str,
    url: Option<&Url>,
    sources: &EndpointSources,
    which: OptionalEndpoint,
) -> String {
    match (url, sources.get(which)) {
        (Some(url), Some(source)) => format!("{label}: yes, from {} ({url})", source.describe()),
        _ => format!("{label}: not advertised"),
    }
}

/// What the configuration asks of gatehouse that needs this provider to do more.
pub struct Expectations<'a> {
    pub public_url: &'a Url,
    pub routes: &'a [RouteSettings],
    /// `session.revocation_key` is set: ending another session should revoke its token.
    pub revocation_key: bool,
}

impl Provider {
    /// Fetches the discovery document and the keys and checks them against the settings.
    pub async fn check_online(&self, expect: &Expectations<'_>) -> ProviderCheck {
        let settings = &self.settings;
        let mut check = ProviderCheck {
            register: what_to_register(settings, expect.public_url, expect.routes),
            ..ProviderCheck::default()
        };
        let url = format!(
            "{}/.well-known/openid-configuration",
            settings.issuer.trim_end_matches('/')
        );
        let document: Value = match self.get_json::<Value>(&url).await {
            Ok((document, _)) => document,
            Err(error) => {
                check.problems.push(format!("discovery failed: {error}"));
                return check;
            }
        };

        match document.get("issuer").and_then(Value::as_str) {
            Some(issuer) if issuer == settings.issuer => {}
            Some(issuer) if settings.issuer_template.as_deref() == Some(issuer) => {}
            Some(issuer) => check.problems.push(format!(
                "the discovery document names issuer `{issuer}`, the configuration `{}`: they \
                 must match exactly (a trailing slash counts)",
                settings.issuer
            )),
            None => check
                .problems
                .push("the discovery document names no issuer".into()),
        }

        // OpenID Connect Discovery: absent means client_secret_basic only.
        let auth_methods = strings(&document, "token_endpoint_auth_methods_supported")
            .unwrap_or_else(|| vec!["client_secret_basic".into()]);
        let configured = auth_method_name(settings.client_auth_method);
        if !auth_methods.iter().any(|m| m == configured) {
            check.problems.push(format!(
                "client_auth_method `{configured}` is not supported by the provider (it \
                 supports {})",
                auth_methods.join(", ")
            ));
        }

        if let Some(key) = &settings.client_key {
            // Absent means the provider does not say; only a list without ours is a problem.
            if let Some(algs) = strings(
                &document,
                "token_endpoint_auth_signing_alg_values_supported",
            ) {
                if !algs.iter().any(|alg| alg == key.alg()) {
                    check.problems.push(format!(
                        "the client key signs with {}, which the provider does not accept for \
                         client authentication (it accepts {})",
                        key.alg(),
                        algs.join(", ")
                    ));
                }
            }
        }

        match strings(&document, "code_challenge_methods_supported") {
            Some(methods) if methods.iter().any(|m| m == "S256") => {
                check.supports.push("PKCE S256: yes".into())
            }
            Some(methods) => check.problems.push(format!(
                "the provider does not support PKCE S256 (it supports {})",
                methods.join(", ")
            )),
            None => check
                .supports
                .push("PKCE S256: not advertised (gatehouse sends it anyway)".into()),
        }

        let response_types = strings(&document, "response_types_supported").unwrap_or_default();
        if !response_types.iter().any(|t| t == "code") {
            check
                .problems
                .push("the provider does not offer response_type `code`".into());
        }

        let algs = strings(&document, "id_token_signing_alg_values_supported").unwrap_or_default();
        let asymmetric = algs.iter().any(|alg| {
            serde_json::from_value::<CoreJwsSigningAlgorithm>(Value::String(alg.clone()))
                .is_ok_and(|a| is_asymmetric(&a))
        });
        if !asymmetric {
            check.problems.push(format!(
                "the provider signs ID tokens with no asymmetric algorithm gatehouse accepts \
                 (it advertises {})",
                algs.join(", ")
            ));
        }

        match document.get("jwks_uri").and_then(Value::as_str) {
            None => check
                .problems
                .push("the discovery document has no jwks_uri".into()),
            Some(jwks_uri) => match self.get_json::<Value>(jwks_uri).await {
                Ok((jwks, _)) => {
                    let keys = jwks["keys"].as_array().map_or(0, Vec::len);
                    if keys == 0 {
                        check
                            .problems
                            .push("the provider's key set holds no keys".into());
                    }
                }
                Err(error) => check.problems.push(format!("the key set: {error}")),
            },
        }

        if let Some(supported) = strings(&document, "scopes_supported") {
            let missing: Vec<&str> = settings
                .scopes
                .iter()
                .filter(|scope| !supported.contains(scope))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                check.supports.push(format!(
                    "scopes not advertised (the provider may still grant them): {}",
                    missing.join(", ")
                ));
            }
        }

        let has = |member: &str| document.get(member).and_then(Value::as_str).is_some();
        let flag = |member: &str| document.get(member).and_then(Value::as_bool) == Some(true);
        let offers_par = has("pushed_authorization_request_endpoint");
        let requires_par = flag("require_pushed_authorization_requests");
        match settings.pushed_authorization {
            PushedAuthorization::Never if requires_par => check.problems.push(
                "the provider requires pushed authorization requests \
                 (require_pushed_authorization_requests), but pushed_authorization = \"never\": \
                 every login would fail there; use \"auto\" or \"always\""
                    .into(),
            ),
            PushedAuthorization::Always if !offers_par => check.problems.push(
                "pushed_authorization = \"always\", but the provider advertises no pushed \
                 authorization request endpoint"
                    .into(),
            ),
            _ => {}
        }
        let named = document
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut extra = match serde_json::from_value::<ExtraMetadata>(document.clone()) {
            Ok(extra) => extra,
            Err(error) => {
                check
                    .problems
                    .push(format!("the discovery document: {error}"));
                ExtraMetadata::default()
            }
        };
        let sources = self.resolve_endpoints(&mut extra, &named).await;
        check.supports.extend([
            endpoint_line(
                "end-session (RP-initiated logout)",
                extra.end_session_endpoint.as_ref(),
                &sources,
                OptionalEndpoint::EndSession,
            ),
            endpoint_line(
                "token revocation",
                extra.revocation_endpoint.as_ref(),
                &sources,
                OptionalEndpoint::Revocation,
            ),
            endpoint_line(
                "token introspection",
                extra.introspection_endpoint.as_ref(),
                &sources,
                OptionalEndpoint::Introspection,
            ),
            format!(
                "back-channel logout: {}",
                advertised(flag("backchannel_logout_supported"))
            ),
            format!(
                "front-channel logout: {}{}",
                advertised(flag("frontchannel_logout_supported")),
                if flag("frontchannel_logout_session_supported") {
                    " (with iss and sid)"
                } else {
                    ""
                }
            ),
            format!(
                "issuer in authorization responses (RFC 9207): {}",
                advertised(flag("authorization_response_iss_parameter_supported"))
            ),
            format!(
                "pushed authorization requests: {}{}",
                advertised(has("pushed_authorization_request_endpoint")),
                if flag("require_pushed_authorization_requests") {
                    " (required)"
                } else {
                    ""
                }
            ),
        ]);
        if let Some(reason) = &sources.rfc8414_unused {
            check
                .supports
                .push(format!("RFC 8414 metadata: not used ({reason})"));
        }
        check.warnings = feature_warnings(settings, expect, &document, &extra);
        upstream_token_report(settings, expect.routes, &document, &mut check);
        acr_report(settings, &document, &mut check);
        check
    }
}

/// Step-up: the `acr_values_supported` the provider advertises, and a warning for each
/// `allowed_acr_values` entry it does not (a login asking for it may come back without it).
fn acr_report(settings: &ProviderSettings, document: &Value, check: &mut ProviderCheck) {
    let supported = strings(document, "acr_values_supported").unwrap_or_default();
    check.supports.push(if supported.is_empty() {
        "acr values (step-up): none advertised".to_owned()
    } else {
        format!("acr values (step-up): {}", supported.join(", "))
    });
    let unadvertised: Vec<&str> = settings
        .allowed_acr_values
        .iter()
        .filter(|acr| !supported.contains(acr))
        .map(String::as_str)
        .collect();
    if !unadvertised.is_empty() {
        check.warnings.push(format!(
            "allowed_acr_values not in the provider's acr_values_supported: {} (a step-up \
             login asking for them may come back without them, and fail with \
             login_error=insufficient_authentication)",
            unadvertised.join(", ")
        ));
    }
}

/// What is configured, or on by default, that this provider cannot do.
fn feature_warnings(
    settings: &ProviderSettings,
    expect: &Expectations<'_>,
    document: &Value,
    extra: &ExtraMetadata,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if extra.revocation_endpoint.is_none() {
        warnings.push(
            "no revocation endpoint (not in openid-configuration, not in RFC 8414 metadata, \
             not configured): refresh tokens stay valid at the provider after logout; set \
             revocation_endpoint if the provider has one"
                .to_owned(),
        );
        if expect.revocation_key {
            warnings.push(
                "session.revocation_key is set, but without a revocation endpoint a session \
                 ended from another one is only deleted"
                    .to_owned(),
            );
        }
    }
    if extra.end_session_endpoint.is_none() {
        warnings.push(format!(
            "no end-session endpoint: logout ends the session here and goes to {}, but the \
             provider's own session stays{}",
            settings.post_logout_redirect,
            if settings.end_session_id_token_hint {
                " (end_session_id_token_hint has nothing to apply to)"
            } else {
                ""
            }
        ));
    }
    let uses_client_credentials = expect.routes.iter().any(|route| {
        route.provider == settings.name
            && matches!(route.token, TokenPolicy::Client | TokenPolicy::UserOrClient)
    });
    if let Some(grants) = strings(document, "grant_types_supported") {
        for (needed, wanted, why) in [
            (
                "refresh_token",
                true,
                "sessions refresh their access tokens with it",
            ),
            (
                "client_credentials",
                uses_client_credentials,
                "routes with token = \"client\" or \"user-or-client\" need it",
            ),
        ] {
            if wanted && !grants.iter().any(|g| g == needed) {
                warnings.push(format!(
                    "the provider does not advertise the {needed} grant: {why}"
                ));
            }
        }
    }
    warnings
}

/// Tokens per upstream: whether the provider can give routes their own tokens (RFC 8707,
/// RFC 8693) and bind them (RFC 9449), with a warning for each route that needs what the
/// provider does not advertise.
fn upstream_token_report(
    settings: &ProviderSettings,
    routes: &[RouteSettings],
    document: &Value,
    check: &mut ProviderCheck,
) {
    // RFC 8707 defines no discovery member: only a token request can tell.
    check.supports.push(format!(
        "resource indicators (RFC 8707): not advertised in discovery (no standard member); \
         {} route resource(s) asked for at login",
        settings.resources.len()
    ));
    let exchange = strings(document, "grant_types_supported")
        .is_some_and(|grants| grants.iter().any(|g| g == TOKEN_EXCHANGE_GRANT));
    check.supports.push(format!(
        "token exchange (RFC 8693): {}",
        advertised(exchange)
    ));
    let exchange_routes = routes
        .iter()
        .filter(|route| route.provider == settings.name && route.token == TokenPolicy::Exchange)
        .count();
    if exchange_routes > 0 && !exchange {
        check.warnings.push(format!(
            "{exchange_routes} route(s) with token = \"exchange\" need the token-exchange \
             grant, which the provider does not advertise"
        ));
    }
    let dpop_algs = strings(document, "dpop_signing_alg_values_supported");
    check.supports.push(match &dpop_algs {
        Some(algs) => format!(
            "DPoP (RFC 9449): dpop_signing_alg_values_supported {}",
            algs.join(", ")
        ),
        None => "DPoP (RFC 9449): not advertised".to_owned(),
    });
    if settings.dpop && !dpop_algs.is_some_and(|algs| algs.iter().any(|a| a == DPOP_ALG)) {
        check.warnings.push(format!(
            "dpop = true, but the provider does not list {DPOP_ALG} in \
             dpop_signing_alg_values_supported: it may answer Bearer tokens, which gatehouse \
             then sends as Bearer (not sender-constrained)"
        ));
    }
}

/// The client registration this configuration needs at the provider.
fn what_to_register(
    settings: &ProviderSettings,
    public_url: &Url,
    routes: &[RouteSettings],
) -> Vec<(&'static str, String)> {
    let backchannel = public_url
        .join("auth/backchannel-logout")
        .map(String::from)
        .unwrap_or_default();
    let frontchannel = public_url
        .join("auth/frontchannel-logout")
        .map(String::from)
        .unwrap_or_default();
    let mut grants = vec!["authorization_code", "refresh_token"];
    let uses_client_credentials = routes.iter().any(|route| {
        route.provider == settings.name
            && matches!(route.token, TokenPolicy::Client | TokenPolicy::UserOrClient)
    });
    if uses_client_credentials {
        grants.push("client_credentials");
    }
    if routes
        .iter()
        .any(|route| route.provider == settings.name && route.token == TokenPolicy::Exchange)
    {
        grants.push(TOKEN_EXCHANGE_GRANT);
    }
    vec![
        ("redirect URI", settings.redirect_uri.to_string()),
        (
            "post-logout redirect URI",
            settings.post_logout_redirect.to_string(),
        ),
        ("back-channel logout URI", backchannel),
        (
            "front-channel logout URI",
            format!("{frontchannel} (with iss and sid; where offered, as at Entra ID)"),
        ),
        ("grant types", grants.join(", ")),
        (
            "client authentication",
            match &settings.client_key {
                Some(key) => format!(
                    "private_key_jwt, with the public key `{}` ({}) that `gatehouse keys jwks` \
                     prints",
                    key.kid(),
                    key.alg()
                ),
                None => auth_method_name(settings.client_auth_method).to_owned(),
            },
        ),
    ]
}
