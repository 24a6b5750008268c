//! One Redis node's tracking state, shared by its tracker thread and the readers of the
//! session cache: the tracking socket (to peek into), whether tracking is on, and until when
//! the last heartbeat vouches for it. One server or a Sentinel master is one node; a cluster
//! has one per master.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A PING unanswered for this long ends the connection; a PONG vouches for this long.
pub(super) const STALE_AFTER: Duration = Duration::from_millis(1000);

pub(super) struct Node {
    /// Where the node is, when reads must go to it by name (a cluster master); `None`: the
    /// one server (or Sentinel master), which every read goes to anyway.
    pub(super) address: Option<(String, u16)>,
    pub(super) channel: Channel,
    /// Whether tracking is on for the current connection.
    tracking: AtomicBool,
    /// Until when (ms since `clock_zero`) the last heartbeat vouches for the channel.
    vouched_until: AtomicI64,
    /// Bumped whenever tracking goes on or off: an entry filled, or a read begun, in another
    /// epoch may have missed an invalidation.
    epoch: AtomicU64,
    /// The node left the cluster: its tracker stops.
    retired: AtomicBool,
    clock_zero: Instant,
}

impl Node {
    pub(super) fn new(address: Option<(String, u16)>, clock_zero: Instant) -> Self {
        Self {
            address,
            channel: Channel::new(),
            tracking: AtomicBool::new(false),
            vouched_until: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            clock_zero,
        }
    }

    /// Tracking is on and a heartbeat answered lately (the socket itself is `channel.quiet`).
    pub(super) fn serving(&self) -> bool {
        self.tracking.load(Ordering::Acquire)
            && (self.clock_zero.elapsed().as_millis() as i64)
                < self.vouched_until.load(Ordering::Acquire)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A new epoch, with tracking on or off.
    pub(super) fn set_tracking(&self, on: bool) {
        if on {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.tracking.store(true, Ordering::Release);
        } else {
            self.tracking.store(false, Ordering::Release);
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Served until `since + STALE_AFTER` unless the next heartbeat says more.
    pub(super) fn vouch(&self, since: Instant) {
        let since_ms = match since.checked_duration_since(self.clock_zero) {
            Some(after) => after.as_millis() as i64,
            None => -(self.clock_zero.duration_since(since).as_millis() as i64),
        };
        self.vouched_until
            .store(since_ms + STALE_AFTER.as_millis() as i64, Ordering::Release);
    }

    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub(super) fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(super) fn describe(&self) -> String {
        match &self.address {
            Some((host, port)) => format!("{host}:{port}"),
            None => "the server".to_owned(),
        }
    }
}

/// What readers need to know of the tracking socket, shared with the tracker thread.
pub(super) struct Channel {
    fd: AtomicI32,
    /// Bumped whenever the socket is replaced or closed.
    generation: AtomicU64,
    /// The tracker is between taking bytes from the socket and applying what they say (or
    /// holds part of a message).
    busy: AtomicBool,
}

impl Channel {
    pub(super) fn new() -> Self {
        Self {
            fd: AtomicI32::new(-1),
            generation: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        }
    }

    /// No invalidation can be waiting: the socket has nothing unread and the tracker is not
    /// in the middle of applying one. Check this *before* looking an entry up.
    pub(super) fn quiet(&self) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.busy.load(Ordering::SeqCst) {
            return false;
        }
        let fd = self.fd.load(Ordering::SeqCst);
        if fd < 0 {
            return false;
        }
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local buffer. If the descriptor was closed (and even
        // reused) meanwhile, the generation check below rejects the answer.
        let peeked = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let nothing_waiting = peeked < 0
            && matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN)
            );
        nothing_waiting
            && !self.busy.load(Ordering::SeqCst)
            && self.generation.load(Ordering::SeqCst) == generation
    }

    pub(super) fn open(&self, fd: i32) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.fd.store(fd, Ordering::SeqCst);
    }

    pub(super) fn close(&self) {
        self.fd.store(-1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.busy.store(false, Ordering::SeqCst);
    }

    /// Between taking bytes from the socket and applying all they say.
    pub(super) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::SeqCst);
    }
}
