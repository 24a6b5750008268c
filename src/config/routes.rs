//! `[[routes]]`: the API routes the proxy serves, with their token policy, requirements
//! and upstream TLS.

use super::*;

mod headers;
mod step_up;
mod template;
mod upstream_token;
use headers::{validate_forward_headers, validate_injected_headers};
use step_up::validate_step_up;
pub use step_up::{is_auth_value, StepUpRequirement};
pub use template::{PathTemplate, TemplateSegment};
use upstream_token::{validate_exchange, validate_resource, RawExchange};
pub use upstream_token::{ExchangeSettings, ResourceIndicator, ACCESS_TOKEN_TYPE};

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawRoute {
    pub(super) prefix: Option<String>,
    pub(super) upstream: Option<String>,
    pub(super) token: Option<String>,
    pub(super) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) require: RawRequire,
    pub(super) timeout_secs: Option<u64>,
    pub(super) max_duration_secs: Option<u64>,
    pub(super) max_body_bytes: Option<u64>,
    /// Which provider's client-credentials token `client` routes use (default provider).
    pub(super) provider: Option<String>,
    /// Scopes to ask for in the client-credentials grant.
    pub(super) client_scopes: Option<Vec<String>>,
    pub(super) pass_set_cookie: Option<bool>,
    pub(super) send_user_id_header: Option<bool>,
    pub(super) rate_limit: Option<RawLimit>,
    pub(super) tls: Option<RawRouteTls>,
    /// Header name -> where its secret value comes from (`[routes.inject_headers]`).
    pub(super) inject_headers: Option<BTreeMap<String, RawInjectedHeader>>,
    /// WebSocket upgrades are tunnelled (frames, not bytes) with the token attached.
    pub(super) websocket: Option<bool>,
    pub(super) websocket_idle_secs: Option<u64>,
    /// `false` for an upstream that ignores case (IIS, many Java and Windows stacks).
    pub(super) match_case: Option<bool>,
    /// The API's own request headers a browser may send it, beyond the default list.
    pub(super) forward_headers: Option<Vec<String>>,
    /// `Cache-Control: private, no-store` on answers that carried a user's token.
    pub(super) cache_private: Option<bool>,
    /// RFC 8707: the audience of the route's own token (with `token = "user"`).
    pub(super) resource: Option<String>,
    /// The scopes asked for `resource`.
    pub(super) scopes: Option<Vec<String>>,
    /// RFC 8693, with `token = "exchange"`.
    pub(super) exchange: Option<RawExchange>,
    /// The route's name: the Cedar resource `Route::"<name>"` (default: the prefix).
    pub(super) name: Option<String>,
    /// Path templates after the prefix (`"/{order_id}/refund"`), one or a list.
    pub(super) path: Option<StringOrList>,
    /// Every call is decided by the `[policies]` set.
    pub(super) policy: Option<bool>,
}

/// A server-held secret for a header: `{ env = "NAME" }` or `{ file = "/path" }`.
#[derive(Debug, Deserialize)]
pub(super) struct RawInjectedHeader {
    pub(super) env: Option<String>,
    pub(super) file: Option<PathBuf>,
}

/// How gatehouse authenticates an upstream, and itself to it (`[routes.tls]`).
#[derive(Debug, Deserialize, Default)]
pub(super) struct RawRouteTls {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert_file: Option<PathBuf>,
    pub(super) client_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) server_name: Option<String>,
}

/// Claims that only serve the protocol: a session keeps none of them among its claims (what
/// the login proved, `acr`, `amr`, `auth_time`, is kept apart); the SPA gets the rest.
pub const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "azp",
    "jti",
    "sid",
    "auth_time",
    "acr",
    "amr",
];

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawRequire {
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    /// claim name -> values the claim must contain (all of them).
    #[serde(default)]
    pub(super) claims: BTreeMap<String, StringOrList>,
    /// Step-up: the login's `acr` must be one of these.
    #[serde(default)]
    pub(super) acr: Vec<String>,
    /// Step-up: the login's `amr` must contain all of these.
    #[serde(default)]
    pub(super) amr: Vec<String>,
    /// Step-up: the login's `auth_time` at most this long ago.
    pub(super) max_auth_age_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// Which token a proxied call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPolicy {
    /// The user's access token; anonymous calls get 401.
    User,
    /// gatehouse's own client-credentials token.
    Client,
    /// The user's token when logged in, else the client token.
    UserOrClient,
    /// The user's token when logged in, else no token.
    Optional,
    /// Never a token.
    None,
    /// The user's access token exchanged for one of the route's own (RFC 8693).
    Exchange,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// Matched on whole path segments; no trailing slash.
    pub prefix: String,
    /// Absolute base URL; the prefix is replaced by its path.
    pub upstream: Url,
    pub token: TokenPolicy,
    /// Upper-case method names; empty means any.
    pub methods: Vec<String>,
    pub required_scopes: Vec<String>,
    pub required_claims: BTreeMap<String, Vec<String>>,
    /// Step-up requirements (`acr`, `amr`, `max_auth_age_secs`); 401 when not met.
    pub step_up: StepUpRequirement,
    /// How long the upstream may take to answer with its response head (a streamed body,
    /// e.g. server-sent events, may then run on).
    pub timeout: Duration,
    /// Ends a response body still streaming after this long; `None`: no limit.
    pub max_duration: Option<Duration>,
    pub max_body_bytes: u64,
    pub provider: String,
    pub client_scopes: Vec<String>,
    pub pass_set_cookie: bool,
    pub send_user_id_header: bool,
    pub rate_limit: RouteRateLimit,
    /// Its own TLS trust and client identity; `None` uses the shared client (web roots).
    pub tls: Option<RouteTlsSettings>,
    /// Headers gatehouse adds from secrets it holds (an API key the browser never sees); a
    /// header of the same name from the browser is dropped.
    pub inject_headers: Vec<InjectedHeader>,
    /// `None`: an upgrade is not tunnelled (the request goes on as a plain one).
    pub websocket: Option<WebSocketSettings>,
    /// `false`: the prefix matches in any case (and the Unicode characters that fold to
    /// its letters), for an upstream that reads paths that way.
    pub match_case: bool,
    /// Request headers of this API's own that the browser may send it, beyond the default
    /// allow-list (lower case, compared as spelled: `_` is not `-`). Never one of the names
    /// in `reserved_headers`, the anti-forgery header or an injected one.
    pub forward_headers: Vec<String>,
    /// A response to a call that carried the user's token gets `Cache-Control: private,
    /// no-store` when the upstream sent no `Cache-Control` of its own.
    pub cache_private: bool,
    /// RFC 8707: calls carry a token for this resource alone instead of the session's own.
    pub resource: Option<ResourceIndicator>,
    /// RFC 8693 (`token = "exchange"`): what the user's token is exchanged for.
    pub exchange: Option<ExchangeSettings>,
    /// The route's name, unique: the Cedar resource `Route::"<name>"`.
    pub name: String,
    /// When not empty, the route serves only paths (after its prefix) that fit one of
    /// these; their parameters are the resource's attributes.
    pub templates: Vec<PathTemplate>,
    /// Every call is decided by the `[policies]` set (after scopes, claims and step-up).
    pub policy: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct WebSocketSettings {
    /// A socket with no message either way for this long is closed.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct InjectedHeader {
    /// Lower-case.
    pub name: String,
    pub value: SecretString,
}

/// The default: the web roots, no client certificate, the URL's own host name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTlsSettings {
    /// Trust only this CA (PEM, one or more certificates) for the upstream, not the web roots.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: the certificate chain and key gatehouse presents to the upstream.
    pub client_identity: Option<CertKeyFiles>,
    /// The name the upstream's certificate is verified against instead of the URL's host.
    pub server_name: Option<String>,
}

/// Paths gatehouse answers itself; no route may shadow them.
pub(super) const RESERVED_PREFIXES: &[&str] = &["/auth", "/healthz", "/readyz", "/metrics"];

pub(super) fn validate_routes(
    raw: Vec<RawRoute>,
    default_provider: &str,
    providers: &BTreeMap<String, RawProvider>,
    env: &BTreeMap<String, String>,
    csrf_header: &str,
    problems: &mut Vec<String>,
) -> Vec<RouteSettings> {
    let mut routes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    for (index, route) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("routes[{index}].{field}");
        let start = problems.len();
        let prefix = match route.prefix {
            None => {
                problems.push(format!("{} is required", at("prefix")));
                String::new()
            }
            Some(prefix) => {
                let segments_ok = prefix.starts_with('/')
                    && prefix.len() > 1
                    && !prefix.ends_with('/')
                    && prefix[1..].split('/').all(|s| {
                        !s.is_empty()
                            && s != "."
                            && !s.ends_with('.')
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                    });
                if !segments_ok {
                    problems.push(format!(
                        "{}: `{prefix}` must be a path like /api/orders (no trailing slash, plain segments)",
                        at("prefix")
                    ));
                }
                if let Some(reserved) = RESERVED_PREFIXES
                    .iter()
                    .find(|r| prefix == **r || prefix.starts_with(&format!("{r}/")))
                {
                    problems.push(format!(
                        "{}: `{prefix}` would shadow gatehouse's own {reserved}",
                        at("prefix")
                    ));
                }
                if !seen.insert(prefix.clone()) {
                    problems.push(format!(
                        "{}: `{prefix}` is used by another route",
                        at("prefix")
                    ));
                }
                prefix
            }
        };
        let upstream = match route.upstream.as_deref().map(Url::parse) {
            None => {
                problems.push(format!("{} is required", at("upstream")));
                None
            }
            Some(Ok(url))
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(url)
            }
            Some(Ok(url)) => {
                problems.push(format!(
                    "{}: `{url}` must be an absolute http(s) URL without credentials, query or fragment",
                    at("upstream")
                ));
                None
            }
            Some(Err(e)) => {
                problems.push(format!(
                    "{}: {e} (an absolute http(s) URL is needed)",
                    at("upstream")
                ));
                None
            }
        };
        let token = match route.token.as_deref().unwrap_or("user") {
            "user" => TokenPolicy::User,
            "client" => TokenPolicy::Client,
            "user-or-client" => TokenPolicy::UserOrClient,
            "optional" => TokenPolicy::Optional,
            "none" => TokenPolicy::None,
            "exchange" => TokenPolicy::Exchange,
            other => {
                problems.push(format!(
                    "{}: `{other}` is not one of user, client, user-or-client, optional, none, exchange",
                    at("token")
                ));
                TokenPolicy::User
            }
        };
        let methods: Vec<String> = route
            .methods
            .unwrap_or_default()
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in &methods {
            if actix_web::http::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty()
            {
                problems.push(format!(
                    "{}: `{method}` is not an HTTP method",
                    at("methods")
                ));
            }
        }
        let provider = route
            .provider
            .unwrap_or_else(|| default_provider.to_owned());
        let step_up = validate_step_up(
            &at("require"),
            &route.require,
            providers.get(&provider),
            &provider,
            problems,
        );
        let required_claims: BTreeMap<String, Vec<String>> = route
            .require
            .claims
            .into_iter()
            .map(|(claim, values)| match values {
                StringOrList::One(value) => (claim, vec![value]),
                StringOrList::Many(values) => (claim, values),
            })
            .collect();
        for claim in required_claims
            .keys()
            .filter(|claim| PROTOCOL_CLAIMS.contains(&claim.as_str()))
        {
            problems.push(format!(
                "{}: `{claim}` is a protocol claim the session does not keep among its claims, so this requirement could never hold (what the login proved is required with require.acr, require.amr and require.max_auth_age_secs)",
                at("require.claims")
            ));
        }
        let has_requirements =
            !route.require.scopes.is_empty() || !required_claims.is_empty() || !step_up.is_empty();
        if has_requirements && !matches!(token, TokenPolicy::User | TokenPolicy::Exchange) {
            problems.push(format!(
                "{}: scope, claim and step-up requirements need token = \"user\" or \"exchange\" (they are checked against the user's session)",
                at("require")
            ));
        }
        if !providers.contains_key(&provider) && !provider.is_empty() {
            problems.push(format!(
                "{}: `{provider}` is not a configured provider",
                at("provider")
            ));
        }
        let rate_limit = match route.rate_limit {
            None => RouteRateLimit::Default,
            Some(raw) => parse_limit(raw, None, &at("rate_limit"), problems),
        };
        let timeout = Duration::from_secs(route.timeout_secs.unwrap_or(30));
        if timeout.is_zero() {
            problems.push(format!("{} must be greater than zero", at("timeout_secs")));
        }
        let max_duration = route.max_duration_secs.map(Duration::from_secs);
        if max_duration.is_some_and(|d| d.is_zero()) {
            problems.push(format!(
                "{} must be greater than zero",
                at("max_duration_secs")
            ));
        }
        let tls = route.tls.and_then(|raw| {
            validate_route_tls(
                &at("tls"),
                raw,
                upstream.as_ref(),
                SystemTime::now(),
                problems,
            )
        });
        let inject_headers = route
            .inject_headers
            .map(|raw| validate_injected_headers(&at("inject_headers"), raw, env, problems))
            .unwrap_or_default();
        let websocket = match (route.websocket, route.websocket_idle_secs) {
            (Some(true), idle) => {
                if !methods.is_empty() && !methods.iter().any(|m| m == "GET") {
                    problems.push(format!(
                        "{}: a WebSocket opens with GET, so `methods` must include it",
                        at("websocket")
                    ));
                }
                let idle = Duration::from_secs(idle.unwrap_or(300));
                if idle.is_zero() {
                    problems.push(format!(
                        "{} must be greater than zero",
                        at("websocket_idle_secs")
                    ));
                }
                Some(WebSocketSettings { idle })
            }
            (_, Some(_)) => {
                problems.push(format!(
                    "{} applies only with `websocket = true`",
                    at("websocket_idle_secs")
                ));
                None
            }
            (_, None) => None,
        };
        let forward_headers = validate_forward_headers(
            &at("forward_headers"),
            route.forward_headers.unwrap_or_default(),
            &inject_headers,
            csrf_header,
            problems,
        );
        let resource = validate_resource(&at, route.resource, route.scopes, token, problems);
        let exchange = validate_exchange(&at, route.exchange, token, problems);
        let name = route.name.unwrap_or_else(|| prefix.clone());
        if name.is_empty() || name.chars().any(char::is_control) {
            problems.push(format!(
                "{}: a route name must be printable text",
                at("name")
            ));
        } else if !names.insert(name.clone()) {
            problems.push(format!("{}: `{name}` is used by another route", at("name")));
        }
        let templates = match route.path {
            None => Vec::new(),
            Some(StringOrList::One(path)) => vec![path],
            Some(StringOrList::Many(paths)) => paths,
        }
        .iter()
        .filter_map(|path| {
            template::parse_template(path)
                .map_err(|problem| problems.push(format!("{}: {problem}", at("path"))))
                .ok()
        })
        .collect();
        let policy = route.policy.unwrap_or(false);
        if policy && token != TokenPolicy::User {
            problems.push(format!(
                "{}: a policy route needs token = \"user\" (the principal is the session's user)",
                at("policy")
            ));
        }
        if policy && route.websocket == Some(true) {
            problems.push(format!(
                "{}: WebSocket routes are not decided by policies yet",
                at("policy")
            ));
        }
        if problems.len() > start {
            continue;
        }
        let Some(upstream) = upstream else { continue };
        routes.push(RouteSettings {
            prefix,
            upstream,
            token,
            methods,
            required_scopes: route.require.scopes,
            required_claims,
            step_up,
            timeout,
            max_duration,
            max_body_bytes: route.max_body_bytes.unwrap_or(10 * 1024 * 1024),
            provider,
            client_scopes: route.client_scopes.unwrap_or_default(),
            pass_set_cookie: route.pass_set_cookie.unwrap_or(false),
            send_user_id_header: route.send_user_id_header.unwrap_or(false),
            rate_limit,
            tls,
            inject_headers,
            websocket,
            match_case: route.match_case.unwrap_or(true),
            forward_headers,
            cache_private: route.cache_private.unwrap_or(true),
            resource,
            exchange,
            name,
            templates,
            policy,
        });
    }
    routes
}

/// `[routes.tls]`: a pinned CA, a client identity for mutual TLS, a name override.
pub(super) fn validate_route_tls(
    at: &str,
    raw: RawRouteTls,
    upstream: Option<&Url>,
    now: SystemTime,
    problems: &mut Vec<String>,
) -> Option<RouteTlsSettings> {
    let start = problems.len();
    if upstream.is_some_and(|url| url.scheme() != "https") {
        problems.push(format!("{at} needs an https upstream"));
    }
    let client_identity = validate_client_tls_files(
        at,
        raw.ca_file.as_deref(),
        raw.client_cert_file,
        raw.client_key_file,
        now,
        problems,
    );
    if let Some(name) = &raw.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            problems.push(format!(
                "{at}.server_name: `{name}` is not a DNS name or IP address"
            ));
        }
    }
    if problems.len() > start {
        return None;
    }
    Some(RouteTlsSettings {
        ca_file: raw.ca_file,
        client_identity,
        server_name: raw.server_name,
    })
}
