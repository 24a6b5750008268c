//! Connections to single cluster masters by address. The session cache reads a session
//! from the master whose tracking connection vouches for it; the cluster connection would
//! follow a MOVED or ASK to another node, whose invalidations that tracking connection never
//! hears, so these connections follow none: a redirection is an error, and the read goes the
//! ordinary way without filling the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    RedisResult, TlsCertificates,
};
use secrecy::{ExposeSecret, SecretString};

use super::reconnecting::Reconnecting;
use crate::config::RedisSettings;

type Address = (String, u16);

pub(super) struct NodeConnections {
    seeds: Vec<Address>,
    /// Database, protocol and credentials, as for the cluster connection.
    redis: RedisConnectionInfo,
    /// TLS certificates when the cluster speaks TLS.
    tls: Option<Option<TlsCertificates>>,
    config: AsyncConnectionConfig,
    open: Mutex<HashMap<Address, Arc<Reconnecting<MultiplexedConnection>>>>,
}

impl NodeConnections {
    pub(super) fn new(
        seeds: &[ConnectionInfo],
        settings: &RedisSettings,
        certificates: Option<TlsCertificates>,
    ) -> RedisResult<Self> {
        let mut redis = seeds
            .first()
            .map(|seed| seed.redis_settings().clone())
            .unwrap_or_default();
        if let Some(username) = &settings.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis = redis.set_password(password.expose_secret());
        }
        let seeds = seeds
            .iter()
            .filter_map(|seed| match seed.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    Some((host.clone(), *port))
                }
                _ => None,
            })
            .collect();
        Ok(Self {
            seeds,
            redis,
            tls: settings.topology.uses_tls().then_some(certificates),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.response_timeout)),
            open: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn seeds(&self) -> Vec<Address> {
        self.seeds.clone()
    }

    pub(super) fn credentials(&self) -> (Option<String>, Option<SecretString>) {
        (
            self.redis.username().map(str::to_owned),
            self.redis
                .password()
                .map(|p| SecretString::from(p.to_owned())),
        )
    }

    fn slot(&self, address: &Address) -> Arc<Reconnecting<MultiplexedConnection>> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(address.clone())
            .or_insert_with(|| Arc::new(Reconnecting::new()))
            .clone()
    }

    pub(super) async fn get(&self, address: &Address) -> RedisResult<MultiplexedConnection> {
        let slot = self.slot(address);
        slot.get_or_connect(|| async {
            let (host, port) = address.clone();
            let addr = match &self.tls {
                Some(_) => ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                },
                None => ConnectionAddr::Tcp(host, port),
            };
            let info = addr
                .into_connection_info()?
                .set_redis_settings(self.redis.clone());
            let client = match &self.tls {
                Some(Some(certificates)) => {
                    redis::Client::build_with_tls(info, certificates.clone())?
                }
                _ => redis::Client::open(info)?,
            };
            client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
        })
        .await
    }

    pub(super) fn forget(&self, address: &Address) {
        if let Some(slot) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
        {
            slot.forget();
        }
    }
}
