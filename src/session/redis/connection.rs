//! One handle on Redis whatever the topology: a single server (the connection manager
//! reconnects by itself), a Redis Cluster (the cluster connection follows MOVED and ASK and
//! refreshes its slot map), or the master that Sentinel names (asked again after a failure,
//! so a failover needs no restart).

use std::sync::Arc;
use std::time::Duration;

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

use super::nodes::NodeConnections;
use super::reconnecting::Reconnecting;
use super::slots::{hash_slot, parse_cluster_masters};
use super::tracking::Endpoint;
use crate::config::{RedisSettings, RedisTls, RedisTopology, RouteTlsSettings};

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
        /// Connections to single masters by address, for the session cache's reads.
        nodes: Box<NodeConnections>,
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
    /// One cluster master by address, following no redirection.
    Node(MultiplexedConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
            Connection::Sentinel(c) | Connection::Node(c) => c.req_packed_command(cmd),
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
            Connection::Sentinel(c) | Connection::Node(c) => {
                c.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
            Connection::Sentinel(c) | Connection::Node(c) => c.get_db(),
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
                let nodes = Box::new(NodeConnections::new(
                    &seeds,
                    settings,
                    certificates.clone(),
                )?);
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
                    if let Some(certificates) = certificates.clone() {
                        builder = builder.certs(certificates);
                    }
                }
                Topology::Cluster {
                    client: builder.build()?,
                    current: Reconnecting::new(),
                    nodes,
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
            Topology::Cluster {
                client, current, ..
            } => current
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

    /// Whether session keys live on several nodes (a cluster), each tracked on its own.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
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
                    "a cluster is tracked per master (see `cluster_endpoints`)",
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

    /// The cluster's seeds, and how to log in there, for learning its slot map (nothing
    /// for one server or Sentinel).
    pub(super) fn cluster_seeds(&self) -> Vec<Endpoint> {
        match &self.topology {
            Topology::Cluster { nodes, .. } => nodes
                .seeds()
                .into_iter()
                .map(|(host, port)| self.node_endpoint(host, port))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// One cluster node by address, and how to log in there (the cluster's credentials).
    pub(super) fn node_endpoint(&self, host: String, port: u16) -> Endpoint {
        let (username, password) = match &self.topology {
            Topology::Cluster { nodes, .. } => nodes.credentials(),
            _ => (None, None),
        };
        Endpoint {
            host,
            port,
            tls: self.tracking_tls.clone(),
            username,
            password,
        }
    }

    /// A connection to one cluster master by address that follows no redirection: what it
    /// answers comes from that master (a MOVED or ASK is an error). Only for a cluster.
    pub(super) async fn node(&self, address: &(String, u16)) -> RedisResult<Connection> {
        match &self.topology {
            Topology::Cluster { nodes, .. } => nodes.get(address).await.map(Connection::Node),
            _ => Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "only a cluster has nodes to read from by address",
            ))),
        }
    }

    /// A read on a node's own connection failed: made again next time.
    pub(super) fn node_failed(&self, address: &(String, u16), error: &RedisError) {
        if let Topology::Cluster { nodes, .. } = &self.topology {
            if is_lost_master(error) {
                nodes.forget(address);
            }
        }
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
