//! Typed builders for the test application's configuration. Each renders the TOML that
//! `spawn_app_with` hands to `config::load`, the one parser.

use std::collections::BTreeMap;

/// A TOML basic string.
pub fn quote(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

fn string_array(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", items.join(", "))
}

fn render_keys(keys: &BTreeMap<&'static str, String>) -> String {
    keys.iter()
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect()
}

/// One `[[routes]]` table.
#[derive(Clone, Debug)]
pub struct Route {
    prefix: String,
    upstream: String,
    keys: BTreeMap<&'static str, String>,
    require: BTreeMap<&'static str, String>,
    claims: Vec<(String, String)>,
    inject_headers: Vec<(String, String)>,
    tls: Option<RouteTls>,
    exchange: BTreeMap<&'static str, String>,
}

/// A route's `[routes.tls]` table: how gatehouse verifies an https upstream and which
/// certificate it presents.
#[derive(Clone, Debug, Default)]
pub struct RouteTls {
    keys: BTreeMap<&'static str, String>,
}

impl RouteTls {
    pub fn new() -> Self {
        Self::default()
    }

    fn path(mut self, key: &'static str, path: &std::path::Path) -> Self {
        self.keys.insert(key, quote(&path.display().to_string()));
        self
    }

    pub fn ca_file(self, path: &std::path::Path) -> Self {
        self.path("ca_file", path)
    }

    pub fn client_cert_file(self, path: &std::path::Path) -> Self {
        self.path("client_cert_file", path)
    }

    pub fn client_key_file(self, path: &std::path::Path) -> Self {
        self.path("client_key_file", path)
    }

    /// The name the upstream's certificate is verified against.
    pub fn server_name(mut self, name: &str) -> Self {
        self.keys.insert("server_name", quote(name));
        self
    }
}

impl Route {
    pub fn new(prefix: &str, upstream: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            upstream: upstream.to_owned(),
            keys: BTreeMap::new(),
            require: BTreeMap::new(),
            claims: Vec::new(),
            inject_headers: Vec::new(),
            tls: None,
            exchange: BTreeMap::new(),
        }
    }

    /// `resource` (RFC 8707): the route's token is for this resource alone.
    pub fn resource(self, uri: &str) -> Self {
        self.key("resource", quote(uri))
    }

    /// `scopes`: asked for the route's resource.
    pub fn scopes(self, scopes: &[&str]) -> Self {
        self.key("scopes", string_array(scopes))
    }

    /// `token = "exchange"` with `[routes.exchange] audience` (and `scope` when given).
    pub fn exchange(mut self, audience: &str, scope: Option<&str>) -> Self {
        self.exchange.insert("audience", quote(audience));
        if let Some(scope) = scope {
            self.exchange.insert("scope", quote(scope));
        }
        self.token("exchange")
    }

    /// The `[routes.tls]` table.
    pub fn tls(mut self, tls: RouteTls) -> Self {
        self.tls = Some(tls);
        self
    }

    fn key(mut self, key: &'static str, value: String) -> Self {
        self.keys.insert(key, value);
        self
    }

    /// `token`: "user", "none", "optional", "client", "user-or-client".
    pub fn token(self, policy: &str) -> Self {
        self.key("token", quote(policy))
    }

    pub fn methods(self, methods: &[&str]) -> Self {
        self.key("methods", string_array(methods))
    }

    pub fn match_case(self, on: bool) -> Self {
        self.key("match_case", on.to_string())
    }

    /// `rate_limit = "off"`.
    pub fn rate_limit_off(self) -> Self {
        self.key("rate_limit", quote("off"))
    }

    /// A limit of the route's own.
    pub fn rate_limit(self, requests: u64, per_secs: u64) -> Self {
        self.key(
            "rate_limit",
            format!("{{ requests = {requests}, per_secs = {per_secs} }}"),
        )
    }

    /// `websocket = true`.
    pub fn websocket(self) -> Self {
        self.key("websocket", "true".into())
    }

    /// `websocket_idle_secs`.
    pub fn websocket_idle_secs(self, secs: u64) -> Self {
        self.key("websocket_idle_secs", secs.to_string())
    }

    pub fn timeout_secs(self, secs: u64) -> Self {
        self.key("timeout_secs", secs.to_string())
    }

    pub fn max_duration_secs(self, secs: u64) -> Self {
        self.key("max_duration_secs", secs.to_string())
    }

    pub fn max_body_bytes(self, bytes: u64) -> Self {
        self.key("max_body_bytes", bytes.to_string())
    }

    pub fn pass_set_cookie(self, on: bool) -> Self {
        self.key("pass_set_cookie", on.to_string())
    }

    pub fn cache_private(self, on: bool) -> Self {
        self.key("cache_private", on.to_string())
    }

    pub fn forward_headers(self, names: &[&str]) -> Self {
        self.key("forward_headers", string_array(names))
    }

    /// `name`: the Cedar resource `Route::"<name>"`.
    pub fn name(self, name: &str) -> Self {
        self.key("name", quote(name))
    }

    /// `path = […]`: the path templates after the prefix.
    pub fn paths(self, templates: &[&str]) -> Self {
        self.key("path", string_array(templates))
    }

    /// `policy = true`: every call decided by the `[policies]` set.
    pub fn policy(self) -> Self {
        self.key("policy", "true".into())
    }

    /// `[routes.require] acr = […]`.
    pub fn require_acr(mut self, values: &[&str]) -> Self {
        self.require.insert("acr", string_array(values));
        self
    }

    /// `[routes.require] max_auth_age_secs`.
    pub fn require_max_auth_age_secs(mut self, secs: u64) -> Self {
        self.require.insert("max_auth_age_secs", secs.to_string());
        self
    }

    /// `[routes.require] scopes = […]`.
    pub fn require_scopes(mut self, scopes: &[&str]) -> Self {
        self.require.insert("scopes", string_array(scopes));
        self
    }

    /// `[routes.require.claims] name = "value"`.
    pub fn require_claim(mut self, name: &str, value: &str) -> Self {
        self.claims.push((name.to_owned(), quote(value)));
        self
    }

    /// `[routes.require.claims] name = ["value", …]`.
    pub fn require_claim_any(mut self, name: &str, values: &[&str]) -> Self {
        self.claims.push((name.to_owned(), string_array(values)));
        self
    }

    /// `[routes.inject_headers] "Name" = { env = "VARIABLE" }`.
    pub fn inject_header_from_env(mut self, name: &str, variable: &str) -> Self {
        self.inject_headers
            .push((name.to_owned(), variable.to_owned()));
        self
    }

    pub fn toml(&self) -> String {
        let mut text = format!(
            "[[routes]]\nprefix = {}\nupstream = {}\n{}",
            quote(&self.prefix),
            quote(&self.upstream),
            render_keys(&self.keys)
        );
        if !self.require.is_empty() {
            text.push_str("[routes.require]\n");
            text.push_str(&render_keys(&self.require));
        }
        if !self.claims.is_empty() {
            text.push_str("[routes.require.claims]\n");
            for (name, value) in &self.claims {
                text.push_str(&format!("{} = {value}\n", quote(name)));
            }
        }
        if !self.inject_headers.is_empty() {
            text.push_str("[routes.inject_headers]\n");
            for (name, variable) in &self.inject_headers {
                text.push_str(&format!(
                    "{} = {{ env = {} }}\n",
                    quote(name),
                    quote(variable)
                ));
            }
        }
        if let Some(tls) = &self.tls {
            text.push_str("[routes.tls]\n");
            text.push_str(&render_keys(&tls.keys));
        }
        if !self.exchange.is_empty() {
            text.push_str("[routes.exchange]\n");
            text.push_str(&render_keys(&self.exchange));
        }
        text
    }
}

/// The `[policies]` table: Cedar policy files and their schema.
#[derive(Clone, Debug)]
pub struct Policies {
    files: Vec<std::path::PathBuf>,
    schema: std::path::PathBuf,
    keys: BTreeMap<&'static str, String>,
}

impl Policies {
    pub fn new(schema: &std::path::Path, files: &[&std::path::Path]) -> Self {
        Self {
            files: files.iter().map(|f| f.to_path_buf()).collect(),
            schema: schema.to_path_buf(),
            keys: BTreeMap::new(),
        }
    }

    /// `roles_claim`: the claim whose values are the user's roles.
    pub fn roles_claim(mut self, claim: &str) -> Self {
        self.keys.insert("roles_claim", quote(claim));
        self
    }

    /// `poll_secs`: how often the files are looked at for a change.
    pub fn poll_secs(mut self, secs: u64) -> Self {
        self.keys.insert("poll_secs", secs.to_string());
        self
    }

    pub fn toml(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        format!(
            "[policies]\nfiles = {}\nschema = {}\n{}",
            string_array(&files),
            quote(&self.schema.display().to_string()),
            render_keys(&self.keys)
        )
    }
}

/// Keys of one table (`[server]`, `[session]`, `[redis]`), each set at most once.
macro_rules! keys_table {
    ($(#[$doc:meta])* $name:ident { $($(#[$key_doc:meta])* $key:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default)]
        pub struct $name {
            keys: BTreeMap<&'static str, String>,
        }

        impl $name {
            pub fn new() -> Self {
                Self::default()
            }

            $(
                $(#[$key_doc])*
                pub fn $key(mut self, value: $ty) -> Self {
                    self.keys.insert(stringify!($key), value.to_string());
                    self
                }
            )*

            /// The table's keys as TOML lines.
            pub fn toml(&self) -> String {
                render_keys(&self.keys)
            }
        }
    };
}

keys_table!(
    /// Keys of the `[server]` table (besides `public_url`, `workers` and `shutdown_timeout_secs`).
    ServerKeys {
        header_timeout_ms: u64,
        body_timeout_ms: u64,
        body_min_bytes_per_sec: u64,
    }
);

impl ServerKeys {
    /// `server.pid_file` (relative: in the process's working directory).
    pub fn pid_file(mut self, path: &str) -> Self {
        self.keys.insert("pid_file", quote(path));
        self
    }

    pub fn trusted_proxies(mut self, proxies: &[&str]) -> Self {
        self.keys.insert("trusted_proxies", string_array(proxies));
        self
    }
}

keys_table!(
    /// Keys of the `[session]` table.
    SessionKeys {
        idle_timeout_secs: u64,
        absolute_timeout_secs: u64,
        touch_interval_secs: u64,
        refresh_skew_secs: u64,
        refresh_lock_ttl_ms: u64,
        websocket_max_per_session: u64,
    }
);

impl SessionKeys {
    pub fn cookie_name(mut self, name: &str) -> Self {
        self.keys.insert("cookie_name", quote(name));
        self
    }

    /// A day idle, two in all: moving the clock past an access token's expiry ends no
    /// session.
    pub fn long() -> Self {
        Self::new()
            .idle_timeout_secs(86400)
            .absolute_timeout_secs(172800)
    }
}

keys_table!(
    /// Keys of the `[redis]` table besides the URL (or topology) and the key prefix.
    RedisKeys {
        connect_timeout_ms: u64,
        response_timeout_ms: u64,
        min_replicas_ack: u32,
        min_replicas_timeout_ms: u64,
    }
);

impl RedisKeys {
    /// `ca_file`: the CA that a `rediss://` server's certificate is verified against.
    pub fn ca_file(mut self, path: &std::path::Path) -> Self {
        self.keys
            .insert("ca_file", quote(&path.display().to_string()));
        self
    }
}

/// Where the `[redis]` table points: one URL, a cluster's seed URLs, or sentinels.
#[derive(Clone, Debug)]
pub enum RedisTopology {
    Url(String),
    Cluster(Vec<String>),
    Sentinel {
        master_name: String,
        sentinels: Vec<String>,
    },
}

impl RedisTopology {
    pub fn url(url: &str) -> Self {
        Self::Url(url.to_owned())
    }

    /// `mode = "cluster"` with its seed URLs.
    pub fn cluster(urls: &[String]) -> Self {
        Self::Cluster(urls.to_vec())
    }

    /// `mode = "sentinel"`: the master's name and the sentinels' URLs.
    pub fn sentinel(master_name: &str, sentinels: &[String]) -> Self {
        Self::Sentinel {
            master_name: master_name.to_owned(),
            sentinels: sentinels.to_vec(),
        }
    }

    /// The table's keys as TOML lines.
    pub fn toml(&self) -> String {
        let list = |urls: &[String]| {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            string_array(&urls)
        };
        match self {
            Self::Url(url) => format!("url = {}\n", quote(url)),
            Self::Cluster(urls) => format!("mode = \"cluster\"\nurls = {}\n", list(urls)),
            Self::Sentinel {
                master_name,
                sentinels,
            } => format!(
                "mode = \"sentinel\"\nmaster_name = {}\nsentinels = {}\n",
                quote(master_name),
                list(sentinels)
            ),
        }
    }
}

/// The `[rate_limits]` table: each limit `off` or `{ requests, per_secs }`.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    keys: BTreeMap<&'static str, String>,
}

impl RateLimits {
    pub fn new() -> Self {
        Self::default()
    }

    fn limit(mut self, name: &'static str, requests: u64, per_secs: u64) -> Self {
        self.keys.insert(
            name,
            format!("{{ requests = {requests}, per_secs = {per_secs} }}"),
        );
        self
    }

    pub fn login(self, requests: u64, per_secs: u64) -> Self {
        self.limit("login", requests, per_secs)
    }

    pub fn api(self, requests: u64, per_secs: u64) -> Self {
        self.limit("api", requests, per_secs)
    }

    pub fn login_off(mut self) -> Self {
        self.keys.insert("login", quote("off"));
        self
    }

    pub fn api_off(mut self) -> Self {
        self.keys.insert("api", quote("off"));
        self
    }

    /// Both off.
    pub fn off() -> Self {
        Self::new().login_off().api_off()
    }

    /// The table, or nothing when no limit is set.
    pub fn toml(&self) -> String {
        if self.keys.is_empty() {
            String::new()
        } else {
            format!("[rate_limits]\n{}", render_keys(&self.keys))
        }
    }
}

/// Where the `[frontend]` table's files come from.
#[derive(Clone, Debug)]
enum FrontendSource {
    Dir(std::path::PathBuf),
    DevServer(String),
}

/// The `[frontend]` table: a directory of built files, or a dev server, and the security
/// headers' policies.
#[derive(Clone, Debug)]
pub struct Frontend {
    source: FrontendSource,
    keys: BTreeMap<&'static str, String>,
}

impl Frontend {
    /// `dir`: a directory of built files.
    pub fn dir(dir: impl Into<std::path::PathBuf>) -> Self {
        Self::from_source(FrontendSource::Dir(dir.into()))
    }

    /// `dev_server`: the origin of a dev server.
    pub fn dev_server(origin: &str) -> Self {
        Self::from_source(FrontendSource::DevServer(origin.to_owned()))
    }

    fn from_source(source: FrontendSource) -> Self {
        Self {
            source,
            keys: BTreeMap::new(),
        }
    }

    /// `content_security_policy` (empty: no header).
    pub fn content_security_policy(mut self, policy: &str) -> Self {
        self.keys.insert("content_security_policy", quote(policy));
        self
    }

    pub fn referrer_policy(mut self, policy: &str) -> Self {
        self.keys.insert("referrer_policy", quote(policy));
        self
    }

    pub fn toml(&self) -> String {
        let source = match &self.source {
            FrontendSource::Dir(dir) => format!("dir = {}", quote(&dir.display().to_string())),
            FrontendSource::DevServer(origin) => format!("dev_server = {}", quote(origin)),
        };
        format!("[frontend]\n{source}\n{}", render_keys(&self.keys))
    }
}

/// A `[providers.NAME]` table besides `main` (its client secret goes in the environment).
#[derive(Clone, Debug)]
pub struct Provider {
    name: String,
    issuer: String,
    client_id: String,
    client_secret_file: Option<String>,
}

impl Provider {
    /// With the 5 s `http_timeout_secs` that `main` has.
    pub fn new(name: &str, issuer: &str, client_id: &str) -> Self {
        Self {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret_file: None,
        }
    }

    /// The client secret from a file (a provider added while the server runs cannot take
    /// it from the environment).
    pub fn client_secret_file(mut self, path: &std::path::Path) -> Self {
        self.client_secret_file = Some(path.display().to_string());
        self
    }

    pub fn toml(&self) -> String {
        let mut text = format!(
            "[providers.{}]\nissuer = {}\nclient_id = {}\nhttp_timeout_secs = 5\n",
            self.name,
            quote(&self.issuer),
            quote(&self.client_id)
        );
        if let Some(path) = &self.client_secret_file {
            text.push_str(&format!("client_secret_file = {}\n", quote(path)));
        }
        text
    }
}

/// The tables the typed options render (each starts with its
/// header, so nothing attaches to the table before it).
pub fn render_tables(
    rate_limits: &RateLimits,
    frontend: Option<&Frontend>,
    providers: &[Provider],
    routes: &[Route],
    policies: Option<&Policies>,
) -> String {
    let mut text = rate_limits.toml();
    if let Some(policies) = policies {
        text.push_str(&policies.toml());
    }
    if let Some(frontend) = frontend {
        text.push_str(&frontend.toml());
    }
    for provider in providers {
        text.push_str(&provider.toml());
    }
    for route in routes {
        text.push('\n');
        text.push_str(&route.toml());
    }
    text
}

/// The `[telemetry]` table: trace export over OTLP/HTTP.
#[derive(Clone, Debug)]
pub struct Telemetry {
    otlp_endpoint: String,
    queue_size: Option<u64>,
    export_timeout_secs: Option<u64>,
}

impl Telemetry {
    pub fn otlp(endpoint: &str) -> Self {
        Self {
            otlp_endpoint: endpoint.to_owned(),
            queue_size: None,
            export_timeout_secs: None,
        }
    }

    pub fn queue_size(mut self, spans: u64) -> Self {
        self.queue_size = Some(spans);
        self
    }

    pub fn export_timeout_secs(mut self, secs: u64) -> Self {
        self.export_timeout_secs = Some(secs);
        self
    }

    pub fn toml(&self) -> String {
        let mut text = format!(
            "\n[telemetry]\notlp_endpoint = {}\n",
            quote(&self.otlp_endpoint)
        );
        if let Some(size) = self.queue_size {
            text.push_str(&format!("queue_size = {size}\n"));
        }
        if let Some(secs) = self.export_timeout_secs {
            text.push_str(&format!("export_timeout_secs = {secs}\n"));
        }
        text
    }
}
