//! A connection made lazily, and made again after it was lost.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::{RedisError, RedisResult};

/// After a failed attempt to reach the master or the cluster, callers fail fast for this long
/// instead of each asking the sentinels again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// A lazily made connection, made again after `forget`; one attempt at a time, and after a
/// failed one everybody fails fast for `RECONNECT_PAUSE`.
pub(super) struct Reconnecting<C> {
    current: RwLock<Option<C>>,
    attempt: tokio::sync::Mutex<()>,
    last_failure: Mutex<Option<(Instant, RedisError)>>,
}

impl<C: Clone> Reconnecting<C> {
    pub(super) fn new() -> Self {
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

    pub(super) fn forget(&self) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) async fn get_or_connect<F, Fut>(&self, connect: F) -> RedisResult<C>
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
