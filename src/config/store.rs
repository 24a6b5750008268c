//! `[redis]`: the shared session store (the in-memory store without it).

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawRedis {
    #[serde(default, deserialize_with = "secret_from_scalar")]
    pub(super) url: Option<SecretString>,
    pub(super) url_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) key_prefix: Option<String>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) response_timeout_ms: Option<u64>,
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

pub(super) fn validate_store(raw: RawRedis, problems: &mut Vec<String>) -> StoreSettings {
    let redis_url = match (raw.url, raw.url_file) {
        (Some(_), Some(_)) => {
            problems.push("redis.url and redis.url_file are both set: choose one".into());
            None
        }
        (Some(url), None) => Some(url),
        (None, Some(path)) => read_secret_file(&path, "redis.url_file", problems),
        (None, None) => None,
    };
    match redis_url {
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
                key_prefix: raw.key_prefix.unwrap_or_else(|| "gatehouse".into()),
                connect_timeout: Duration::from_millis(raw.connect_timeout_ms.unwrap_or(2000)),
                response_timeout: Duration::from_millis(raw.response_timeout_ms.unwrap_or(2000)),
            })
        }
    }
}
