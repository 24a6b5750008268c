//! The token-attaching reverse proxy: route table, path safety, header policy, the
//! decision of which token a call carries, and forwarding (bodies, upgrades, WebSockets).

pub mod client_credentials;
pub mod dpop;
pub mod forward;
pub mod headers;
pub mod path;
pub mod routes;
pub mod step_up;
pub mod template;
pub mod upstream;
pub mod websocket;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use secrecy::SecretString;
use serde_json::Value;
use url::Url;

use crate::clock::UnixMillis;
use crate::config::{RouteSettings, RouteTlsSettings, TokenPolicy};
use crate::dpop::DpopKey;
use crate::oidc::{OidcError, Providers};
use crate::session::{LoadedSession, RouteTokenFor};
use crate::tls::{upstream_client_config, TlsError};
use client_credentials::ClientTokenCache;
pub use routes::RouteTable;
use upstream::UpstreamClient;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("not logged in")]
    Unauthenticated,
    #[error("the session does not meet the route's requirements: {0}")]
    Forbidden(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed { allow: Vec<String> },
    #[error("request body larger than the route allows")]
    BodyTooLarge,
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    /// The upstream's certificate was not trusted, or it refused ours.
    #[error("TLS with the upstream failed: {0}")]
    UpstreamTls(String),
    #[error("no token for the upstream: {0}")]
    Token(#[from] OidcError),
    /// The session lacks the route's own token (or the key it is bound to) although it was
    /// just obtained: a store that lost a write, or a corrupt session (503).
    #[error("the session holds no token for this route")]
    NoRouteToken,
    /// The session's authentication is not strong or recent enough for the route (401).
    #[error("step-up required: {}", .0.reason)]
    StepUpRequired(step_up::StepUpChallenge),
}

pub struct Proxy {
    pub table: RouteTable,
    /// One pooled client for every upstream: no total timeout (bodies stream), but bounded
    /// connect and per-read waits, and redirects are passed back, never followed.
    http: UpstreamClient,
    /// Routes with a `[routes.tls]` table, by prefix: a client each, so that one route's
    /// pinned CA or client certificate never applies to (or pools with) another upstream.
    route_http: HashMap<String, UpstreamClient>,
    /// WebSocket routes, by prefix: HTTP/1.1 only (the upgrade), and no read timeout (an
    /// open socket may be quiet; `websocket_idle_secs` bounds that).
    websocket_http: HashMap<String, reqwest::Client>,
    /// The client-credentials token cache of each route that may use one, by route prefix
    /// (routes with the same provider and scopes share a cache).
    client_tokens: HashMap<String, Arc<ClientTokenCache>>,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` for every call: the public URL's scheme
    /// and host (with its port, when it has one), made once.
    pub forwarded_proto: HeaderValue,
    pub forwarded_host: HeaderValue,
    /// RFC 9449: the nonce each upstream origin last asked DPoP proofs to carry.
    pub dpop_nonces: dpop::UpstreamNonces,
}

/// The token a call carries: the session's own or one of its route tokens (borrowed, not
/// copied per call), or a client-credentials token.
pub enum UpstreamToken<'a> {
    User(&'a SecretString),
    /// A user's token bound to the session's DPoP key (RFC 9449): sent as `DPoP` with a
    /// fresh proof of that key.
    UserDpop(&'a SecretString, &'a DpopKey),
    Client(SecretString),
}

impl UpstreamToken<'_> {
    pub fn secret(&self) -> &SecretString {
        match self {
            Self::User(token) | Self::UserDpop(token, _) => token,
            Self::Client(token) => token,
        }
    }

    /// Whether it is a user's token (the answer is then kept out of shared caches).
    pub fn is_users(&self) -> bool {
        !matches!(self, Self::Client(_))
    }
}

/// The session's own token, or the route's (RFC 8707 resource, RFC 8693 exchange), as the
/// call carries it: bound ones with the session's DPoP key.
fn user_token<'s>(
    route: &RouteSettings,
    session: &'s LoadedSession,
) -> Result<UpstreamToken<'s>, ProxyError> {
    let data = &session.data;
    let (token, bound) = match (&route.resource, route.token) {
        (_, TokenPolicy::Exchange) => {
            let held = data
                .route_tokens
                .get(RouteTokenFor::Exchange(&route.prefix))
                .ok_or(ProxyError::NoRouteToken)?;
            (&held.access_token, held.dpop_bound)
        }
        (Some(resource), _) => {
            let held = data
                .route_tokens
                .get(RouteTokenFor::Resource(&resource.uri))
                .ok_or(ProxyError::NoRouteToken)?;
            (&held.access_token, held.dpop_bound)
        }
        (None, _) => (&data.tokens.access_token, data.tokens.dpop_bound),
    };
    match data.dpop_key.as_ref().and_then(|key| key.key()) {
        Some(key) if bound => Ok(UpstreamToken::UserDpop(token, key)),
        None if bound => Err(ProxyError::NoRouteToken),
        _ => Ok(UpstreamToken::User(token)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyBuildError {
    #[error(transparent)]
    Client(#[from] reqwest::Error),
    #[error("route {prefix}: {source}")]
    RouteTls { prefix: String, source: TlsError },
    #[error("upstream TLS: {0}")]
    DefaultTls(TlsError),
}

/// The WebSocket handshakes' clients: no read timeout (an open socket may be quiet;
/// `websocket_idle_secs` bounds that), HTTP/1.1 only (the upgrade).
fn connection_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
}

fn client_token_key(route: &RouteSettings) -> String {
    format!("{}\u{0}{}", route.provider, route.client_scopes.join(" "))
}

impl Proxy {
    pub fn new(
        routes: Vec<RouteSettings>,
        providers: &Providers,
        public_url: &Url,
    ) -> Result<Self, ProxyBuildError> {
        // No route TLS: the web roots, and h2 when the upstream offers it.
        let mut default_tls = upstream_client_config(&RouteTlsSettings::default())
            .map_err(ProxyBuildError::DefaultTls)?;
        default_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = UpstreamClient::new(default_tls);
        let mut route_http = HashMap::new();
        let mut websocket_http = HashMap::new();
        for route in &routes {
            let tls = match &route.tls {
                Some(tls) => Some(upstream_client_config(tls).map_err(|source| {
                    ProxyBuildError::RouteTls {
                        prefix: route.prefix.clone(),
                        source,
                    }
                })?),
                None => None,
            };
            if let Some(config) = &tls {
                route_http.insert(route.prefix.clone(), UpstreamClient::new(config.clone()));
            }
            if route.websocket.is_some() {
                let mut builder = connection_builder().http1_only();
                if let Some(config) = tls {
                    builder = builder.use_preconfigured_tls(config);
                }
                websocket_http.insert(route.prefix.clone(), builder.build()?);
            }
        }
        let mut by_key: HashMap<String, Arc<ClientTokenCache>> = HashMap::new();
        let mut client_tokens = HashMap::new();
        for route in &routes {
            if matches!(route.token, TokenPolicy::Client | TokenPolicy::UserOrClient) {
                if let Some(provider) = providers.get(Some(&route.provider)) {
                    let cache = by_key.entry(client_token_key(route)).or_insert_with(|| {
                        Arc::new(ClientTokenCache::new(
                            provider.clone(),
                            route.client_scopes.clone(),
                        ))
                    });
                    client_tokens.insert(route.prefix.clone(), cache.clone());
                }
            }
        }
        let host = public_url.host_str().unwrap_or_default();
        let public_host = match public_url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self {
            table: RouteTable::new(routes),
            http,
            route_http,
            websocket_http,
            client_tokens,
            // A URL's scheme and host are always valid header values.
            forwarded_proto: HeaderValue::from_str(public_url.scheme())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            forwarded_host: HeaderValue::from_str(&public_host)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            dpop_nonces: dpop::UpstreamNonces::default(),
        })
    }

    /// The client that reaches this route's upstream.
    pub fn client_for(&self, route: &RouteSettings) -> &UpstreamClient {
        self.route_http.get(&route.prefix).unwrap_or(&self.http)
    }

    /// The client that opens WebSockets to this route's upstream (`None`: not a WebSocket
    /// route).
    pub fn websocket_client_for(&self, route: &RouteSettings) -> Option<&reqwest::Client> {
        self.websocket_http.get(&route.prefix)
    }

    pub fn check_method(route: &RouteSettings, method: &str) -> Result<(), ProxyError> {
        if route.methods.is_empty() || route.methods.iter().any(|m| m == method) {
            Ok(())
        } else {
            Err(ProxyError::MethodNotAllowed {
                allow: route.methods.clone(),
            })
        }
    }

    /// The token this call carries, or why it may not proceed.
    pub async fn token_for<'s>(
        &self,
        route: &RouteSettings,
        session: Option<&'s LoadedSession>,
        now: UnixMillis,
    ) -> Result<Option<UpstreamToken<'s>>, ProxyError> {
        let user_token = match session {
            Some(session) if route.token != TokenPolicy::None => Some(user_token(route, session)?),
            _ => None,
        };
        match route.token {
            TokenPolicy::None => Ok(None),
            TokenPolicy::Optional => Ok(user_token),
            TokenPolicy::User | TokenPolicy::Exchange => {
                let session = session.ok_or(ProxyError::Unauthenticated)?;
                check_requirements(route, session)?;
                step_up::check(&route.step_up, &session.data.authentication, now)
                    .map_err(ProxyError::StepUpRequired)?;
                Ok(user_token)
            }
            TokenPolicy::Client => Ok(Some(UpstreamToken::Client(
                self.client_token(route, now).await?,
            ))),
            TokenPolicy::UserOrClient => match user_token {
                Some(token) => Ok(Some(token)),
                None => Ok(Some(UpstreamToken::Client(
                    self.client_token(route, now).await?,
                ))),
            },
        }
    }

    async fn client_token(
        &self,
        route: &RouteSettings,
        now: UnixMillis,
    ) -> Result<SecretString, ProxyError> {
        let cache = self
            .client_tokens
            .get(&route.prefix)
            .ok_or_else(|| ProxyError::Token(OidcError::NotReady(route.provider.clone())))?;
        Ok(cache.token(now).await?)
    }
}

/// Scopes the user's access token was granted, and claim values the session holds.
pub fn check_requirements(
    route: &RouteSettings,
    session: &LoadedSession,
) -> Result<(), ProxyError> {
    let granted: Vec<&str> = session
        .data
        .tokens
        .scope
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .collect();
    for scope in &route.required_scopes {
        if !granted.contains(&scope.as_str()) {
            return Err(ProxyError::Forbidden(format!(
                "scope `{scope}` not granted"
            )));
        }
    }
    if route.required_claims.is_empty() {
        return Ok(());
    }
    let claims = session.data.claims.to_map();
    for (claim, wanted) in &route.required_claims {
        let present: Vec<&str> = match claims.get(claim) {
            Some(Value::String(value)) => vec![value.as_str()],
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
            Some(Value::Bool(true)) => vec!["true"],
            _ => vec![],
        };
        for value in wanted {
            if !present.contains(&value.as_str()) {
                return Err(ProxyError::Forbidden(format!(
                    "claim `{claim}` lacks `{value}`"
                )));
            }
        }
    }
    Ok(())
}
