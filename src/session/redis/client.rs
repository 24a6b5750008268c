//! The Redis store's own plumbing: keys, retries, reading records and indices, and how
//! a Redis error is classified.

use super::*;

impl RedisStore {
    /// Connects lazily: gatehouse starts (not ready) while Redis is still coming up.
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let connector = Connector::new(settings).map_err(|e| {
            StoreError::Unavailable(format!("redis settings rejected: {}", describe(&e)))
        })?;
        Ok(Self {
            connector: Arc::new(connector),
            cache: None,
            prefix: settings.key_prefix.clone(),
            min_replicas_ack: settings.min_replicas_ack,
            min_replicas_timeout: settings.min_replicas_timeout,
            unreachable: AtomicBool::new(false),
            target: connection::describe_target(&settings.topology),
            insert: Script::new(INSERT),
            touch: Script::new(TOUCH),
            replace_sealed: Script::new(REPLACE_SEALED),
            index_add: Script::new(INDEX_ADD),
            renew_lock: Script::new(RENEW_LOCK),
            unlock: Script::new(UNLOCK),
            gcra: Script::new(GCRA_SCRIPT),
        })
    }

    /// The store with a session cache of up to `entries` sessions, kept coherent by Redis
    /// key tracking (see `cache`), on threads of their own: one per tracked node (the one
    /// server, the Sentinel master, or each master of a cluster), plus one that follows a
    /// cluster's slot map (`cluster_tracking`).
    pub fn with_cache(settings: &RedisSettings, entries: NonZeroUsize) -> Result<Self, StoreError> {
        let mut store = Self::new(settings)?;
        let routed = store.connector.is_cluster();
        let cache = Arc::new(SessionCache::new(entries, routed));
        // Threads of their own, blocking: a reader can then see an invalidation waiting in
        // a socket before its thread has run (see `tracking`).
        let (weak, connector) = (Arc::downgrade(&cache), store.connector.clone());
        let session_prefix = format!("{}:s:", store.prefix);
        let (target, connect_timeout) = (store.target.clone(), settings.connect_timeout);
        let spawned = if routed {
            let hint = cache.topology_hint();
            std::thread::Builder::new()
                .name("session-cache-slots".into())
                .spawn(move || {
                    cluster_tracking::follow(
                        weak,
                        hint,
                        connector,
                        session_prefix,
                        connect_timeout,
                        target,
                    );
                })
        } else {
            let node = cache.new_node(None);
            cache.serve_everything_from(node.clone());
            std::thread::Builder::new()
                .name("session-cache".into())
                .spawn(move || {
                    // Only for asking the sentinels where the master is.
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            tracing::error!(error = %e, "session cache off: no runtime for its thread");
                            return;
                        }
                    };
                    let endpoint = || {
                        runtime
                            .block_on(connector.tracking_endpoint())
                            .map_err(|e| describe(&e))
                    };
                    tracking::run(
                        weak,
                        node,
                        endpoint,
                        &session_prefix,
                        connect_timeout,
                        &target,
                    );
                })
        };
        spawned.map_err(|e| StoreError::Unavailable(format!("session cache thread: {e}")))?;
        store.cache = Some(cache);
        Ok(store)
    }

    pub(super) fn forget_cached(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key);
        }
    }

    pub(super) fn session_key(&self, key: &str) -> String {
        format!("{}:s:{{{key}}}", self.prefix)
    }

    pub(super) fn index_key(&self, index_id: &str) -> String {
        format!("{}:x:{{{index_id}}}", self.prefix)
    }

    /// The refresh lock sits in the same hash slot as the session it guards.
    pub(super) fn lock_key(&self, name: &str) -> String {
        format!("{}:k:{{{name}}}", self.prefix)
    }

    pub(super) fn remembered_key(&self, name: &str) -> String {
        format!("{}:j:{{{name}}}", self.prefix)
    }

    pub(super) fn rate_key(&self, bucket: &str) -> String {
        format!("{}:r:{{{bucket}}}", self.prefix)
    }

    pub(super) fn login_key(&self, key: &str) -> String {
        format!("{}:l:{{{key}}}", self.prefix)
    }

    /// Runs `op` on a connection; when it could not reach Redis it is tried once more, as
    /// the connection manager (or the Sentinel lookup) has reconnected meanwhile.
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let result = match self.attempt(&op).await {
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.attempt(&op).await
            }
            other => other,
        };
        self.settle(result)
    }

    /// For commands whose retry after a lost reply could do harm (see the callers).
    pub(super) async fn run_once<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let result = self.attempt(op).await;
        self.settle(result)
    }

    pub(super) async fn attempt<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let connection = self.connector.get().await?;
        let result = op(connection).await;
        if let Err(error) = &result {
            self.connector.failed(error);
        }
        result
    }

    /// Logs the start and the end of an outage once each, and maps the error.
    pub(super) fn settle<T>(&self, result: Result<T, RedisError>) -> StoreResult<T> {
        match result {
            Ok(value) => {
                if self.unreachable.load(Ordering::Relaxed)
                    && self.unreachable.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(redis = %self.target, "redis answers again");
                }
                Ok(value)
            }
            Err(error) => {
                let reason = describe(&error);
                if is_transient(&error) || is_unreachable(&error) {
                    if !self.unreachable.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            redis = %self.target,
                            %reason,
                            "redis unreachable: answering 503 until it is back"
                        );
                    }
                } else {
                    tracing::warn!(%reason, "redis command failed");
                }
                Err(StoreError::Unavailable(reason))
            }
        }
    }

    /// `WAIT`s for `redis.min_replicas_ack` replicas to hold what this connection wrote to
    /// the node that serves `key`; whether enough did.
    pub(super) async fn replicated(&self, key: &str) -> StoreResult<bool> {
        if self.min_replicas_ack == 0 {
            return Ok(true);
        }
        let acknowledged: i64 = self
            .run_once(|mut conn| async move {
                let mut wait = redis::cmd("WAIT");
                wait.arg(self.min_replicas_ack)
                    .arg(millis(self.min_replicas_timeout).max(1));
                conn.query_at_key(wait, key).await
            })
            .await?;
        Ok(acknowledged >= i64::from(self.min_replicas_ack))
    }

    /// The session hash's fields, decoded; `None` when the key does not exist.
    pub(super) async fn read_record(
        &self,
        session_key: &str,
    ) -> StoreResult<Option<(SessionRecord, UnixMillis)>> {
        let fields: Vec<Option<Vec<u8>>> = self
            .run(|mut conn| async move { session_fields(session_key).query_async(&mut conn).await })
            .await?;
        decode_record(&fields)
    }

    /// The session hash read from the cluster master at `address` itself; `None` when that
    /// read failed (a MOVED or ASK: the slot moved; or the node is unreachable), and then
    /// the cache's view of the cluster is checked again.
    pub(super) async fn read_record_at(
        &self,
        address: &(String, u16),
        session_key: &str,
    ) -> Option<StoreResult<Option<(SessionRecord, UnixMillis)>>> {
        let read = async {
            let mut conn = self.connector.node(address).await?;
            session_fields(session_key)
                .query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                .await
        };
        match read.await {
            Ok(fields) => Some(decode_record(&fields)),
            Err(error) => {
                self.connector.node_failed(address, &error);
                if let Some(cache) = &self.cache {
                    cache.topology_hint().suspect();
                }
                None
            }
        }
    }

    /// `SET key value NX PX ttl`: whether the key was absent (and is now set).
    pub(super) async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let set: Option<String> = self
            .run_once(|mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl).max(1))
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Runs a single-key script (EVALSHA, loading it on first use), retried once on a
    /// dropped connection.
    pub(super) async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        add_args: impl Fn(&mut redis::ScriptInvocation<'_>),
    ) -> StoreResult<T> {
        self.run(|mut conn| {
            let mut invocation = script.key(key);
            add_args(&mut invocation);
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await
    }

    pub(super) async fn index_members(
        &self,
        index_id: &str,
        now: UnixMillis,
    ) -> StoreResult<Vec<String>> {
        let index_key = self.index_key(index_id);
        let members: Vec<String> = self
            .run(|mut conn| {
                let index_key = index_key.clone();
                async move { conn.smembers(index_key).await }
            })
            .await?;
        let mut live = Vec::with_capacity(members.len());
        for member in members {
            let absolute: Option<i64> = self
                .run(|mut conn| {
                    let key = self.session_key(&member);
                    async move { conn.hget(key, "ta").await }
                })
                .await?;
            match absolute {
                Some(ta) if ta > now => live.push(member),
                _ => {
                    // Dangling entry of a session that expired on its own.
                    let _: StoreResult<()> = self
                        .run_once(|mut conn| {
                            let index_key = index_key.clone();
                            async move { conn.srem(index_key, member).await }
                        })
                        .await;
                }
            }
        }
        live.sort();
        Ok(live)
    }
}

fn session_fields(session_key: &str) -> redis::Cmd {
    let mut command = redis::cmd("HMGET");
    command
        .arg(session_key)
        .arg(&["c", "p", "u", "i", "t0", "ta", "ts", "d", "v"]);
    command
}

fn decode_record(fields: &[Option<Vec<u8>>]) -> StoreResult<Option<(SessionRecord, UnixMillis)>> {
    if fields.first().is_none_or(|c| c.is_none()) {
        return Ok(None);
    }
    record_from_fields(fields).map(Some)
}

/// Drops a session's cache entry when a write to it ends, however it ends (an error, or the
/// request going away mid-write): Redis's invalidation would come too, a moment later.
pub(super) struct ForgetOnDrop<'a>(pub(super) &'a RedisStore, pub(super) &'a str);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.forget_cached(self.1);
    }
}

/// Why Redis failed, fit for the log and `/readyz`. A server's reply can quote a command's
/// arguments (sealed payloads, keys), so only connection-level errors keep their text.
pub(super) fn describe(error: &RedisError) -> String {
    match error.kind() {
        ErrorKind::Io
        | ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel
        | ErrorKind::EmptySentinelList => error.to_string(),
        ErrorKind::Server(kind) => format!("redis answered {kind:?}"),
        kind => format!("{kind:?}"),
    }
}

/// Failures where the command may not have reached Redis, or Redis is between masters.
pub(super) fn is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::BusyLoading
            )
        )
}

pub(super) fn is_unreachable(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::EmptySentinelList
            | ErrorKind::AuthenticationFailed
    )
}
