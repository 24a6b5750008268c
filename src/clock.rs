//! Time is passed in, so expiry, skew and TTL logic is testable without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_millis(&self) -> UnixMillis;

    fn now_secs(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }
}

/// The system clock shifted by an adjustable offset: tests move time forward with it while
/// everything else (Redis, the provider) keeps real time.
#[derive(Debug, Default, Clone)]
pub struct OffsetClock {
    offset_millis: Arc<AtomicI64>,
}

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.offset_millis
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Moves time back (a test that needs a given time of day without waiting for it).
    pub fn rewind(&self, by: std::time::Duration) {
        self.offset_millis
            .fetch_sub(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now_millis(&self) -> UnixMillis {
        SystemClock.now_millis() + self.offset_millis.load(Ordering::SeqCst)
    }
}

pub type SharedClock = Arc<dyn Clock>;
