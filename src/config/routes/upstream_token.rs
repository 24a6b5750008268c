//! A route's own token: one restricted to the route's audience (RFC 8707 `resource`, with
//! `scopes`), or one exchanged for it (RFC 8693, `token = "exchange"` and
//! `[routes.exchange]`). Both are obtained per session and kept sealed in it.

use serde::Deserialize;
use url::Url;

use super::TokenPolicy;

/// RFC 8693's token type for an access token: what an exchange asks for by default.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// `[routes.exchange]` as written.
#[derive(Debug, Deserialize, Default)]
pub(in crate::config) struct RawExchange {
    pub(in crate::config) audience: Option<String>,
    pub(in crate::config) scope: Option<String>,
    pub(in crate::config) requested_token_type: Option<String>,
}

/// RFC 8707: the resource a route's token is for, and the scopes asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceIndicator {
    /// An absolute URI without a fragment, sent as written.
    pub uri: String,
    /// Asked for on the resource's refresh (and at login); empty: what the grant holds.
    pub scopes: Vec<String>,
}

/// RFC 8693: what the user's access token is exchanged for on an exchange route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSettings {
    pub audience: Option<String>,
    pub scope: Option<String>,
    pub requested_token_type: String,
}

/// A scope as OAuth spells one: printable ASCII, no space, `"` or `\`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == b'!' || (b'#'..=b'[').contains(&b) || (b']'..=b'~').contains(&b))
}

/// `resource` and `scopes` of a route.
pub(super) fn validate_resource(
    at: &dyn Fn(&str) -> String,
    resource: Option<String>,
    scopes: Option<Vec<String>>,
    token: TokenPolicy,
    problems: &mut Vec<String>,
) -> Option<ResourceIndicator> {
    let scopes = scopes.unwrap_or_default();
    for scope in &scopes {
        if !is_scope_token(scope) {
            problems.push(format!("{}: `{scope}` is not a scope", at("scopes")));
        }
    }
    let Some(uri) = resource else {
        if !scopes.is_empty() {
            problems.push(format!(
                "{} applies only with `resource` (the scopes of the route's own token)",
                at("scopes")
            ));
        }
        return None;
    };
    match Url::parse(&uri) {
        Ok(url) if url.fragment().is_none() && !url.cannot_be_a_base() => {}
        _ => problems.push(format!(
            "{}: `{uri}` must be an absolute URI without a fragment (RFC 8707)",
            at("resource")
        )),
    }
    if token != TokenPolicy::User {
        problems.push(format!(
            "{}: a resource token stands in for the user's token, so it needs token = \"user\" \
             (an exchange names its audience in [routes.exchange])",
            at("resource")
        ));
    }
    Some(ResourceIndicator { uri, scopes })
}

/// `[routes.exchange]`, which goes with `token = "exchange"` and only with it.
pub(super) fn validate_exchange(
    at: &dyn Fn(&str) -> String,
    raw: Option<RawExchange>,
    token: TokenPolicy,
    problems: &mut Vec<String>,
) -> Option<ExchangeSettings> {
    let Some(raw) = raw else {
        if token == TokenPolicy::Exchange {
            problems.push(format!(
                "{}: token = \"exchange\" needs a [routes.exchange] table (audience, scope, \
                 requested_token_type)",
                at("exchange")
            ));
        }
        return None;
    };
    if token != TokenPolicy::Exchange {
        problems.push(format!(
            "{} applies only with token = \"exchange\"",
            at("exchange")
        ));
    }
    if raw.audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
        problems.push(format!("{} must not be empty", at("exchange.audience")));
    }
    if let Some(scope) = &raw.scope {
        if scope.split(' ').any(|s| !is_scope_token(s)) {
            problems.push(format!(
                "{}: `{scope}` is not a space-separated list of scopes",
                at("exchange.scope")
            ));
        }
    }
    let requested_token_type = raw
        .requested_token_type
        .unwrap_or_else(|| ACCESS_TOKEN_TYPE.to_owned());
    if Url::parse(&requested_token_type).is_err() {
        problems.push(format!(
            "{}: `{requested_token_type}` is not a token type URI (e.g. {ACCESS_TOKEN_TYPE})",
            at("exchange.requested_token_type")
        ));
    }
    Some(ExchangeSettings {
        audience: raw.audience,
        scope: raw.scope,
        requested_token_type,
    })
}
