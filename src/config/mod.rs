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

mod admin;
mod frontend;
mod policies;
pub mod presets;
mod providers;
mod rate_limits;
pub mod reserved_headers;
mod routes;
mod server;
mod session;
mod store;
mod telemetry;

pub use admin::*;
pub use frontend::*;
pub use policies::*;
pub use providers::*;
pub use rate_limits::*;
pub use routes::*;
pub use server::*;
pub use session::*;
pub use store::*;
pub use telemetry::*;

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
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    telemetry: RawTelemetry,
    policies: Option<RawPolicies>,
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
    #[serde(default, deserialize_with = "string_from_scalar")]
    audit_file: Option<String>,
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
    pub admin: AdminSettings,
    pub telemetry: TelemetrySettings,
    /// `None`: no `[policies]` table (and no `policy = true` route).
    pub policies: Option<PolicySettings>,
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
    /// Where the security events also go, as JSON lines (reopened on SIGHUP).
    pub audit_file: Option<PathBuf>,
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
    load_with_tree(file_text, env).map(|(settings, _)| settings)
}

/// [`load`], with the key tree the settings came from (the file with the environment laid
/// over it): a reload compares trees to name the keys that changed. It may hold secrets
/// from the environment: compare it, never show its values.
pub fn load_with_tree(
    file_text: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Settings, toml::Table), ConfigErrors> {
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

    // All of it, for the secrets routes name by variable (`inject_headers`); only the
    // prefixed ones are configuration keys.
    let all_env: BTreeMap<String, String> = env.into_iter().collect();
    let mut env: Vec<(String, String)> = all_env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.sort();
    for (key, value) in env {
        if let Err(problem) = apply_env_override(&mut tree, &key, value) {
            problems.push(problem);
        }
    }

    let mut unknown = Vec::new();
    let tree_seen = tree.clone();
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

    let settings = raw.and_then(|raw| validate(raw, &all_env, &mut problems));
    match settings {
        Some(settings) if problems.is_empty() => Ok((settings, tree_seen)),
        _ => Err(ConfigErrors(problems)),
    }
}

/// Secrets only come from the environment or from files the operator points to, so that a
/// committed config file can never carry one.
fn forbid_secrets_in_file(tree: &toml::Table, problems: &mut Vec<String>) {
    if let Some(redis) = tree.get("redis").and_then(|r| r.as_table()) {
        for key in ["password", "sentinel_password"] {
            if redis.get(key).is_some() {
                problems.push(format!(
                    "redis.{key} must not be in the config file: set \
                     {ENV_PREFIX}REDIS__{} or redis.{key}_file",
                    key.to_uppercase()
                ));
            }
        }
    }
    if let Some(session) = tree.get("session").and_then(|s| s.as_table()) {
        if session.get("revocation_key").is_some() {
            problems.push(format!(
                "session.revocation_key must not be in the config file: set \
                 {ENV_PREFIX}SESSION__REVOCATION_KEY or session.revocation_key_file"
            ));
        }
    }
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

/// A secret given as `<key>` (from the environment) or as `<key>_file`, not both.
fn secret_or_file(
    key: &str,
    value: Option<SecretString>,
    file: Option<&Path>,
    problems: &mut Vec<String>,
) -> Option<SecretString> {
    match (value, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{key} and {key}_file are both set: choose one"));
            None
        }
        (Some(value), None) => Some(value),
        (None, Some(path)) => read_secret_file(path, &format!("{key}_file"), problems),
        (None, None) => None,
    }
}

/// A CA file to trust and an optional client certificate with its key, as the client side
/// of TLS (to an upstream, to Redis) takes them; `at` names the table. The client pair, or
/// `None` with the problems reported.
fn validate_client_tls_files(
    at: &str,
    ca_file: Option<&Path>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    now: SystemTime,
    problems: &mut Vec<String>,
) -> Option<CertKeyFiles> {
    if let Some(ca_file) = ca_file {
        for problem in crate::tls_files::check_ca_file(ca_file, now) {
            problems.push(format!("{at}.ca_file: {problem}"));
        }
    }
    match (client_cert_file, client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let files = CertKeyFiles {
                cert_file,
                key_file,
            };
            for problem in
                crate::tls_files::check_cert_and_key(&files.cert_file, &files.key_file, now)
            {
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

fn validate(
    raw: RawSettings,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<Settings> {
    let start = problems.len();
    let insecure_http = raw.server.insecure_http.unwrap_or(false);
    let (server, public_url) = validate_server(raw.server, problems);
    let session = validate_session(raw.session, !insecure_http, problems);
    let store = validate_store(raw.redis, problems);
    let rate_limits = validate_rate_limits(raw.rate_limits, problems);
    let admin = validate_admin(raw.admin, server.as_ref().map(|s| s.bind), problems);
    let telemetry = validate_telemetry(raw.telemetry, problems);

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
        audit_file: match raw.log.audit_file {
            Some(path) if path.trim().is_empty() => {
                problems.push("log.audit_file must not be empty (leave it out for none)".into());
                None
            }
            Some(path) if path.ends_with('/') || Path::new(&path).is_dir() => {
                problems.push(format!(
                    "log.audit_file `{path}` is a directory, not a file"
                ));
                None
            }
            other => other.map(PathBuf::from),
        },
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

    let routes = validate_routes(
        raw.routes,
        &default_provider,
        &raw.providers,
        env,
        &csrf.header,
        problems,
    );
    let frontend = validate_frontend(raw.frontend, problems);
    let policies = validate_policies(raw.policies, &routes, problems);

    let mut providers = BTreeMap::new();
    for (name, provider) in raw.providers {
        if let Some(settings) = validate_provider(&name, provider, public_url.as_ref(), problems) {
            providers.insert(name, settings);
        }
    }

    for route in &routes {
        let (Some(resource), Some(provider)) =
            (&route.resource, providers.get_mut(&route.provider))
        else {
            continue;
        };
        if !provider.resources.contains(&resource.uri) {
            provider.resources.push(resource.uri.clone());
        }
        for scope in &resource.scopes {
            if !provider.resource_scopes.contains(scope) && !provider.scopes.contains(scope) {
                provider.resource_scopes.push(scope.clone());
            }
        }
    }

    if problems.len() > start {
        return None;
    }
    Some(Settings {
        server: server?,
        session: session?,
        store,
        csrf,
        log,
        default_provider,
        providers,
        routes,
        frontend: frontend?,
        rate_limits,
        admin,
        telemetry,
        policies,
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
mod tests;
