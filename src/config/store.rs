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
