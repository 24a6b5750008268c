//! The tracking connection behind the session cache: a small blocking RESP3 client on a
//! thread of its own, so that a reader can ask the socket itself whether an invalidation is
//! waiting.
//!
//! Redis writes a key's invalidation to this socket before it answers the write that caused
//! it. So by the time a logout at another instance has been answered, the invalidation is
//! in this host's socket buffer, even if this thread has not run yet. Before serving an entry, a
//! reader checks `Channel::quiet`: nothing unread in the socket and nothing half-applied.
//! Otherwise it reads Redis. That makes "the very next call is 401" hold on one host and on
//! a LAN, without a round trip on the hot path.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use super::resp3::{is_invalidation, Frame, FrameReader};

/// How often the connection is asked to prove itself (PING).
const HEARTBEAT: Duration = Duration::from_millis(250);
/// A PING unanswered for this long ends the connection.
pub(super) const STALE_AFTER: Duration = Duration::from_millis(1000);

/// Where the session keys live, and how to log in there.
pub(super) struct Endpoint {
    pub(super) host: String,
    pub(super) port: u16,
    /// TLS with this configuration (the store's CA and client certificate).
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) username: Option<String>,
    pub(super) password: Option<SecretString>,
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

    fn close(&self) {
        self.fd.store(-1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.busy.store(false, Ordering::SeqCst);
    }
}

/// What the tracking connection tells whoever listens (the session cache): it knows
/// nothing of what is done with it.
pub(super) trait TrackingListener {
    /// The channel the tracking connection's state is shared on.
    fn channel(&self) -> Arc<Channel>;
    /// Tracking is on since `since`.
    fn go_live(&self, since: Instant);
    /// Tracking is off.
    fn go_dark(&self);
    /// An `invalidate` push's keys (nil after FLUSHALL/FLUSHDB: everything).
    fn apply_invalidation(&self, session_prefix: &str, keys: Option<&Frame>);
    /// Everything Redis sent before `since` has been applied.
    fn vouch(&self, since: Instant);
}

/// Keeps a tracking connection up for as long as the listener lives; after any failure the
/// listener hears `go_dark` and tracking stays off until it is on again.
pub(super) fn run<L: TrackingListener>(
    cache: Weak<L>,
    endpoint: impl Fn() -> Result<Endpoint, String>,
    session_prefix: &str,
    connect_timeout: Duration,
    target: &str,
) {
    let mut pause = Duration::from_millis(100);
    let mut reported = false;
    loop {
        let Some(live) = cache.upgrade() else { return };
        let channel = live.channel();
        drop(live);
        let outcome = endpoint().map_err(Failure::Before).and_then(|endpoint| {
            tracked(&cache, &channel, &endpoint, session_prefix, connect_timeout)
        });
        channel.close();
        let Some(live) = cache.upgrade() else { return };
        live.go_dark();
        let (reason, was_tracking) = match outcome {
            Ok(()) => return,
            Err(Failure::Before(reason)) => (reason, false),
            Err(Failure::AfterTracking(reason)) => (reason, true),
        };
        if was_tracking {
            // A break after a good connection: try again soon, and say so again.
            pause = Duration::from_millis(100);
            reported = false;
        }
        if !reported {
            tracing::warn!(
                redis = %target,
                %reason,
                "session cache off until Redis tracks session keys again: calls read Redis"
            );
            reported = true;
        }
        drop(live);
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

enum Failure {
    /// Tracking never came on (Redis unreachable, refused the login …).
    Before(String),
    /// The channel broke after tracking was on.
    AfterTracking(String),
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure::Before(reason)
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn tracked<L: TrackingListener>(
    cache: &Weak<L>,
    channel: &Channel,
    endpoint: &Endpoint,
    session_prefix: &str,
    connect_timeout: Duration,
) -> Result<(), Failure> {
    let address = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", endpoint.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", endpoint.host))?;
    let tcp = TcpStream::connect_timeout(&address, connect_timeout)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(STALE_AFTER))
        .and_then(|()| tcp.set_write_timeout(Some(STALE_AFTER)))
        .map_err(|e| e.to_string())?;
    let fd = tcp.as_raw_fd();
    let mut stream: Box<dyn Stream> = match &endpoint.tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|_| format!("`{}` is not a TLS server name", endpoint.host))?;
            let connection = rustls::ClientConnection::new(config.clone(), name)
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(rustls::StreamOwned::new(connection, tcp))
        }
        None => Box::new(tcp),
    };
    let mut reader = FrameReader::default();

    let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
    let password = endpoint.password.as_ref().map(|p| p.expose_secret());
    if let Some(password) = password {
        hello.push(b"AUTH");
        hello.push(endpoint.username.as_deref().unwrap_or("default").as_bytes());
        hello.push(password.as_bytes());
    }
    send(&mut stream, &hello)?;
    expect_reply(&mut stream, &mut reader, "HELLO 3")?;
    let prefix = session_prefix.as_bytes();
    send(
        &mut stream,
        &[b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"PREFIX", prefix],
    )?;
    expect_reply(&mut stream, &mut reader, "CLIENT TRACKING")?;

    {
        let Some(cache) = cache.upgrade() else {
            return Ok(());
        };
        channel.open(fd);
        cache.go_live(Instant::now());
        tracing::info!("session cache on: Redis tracks session keys for this instance");
    }

    let mut ping_sent: Option<Instant> = None;
    let mut next_ping = Instant::now() + HEARTBEAT;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let wait = next_ping.saturating_duration_since(Instant::now());
        if !reader.has_buffered() && !readable(fd, wait) {
            let Some(cache) = cache.upgrade() else {
                return Ok(());
            };
            drop(cache);
            if let Some(sent) = ping_sent {
                if sent.elapsed() > STALE_AFTER {
                    return Err(Failure::AfterTracking(
                        "the tracking connection stopped answering".into(),
                    ));
                }
            } else {
                send(&mut stream, &[b"PING"]).map_err(Failure::AfterTracking)?;
                ping_sent = Some(Instant::now());
            }
            next_ping = Instant::now() + HEARTBEAT;
            continue;
        }
        channel.busy.store(true, Ordering::SeqCst);
        let read = stream
            .read(&mut buffer)
            .map_err(|e| Failure::AfterTracking(format!("tracking connection: {e}")))?;
        if read == 0 {
            return Err(Failure::AfterTracking(
                "Redis closed the tracking connection".into(),
            ));
        }
        reader.extend(&buffer[..read]);
        let Some(cache) = cache.upgrade() else {
            return Ok(());
        };
        while let Some(frame) = reader.next_frame().map_err(Failure::AfterTracking)? {
            match frame {
                Frame::Push(items) if is_invalidation(&items) => {
                    cache.apply_invalidation(session_prefix, items.get(1));
                }
                Frame::Simple(text) if text == "PONG" => {
                    if let Some(sent) = ping_sent.take() {
                        // Everything Redis sent before the PONG is applied by now.
                        cache.vouch(sent);
                    }
                }
                Frame::Error(message) => {
                    return Err(Failure::AfterTracking(format!(
                        "Redis answered an error on the tracking connection: {message}"
                    )));
                }
                _ => {}
            }
        }
        channel.busy.store(reader.has_buffered(), Ordering::SeqCst);
    }
}

/// Waits up to `timeout` for the socket to have something to read (or to close).
fn readable(fd: i32, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd on the stack, for a descriptor this thread owns.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    ready > 0
}

fn send(stream: &mut Box<dyn Stream>, args: &[&[u8]]) -> Result<(), String> {
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    stream
        .write_all(&command)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("tracking connection: {e}"))
}

/// Reads until one reply (not a push) is complete; an error reply fails.
fn expect_reply(
    stream: &mut Box<dyn Stream>,
    reader: &mut FrameReader,
    what: &str,
) -> Result<(), String> {
    let mut buffer = [0u8; 4096];
    loop {
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Error(message) => return Err(format!("{what} refused: {message}")),
                Frame::Push(_) => {}
                _ => return Ok(()),
            }
        }
        let read = stream
            .read(&mut buffer)
            .map_err(|e| format!("{what}: {e}"))?;
        if read == 0 {
            return Err(format!("{what}: Redis closed the connection"));
        }
        reader.extend(&buffer[..read]);
    }
}
