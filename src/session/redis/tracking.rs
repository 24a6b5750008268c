//! The tracking connection behind the session cache: a small blocking RESP3 client on a
//! thread of its own, so that a reader can ask the socket itself whether an invalidation is
//! waiting.
//!
//! Redis writes a key's invalidation to this socket before it answers the write that caused
//! it. So by the time a logout at another instance has been answered, the invalidation is
//! in this host's socket buffer, even if this thread has not run yet. Before serving an entry, a
//! reader checks `Channel::quiet` (see `node`): nothing unread in the socket and nothing half-applied.
//! Otherwise it reads Redis. That makes "the very next call is 401" hold on one host and on
//! a LAN, without a round trip on the hot path.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use super::node::{Node, STALE_AFTER};
use super::resp3::{is_invalidation, Frame, FrameReader};

/// How often the connection is asked to prove itself (PING).
const HEARTBEAT: Duration = Duration::from_millis(250);

/// The name the tracking connections give themselves (`CLIENT LIST` shows it).
pub(super) const CLIENT_NAME: &str = "gatehouse-session-cache";

/// Where the session keys live, and how to log in there.
pub(super) struct Endpoint {
    pub(super) host: String,
    pub(super) port: u16,
    /// TLS with this configuration (the store's CA and client certificate).
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) username: Option<String>,
    pub(super) password: Option<SecretString>,
}

/// What the tracking connection of a node tells whoever listens (the session cache): it
/// knows nothing of what is done with it.
pub(super) trait TrackingListener {
    /// Tracking on `node` is on since `since`.
    fn go_live(&self, node: &Node, since: Instant);
    /// Tracking on `node` is off.
    fn go_dark(&self, node: &Node);
    /// An `invalidate` push's keys from `node` (nil after FLUSHALL/FLUSHDB: everything).
    fn apply_invalidation(&self, node: &Node, session_prefix: &str, keys: Option<&Frame>);
}

/// Keeps a tracking connection to `node` up for as long as the listener lives and the node
/// is not retired; after any failure the listener hears `go_dark` and tracking stays off
/// until it is on again.
pub(super) fn run<L: TrackingListener>(
    cache: Weak<L>,
    node: Arc<Node>,
    endpoint: impl Fn() -> Result<Endpoint, String>,
    session_prefix: &str,
    connect_timeout: Duration,
    target: &str,
) {
    let mut pause = Duration::from_millis(100);
    let mut reported = false;
    loop {
        if node.retired() || cache.strong_count() == 0 {
            return;
        }
        let outcome = endpoint().map_err(Failure::Before).and_then(|endpoint| {
            tracked(&cache, &node, &endpoint, session_prefix, connect_timeout)
        });
        node.channel.close();
        let Some(live) = cache.upgrade() else { return };
        live.go_dark(&node);
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
        if !reported && !node.retired() {
            tracing::warn!(
                redis = %target,
                node = %node.describe(),
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

/// A logged-in RESP3 connection (HELLO 3, with AUTH when there are credentials).
fn connect(
    endpoint: &Endpoint,
    connect_timeout: Duration,
) -> Result<(Box<dyn Stream>, i32, FrameReader), String> {
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
    hello.push(b"SETNAME");
    hello.push(CLIENT_NAME.as_bytes());
    send(&mut stream, &hello)?;
    expect_reply(&mut stream, &mut reader, "HELLO 3")?;
    Ok((stream, fd, reader))
}

/// One command on a connection of its own (the cluster's slot map), its reply.
pub(super) fn query(
    endpoint: &Endpoint,
    connect_timeout: Duration,
    command: &[&[u8]],
) -> Result<Frame, String> {
    let (mut stream, _, mut reader) = connect(endpoint, connect_timeout)?;
    send(&mut stream, command)?;
    expect_reply(&mut stream, &mut reader, "the query")
}

fn tracked<L: TrackingListener>(
    cache: &Weak<L>,
    node: &Node,
    endpoint: &Endpoint,
    session_prefix: &str,
    connect_timeout: Duration,
) -> Result<(), Failure> {
    let channel = &node.channel;
    let (mut stream, fd, mut reader) = connect(endpoint, connect_timeout)?;
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
        cache.go_live(node, Instant::now());
        tracing::info!(
            node = %node.describe(),
            "session cache on: Redis tracks session keys for this instance"
        );
    }

    let mut ping_sent: Option<Instant> = None;
    let mut next_ping = Instant::now() + HEARTBEAT;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let wait = next_ping.saturating_duration_since(Instant::now());
        if !reader.has_buffered() && !readable(fd, wait) {
            if node.retired() || cache.strong_count() == 0 {
                return Ok(());
            }
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
        channel.set_busy(true);
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
                    cache.apply_invalidation(node, session_prefix, items.get(1));
                }
                Frame::Simple(text) if text == "PONG" => {
                    if let Some(sent) = ping_sent.take() {
                        // Everything Redis sent before the PONG is applied by now.
                        node.vouch(sent);
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
        channel.set_busy(reader.has_buffered());
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
) -> Result<Frame, String> {
    let mut buffer = [0u8; 4096];
    loop {
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Error(message) => return Err(format!("{what} refused: {message}")),
                Frame::Push(_) => {}
                reply => return Ok(reply),
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
