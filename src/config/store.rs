//! `[redis]`: the shared session store (the in-memory store without it), on one Redis, a
//! Redis Cluster or a Sentinel-managed master, over plain TCP or TLS.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawRedis {
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) mode: Option<String>,
    #[serde(default, deserialize_with = "secret_from_scalar")]
    pub(super) url: Option<SecretString>,
    pub(super) url_file: Option<PathBuf>,
    /// Cluster seed nodes.
    pub(super) urls: Option<Vec<String>>,
    pub(super) sentinels: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) master_name: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) username: Option<String>,
    #[serde(default, deserialize_with = "secret_from_scalar")]
    pub(super) password: Option<SecretString>,
    pub(super) password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) sentinel_username: Option<String>,
    #[serde(default, deserialize_with = "secret_from_scalar")]
    pub(super) sentinel_password: Option<SecretString>,
    pub(super) sentinel_password_file: Option<PathBuf>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) client_cert_file: Option<PathBuf>,
    pub(super) client_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) key_prefix: Option<String>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) response_timeout_ms: Option<u64>,
    pub(super) min_replicas_ack: Option<u32>,
    pub(super) min_replicas_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum StoreSettings {
    Memory,
    Redis(Box<RedisSettings>),
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub topology: RedisTopology,
    /// ACL user and password for the data nodes; they win over credentials in the URLs.
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub tls: RedisTls,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Replicas that must acknowledge a new session or refreshed tokens (`WAIT`); 0: none.
    pub min_replicas_ack: u32,
    pub min_replicas_timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum RedisTopology {
    Standalone {
        url: SecretString,
    },
    Cluster {
        seeds: Vec<SecretString>,
    },
    Sentinel {
        sentinels: Vec<SecretString>,
        master_name: String,
        sentinel_username: Option<String>,
        sentinel_password: Option<SecretString>,
    },
}

/// Trust and identity for `rediss://`; without a CA file the system's roots are trusted.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub client_identity: Option<CertKeyFiles>,
}

impl RedisTopology {
    pub fn mode(&self) -> &'static str {
        match self {
            RedisTopology::Standalone { .. } => "standalone",
            RedisTopology::Cluster { .. } => "cluster",
            RedisTopology::Sentinel { .. } => "sentinel",
        }
    }

    /// Whether the data nodes are reached over TLS (a `rediss://` URL).
    pub fn uses_tls(&self) -> bool {
        let urls: Vec<&SecretString> = match self {
            RedisTopology::Standalone { url } => vec![url],
            RedisTopology::Cluster { seeds } => seeds.iter().collect(),
            RedisTopology::Sentinel { sentinels, .. } => sentinels.iter().collect(),
        };
        urls.iter()
            .any(|url| url.expose_secret().starts_with("rediss://"))
    }
}

impl RedisSettings {
    /// One Redis at `url`, every other setting at its default.
    pub fn standalone(url: SecretString, key_prefix: &str) -> Self {
        Self {
            topology: RedisTopology::Standalone { url },
            username: None,
            password: None,
            tls: RedisTls::default(),
            key_prefix: key_prefix.to_owned(),
            connect_timeout: Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS),
            response_timeout: Duration::from_millis(DEFAULT_RESPONSE_TIMEOUT_MS),
            min_replicas_ack: 0,
            min_replicas_timeout: Duration::from_millis(DEFAULT_MIN_REPLICAS_TIMEOUT_MS),
        }
    }
}

const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2000;
const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 2000;
const DEFAULT_MIN_REPLICAS_TIMEOUT_MS: u64 = 500;
const MAX_MIN_REPLICAS_ACK: u32 = 16;

pub(super) fn validate_store(raw: RawRedis, problems: &mut Vec<String>) -> StoreSettings {
    let url = secret_or_file("redis.url", raw.url, raw.url_file.as_deref(), problems);
    let seeds = raw
        .urls
        .map(|urls| urls.into_iter().map(SecretString::from).collect::<Vec<_>>());
    let sentinels = raw
        .sentinels
        .map(|urls| urls.into_iter().map(SecretString::from).collect::<Vec<_>>());
    let mode = match raw.mode.as_deref() {
        Some(mode) => mode.to_owned(),
        None if url.is_none() && seeds.is_none() && sentinels.is_none() => {
            return StoreSettings::Memory;
        }
        None => "standalone".to_owned(),
    };

    let start = problems.len();
    if matches!(mode.as_str(), "standalone" | "cluster" | "sentinel") {
        let sentinel_credentials = raw.sentinel_username.is_some()
            || raw.sentinel_password.is_some()
            || raw.sentinel_password_file.is_some();
        for (key, present, belongs) in [
            ("url", url.is_some(), "standalone"),
            ("urls", seeds.is_some(), "cluster"),
            ("sentinels", sentinels.is_some(), "sentinel"),
            ("master_name", raw.master_name.is_some(), "sentinel"),
            (
                "sentinel_username and redis.sentinel_password",
                sentinel_credentials,
                "sentinel",
            ),
        ] {
            if present && belongs != mode {
                problems.push(format!(
                    "redis.{key} is for mode = \"{belongs}\", not \"{mode}\""
                ));
            }
        }
    }
    let topology = match mode.as_str() {
        "standalone" => match url {
            Some(url) => {
                check_redis_url(&url, "redis.url", problems);
                Some(RedisTopology::Standalone { url })
            }
            None => {
                problems.push("redis.mode = \"standalone\" needs redis.url".into());
                None
            }
        },
        "cluster" => match seeds {
            Some(seeds) if !seeds.is_empty() => {
                check_url_list(&seeds, "redis.urls", problems);
                Some(RedisTopology::Cluster { seeds })
            }
            _ => {
                problems.push(
                    "redis.mode = \"cluster\" needs redis.urls, one or more seed nodes".into(),
                );
                None
            }
        },
        "sentinel" => {
            let sentinel_password = secret_or_file(
                "redis.sentinel_password",
                raw.sentinel_password,
                raw.sentinel_password_file.as_deref(),
                problems,
            );
            let master_name = raw.master_name.filter(|name| !name.trim().is_empty());
            if master_name.is_none() {
                problems.push(
                    "redis.mode = \"sentinel\" needs redis.master_name, the name the sentinels \
                     monitor"
                        .into(),
                );
            }
            let sentinels = sentinels.filter(|s| !s.is_empty());
            if sentinels.is_none() {
                problems.push(
                    "redis.mode = \"sentinel\" needs redis.sentinels, the sentinels' URLs".into(),
                );
            }
            match (sentinels, master_name) {
                (Some(sentinels), Some(master_name)) => {
                    check_url_list(&sentinels, "redis.sentinels", problems);
                    Some(RedisTopology::Sentinel {
                        sentinels,
                        master_name,
                        sentinel_username: raw.sentinel_username,
                        sentinel_password,
                    })
                }
                _ => None,
            }
        }
        other => {
            problems.push(format!(
                "redis.mode `{other}` is not one of standalone, cluster, sentinel"
            ));
            None
        }
    };
    let password = secret_or_file(
        "redis.password",
        raw.password,
        raw.password_file.as_deref(),
        problems,
    );
    let tls = validate_redis_tls(
        raw.ca_file,
        raw.client_cert_file,
        raw.client_key_file,
        topology.as_ref().is_some_and(RedisTopology::uses_tls),
        problems,
    );

    let connect_timeout_ms = raw.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
    let response_timeout_ms = raw
        .response_timeout_ms
        .unwrap_or(DEFAULT_RESPONSE_TIMEOUT_MS);
    for (key, value) in [
        ("connect_timeout_ms", connect_timeout_ms),
        ("response_timeout_ms", response_timeout_ms),
    ] {
        if !(1..=60_000).contains(&value) {
            problems.push(format!(
                "redis.{key} must be between 1 and 60000 (got {value})"
            ));
        }
    }
    let min_replicas_ack = raw.min_replicas_ack.unwrap_or(0);
    if min_replicas_ack > MAX_MIN_REPLICAS_ACK {
        problems.push(format!(
            "redis.min_replicas_ack must be at most {MAX_MIN_REPLICAS_ACK} (got {min_replicas_ack})"
        ));
    }
    let min_replicas_timeout_ms = raw
        .min_replicas_timeout_ms
        .unwrap_or(DEFAULT_MIN_REPLICAS_TIMEOUT_MS);
    if min_replicas_ack > 0
        && (min_replicas_timeout_ms == 0 || min_replicas_timeout_ms >= response_timeout_ms)
    {
        // WAIT 0 would block forever; a wait longer than the response timeout would be cut
        // off by the client and look like an outage.
        problems.push(format!(
            "redis.min_replicas_timeout_ms must be above 0 and below redis.response_timeout_ms \
             ({response_timeout_ms}), got {min_replicas_timeout_ms}"
        ));
    }

    match topology {
        Some(topology) if problems.len() == start => {
            StoreSettings::Redis(Box::new(RedisSettings {
                topology,
                username: raw.username,
                password,
                tls: tls.unwrap_or_default(),
                key_prefix: raw.key_prefix.unwrap_or_else(|| "gatehouse".into()),
                connect_timeout: Duration::from_millis(connect_timeout_ms),
                response_timeout: Duration::from_millis(response_timeout_ms),
                min_replicas_ack,
                min_replicas_timeout: Duration::from_millis(min_replicas_timeout_ms),
            }))
        }
        // The problems are reported; the value is never used.
        _ => StoreSettings::Memory,
    }
}

fn check_redis_url(url: &SecretString, key: &str, problems: &mut Vec<String>) {
    match Url::parse(url.expose_secret()) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {
            if u.fragment().is_some_and(|f| f.contains("insecure")) {
                problems.push(format!(
                    "{key}: #insecure turns off certificate checks; use redis.ca_file instead"
                ));
            }
        }
        // The URL may hold a password: name the problem, not the value.
        _ => problems.push(format!("{key} is not a redis:// or rediss:// URL")),
    }
}

/// Cluster seeds and sentinels: TCP URLs, all with TLS or all without.
fn check_url_list(urls: &[SecretString], key: &str, problems: &mut Vec<String>) {
    let start = problems.len();
    for (index, url) in urls.iter().enumerate() {
        let at = format!("{key}[{index}]");
        match Url::parse(url.expose_secret()) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host().is_some() => {
                check_redis_url(url, &at, problems);
            }
            _ => problems.push(format!(
                "{at} is not a redis:// or rediss:// URL with a host"
            )),
        }
    }
    if problems.len() == start {
        let with_tls = urls
            .iter()
            .filter(|url| url.expose_secret().starts_with("rediss://"))
            .count();
        if with_tls != 0 && with_tls != urls.len() {
            problems.push(format!(
                "{key}: mix of redis:// and rediss:// URLs; use one scheme for all"
            ));
        }
    }
}

fn validate_redis_tls(
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    uses_tls: bool,
    problems: &mut Vec<String>,
) -> Option<RedisTls> {
    let start = problems.len();
    if !uses_tls && (ca_file.is_some() || client_cert_file.is_some()) {
        problems.push(
            "redis.ca_file and redis.client_cert_file need a rediss:// URL (TLS to Redis)".into(),
        );
    }
    let client_identity = validate_client_tls_files(
        "redis",
        ca_file.as_deref(),
        client_cert_file,
        client_key_file,
        SystemTime::now(),
        problems,
    );
    (problems.len() == start).then_some(RedisTls {
        ca_file,
        client_identity,
    })
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use super::*;

    fn with_redis(redis: &str, env: &[(&str, &str)]) -> Result<RedisSettings, Vec<String>> {
        let toml = format!(
            "[server]\npublic_url = \"https://app.example.com\"\n\
             [providers.main]\nissuer = \"https://id.example.com\"\nclient_id = \"spa\"\n\
             [redis]\n{redis}\n"
        );
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".into(),
            "s".into(),
        ));
        match load(Some(&toml), env) {
            Ok(settings) => match settings.store {
                StoreSettings::Redis(redis) => Ok(*redis),
                StoreSettings::Memory => Err(vec!["memory".into()]),
            },
            Err(errors) => Err(errors.0),
        }
    }

    #[test]
    fn each_mode_takes_its_own_keys() {
        let standalone = with_redis("url = \"redis://127.0.0.1:6379\"", &[]).expect("valid");
        assert_eq!(standalone.topology.mode(), "standalone");

        let cluster = with_redis(
            "mode = \"cluster\"\nurls = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
            &[],
        )
        .expect("valid");
        assert!(matches!(&cluster.topology, RedisTopology::Cluster { seeds } if seeds.len() == 2));

        // Lists arrive from the environment as TOML arrays.
        let sentinel = with_redis(
            "mode = \"sentinel\"\nmaster_name = \"sessions\"",
            &[
                (
                    "GATEHOUSE_REDIS__SENTINELS",
                    "[\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]",
                ),
                ("GATEHOUSE_REDIS__SENTINEL_PASSWORD", "sentinel-secret"),
                ("GATEHOUSE_REDIS__MIN_REPLICAS_ACK", "1"),
            ],
        )
        .expect("valid");
        match &sentinel.topology {
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                sentinel_password,
                ..
            } => {
                assert_eq!(sentinels.len(), 2);
                assert_eq!(master_name, "sessions");
                assert!(sentinel_password.is_some());
            }
            other => panic!("not sentinel: {other:?}"),
        }
        assert_eq!(sentinel.min_replicas_ack, 1);
        assert!(!format!("{sentinel:?}").contains("sentinel-secret"));
    }

    #[test]
    fn every_misconfiguration_is_named() {
        let problems = |redis: &str| with_redis(redis, &[]).expect_err("invalid");
        assert_eq!(
            problems("mode = \"cluster\""),
            ["redis.mode = \"cluster\" needs redis.urls, one or more seed nodes"]
        );
        assert_eq!(
            problems("mode = \"sentinel\"\nsentinels = [\"redis://a:26379\"]"),
            ["redis.mode = \"sentinel\" needs redis.master_name, the name the sentinels monitor"]
        );
        assert_eq!(
            problems("mode = \"cluster\"\nurls = [\"redis://a:7000\", \"rediss://b:7000\"]"),
            ["redis.urls: mix of redis:// and rediss:// URLs; use one scheme for all"]
        );
        assert_eq!(
            problems("url = \"redis://a:6379\"\nurls = [\"redis://b:7000\"]"),
            ["redis.urls is for mode = \"cluster\", not \"standalone\""]
        );
        assert_eq!(
            problems("mode = \"replicated\"\nurl = \"redis://a:6379\""),
            ["redis.mode `replicated` is not one of standalone, cluster, sentinel"]
        );
        assert_eq!(
            problems("url = \"redis://a:6379\"\nca_file = \"/nonexistent/ca.pem\"")[0],
            "redis.ca_file and redis.client_cert_file need a rediss:// URL (TLS to Redis)"
        );
        assert_eq!(
            problems("url = \"redis://a:6379\"\nmin_replicas_ack = 1\nmin_replicas_timeout_ms = 5000"),
            ["redis.min_replicas_timeout_ms must be above 0 and below redis.response_timeout_ms (2000), got 5000"]
        );
        assert_eq!(
            problems("url = \"redis://a:6379\"\npassword = \"hunter2\""),
            ["redis.password must not be in the config file: set GATEHOUSE_REDIS__PASSWORD or redis.password_file"]
        );
        // A URL that may hold a password is never quoted.
        let bad = problems("url = \"http://user:hunter2@a:6379\"");
        assert_eq!(bad, ["redis.url is not a redis:// or rediss:// URL"]);
    }

    #[test]
    fn no_redis_keys_means_the_memory_store() {
        assert_eq!(with_redis("", &[]).expect_err("memory"), ["memory"]);
    }
}
