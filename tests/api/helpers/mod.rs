#![allow(dead_code)] // helpers serve later test modules too

//! The test bed: real gatehouse (in process, port 0), real Redis, real OpenID Provider.

pub mod certs;
pub mod check_online;
pub mod dev_server;
pub mod dot_provider;
pub mod echo;
pub mod gatehouse_process;
pub mod logout_tokens;
pub mod options;
pub mod otlp_receiver;
pub mod processes;
pub mod provider_logout;
pub mod scrape;
pub mod session_cache;
pub mod token_upstream;
pub mod topologies;
pub mod webdriver;
pub mod websocket_echo;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gatehouse::clock::OffsetClock;
use gatehouse::config::{self, Settings};
use gatehouse::live::Reloader;
use gatehouse::session::{IdlePolicy, LoadedSession, SessionManager};
use gatehouse::startup::{Application, ConfigSource};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

pub use options::{
    Frontend, Policies, Provider, RateLimits, RedisKeys, RedisTopology, Route, RouteTls,
    ServerKeys, SessionKeys, Telemetry,
};
pub use processes::{shared_provider, shared_redis, ProviderProcess};

// ---------------------------------------------------------------------------------------
// Logs: every line gatehouse logs during the run is kept, so tests can grep for secrets.
// ---------------------------------------------------------------------------------------

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The whole run's gatehouse log and every secret the tests saw, for `scripts/test` to
/// grep one against the other once all tests are done.
fn run_file(name: &str) -> &'static Mutex<std::fs::File> {
    static FILES: OnceLock<(Mutex<std::fs::File>, Mutex<std::fs::File>)> = OnceLock::new();
    let (log, secrets) = FILES.get_or_init(|| {
        let dir = processes::artifacts_dir();
        let open =
            |file: &str| Mutex::new(std::fs::File::create(dir.join(file)).expect("artifact file"));
        (open("gatehouse.log"), open("secrets.txt"))
    });
    if name == "log" {
        log
    } else {
        secrets
    }
}

/// Remembers a token or cookie value the browser side came to know.
pub fn record_secret(secret: &str) {
    let mut file = run_file("secrets")
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(file, "{secret}");
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        let _ = run_file("log")
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("gatehouse=trace,info"))
            .with_ansi(false)
            .with_writer(|| CaptureWriter)
            .try_init();
    });
}

/// Everything logged so far by any test in this binary.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// A fresh directory under target/test-artifacts holding `gatehouse.toml` (and no `.env`
/// unless a test writes one), for running the real binary.
pub fn config_dir(config_toml: &str) -> std::path::PathBuf {
    let dir = processes::artifacts_dir().join(random_name("cfg"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("gatehouse.toml"), config_toml).expect("write config");
    dir
}

/// A fresh operator token for the admin API (recorded: the whole-run log check looks for it).
pub fn operator_token() -> String {
    let token = gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    record_secret(&token);
    token
}

/// An `admin.api_token_file` holding `name:token` per operator, in a fresh directory.
pub fn operator_token_file(operators: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = config_dir("");
    let path = dir.join("operators");
    let lines: String = operators
        .iter()
        .map(|(name, token)| format!("{name}:{token}\n"))
        .collect();
    std::fs::write(&path, format!("# operator:token\n{lines}")).expect("write operators");
    path
}

/// `gatehouse check-config` on the `gatehouse.toml` in `dir`, run there (so a `.env` there
/// counts and none elsewhere does).
pub fn check_config_in(dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config", "--config", "gatehouse.toml"])
        .current_dir(dir)
        .env_remove("GATEHOUSE_CONFIG")
        .output()
        .expect("run gatehouse check-config")
}

/// What a provider counted for one client: grants by type, refresh errors, revocations.
pub async fn grants_at(issuer: &str, client_id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{issuer}/__test/grants?client_id={client_id}"))
        .send()
        .await
        .expect("grants")
        .json()
        .await
        .expect("grants JSON")
}

pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{prefix}{n:016x}")
}

// ---------------------------------------------------------------------------------------
// The application under test
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StoreKind {
    Redis,
    Memory,
}

pub struct AppOptions<'a> {
    pub store: StoreKind,
    pub provider: Option<&'a ProviderProcess>,
    /// `[[routes]]` tables, in order.
    pub routes: Vec<Route>,
    /// Keys of the `[server]`, `[session]` and `[redis]` tables.
    pub server: ServerKeys,
    pub session: SessionKeys,
    pub redis: RedisKeys,
    pub rate_limits: RateLimits,
    pub frontend: Option<Frontend>,
    /// Providers besides `main`.
    pub providers: Vec<Provider>,
    /// Extra environment variables (secrets of extra providers, top-level keys).
    pub env: Vec<(String, String)>,
    /// Another Redis than the shared one (a test that takes Redis down).
    pub redis_url: Option<String>,
    /// Where the `[redis]` table points instead of `redis_url` (a cluster, sentinels); the
    /// key prefix is still added.
    pub redis_topology: Option<RedisTopology>,
    /// Another instance of an app: same Redis prefix, provider and client.
    pub share: Option<&'a TestApp>,
    /// A client configured in advance, with the listener its redirect URI names (for a
    /// provider that is not running yet).
    pub preset: Option<Preset>,
    /// Return without waiting for `/readyz` (a test of an app that cannot get ready).
    pub not_ready: bool,
    /// Another `server.public_url` than the listener's http URL (e.g. an https one, as behind
    /// a TLS-terminating proxy). Tests still talk to `base`.
    pub public_url: Option<String>,
    /// An admin listener (`[admin] bind`) on a free port; its URL is `TestApp::admin_base`.
    pub admin: bool,
    /// `[admin] api_token_file` (with `admin`): the admin API's operator tokens.
    pub admin_api_token_file: Option<std::path::PathBuf>,
    /// A `[telemetry]` table (it takes effect in the binary: `GatehouseProcess`).
    pub telemetry: Option<Telemetry>,
    /// The top-level `default_provider`.
    pub default_provider: Option<String>,
    /// `dpop = true` on the main provider (RFC 9449).
    pub main_dpop: bool,
    /// The `[policies]` table (Cedar files and schema).
    pub policies: Option<Policies>,
}

pub struct Preset {
    pub issuer: String,
    pub client: RegisteredClient,
    pub listener: std::net::TcpListener,
}

impl Default for AppOptions<'_> {
    fn default() -> Self {
        Self {
            store: StoreKind::Redis,
            provider: None,
            routes: Vec::new(),
            server: ServerKeys::new(),
            session: SessionKeys::new(),
            redis: RedisKeys::new(),
            rate_limits: RateLimits::new(),
            frontend: None,
            providers: Vec::new(),
            env: Vec::new(),
            redis_url: None,
            redis_topology: None,
            not_ready: false,
            share: None,
            preset: None,
            policies: None,
            public_url: None,
            admin: false,
            admin_api_token_file: None,
            telemetry: None,
            default_provider: None,
            main_dpop: false,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub port: u16,
    /// The admin listener's URL, with `AppOptions::admin`.
    pub admin_base: Option<String>,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub key_prefix: String,
    pub redis_url: String,
    /// The config this instance runs on (secret in the environment, as in production).
    pub config_toml: String,
    pub settings: Settings,
    pub clock: OffsetClock,
    /// The store the app serves from.
    pub store: Arc<dyn gatehouse::session::SessionStore>,
    pub http: reqwest::Client,
    /// Puts another configuration in force, as SIGHUP does in the binary.
    pub reloader: Reloader,
    /// The environment the configuration was loaded with (the secrets).
    pub env: Vec<(String, String)>,
}

/// A client registered at the provider for one gatehouse instance.
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: String,
}

pub async fn register_client(issuer: &str, gatehouse_base: &str) -> RegisteredClient {
    register_client_with(issuer, gatehouse_base, json!({})).await
}

/// Registers a client; `overrides` replaces members of the default metadata.
pub async fn register_client_with(
    issuer: &str,
    gatehouse_base: &str,
    overrides: Value,
) -> RegisteredClient {
    let mut metadata = json!({
        "redirect_uris": [format!("{gatehouse_base}/auth/callback")],
        "post_logout_redirect_uris": [format!("{gatehouse_base}/")],
        "backchannel_logout_uri": format!("{gatehouse_base}/auth/backchannel-logout"),
        "backchannel_logout_session_required": true,
        "grant_types": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    });
    for (key, value) in overrides.as_object().cloned().unwrap_or_default() {
        metadata[key] = value;
    }
    let response: Value = reqwest::Client::new()
        .post(format!("{issuer}/reg"))
        .json(&metadata)
        .send()
        .await
        .expect("registration request")
        .error_for_status()
        .expect("registration accepted")
        .json()
        .await
        .expect("registration JSON");
    RegisteredClient {
        client_id: response["client_id"]
            .as_str()
            .expect("client_id")
            .to_owned(),
        // None for a client that authenticates with a key (private_key_jwt); the empty
        // secret then counts as unset.
        client_secret: response["client_secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(mut options: AppOptions<'_>) -> TestApp {
    init_logs();
    let wait_ready = options.preset.is_none() && !options.not_ready;
    let (issuer, client, listener) = match options.preset.take() {
        Some(preset) => (preset.issuer, preset.client, preset.listener),
        None if options.share.is_some() => {
            let other = options.share.expect("checked");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let client = RegisteredClient {
                client_id: other.client_id.clone(),
                client_secret: other.client_secret.clone(),
            };
            (other.issuer.clone(), client, listener)
        }
        None => {
            let provider = options.provider.unwrap_or_else(|| shared_provider());
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let base = format!(
                "http://127.0.0.1:{}",
                listener.local_addr().expect("addr").port()
            );
            (
                provider.issuer.clone(),
                register_client(&provider.issuer, &base).await,
                listener,
            )
        }
    };
    let port = listener.local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let key_prefix = options
        .share
        .map(|other| other.key_prefix.clone())
        .unwrap_or_else(|| random_name("t"));
    let redis_url = options
        .redis_url
        .clone()
        .unwrap_or_else(|| shared_redis().url());
    let public_url = options.public_url.clone().unwrap_or_else(|| base.clone());
    let toml = render_config(
        &options,
        &public_url,
        &issuer,
        &client.client_id,
        &key_prefix,
        &redis_url,
    );
    let config_toml = toml.clone();
    let mut env = vec![(
        "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".to_owned(),
        client.client_secret.clone(),
    )];
    env.extend(options.env.iter().cloned());
    let (settings, tree) = config::load_with_tree(Some(&toml), env.clone())
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let clock = OffsetClock::new();
    let source = ConfigSource {
        tree,
        file_text: Some(toml.clone()),
    };
    let app =
        Application::build_with_source(settings.clone(), source, listener, Arc::new(clock.clone()))
            .await
            .expect("application builds");
    let reloader = app.reloader();
    let store = app.session_store();
    let admin_base = app
        .admin_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    tokio::spawn(app.run_until_stopped());

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        // Below gatehouse's 5 s keep-alive, so the client never reuses a connection at the
        // moment the server closes it (HTTP/1.1's race, which browsers retry and reqwest
        // does not).
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let test_app = TestApp {
        base,
        port,
        admin_base,
        issuer,
        client_id: client.client_id,
        client_secret: client.client_secret,
        key_prefix,
        redis_url,
        config_toml,
        settings,
        clock,
        http,
        store,
        reloader,
        env,
    };
    if wait_ready {
        test_app.wait_until_ready().await;
    }
    test_app
}

/// The configuration file `options` make for an app of this provider, client and Redis.
fn render_config(
    options: &AppOptions<'_>,
    public_url: &str,
    issuer: &str,
    client_id: &str,
    key_prefix: &str,
    redis_url: &str,
) -> String {
    let redis_table = match options.store {
        StoreKind::Redis => format!(
            "[redis]\n{}key_prefix = \"{key_prefix}\"\n{}\n",
            options
                .redis_topology
                .as_ref()
                .map(RedisTopology::toml)
                .unwrap_or_else(|| RedisTopology::url(redis_url).toml()),
            options.redis.toml(),
        ),
        StoreKind::Memory => String::new(),
    };
    format!(
        r#"{top_level}
[server]
public_url = "{public_url}"
workers = 2
shutdown_timeout_secs = 1
{server_keys}

[session]
{session_keys}

{redis_table}

[providers.main]
issuer = "{issuer}"
client_id = "{client_id}"
http_timeout_secs = 5
dpop = {main_dpop}

{admin}
{tables}
{telemetry}
"#,
        top_level = options
            .default_provider
            .as_deref()
            .map(|name| format!("default_provider = \"{name}\"\n"))
            .unwrap_or_default(),
        main_dpop = options.main_dpop,
        server_keys = options.server.toml(),
        session_keys = options.session.toml(),
        tables = options::render_tables(
            &options.rate_limits,
            options.frontend.as_ref(),
            &options.providers,
            &options.routes,
            options.policies.as_ref()
        ),
        telemetry = options
            .telemetry
            .as_ref()
            .map(Telemetry::toml)
            .unwrap_or_default(),
        admin = match (options.admin, &options.admin_api_token_file) {
            (false, _) => String::new(),
            (true, None) => "[admin]\nbind = \"127.0.0.1:0\"\n".to_owned(),
            (true, Some(file)) => format!(
                "[admin]\nbind = \"127.0.0.1:0\"\napi_token_file = {}\n",
                options::quote(&file.display().to_string())
            ),
        },
    )
}

impl TestApp {
    /// Another configuration for this app (same provider, client and Redis), as `options`
    /// make it: what a reload reads.
    pub fn config_with(&self, options: AppOptions<'_>) -> String {
        let public_url = options
            .public_url
            .clone()
            .unwrap_or_else(|| self.base.clone());
        render_config(
            &options,
            &public_url,
            &self.issuer,
            &self.client_id,
            &self.key_prefix,
            &self.redis_url,
        )
    }

    pub async fn wait_until_ready(&self) {
        for _ in 0..200 {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.base)).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gatehouse did not become ready");
    }

    pub fn browser(&self) -> Browser<'_> {
        Browser::new(self)
    }

    pub fn cookie_name(&self) -> &str {
        &self.settings.session.cookie_name
    }

    /// A session manager on the same Redis and key prefix: lets a test read the tokens a
    /// session holds, given the cookie the browser has.
    pub fn session_manager(&self) -> SessionManager {
        let store = gatehouse::startup::build_store(&self.settings, false).expect("store");
        SessionManager::new(
            store,
            IdlePolicy {
                idle_timeout: self.settings.session.idle_timeout,
                touch_interval: self.settings.session.touch_interval,
            },
        )
    }

    pub async fn session_for(&self, cookie_value: &str) -> Option<LoadedSession> {
        self.session_manager()
            .load(
                cookie_value,
                gatehouse::clock::Clock::now_millis(&self.clock),
            )
            .await
            .expect("load")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.clone())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// A GET as the SPA makes it (anti-forgery header), with a session cookie value taken
    /// from any browser: for calling one session through several instances.
    pub async fn get_with_session(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-csrf", "1")
            .header("cookie", format!("{}={cookie}", self.cookie_name()))
            .send()
            .await
            .expect("gatehouse answers")
    }

    /// The dump without rate-limit buckets (`<prefix>:r:{…}`, a number each): what is left
    /// of sessions, indices, locks and login states.
    pub async fn session_data_dump(&self) -> BTreeMap<String, Vec<Vec<u8>>> {
        let buckets = format!("{}:r:", self.key_prefix);
        let mut dump = self.redis_dump().await;
        dump.retain(|key, _| !key.starts_with(&buckets));
        dump
    }

    /// Every key of this app with a readable dump of its value.
    pub async fn redis_dump(&self) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut conn = self.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.key_prefix))
            .query_async(&mut conn)
            .await
            .expect("keys");
        let mut dump = BTreeMap::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("type");
            let values: Vec<Vec<u8>> = match kind.as_str() {
                "hash" => redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("hgetall"),
                "set" => redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("smembers"),
                "string" => vec![redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("get")],
                // Gone between KEYS and TYPE (it expired, or was deleted meanwhile).
                "none" => continue,
                other => panic!("unexpected key type {other}"),
            };
            dump.insert(key, values);
        }
        dump
    }

    pub async fn session_key_count(&self) -> usize {
        self.redis_dump()
            .await
            .keys()
            .filter(|k| k.contains(":s:"))
            .count()
    }

    /// The provider's token introspection, authenticated as this app's client.
    pub async fn introspect(&self, token: &str) -> Value {
        reqwest::Client::new()
            .post(format!("{}/token/introspection", self.issuer))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspection")
            .json()
            .await
            .expect("introspection JSON")
    }

    pub async fn provider_grants(&self) -> Value {
        grants_at(&self.issuer, &self.client_id).await
    }
}

// ---------------------------------------------------------------------------------------
// A browser: a cookie jar for gatehouse (kept by hand, so tests see every attribute) and one
// for the provider.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// Status, headers and body as one text, for "does this response contain X".
    pub fn transcript(&self) -> String {
        let mut text = format!("{}\n", self.status);
        for (name, value) in &self.headers {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        text.push_str(&self.body);
        text
    }

    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "content type {}",
            self.content_type()
        );
        let body = self.json();
        assert_eq!(
            body["type"],
            format!("urn:gatehouse:problem:{slug}"),
            "body: {body}"
        );
        assert!(
            body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "no request id: {body}"
        );
        assert!(self.location().is_none(), "a problem must not redirect");
    }
}

pub struct Browser<'a> {
    pub app: &'a TestApp,
    pub cookies: BTreeMap<String, String>,
    pub provider_http: reqwest::Client,
    /// Every response gatehouse sent this browser.
    pub seen: Vec<Resp>,
    /// The User-Agent every request to gatehouse carries (none by default).
    pub user_agent: Option<String>,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: BTreeMap::new(),
            provider_http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("provider client"),
            seen: Vec::new(),
            user_agent: None,
        }
    }

    /// The same browser, sending this User-Agent to gatehouse (a "device").
    pub fn with_user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = Some(user_agent.to_owned());
        self
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.cookies.get(self.app.cookie_name()).cloned()
    }

    fn absorb_cookies(&mut self, headers: &HeaderMap) {
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().expect("ascii cookie");
            let cookie = cookie::Cookie::parse(text.to_owned()).expect("valid Set-Cookie");
            let removal = cookie
                .max_age()
                .is_some_and(|age| age.is_zero() || age.is_negative());
            if removal || cookie.value().is_empty() {
                self.cookies.remove(cookie.name());
            } else {
                self.cookies
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
    }

    fn cookie_header(&self) -> Option<HeaderValue> {
        if self.cookies.is_empty() {
            return None;
        }
        let text = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        Some(HeaderValue::from_str(&text).expect("cookie header"))
    }

    pub async fn request(
        &mut self,
        method: reqwest::Method,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.app.base)
        };
        let mut request = self.app.http.request(method, url);
        if let Some(cookie) = self.cookie_header() {
            request = request.header("cookie", cookie);
        }
        if let Some(user_agent) = &self.user_agent {
            request = request.header("user-agent", user_agent.as_str());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("gatehouse answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        self.absorb_cookies(&headers);
        let resp = Resp {
            status,
            headers,
            body,
        };
        self.seen.push(resp.clone());
        resp
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, &[], None).await
    }

    /// A request with this browser's cookies and the anti-forgery header, for bodies or
    /// answers that `Resp` cannot carry (streams, raw bytes).
    pub fn api_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .app
            .http
            .request(method, format!("{}{path}", self.app.base))
            .header("x-csrf", "1");
        if let Some(cookie) = self.cookie_header() {
            request = request.header("cookie", cookie);
        }
        request
    }

    /// A GET as the SPA's fetch makes it: with the anti-forgery header.
    pub async fn api_get(&mut self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, &[("x-csrf", "1")], None)
            .await
    }

    pub async fn api_post(&mut self, path: &str, body: Vec<u8>) -> Resp {
        self.request(reqwest::Method::POST, path, &[("x-csrf", "1")], Some(body))
            .await
    }

    /// `/auth/login`; returns gatehouse's answer (a redirect to the provider when all is well).
    pub async fn start_login(&mut self, return_to: Option<&str>) -> Resp {
        let path = match return_to {
            Some(target) => format!("/auth/login?returnTo={}", urlencode(target)),
            None => "/auth/login".to_owned(),
        };
        self.get(&path).await
    }

    /// Walks the provider's login and consent pages as `user` (oidc-provider's, or a DOT
    /// instance's login form: `dot_provider::login_form`) and returns the URL the provider
    /// finally redirects the browser to (gatehouse's callback).
    pub async fn authenticate_at_provider(&mut self, authorize_url: &str, user: &str) -> String {
        // Relative to the page that answered: with several providers, not always the app's.
        let absolute = |base: &str, location: &str| {
            url::Url::parse(base)
                .and_then(|base| base.join(location))
                .map(String::from)
                .unwrap_or_else(|_| location.to_owned())
        };
        let mut url = authorize_url.to_owned();
        for _ in 0..20 {
            if url.starts_with(&self.app.base) {
                return url;
            }
            let response = self
                .provider_http
                .get(&url)
                .send()
                .await
                .expect("provider answers");
            if response.status().is_redirection() {
                url = absolute(
                    &url,
                    response.headers()["location"].to_str().expect("location"),
                );
                continue;
            }
            assert_eq!(response.status(), 200, "provider page {url}");
            let page = response.text().await.expect("page");
            let owned = |pairs: &[(&str, &str)]| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            };
            let form = if let Some(form) = dot_provider::login_form(&url, &page, user) {
                form
            } else if page.contains("name=\"otp\"") {
                // The test provider's second factor (second_factor.mjs): its fixed code.
                owned(&[("prompt", "otp"), ("otp", "123456")])
            } else if page.contains("name=\"login\"") {
                owned(&[
                    ("prompt", "login"),
                    ("login", user),
                    ("password", "irrelevant"),
                ])
            } else if page.contains("value=\"consent\"") {
                owned(&[("prompt", "consent")])
            } else {
                panic!("unexpected provider page at {url}: {page}");
            };
            let response = self
                .provider_http
                .post(&url)
                .form(&form)
                .send()
                .await
                .expect("form post");
            assert!(
                response.status().is_redirection(),
                "form post at {url} answered {}",
                response.status()
            );
            url = absolute(
                &url,
                response.headers()["location"].to_str().expect("location"),
            );
        }
        panic!("provider flow did not end at gatehouse");
    }

    /// Starts a login and walks the provider's pages as `user`: the callback URL the
    /// provider sends the browser to, not yet visited.
    pub async fn callback_url_for(&mut self, user: &str) -> String {
        let start = self.start_login(None).await;
        let authorize = start.location().expect("redirect to provider").to_owned();
        self.authenticate_at_provider(&authorize, user).await
    }

    /// The whole login as `user`; returns the callback's answer.
    pub async fn login_with(&mut self, user: &str, return_to: Option<&str>) -> Resp {
        let start = self.start_login(return_to).await;
        assert_eq!(start.status, 302, "login start: {}", start.body);
        let authorize = start.location().expect("redirect to provider").to_owned();
        let callback = self.authenticate_at_provider(&authorize, user).await;
        self.get(&callback).await
    }

    pub async fn login(&mut self, user: &str) -> Resp {
        let response = self.login_with(user, None).await;
        assert_eq!(response.status, 302, "callback: {}", response.body);
        assert!(
            self.session_cookie().is_some(),
            "no session cookie after login"
        );
        response
    }

    /// The tokens the current session holds (read with the cookie's secret, as gatehouse does).
    /// The session's refresh token, as the store holds it.
    pub async fn refresh_token(&self) -> String {
        self.tokens()
            .await
            .refresh_token
            .expect("refresh token")
            .expose_secret()
            .to_owned()
    }

    pub async fn tokens(&self) -> gatehouse::session::TokenSet {
        let cookie = self.session_cookie().expect("session cookie");
        let tokens = self
            .app
            .session_for(&cookie)
            .await
            .expect("live session")
            .data
            .tokens
            .clone();
        record_secret(&cookie);
        record_secret(tokens.access_token.expose_secret());
        record_secret(tokens.id_token.expose_secret());
        if let Some(refresh) = &tokens.refresh_token {
            record_secret(refresh.expose_secret());
        }
        tokens
    }
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Runs the `gatehouse` binary with `app`'s configuration (an operator command).
pub fn gatehouse_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let dir = config_dir(&app.config_toml);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .args(["--config", "gatehouse.toml"])
        .current_dir(&dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET",
            &app.client_secret,
        )
        .output()
        .expect("run gatehouse");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// One API call as the SPA makes it (`GET /api/data` with a session cookie), to any
/// instance: the status, the bearer the echo upstream saw (on a 200), and the headers.
pub async fn proxied_call(
    app: &TestApp,
    cookie: &str,
) -> (u16, Option<String>, reqwest::header::HeaderMap) {
    let response = app.get_with_session("/api/data", cookie).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bearer = if status == 200 {
        let body: Value = response.json().await.expect("json");
        body["headers"]
            .as_array()
            .and_then(|h| h.iter().find(|p| p[0] == "authorization"))
            .and_then(|p| p[1].as_str())
            .map(str::to_owned)
    } else {
        None
    };
    (status, bearer, headers)
}

/// Waits (up to 5 s) until a store's session cache serves: Redis tracks its keys.
pub async fn wait_until_cache_serves(store: &dyn gatehouse::session::SessionStore) {
    for _ in 0..100 {
        if store.cache_statistics().is_some_and(|s| s.serving) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the session cache did not start serving");
}
