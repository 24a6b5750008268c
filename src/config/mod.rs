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
pub mod presets;
mod providers;
mod rate_limits;
pub mod reserved_headers;
mod routes;
mod server;
mod session;
mod store;

pub use admin::*;
pub use frontend::*;
pub use providers::*;
pub use rate_limits::*;
pub use routes::*;
pub use server::*;
pub use session::*;
pub use store::*;

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
        Some(settings) if problems.is_empty() => Ok(settings),
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
    fn the_revocation_key_comes_from_the_environment_or_a_file_and_is_checked() {
        let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
        let settings = load(Some(MINIMAL), secret.clone()).expect("valid");
        assert!(settings.session.revocation_key.is_none(), "off by default");

        let key = crate::session::crypto::b64(&[7u8; 32]);
        let mut with_key = secret.clone();
        with_key.push(("GATEHOUSE_SESSION__REVOCATION_KEY".into(), key.clone()));
        let settings = load(Some(MINIMAL), with_key).expect("valid");
        assert!(settings.session.revocation_key.is_some());
        // As `basenc --base64url` writes it: padded.
        let mut padded = secret.clone();
        padded.push((
            "GATEHOUSE_SESSION__REVOCATION_KEY".into(),
            format!("{key}="),
        ));
        assert!(load(Some(MINIMAL), padded)
            .expect("valid")
            .session
            .revocation_key
            .is_some());
        assert!(
            !format!("{settings:?}").contains(&key),
            "Debug shows no key"
        );

        let dir = std::env::temp_dir().join(format!("gatehouse-rk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("revocation.key");
        std::fs::write(&file, format!("{key}\n")).expect("write");
        let from_file = format!(
            "{MINIMAL}\n[session]\nrevocation_key_file = \"{}\"\n",
            file.display()
        );
        let settings = load(Some(&from_file), secret.clone()).expect("valid");
        assert!(settings.session.revocation_key.is_some());

        for bad in ["short", "!!!", &crate::session::crypto::b64(&[1u8; 31])] {
            let mut with_bad = secret.clone();
            with_bad.push(("GATEHOUSE_SESSION__REVOCATION_KEY".into(), bad.to_owned()));
            let errors = load(Some(MINIMAL), with_bad).expect_err("invalid key").0;
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("session.revocation_key must be 32 random bytes")),
                "{errors:?}"
            );
            assert!(
                !errors.iter().any(|e| e.contains(bad)),
                "the value is not echoed"
            );
        }

        let in_file = format!("{MINIMAL}\n[session]\nrevocation_key = \"{key}\"\n");
        let errors = load(Some(&in_file), secret.clone())
            .expect_err("in the file")
            .0;
        assert!(errors
            .iter()
            .any(|e| e.starts_with("session.revocation_key must not be in the config file")));

        let mut both = secret;
        both.push(("GATEHOUSE_SESSION__REVOCATION_KEY".into(), key));
        let errors = load(Some(&from_file), both).expect_err("both").0;
        assert!(errors.iter().any(|e| e.contains("are both set")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_admin_listener_is_off_unless_bound_to_a_valid_address() {
        let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
        let settings = load(Some(MINIMAL), secret.clone()).expect("valid");
        assert_eq!(settings.admin.bind, None);

        let with_admin = format!("{MINIMAL}\n[admin]\nbind = \"127.0.0.1:9091\"\n");
        let settings = load(Some(&with_admin), secret.clone()).expect("valid");
        assert_eq!(
            settings.admin.bind,
            Some("127.0.0.1:9091".parse().expect("addr"))
        );

        let mut bad = secret.clone();
        bad.push(("GATEHOUSE_ADMIN__BIND".into(), "localhost:metrics".into()));
        let errors = load(Some(MINIMAL), bad).expect_err("invalid").0;
        assert!(errors
            .iter()
            .any(|e| e.starts_with("admin.bind: `localhost:metrics`")));

        let mut same = secret;
        same.push(("GATEHOUSE_ADMIN__BIND".into(), "127.0.0.1:8080".into()));
        let errors = load(Some(MINIMAL), same)
            .expect_err("same as server.bind")
            .0;
        assert!(errors
            .iter()
            .any(|e| e == "admin.bind must differ from server.bind"));
    }

    #[test]
    fn websocket_routes_open_with_get_and_say_how_long_they_may_idle() {
        let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
        let with_route = |route: &str| {
            format!(
                "{MINIMAL}\n[[routes]]\nprefix = \"/live\"\nupstream = \"http://127.0.0.1:9000\"\n{route}\n"
            )
        };
        let settings = load(Some(&with_route("websocket = true")), secret.clone()).expect("valid");
        let idle = settings.routes[0].websocket.map(|ws| ws.idle);
        assert_eq!(
            idle,
            Some(Duration::from_secs(300)),
            "the default idle limit"
        );
        let settings = load(Some(&with_route("")), secret.clone()).expect("valid");
        assert!(settings.routes[0].websocket.is_none());

        for (route, problem) in [
            (
                "websocket_idle_secs = 30",
                "routes[0].websocket_idle_secs applies only with `websocket = true`",
            ),
            (
                "websocket = true\nwebsocket_idle_secs = 0",
                "routes[0].websocket_idle_secs must be greater than zero",
            ),
            (
                "websocket = true\nmethods = [\"POST\"]",
                "routes[0].websocket: a WebSocket opens with GET, so `methods` must include it",
            ),
        ] {
            let errors = load(Some(&with_route(route)), secret.clone())
                .expect_err(route)
                .0;
            assert!(errors.iter().any(|e| e == problem), "{route}: {errors:?}");
        }
    }

    #[test]
    fn private_key_jwt_needs_a_key_and_no_secret() {
        let dir = std::env::temp_dir().join(format!("gatehouse-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("client.pem");
        std::fs::write(
            &key,
            rcgen::KeyPair::generate().expect("key").serialize_pem(),
        )
        .expect("write key");
        let key_env = |secret: &str| {
            env(&[
                (
                    "GATEHOUSE_PROVIDERS__MAIN__CLIENT_AUTH_METHOD",
                    "private_key_jwt",
                ),
                (
                    "GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_FILE",
                    key.to_str().expect("utf-8"),
                ),
                ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_ID", "k1"),
                ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", secret),
            ])
        };
        // An empty secret counts as unset.
        let settings = load(Some(MINIMAL), key_env("")).expect("valid");
        let provider = settings.provider("main").expect("main");
        assert_eq!(provider.client_auth_method, ClientAuthMethod::PrivateKeyJwt);
        let client_key = provider.client_key.as_ref().expect("key loaded");
        assert_eq!((client_key.kid(), client_key.alg()), ("k1", "ES256"));
        assert!(
            !format!("{provider:?}").contains("PRIVATE KEY"),
            "Debug shows no key"
        );

        let errors = load(Some(MINIMAL), key_env("s3cret"))
            .expect_err("secret and key")
            .0;
        assert!(
            errors
                .iter()
                .any(|e| e.contains("client_secret is set, but")),
            "{errors:?}"
        );
        assert!(!errors.join("\n").contains("s3cret"));

        let errors = load(
            Some(MINIMAL),
            env(&[
                ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s"),
                ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_ID", "k1"),
            ]),
        )
        .expect_err("a key id without private_key_jwt")
        .0;
        assert!(
            errors
                .iter()
                .any(|e| e.contains("client_key_id is only used with")),
            "{errors:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_audit_file_is_optional_and_must_name_a_file() {
        let secret = || env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
        let settings = load(Some(MINIMAL), secret()).expect("valid");
        assert_eq!(settings.log.audit_file, None);
        let with = |value: &str| format!("{MINIMAL}\n[log]\naudit_file = {value:?}\n");
        let settings = load(Some(&with("/var/log/gatehouse/audit.log")), secret()).expect("valid");
        assert_eq!(
            settings.log.audit_file.as_deref(),
            Some(Path::new("/var/log/gatehouse/audit.log"))
        );
        let from_env = load(
            Some(MINIMAL),
            env(&[
                ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s"),
                ("GATEHOUSE_LOG__AUDIT_FILE", "/tmp/audit.log"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            from_env.log.audit_file.as_deref(),
            Some(Path::new("/tmp/audit.log"))
        );
        for bad in ["", "  ", "/var/log/", "/"] {
            let errors = load(Some(&with(bad)), secret()).expect_err(bad).0;
            assert!(
                errors.iter().any(|e| e.starts_with("log.audit_file")),
                "{bad:?}: {errors:?}"
            );
        }
    }

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
