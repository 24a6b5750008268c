//! One handle on Redis whatever the topology: a single server (the connection manager
//! reconnects by itself), a Redis Cluster (the cluster connection follows MOVED and ASK and
//! refreshes its slot map), or the master that Sentinel names (asked again after a failure,
//! so a failover needs no restart).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, Cmd, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, TlsMode, Value,
};
use secrecy::{ExposeSecret, SecretString};

use super::tracking::Endpoint;
use crate::config::{RedisSettings, RedisTls, RedisTopology, RouteTlsSettings};

/// After a failed attempt to reach the master or the cluster, callers fail fast for this long
/// instead of each asking the sentinels again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

pub(super) struct Connector {
    topology: Topology,
    /// TLS for the tracking connection, when the store uses TLS.
    tracking_tls: Option<Arc<rustls::ClientConfig>>,
}

enum Topology {
    Standalone {
        manager: ConnectionManager,
        /// For the session cache's tracking connection.
        client: redis::Client,
    },
    Cluster {
        client: ClusterClient,
        current: Reconnecting<ClusterConnection>,
    },
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        config: AsyncConnectionConfig,
        current: Reconnecting<MultiplexedConnection>,
        timeout: Duration,
    },
}

/// A connection to use for one command or script; cheap to clone.
#[derive(Clone)]
pub(super) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
            Connection::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
            Connection::Sentinel(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// Sends a keyless command to the node that serves `key` (on one server: the server).
    /// `WAIT` must go where the write went; the cluster would otherwise ask every master.
    pub(super) async fn query_at_key<T: redis::FromRedisValue>(
        &mut self,
        command: Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            Connection::Cluster(cluster) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(hash_slot(key), SlotAddr::Master),
                ));
                let value = cluster.route_command(command, routing).await?;
                redis::from_redis_value(value).map_err(RedisError::from)
            }
            other => command.query_async(other).await,
        }
    }

    /// The masters' addresses, for commands that must visit each (SCAN). One server or the
    /// Sentinel master is a single node.
    pub(super) async fn masters(&mut self) -> RedisResult<Vec<(String, u16)>> {
        let Connection::Cluster(cluster) = self else {
            return Ok(Vec::new());
        };
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
        let value = cluster
            .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), routing)
            .await?;
        let text: String = redis::from_redis_value(value).map_err(RedisError::from)?;
        Ok(parse_cluster_masters(&text))
    }

    /// Runs `command` on one master of a cluster (by address), or on the one server.
    pub(super) async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        command: Cmd,
        node: Option<&(String, u16)>,
    ) -> RedisResult<T> {
        match (self, node) {
            (Connection::Cluster(cluster), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = cluster.route_command(command, routing).await?;
                redis::from_redis_value(value).map_err(RedisError::from)
            }
            (other, _) => command.query_async(other).await,
        }
    }
}

/// The cluster hash slot of a key: CRC16 of its hash tag (the text in the first `{…}`, when
/// not empty) or of the whole key.
pub(super) fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

/// `CLUSTER NODES` lines: `<id> <ip:port@cport[,hostname]> <flags> …`; live masters only.
fn parse_cluster_masters(text: &str) -> Vec<(String, u16)> {
    let mut masters = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
            continue;
        }
        let host_port = address.split(['@', ',']).next().unwrap_or_default();
        if let Some((host, port)) = host_port.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                masters.push((host.to_owned(), port));
            }
        }
    }
    masters
}

impl Connector {
    /// Builds clients without connecting: gatehouse starts (not ready) while Redis is still
    /// coming up.
    pub(super) fn new(settings: &RedisSettings) -> RedisResult<Self> {
        let certificates = tls_certificates(&settings.tls)?;
        let topology = match &settings.topology {
            RedisTopology::Standalone { url } => {
                let mut info = url.expose_secret().into_connection_info()?;
                info = with_credentials(info, settings);
                let client = match &certificates {
                    Some(certificates) if settings.topology.uses_tls() => {
                        redis::Client::build_with_tls(info, certificates.clone())?
                    }
                    _ => redis::Client::open(info)?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                Topology::Standalone {
                    manager: ConnectionManager::new_lazy_with_config(client.clone(), config)?,
                    client,
                }
            }
            RedisTopology::Cluster { seeds } => {
                let seeds = seeds
                    .iter()
                    .map(|url| url.expose_secret().into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = ClusterClientBuilder::new(seeds)
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(settings.response_timeout)
                    // A failover or a resharding answers 503 soon rather than holding calls.
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if let Some(username) = &settings.username {
                    builder = builder.username(username);
                }
                if let Some(password) = &settings.password {
                    builder = builder.password(password.expose_secret());
                }
                if settings.topology.uses_tls() {
                    builder = builder.tls(TlsMode::Secure);
                    if let Some(certificates) = certificates {
                        builder = builder.certs(certificates);
                    }
                }
                Topology::Cluster {
                    client: builder.build()?,
                    current: Reconnecting::new(),
                }
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                sentinel_username,
                sentinel_password,
            } => {
                let addresses = sentinels
                    .iter()
                    .map(|url| {
                        url.expose_secret()
                            .into_connection_info()
                            .map(|info| info.addr().clone())
                    })
                    .collect::<RedisResult<Vec<_>>>()?;
                // Credentials in the first sentinel URL count as the sentinels' own.
                let first = sentinels[0].expose_secret().into_connection_info()?;
                let mut builder =
                    SentinelClientBuilder::new(addresses, master_name, SentinelServerType::Master)?;
                let sentinel_username = sentinel_username
                    .clone()
                    .or_else(|| first.redis_settings().username().map(str::to_owned));
                let sentinel_password = sentinel_password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned())
                    .or_else(|| first.redis_settings().password().map(str::to_owned));
                if let Some(username) = sentinel_username {
                    builder = builder.set_client_to_sentinel_username(username);
                }
                if let Some(password) = sentinel_password {
                    builder = builder.set_client_to_sentinel_password(password);
                }
                if let Some(username) = &settings.username {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = &settings.password {
                    builder = builder.set_client_to_redis_password(password.expose_secret());
                }
                if settings.topology.uses_tls() {
                    builder = builder
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_tls_mode(TlsMode::Secure);
                    if let Some(certificates) = certificates {
                        builder = builder
                            .set_client_to_sentinel_certificates(certificates.clone())
                            .set_client_to_redis_certificates(certificates);
                    }
                }
                Topology::Sentinel {
                    client: tokio::sync::Mutex::new(builder.build()?),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(settings.connect_timeout))
                        .set_response_timeout(Some(settings.response_timeout)),
                    current: Reconnecting::new(),
                    // Asking the sentinels, checking the master's role and connecting.
                    timeout: settings.connect_timeout * 3,
                }
            }
        };
        let tracking_tls = if settings.topology.uses_tls() {
            let tls = RouteTlsSettings {
                ca_file: settings.tls.ca_file.clone(),
                client_identity: settings.tls.client_identity.clone(),
                server_name: None,
            };
            let config = crate::tls::upstream_client_config(&tls).map_err(|e| {
                RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "TLS settings",
                    e.to_string(),
                ))
            })?;
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Self {
            topology,
            tracking_tls,
        })
    }

    pub(super) async fn get(&self) -> RedisResult<Connection> {
        match &self.topology {
            Topology::Standalone { manager, .. } => Ok(Connection::Standalone(manager.clone())),
            Topology::Cluster { client, current } => current
                .get_or_connect(|| client.get_async_connection())
                .await
                .map(Connection::Cluster),
            Topology::Sentinel {
                client,
                config,
                current,
                timeout,
            } => current
                .get_or_connect(|| async {
                    let mut client = client.lock().await;
                    let connect = client.get_async_connection_with_config(config);
                    match tokio::time::timeout(*timeout, connect).await {
                        Ok(result) => result,
                        Err(_) => Err(RedisError::from((
                            ErrorKind::Io,
                            "no answer from the sentinels or the master they name",
                        ))),
                    }
                })
                .await
                .map(Connection::Sentinel),
        }
    }

    /// Whether Redis can track keys for the session cache: one server or a Sentinel master,
    /// not a cluster (tracking there is per node).
    pub(super) fn supports_tracking(&self) -> bool {
        !matches!(self.topology, Topology::Cluster { .. })
    }

    /// Where the session keys live (the server, or the master the sentinels name now) and
    /// how to log in there, for the session cache's tracking connection.
    pub(super) async fn tracking_endpoint(&self) -> RedisResult<Endpoint> {
        let client = match &self.topology {
            Topology::Standalone { client, .. } => client.clone(),
            Topology::Sentinel {
                client, timeout, ..
            } => {
                let lookup = async { client.lock().await.async_get_client().await };
                tokio::time::timeout(*timeout, lookup).await.map_err(|_| {
                    RedisError::from((ErrorKind::Io, "no answer from the sentinels"))
                })??
            }
            Topology::Cluster { .. } => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "the session cache needs one Redis or a Sentinel master, not a cluster",
                )))
            }
        };
        let info = client.get_connection_info();
        let (host, port) = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            _ => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "the session cache needs Redis over TCP, not a Unix socket",
                )))
            }
        };
        Ok(Endpoint {
            host,
            port,
            tls: self.tracking_tls.clone(),
            username: info.redis_settings().username().map(str::to_owned),
            password: info
                .redis_settings()
                .password()
                .map(|p| SecretString::from(p.to_owned())),
        })
    }

    /// Tells the connector that a command failed, so that a lost Sentinel master is looked
    /// up again (the other topologies recover by themselves).
    pub(super) fn failed(&self, error: &RedisError) {
        if let Topology::Sentinel { current, .. } = &self.topology {
            if is_lost_master(error) {
                current.forget();
            }
        }
    }
}

/// Where Redis is, for the log: the mode and the hosts and ports of the URLs (never their
/// credentials).
pub(super) fn describe_target(topology: &RedisTopology) -> String {
    let hosts = |urls: &[&SecretString]| -> String {
        urls.iter()
            .map(|url| match url::Url::parse(url.expose_secret()) {
                Ok(u) => format!(
                    "{}://{}:{}",
                    u.scheme(),
                    u.host_str().unwrap_or("?"),
                    u.port().unwrap_or(6379)
                ),
                Err(_) => "?".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    match topology {
        RedisTopology::Standalone { url } => hosts(&[url]),
        RedisTopology::Cluster { seeds } => {
            format!("cluster {}", hosts(&seeds.iter().collect::<Vec<_>>()))
        }
        RedisTopology::Sentinel {
            sentinels,
            master_name,
            ..
        } => format!(
            "master {master_name} of sentinels {}",
            hosts(&sentinels.iter().collect::<Vec<_>>())
        ),
    }
}

/// The errors after which the connection we hold may point at the wrong server: it is gone,
/// or it is no longer the master.
fn is_lost_master(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

fn with_credentials(
    info: redis::ConnectionInfo,
    settings: &RedisSettings,
) -> redis::ConnectionInfo {
    let mut redis = info.redis_settings().clone();
    if let Some(username) = &settings.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose_secret());
    }
    info.set_redis_settings(redis)
}

/// The CA and client identity, read once at start-up.
fn tls_certificates(tls: &RedisTls) -> RedisResult<Option<TlsCertificates>> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
                format!("{}: {e}", path.display()),
            ))
        })
    };
    if tls.ca_file.is_none() && tls.client_identity.is_none() {
        return Ok(None);
    }
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    let client_tls = match &tls.client_identity {
        Some(files) => Some(ClientTlsConfig {
            client_cert: read(&files.cert_file)?,
            client_key: read(&files.key_file)?,
        }),
        None => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// A lazily made connection, made again after `forget`; one attempt at a time, and after a
/// failed one everybody fails fast for `RECONNECT_PAUSE`.
struct Reconnecting<C> {
    current: RwLock<Option<C>>,
    attempt: tokio::sync::Mutex<()>,
    last_failure: Mutex<Option<(Instant, RedisError)>>,
}

impl<C: Clone> Reconnecting<C> {
    fn new() -> Self {
        Self {
            current: RwLock::new(None),
            attempt: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<C> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn forget(&self) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn get_or_connect<F, Fut>(&self, connect: F) -> RedisResult<C>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = RedisResult<C>>,
    {
        if let Some(connection) = self.cached() {
            return Ok(connection);
        }
        let _attempt = self.attempt.lock().await;
        if let Some(connection) = self.cached() {
            return Ok(connection);
        }
        if let Some((at, error)) = &*self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < RECONNECT_PAUSE {
                return Err(error.clone());
            }
        }
        match connect().await {
            Ok(connection) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(connection)
            }
            Err(error) => {
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of the Redis Cluster specification.
    #[test]
    fn hash_slots_follow_the_cluster_specification() {
        assert_eq!(hash_slot("123456789"), 12739); // CRC16 XMODEM check value 0x31C3
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("foo{}{bar}"), hash_slot("foo{}{bar}"));
        assert_ne!(hash_slot("foo{}{bar}"), hash_slot("bar"));
        assert_eq!(hash_slot("foo{{bar}}zap"), hash_slot("{bar"));
        assert_eq!(hash_slot("foo{bar}{zap}"), hash_slot("bar"));
    }

    #[test]
    fn cluster_nodes_lists_live_masters_only() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,node-b master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.0.1:30005@40005 master,fail - 1426238316232 1426238316232 5 disconnected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            parse_cluster_masters(text),
            vec![
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
                ("127.0.0.1".to_owned(), 30001),
            ]
        );
    }
}
