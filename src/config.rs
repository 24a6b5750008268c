//! Typed, validated configuration.
//!
//! Sources, later ones winning: a TOML file, then `GATEHOUSE_…` environment variables with
//! nested keys joined by `__` (`GATEHOUSE_PROVIDERS__MAIN__CLIENT_ID`). A `.env` file is
//! loaded into the environment by the CLI before this runs. Loading is a pure function of
//! the file text and the environment, so tests build settings without touching the process.
//!
//! Every problem is collected and reported together: unknown keys (found with
//! `serde_ignored`, which, unlike `deny_unknown_fields`, does not stop at the first one), type
//! errors, and the semantic checks of `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::ratelimit::RateLimit;

pub const ENV_PREFIX: &str = "GATEHOUSE_";
/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["GATEHOUSE_CONFIG", "GATEHOUSE_LOG"];

/// Every problem found in a configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration has {} problem(s):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------
// The file / environment shape
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
struct RawSettings {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    redis: RawRedis,
    #[serde(default)]
    csrf: RawCsrf,
    #[serde(default)]
    log: RawLog,
    default_provider: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    frontend: RawFrontend,
    #[serde(default)]
    rate_limits: RawRateLimits,
}

#[derive(Debug, Deserialize, Default)]
struct RawRateLimits {
    login: Option<RawLimit>,
    api: Option<RawLimit>,
}

/// A rate limit: a `{ requests, per_secs }` table, or `"off"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawLimit {
    Word(String),
    Table {
        requests: Option<i64>,
        per_secs: Option<i64>,
    },
}

#[derive(Debug, Deserialize, Default)]
struct RawFrontend {
    dir: Option<PathBuf>,
    dev_server: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    content_security_policy: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    referrer_policy: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RawRoute {
    prefix: Option<String>,
    upstream: Option<String>,
    token: Option<String>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    require: RawRequire,
    timeout_secs: Option<u64>,
    max_body_bytes: Option<u64>,
    /// Which provider's client-credentials token `client` routes use (default provider).
    provider: Option<String>,
    /// Scopes to ask for in the client-credentials grant.
    client_scopes: Option<Vec<String>>,
    pass_set_cookie: Option<bool>,
    send_user_id_header: Option<bool>,
    rate_limit: Option<RawLimit>,
    tls: Option<RawRouteTls>,
}

/// How gatehouse authenticates an upstream, and itself to it (`[routes.tls]`).
#[derive(Debug, Deserialize, Default)]
struct RawRouteTls {
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    server_name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RawRequire {
    #[serde(default)]
    scopes: Vec<String>,
    /// claim name -> values the claim must contain (all of them).
    #[serde(default)]
    claims: BTreeMap<String, StringOrList>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, Default)]
struct RawServer {
    bind: Option<String>,
    public_url: Option<String>,
    insecure_http: Option<bool>,
    shutdown_timeout_secs: Option<u64>,
    workers: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    max_header_bytes: Option<i64>,
    header_timeout_ms: Option<i64>,
    tls: Option<RawServerTls>,
    http_redirect_bind: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RawServerTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
struct RawSession {
    #[serde(default, deserialize_with = "string_from_scalar")]
    cookie_name: Option<String>,
    idle_timeout_secs: Option<u64>,
    absolute_timeout_secs: Option<u64>,
    touch_interval_secs: Option<u64>,
    login_state_ttl_secs: Option<u64>,
    refresh_skew_secs: Option<u64>,
    refresh_lock_ttl_ms: Option<u64>,
    refresh_wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
struct RawRedis {
    #[serde(default, deserialize_with = "secret_from_scalar")]
    url: Option<SecretString>,
    url_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    key_prefix: Option<String>,
    connect_timeout_ms: Option<u64>,
    response_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
struct RawCsrf {
    #[serde(default, deserialize_with = "string_from_scalar")]
    header: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    value: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RawLog {
    format: Option<String>,
    filter: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RawProvider {
    issuer: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "secret_from_scalar")]
    client_secret: Option<SecretString>,
    client_secret_file: Option<PathBuf>,
    client_auth_method: Option<String>,
    scopes: Option<Vec<String>>,
    #[serde(default)]
    extra_authorize_params: BTreeMap<String, String>,
    post_logout_redirect: Option<String>,
    http_timeout_secs: Option<u64>,
    clock_skew_secs: Option<u64>,
    end_session_id_token_hint: Option<bool>,
}

/// Environment values arrive as text; a numeric client secret is still a string.
fn secret_from_scalar<'de, D>(deserializer: D) -> Result<Option<SecretString>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(string_from_scalar(deserializer)?.map(SecretString::from))
}

fn string_from_scalar<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(
        Option::<Scalar>::deserialize(deserializer)?.map(|scalar| match scalar {
            Scalar::Text(text) => text,
            Scalar::Integer(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }),
    )
}

// ---------------------------------------------------------------------------------------
// The validated settings the application runs on
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub session: SessionSettings,
    pub store: StoreSettings,
    pub csrf: CsrfSettings,
    pub log: LogSettings,
    pub default_provider: String,
    pub providers: BTreeMap<String, ProviderSettings>,
    pub routes: Vec<RouteSettings>,
    pub frontend: FrontendSettings,
    pub rate_limits: RateLimitSettings,
}

/// Limits over all instances (kept in the store). `None`: off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// Per client IP, on `/auth/login` and `/auth/callback`.
    pub login: Option<RateLimit>,
    /// Per session (per client IP without one), over every route without its own limit.
    pub api: Option<RateLimit>,
}

/// A route's limit: the `[rate_limits.api]` default, its own, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRateLimit {
    Default,
    Own(RateLimit),
    Off,
}

/// What gatehouse serves for the paths that are neither its own nor a proxy route, and the
/// security headers it puts on every response.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    pub source: FrontendSource,
    /// `None` when configured as "" (no header at all).
    pub content_security_policy: Option<String>,
    pub referrer_policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendSource {
    /// A built frontend on disk. `configured` is false for the default `static/`, which may
    /// be missing (an API-only deployment); a configured directory must exist.
    Dir { path: PathBuf, configured: bool },
    /// Every request no gatehouse route takes goes to this dev server (Vite and the like),
    /// WebSocket upgrades included. An origin: scheme, host and port only.
    DevServer(Url),
}

/// The Content-Security-Policy for a built frontend: same-origin everything, no plugins, no
/// framing (`frame-ancestors 'none'` is the clickjacking defence).
pub const DEFAULT_CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Dev servers inject inline scripts and styles and open a WebSocket for hot reload; framing
/// stays forbidden.
pub const DEFAULT_DEV_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; \
     object-src 'none'; base-uri 'self'; frame-ancestors 'none'";

const REFERRER_POLICIES: &[&str] = &[
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];

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
    pub timeout: Duration,
    pub max_body_bytes: u64,
    pub provider: String,
    pub client_scopes: Vec<String>,
    pub pass_set_cookie: bool,
    pub send_user_id_header: bool,
    pub rate_limit: RouteRateLimit,
    /// Its own TLS trust and client identity; `None` uses the shared client (web roots).
    pub tls: Option<RouteTlsSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTlsSettings {
    /// Trust only this CA (PEM, one or more certificates) for the upstream, not the web roots.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: the certificate chain and key gatehouse presents to the upstream.
    pub client_identity: Option<CertKeyFiles>,
    /// The name the upstream's certificate is verified against instead of the URL's host.
    pub server_name: Option<String>,
}

/// A PEM certificate chain (leaf first) and its PEM private key. The key file's contents are
/// secret: only its path is ever shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// Where browsers reach gatehouse; the redirect URI and cookie security derive from it.
    pub public_url: Url,
    /// Dangerous development mode: plain-http cookies (no `Secure`, no `__Host-` prefix).
    pub insecure_http: bool,
    pub shutdown_timeout: Duration,
    pub workers: Option<usize>,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies, load balancers).
    pub trusted_proxies: Vec<IpNet>,
    /// All header lines of a request together; more is refused with 431.
    pub max_header_bytes: usize,
    /// A client that has not sent its whole request head by then is disconnected.
    pub header_timeout: Duration,
    /// Serve HTTPS with this certificate and key (reloaded on SIGHUP and when they change).
    pub tls: Option<CertKeyFiles>,
    /// A plain-http listener that answers everything with 308 to the https public URL.
    pub http_redirect_bind: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    pub login_cookie_name: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Sliding expiry is written back at most this often per session.
    pub touch_interval: Duration,
    pub login_state_ttl: Duration,
    pub secure_cookies: bool,
    /// An access token expiring within this is refreshed before a call is forwarded.
    pub refresh_skew: Duration,
    /// The per-session refresh lock lapses after this unless renewed (it is renewed while
    /// the refresh runs); longer than the provider's HTTP timeout.
    pub refresh_lock_ttl: Duration,
    /// How long a call waits for another instance's refresh before answering 503.
    pub refresh_wait: Duration,
}

#[derive(Debug, Clone)]
pub enum StoreSettings {
    Memory,
    Redis(RedisSettings),
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretString,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CsrfSettings {
    pub header: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    /// Kept as written: the provider's `iss` must match it exactly (a trailing slash counts).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_auth_method: ClientAuthMethod,
    pub scopes: Vec<String>,
    pub extra_authorize_params: BTreeMap<String, String>,
    pub redirect_uri: Url,
    /// Absolute URL the provider sends the browser to after logout.
    pub post_logout_redirect: Url,
    pub http_timeout: Duration,
    pub clock_skew: Duration,
    pub end_session_id_token_hint: bool,
}

impl Settings {
    pub fn provider(&self, name: &str) -> Option<&ProviderSettings> {
        self.providers.get(name)
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Reads the file (when given) and layers the environment over it.
pub fn load_from_path(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigErrors> {
    let text = match path {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![format!(
                "cannot read config file {}: {e}",
                path.display()
            )])
        })?),
        None => None,
    };
    load(text.as_deref(), env)
}

/// Builds settings from the TOML text of a config file and environment variables.
pub fn load(
    file_text: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigErrors> {
    let mut problems = Vec::new();
    let mut tree = match file_text {
        Some(text) => match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(e) => {
                return Err(ConfigErrors(vec![format!(
                    "config file is not valid TOML: {e}"
                )]))
            }
        },
        None => toml::Table::new(),
    };

    forbid_secrets_in_file(&tree, &mut problems);

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()))
        .collect();
    env.sort();
    for (key, value) in env {
        if let Err(problem) = apply_env_override(&mut tree, &key, value) {
            problems.push(problem);
        }
    }

    let mut unknown = Vec::new();
    let raw: Option<RawSettings> =
        match serde_ignored::deserialize(toml::Value::Table(tree), |path| {
            unknown.push(path.to_string())
        }) {
            Ok(raw) => Some(raw),
            Err(e) => {
                problems.push(format!("{e}"));
                None
            }
        };
    for key in unknown {
        problems.push(format!("unknown key `{key}`"));
    }

    let settings = raw.and_then(|raw| validate(raw, &mut problems));
    match settings {
        Some(settings) if problems.is_empty() => Ok(settings),
        _ => Err(ConfigErrors(problems)),
    }
}

/// Secrets only come from the environment or from files the operator points to, so that a
/// committed config file can never carry one.
fn forbid_secrets_in_file(tree: &toml::Table, problems: &mut Vec<String>) {
    if let Some(providers) = tree.get("providers").and_then(|p| p.as_table()) {
        for (name, provider) in providers {
            if provider.get("client_secret").is_some() {
                problems.push(format!(
                    "providers.{name}.client_secret must not be in the config file: set \
                     {ENV_PREFIX}PROVIDERS__{}__CLIENT_SECRET or providers.{name}.client_secret_file",
                    name.to_uppercase()
                ));
            }
        }
    }
}

fn apply_env_override(tree: &mut toml::Table, key: &str, value: String) -> Result<(), String> {
    let path: Vec<String> = key[ENV_PREFIX.len()..]
        .split("__")
        .map(|segment| segment.to_ascii_lowercase())
        .collect();
    if path.iter().any(|segment| segment.is_empty()) {
        return Err(format!(
            "environment variable {key} does not name a config key"
        ));
    }
    let (leaf, parents) = path.split_last().ok_or_else(|| format!("{key} is empty"))?;
    let mut table = tree;
    for segment in parents {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("environment variable {key}: `{segment}` is not a table"))?;
    }
    table.insert(leaf.clone(), env_value(&value));
    Ok(())
}

/// Environment values are TOML literals when they parse as one (`true`, `30`, `["a","b"]`),
/// else plain text.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut table) => match table.remove("v") {
            Some(
                value @ (toml::Value::Integer(_)
                | toml::Value::Boolean(_)
                | toml::Value::Float(_)
                | toml::Value::Array(_)
                | toml::Value::String(_)),
            ) => value,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn read_secret_file(path: &Path, what: &str, problems: &mut Vec<String>) -> Option<SecretString> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Some(SecretString::from(text.trim().to_owned())),
        Ok(_) => {
            problems.push(format!("{what}: file {} is empty", path.display()));
            None
        }
        Err(e) => {
            problems.push(format!("{what}: cannot read {}: {e}", path.display()));
            None
        }
    }
}

fn validate(raw: RawSettings, problems: &mut Vec<String>) -> Option<Settings> {
    let start = problems.len();

    let bind = raw
        .server
        .bind
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse::<SocketAddr>()
        .map_err(|e| problems.push(format!("server.bind: {e}")))
        .ok();
    let insecure_http = raw.server.insecure_http.unwrap_or(false);
    let public_url = match raw.server.public_url.as_deref() {
        None => {
            problems
                .push("server.public_url is required (the URL browsers reach gatehouse at)".into());
            None
        }
        Some(text) => match Url::parse(text) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                problems.push(format!("server.public_url: `{text}` is not http(s)"));
                None
            }
            Ok(url) if url.scheme() == "http" && !insecure_http && !is_loopback(&url) => {
                problems.push(format!(
                    "server.public_url: `{text}` is plain http; use https, or set \
                     server.insecure_http = true for local development only"
                ));
                None
            }
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                problems.push("server.public_url must not have a query or fragment".into());
                None
            }
            Ok(mut url) => {
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Some(url)
            }
            Err(e) => {
                problems.push(format!("server.public_url: {e}"));
                None
            }
        },
    };

    let server_tls = validate_server_tls(
        raw.server.tls,
        public_url.as_ref(),
        insecure_http,
        SystemTime::now(),
        problems,
    );
    let http_redirect_bind = validate_http_redirect_bind(
        raw.server.http_redirect_bind,
        bind,
        public_url.as_ref(),
        problems,
    );

    let secure_cookies = !insecure_http;
    let default_cookie = if secure_cookies {
        "__Host-gatehouse"
    } else {
        "gatehouse"
    };
    let cookie_name = raw
        .session
        .cookie_name
        .unwrap_or_else(|| default_cookie.to_owned());
    if cookie_name.is_empty()
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        problems.push(format!(
            "session.cookie_name `{cookie_name}` has characters a cookie name cannot have"
        ));
    }
    if !secure_cookies && cookie_name.starts_with("__Host-") {
        problems.push("session.cookie_name: the __Host- prefix needs Secure cookies, which insecure_http turns off".into());
    }
    let secs = Duration::from_secs;
    let idle_timeout = secs(raw.session.idle_timeout_secs.unwrap_or(30 * 60));
    let absolute_timeout = secs(raw.session.absolute_timeout_secs.unwrap_or(8 * 60 * 60));
    let touch_interval = secs(raw.session.touch_interval_secs.unwrap_or(60));
    let login_state_ttl = secs(raw.session.login_state_ttl_secs.unwrap_or(10 * 60));
    let refresh_skew = secs(raw.session.refresh_skew_secs.unwrap_or(60));
    let refresh_lock_ttl = Duration::from_millis(raw.session.refresh_lock_ttl_ms.unwrap_or(15_000));
    let refresh_wait = Duration::from_millis(raw.session.refresh_wait_ms.unwrap_or(20_000));
    if refresh_lock_ttl < Duration::from_millis(300) {
        problems.push("session.refresh_lock_ttl_ms must be at least 300".into());
    }
    if idle_timeout.is_zero() || absolute_timeout.is_zero() || login_state_ttl.is_zero() {
        problems.push("session timeouts must be greater than zero".into());
    }
    if idle_timeout > absolute_timeout {
        problems
            .push("session.idle_timeout_secs must not exceed session.absolute_timeout_secs".into());
    }
    if touch_interval >= idle_timeout {
        problems.push(
            "session.touch_interval_secs must be shorter than session.idle_timeout_secs".into(),
        );
    }

    let redis_url = match (raw.redis.url, raw.redis.url_file) {
        (Some(_), Some(_)) => {
            problems.push("redis.url and redis.url_file are both set: choose one".into());
            None
        }
        (Some(url), None) => Some(url),
        (None, Some(path)) => read_secret_file(&path, "redis.url_file", problems),
        (None, None) => None,
    };
    let store = match redis_url {
        None => StoreSettings::Memory,
        Some(url) => {
            let parsed = Url::parse(url.expose_secret());
            match parsed {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {}
                // The URL may hold a password: name the problem, not the value.
                _ => problems.push("redis.url is not a redis:// or rediss:// URL".into()),
            }
            StoreSettings::Redis(RedisSettings {
                url,
                key_prefix: raw.redis.key_prefix.unwrap_or_else(|| "gatehouse".into()),
                connect_timeout: Duration::from_millis(
                    raw.redis.connect_timeout_ms.unwrap_or(2000),
                ),
                response_timeout: Duration::from_millis(
                    raw.redis.response_timeout_ms.unwrap_or(2000),
                ),
            })
        }
    };

    let csrf = CsrfSettings {
        header: raw.csrf.header.unwrap_or_else(|| "X-CSRF".into()),
        value: raw.csrf.value.unwrap_or_else(|| "1".into()),
    };
    if actix_web::http::header::HeaderName::from_bytes(csrf.header.as_bytes()).is_err() {
        problems.push(format!(
            "csrf.header `{}` is not a valid header name",
            csrf.header
        ));
    }

    let log = LogSettings {
        format: match raw.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                problems.push(format!("log.format `{other}` is not one of text, json"));
                LogFormat::Text
            }
        },
        filter: raw.log.filter.unwrap_or_else(|| "info".into()),
    };

    if raw.providers.is_empty() {
        problems.push("no identity provider configured: add a [providers.<name>] table".into());
    }
    let default_provider = match raw.default_provider {
        Some(name) => {
            if !raw.providers.contains_key(&name) {
                problems.push(format!(
                    "default_provider `{name}` is not one of the configured providers"
                ));
            }
            name
        }
        None if raw.providers.len() > 1 => {
            problems.push("several providers are configured: set default_provider".into());
            String::new()
        }
        None => raw.providers.keys().next().cloned().unwrap_or_default(),
    };

    let routes = validate_routes(raw.routes, &default_provider, &raw.providers, problems);
    let rate_limits = RateLimitSettings {
        login: validate_limit(
            raw.rate_limits.login,
            DEFAULT_LOGIN_LIMIT,
            "rate_limits.login",
            problems,
        ),
        api: validate_limit(
            raw.rate_limits.api,
            DEFAULT_API_LIMIT,
            "rate_limits.api",
            problems,
        ),
    };
    let trusted_proxies = raw
        .server
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .filter_map(|text| match parse_net(text) {
            Some(net) => Some(net),
            None => {
                problems.push(format!(
                    "server.trusted_proxies: `{text}` is not an IP address or CIDR block"
                ));
                None
            }
        })
        .collect();
    let max_header_bytes = match raw.server.max_header_bytes.unwrap_or(16 * 1024) {
        n if n > 0 => n as usize,
        n => {
            problems.push(format!(
                "server.max_header_bytes must be greater than zero (got {n})"
            ));
            0
        }
    };
    let header_timeout = match raw.server.header_timeout_ms.unwrap_or(5000) {
        n if n > 0 => Duration::from_millis(n as u64),
        n => {
            problems.push(format!(
                "server.header_timeout_ms must be greater than zero (got {n})"
            ));
            Duration::ZERO
        }
    };
    let frontend = validate_frontend(raw.frontend, problems);

    let mut providers = BTreeMap::new();
    for (name, provider) in raw.providers {
        if let Some(settings) = validate_provider(&name, provider, public_url.as_ref(), problems) {
            providers.insert(name, settings);
        }
    }

    if problems.len() > start {
        return None;
    }
    Some(Settings {
        server: ServerSettings {
            bind: bind?,
            public_url: public_url?,
            insecure_http,
            shutdown_timeout: secs(raw.server.shutdown_timeout_secs.unwrap_or(10)),
            workers: raw.server.workers,
            trusted_proxies,
            max_header_bytes,
            header_timeout,
            tls: server_tls,
            http_redirect_bind,
        },
        session: SessionSettings {
            login_cookie_name: format!("{cookie_name}-login"),
            cookie_name,
            idle_timeout,
            absolute_timeout,
            touch_interval,
            login_state_ttl,
            refresh_skew,
            refresh_lock_ttl,
            refresh_wait,
            secure_cookies,
        },
        store,
        csrf,
        log,
        default_provider,
        providers,
        routes,
        frontend: frontend?,
        rate_limits,
    })
}

const DEFAULT_LOGIN_LIMIT: RateLimit = RateLimit {
    requests: 30,
    per: Duration::from_secs(60),
};

const DEFAULT_API_LIMIT: RateLimit = RateLimit {
    requests: 600,
    per: Duration::from_secs(60),
};

/// A `[rate_limits.*]` table, `"off"`, or absent (the default).
fn validate_limit(
    raw: Option<RawLimit>,
    default: RateLimit,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<RateLimit> {
    match raw {
        None => Some(default),
        Some(raw) => match parse_limit(raw, Some(default), what, problems) {
            RouteRateLimit::Own(limit) => Some(limit),
            RouteRateLimit::Off | RouteRateLimit::Default => None,
        },
    }
}

/// `"off"`, or `{ requests, per_secs }` with both positive; a missing member takes the
/// default's when there is one.
fn parse_limit(
    raw: RawLimit,
    default: Option<RateLimit>,
    what: &str,
    problems: &mut Vec<String>,
) -> RouteRateLimit {
    match raw {
        RawLimit::Word(word) if word == "off" => RouteRateLimit::Off,
        RawLimit::Word(word) => {
            problems.push(format!(
                "{what}: `{word}` is neither \"off\" nor a {{ requests, per_secs }} table"
            ));
            RouteRateLimit::Off
        }
        RawLimit::Table { requests, per_secs } => {
            let requests = requests.or(default.map(|d| i64::from(d.requests)));
            let per_secs = per_secs.or(default.map(|d| d.per.as_secs() as i64));
            let (Some(requests), Some(per_secs)) = (requests, per_secs) else {
                problems.push(format!("{what}: both requests and per_secs are needed"));
                return RouteRateLimit::Off;
            };
            let mut ok = true;
            if requests <= 0 || requests > i64::from(u32::MAX) {
                problems.push(format!(
                    "{what}.requests must be a positive number (got {requests})"
                ));
                ok = false;
            }
            if per_secs <= 0 {
                problems.push(format!(
                    "{what}.per_secs must be greater than zero (got {per_secs})"
                ));
                ok = false;
            }
            if !ok {
                return RouteRateLimit::Off;
            }
            RouteRateLimit::Own(RateLimit {
                requests: requests as u32,
                per: Duration::from_secs(per_secs as u64),
            })
        }
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host).
fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn validate_frontend(raw: RawFrontend, problems: &mut Vec<String>) -> Option<FrontendSettings> {
    let start = problems.len();
    let source = match (raw.dir, raw.dev_server) {
        (Some(_), Some(_)) => {
            problems.push("frontend.dir and frontend.dev_server are both set: choose one".into());
            None
        }
        (None, Some(text)) => match Url::parse(&text) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(FrontendSource::DevServer(url))
            }
            Ok(_) => {
                problems.push(format!(
                    "frontend.dev_server: `{text}` must be an http(s) origin like \
                     http://127.0.0.1:5173 (no path, query or credentials)"
                ));
                None
            }
            Err(e) => {
                problems.push(format!("frontend.dev_server: `{text}`: {e}"));
                None
            }
        },
        (Some(path), None) => {
            if !path.is_dir() {
                problems.push(format!(
                    "frontend.dir: {} is not a directory",
                    path.display()
                ));
            }
            Some(FrontendSource::Dir {
                path,
                configured: true,
            })
        }
        (None, None) => Some(FrontendSource::Dir {
            path: PathBuf::from("static"),
            configured: false,
        }),
    };

    let content_security_policy = match raw.content_security_policy {
        Some(text) if text.trim().is_empty() => None,
        Some(text) => Some(text.trim().to_owned()),
        None => Some(
            match source {
                Some(FrontendSource::DevServer(_)) => DEFAULT_DEV_CSP,
                _ => DEFAULT_CSP,
            }
            .to_owned(),
        ),
    };
    if let Some(csp) = &content_security_policy {
        if actix_web::http::header::HeaderValue::from_str(csp).is_err() || csp.contains(',') {
            problems.push(
                "frontend.content_security_policy must be one policy on one line of visible \
                 ASCII (directives separated by `;`)"
                    .into(),
            );
        }
    }

    let referrer_policy = raw
        .referrer_policy
        .map(|p| p.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "no-referrer".into());
    if referrer_policy
        .split(',')
        .any(|token| !REFERRER_POLICIES.contains(&token.trim()))
    {
        problems.push(format!(
            "frontend.referrer_policy: `{referrer_policy}` is not one of {}",
            REFERRER_POLICIES.join(", ")
        ));
    }

    if problems.len() > start {
        return None;
    }
    Some(FrontendSettings {
        source: source?,
        content_security_policy,
        referrer_policy,
    })
}

/// Paths gatehouse answers itself; no route may shadow them.
const RESERVED_PREFIXES: &[&str] = &["/auth", "/healthz", "/readyz", "/metrics"];

fn validate_routes(
    raw: Vec<RawRoute>,
    default_provider: &str,
    providers: &BTreeMap<String, RawProvider>,
    problems: &mut Vec<String>,
) -> Vec<RouteSettings> {
    let mut routes = Vec::new();
    let mut seen = std::collections::HashSet::new();
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
                            && s != ".."
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
            other => {
                problems.push(format!(
                    "{}: `{other}` is not one of user, client, user-or-client, optional, none",
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
        let required_claims: BTreeMap<String, Vec<String>> = route
            .require
            .claims
            .into_iter()
            .map(|(claim, values)| match values {
                StringOrList::One(value) => (claim, vec![value]),
                StringOrList::Many(values) => (claim, values),
            })
            .collect();
        let has_requirements = !route.require.scopes.is_empty() || !required_claims.is_empty();
        if has_requirements && token != TokenPolicy::User {
            problems.push(format!(
                "{}: scope and claim requirements need token = \"user\" (they are checked against the user's session)",
                at("require")
            ));
        }
        let provider = route
            .provider
            .unwrap_or_else(|| default_provider.to_owned());
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
        let tls = route.tls.and_then(|raw| {
            validate_route_tls(
                &at("tls"),
                raw,
                upstream.as_ref(),
                SystemTime::now(),
                problems,
            )
        });
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
            timeout,
            max_body_bytes: route.max_body_bytes.unwrap_or(10 * 1024 * 1024),
            provider,
            client_scopes: route.client_scopes.unwrap_or_default(),
            pass_set_cookie: route.pass_set_cookie.unwrap_or(false),
            send_user_id_header: route.send_user_id_header.unwrap_or(false),
            rate_limit,
            tls,
        });
    }
    routes
}

/// `[server.tls]`: both files readable, the key the certificate's, no certificate expired.
/// gatehouse serving TLS itself means browsers reach it over https, so the public URL must say
/// so: an http one would put plain-http URLs in redirects and turn Secure cookies off.
fn validate_server_tls(
    raw: Option<RawServerTls>,
    public_url: Option<&Url>,
    insecure_http: bool,
    now: SystemTime,
    problems: &mut Vec<String>,
) -> Option<CertKeyFiles> {
    let raw = raw?;
    let (Some(cert_file), Some(key_file)) = (raw.cert_file, raw.key_file) else {
        problems.push("server.tls needs both cert_file and key_file".into());
        return None;
    };
    if public_url.is_some_and(|url| url.scheme() != "https") {
        problems.push(
            "server.tls: server.public_url must be https when gatehouse serves TLS itself".into(),
        );
    }
    if insecure_http {
        problems.push(
            "server.tls and server.insecure_http are both set: TLS serving needs Secure cookies"
                .into(),
        );
    }
    let files = CertKeyFiles {
        cert_file,
        key_file,
    };
    for problem in crate::tls::check_cert_and_key(&files, now) {
        problems.push(format!("server.tls: {problem}"));
    }
    Some(files)
}

/// The redirect listener sends browsers to the https public URL, so there must be one.
fn validate_http_redirect_bind(
    raw: Option<String>,
    bind: Option<SocketAddr>,
    public_url: Option<&Url>,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let text = raw?;
    let address = text
        .parse::<SocketAddr>()
        .map_err(|e| problems.push(format!("server.http_redirect_bind: `{text}`: {e}")))
        .ok()?;
    if public_url.is_some_and(|url| url.scheme() != "https") {
        problems.push(
            "server.http_redirect_bind needs an https server.public_url to redirect to".into(),
        );
    }
    if bind == Some(address) && address.port() != 0 {
        problems.push("server.http_redirect_bind must differ from server.bind".into());
    }
    Some(address)
}

/// `[routes.tls]`: a pinned CA, a client identity for mutual TLS, a name override.
fn validate_route_tls(
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
    if let Some(ca_file) = &raw.ca_file {
        for problem in crate::tls::check_ca_file(ca_file, now) {
            problems.push(format!("{at}.ca_file: {problem}"));
        }
    }
    let client_identity = match (raw.client_cert_file, raw.client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let files = CertKeyFiles {
                cert_file,
                key_file,
            };
            for problem in crate::tls::check_cert_and_key(&files, now) {
                problems.push(format!("{at}: {problem}"));
            }
            Some(files)
        }
        (None, None) => None,
        _ => {
            problems.push(format!(
                "{at}: client_cert_file and client_key_file go together"
            ));
            None
        }
    };
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

fn validate_provider(
    name: &str,
    raw: RawProvider,
    public_url: Option<&Url>,
    problems: &mut Vec<String>,
) -> Option<ProviderSettings> {
    let start = problems.len();
    let at = |field: &str| format!("providers.{name}.{field}");

    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(format!(
            "provider name `{name}` may only use letters, digits, - and _"
        ));
    }
    let issuer = match raw.issuer.as_deref().map(|text| (text, Url::parse(text))) {
        None => {
            problems.push(format!("{} is required", at("issuer")));
            None
        }
        Some((text, Ok(url)))
            if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) =>
        {
            Some(text.to_owned())
        }
        Some((_, Ok(_))) => {
            problems.push(format!(
                "{} must be an https URL (plain http only on loopback)",
                at("issuer")
            ));
            None
        }
        Some((_, Err(e))) => {
            problems.push(format!("{}: {e}", at("issuer")));
            None
        }
    };
    let client_id = raw.client_id.filter(|id| !id.is_empty());
    if client_id.is_none() {
        problems.push(format!("{} is required", at("client_id")));
    }
    let client_secret = match (raw.client_secret, raw.client_secret_file) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{} and {} are both set: choose one",
                at("client_secret"),
                at("client_secret_file")
            ));
            None
        }
        (Some(secret), None) if !secret.expose_secret().is_empty() => Some(secret),
        (None, Some(path)) => read_secret_file(&path, &at("client_secret_file"), problems),
        _ => {
            problems.push(format!(
                "{} is required: set {ENV_PREFIX}PROVIDERS__{}__CLIENT_SECRET or {}",
                at("client_secret"),
                name.to_uppercase(),
                at("client_secret_file")
            ));
            None
        }
    };
    let client_auth_method = match raw
        .client_auth_method
        .as_deref()
        .unwrap_or("client_secret_basic")
    {
        "client_secret_basic" => ClientAuthMethod::ClientSecretBasic,
        "client_secret_post" => ClientAuthMethod::ClientSecretPost,
        other => {
            problems.push(format!(
                "{}: `{other}` is not one of client_secret_basic, client_secret_post",
                at("client_auth_method")
            ));
            ClientAuthMethod::ClientSecretBasic
        }
    };
    let scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        problems.push(format!("{} must include `openid`", at("scopes")));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        problems.push(format!("{}: `{bad}` is not a single scope", at("scopes")));
    }
    const RESERVED: &[&str] = &[
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ];
    for key in raw.extra_authorize_params.keys() {
        if RESERVED.contains(&key.as_str()) {
            problems.push(format!(
                "{}: `{key}` is set by gatehouse itself",
                at("extra_authorize_params")
            ));
        }
    }

    let redirect_uri = public_url.and_then(|base| base.join("auth/callback").ok());
    let post_logout_redirect = public_url.and_then(|base| {
        let target = raw.post_logout_redirect.as_deref().unwrap_or("/");
        let joined = if target.starts_with('/') && !target.starts_with("//") {
            base.join(&target[1..]).ok()
        } else {
            Url::parse(target)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
        };
        if joined.is_none() {
            problems.push(format!(
                "{}: `{target}` is neither a local path nor an absolute http(s) URL",
                at("post_logout_redirect")
            ));
        }
        joined
    });

    if problems.len() > start {
        return None;
    }
    Some(ProviderSettings {
        name: name.to_owned(),
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        client_auth_method,
        scopes,
        extra_authorize_params: raw.extra_authorize_params,
        redirect_uri: redirect_uri?,
        post_logout_redirect: post_logout_redirect?,
        http_timeout: Duration::from_secs(raw.http_timeout_secs.unwrap_or(10)),
        clock_skew: Duration::from_secs(raw.clock_skew_secs.unwrap_or(60)),
        end_session_id_token_hint: raw.end_session_id_token_hint.unwrap_or(true),
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MINIMAL: &str = r#"
        [server]
        public_url = "https://app.example.com"
        [providers.main]
        issuer = "https://id.example.com"
        client_id = "spa"
    "#;

    #[test]
    fn env_layers_over_file_and_supplies_the_secret() {
        let settings = load(
            Some(MINIMAL),
            env(&[
                ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "12345"),
                ("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS", "90"),
                ("GATEHOUSE_PROVIDERS__MAIN__SCOPES", r#"["openid","roles"]"#),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("valid");
        let provider = settings.provider("main").expect("main");
        assert_eq!(provider.client_secret.expose_secret(), "12345");
        assert_eq!(provider.scopes, vec!["openid", "roles"]);
        assert_eq!(settings.session.idle_timeout, Duration::from_secs(90));
        assert_eq!(
            provider.redirect_uri.as_str(),
            "https://app.example.com/auth/callback"
        );
        assert_eq!(settings.session.cookie_name, "__Host-gatehouse");
        assert_eq!(settings.default_provider, "main");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
            colour = "blue"
            [server]
            public_url = "http://app.example.com"
            bind = "nowhere"
            [session]
            idle_timeout_secs = 10
            touch_interval_secs = 60
            [providers.main]
            issuer = "http://id.example.com"
            client_secret = "in-the-file"
            client_auth_method = "private_key_jwt"
            scopes = ["profile"]
            flavour = "x"
        "#;
        let errors = load(Some(text), Vec::new()).expect_err("invalid").0;
        let joined = errors.join("\n");
        for needle in [
            "unknown key `colour`",
            "unknown key `providers.main.flavour`",
            "server.bind",
            "server.public_url",
            "touch_interval_secs",
            "providers.main.issuer",
            "client_secret must not be in the config file",
            "private_key_jwt",
            "providers.main.scopes must include `openid`",
            "providers.main.client_id is required",
        ] {
            assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
        }
    }

    #[test]
    fn frontend_defaults_and_problems() {
        let secret = ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s");
        let settings = load(Some(MINIMAL), env(&[secret])).expect("valid");
        assert_eq!(
            settings.frontend.source,
            FrontendSource::Dir {
                path: PathBuf::from("static"),
                configured: false
            }
        );
        assert_eq!(
            settings.frontend.content_security_policy.as_deref(),
            Some(DEFAULT_CSP)
        );
        assert_eq!(settings.frontend.referrer_policy, "no-referrer");

        let dev = load(
            Some(MINIMAL),
            env(&[
                secret,
                ("GATEHOUSE_FRONTEND__DEV_SERVER", "http://127.0.0.1:5173"),
            ]),
        )
        .expect("valid");
        assert!(matches!(dev.frontend.source, FrontendSource::DevServer(_)));
        assert_eq!(
            dev.frontend.content_security_policy.as_deref(),
            Some(DEFAULT_DEV_CSP)
        );

        let text = format!(
            "{MINIMAL}\n[frontend]\ndir = \"/nonexistent/dist\"\ndev_server = \"http://127.0.0.1:5173\"\n\
             referrer_policy = \"sometimes\"\ncontent_security_policy = \"default-src 'self', img-src *\"\n\
             colour = 1\n"
        );
        let errors = load(Some(&text), env(&[secret])).expect_err("invalid").0;
        let joined = errors.join("\n");
        for needle in [
            "frontend.dir and frontend.dev_server are both set",
            "frontend.referrer_policy: `sometimes`",
            "frontend.content_security_policy",
            "unknown key `frontend.colour`",
        ] {
            assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
        }

        for (key, value, needle) in [
            (
                "DIR",
                "/nonexistent/dist",
                "/nonexistent/dist is not a directory",
            ),
            (
                "DEV_SERVER",
                "http://127.0.0.1:5173/app",
                "must be an http(s) origin",
            ),
            ("DEV_SERVER", "ftp://127.0.0.1", "must be an http(s) origin"),
        ] {
            let errors = load(
                Some(MINIMAL),
                env(&[secret, (&format!("GATEHOUSE_FRONTEND__{key}"), value)]),
            )
            .expect_err("invalid")
            .0
            .join("\n");
            assert!(errors.contains(needle), "{key}={value}: {errors}");
        }
    }

    #[test]
    fn insecure_http_drops_host_prefix_and_secure() {
        let settings = load(
            Some(MINIMAL),
            env(&[
                ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s"),
                ("GATEHOUSE_SERVER__INSECURE_HTTP", "true"),
                ("GATEHOUSE_SERVER__PUBLIC_URL", "http://devbox.local:8080"),
            ]),
        )
        .expect("valid");
        assert!(!settings.session.secure_cookies);
        assert_eq!(settings.session.cookie_name, "gatehouse");
    }
}
