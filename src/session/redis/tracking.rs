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

fn is_invalidation(items: &[Frame]) -> bool {
    matches!(items.first(), Some(Frame::Bulk(kind)) if kind.eq_ignore_ascii_case(b"invalidate"))
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

/// The RESP3 values this connection meets, with the payloads it needs.
#[derive(Debug, PartialEq)]
pub(super) enum Frame {
    Simple(String),
    Error(String),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Frame>),
    Push(Vec<Frame>),
    /// Integers, doubles, booleans, maps, sets, attributes: read whole, not needed here.
    Other,
}

#[derive(Default)]
struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    fn has_buffered(&self) -> bool {
        !self.buffer.is_empty()
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        match parse(&self.buffer, 0)? {
            Some((frame, used)) => {
                self.buffer.drain(..used);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }
}

/// One line ending in CRLF at `at`: its text and where the next thing starts.
fn line(buffer: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buffer.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| "malformed length in a RESP3 frame".to_owned())
}

/// Parses one frame at `at`; `None` when the buffer holds only part of it.
pub(super) fn parse(buffer: &[u8], at: usize) -> Result<Option<(Frame, usize)>, String> {
    let Some(&kind) = buffer.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buffer, at + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    match kind {
        b'+' => Ok(Some((Frame::Simple(text()), next))),
        b'-' => Ok(Some((Frame::Error(text()), next))),
        b':' | b',' | b'#' | b'(' => Ok(Some((Frame::Other, next))),
        b'_' => Ok(Some((Frame::Null, next))),
        b'$' | b'=' | b'!' => {
            let length = number(head)?;
            if length < 0 {
                return Ok(Some((Frame::Null, next)));
            }
            let end = next + length as usize;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            let payload = buffer[next..end].to_vec();
            let frame = if kind == b'!' {
                Frame::Error(String::from_utf8_lossy(&payload).into_owned())
            } else {
                Frame::Bulk(payload)
            };
            Ok(Some((frame, end + 2)))
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let count = number(head)?;
            if count < 0 {
                return Ok(Some((Frame::Null, next)));
            }
            let items = if matches!(kind, b'%' | b'|') {
                count * 2
            } else {
                count
            };
            let mut position = next;
            let mut children = Vec::new();
            for _ in 0..items {
                match parse(buffer, position)? {
                    Some((child, after)) => {
                        children.push(child);
                        position = after;
                    }
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // An attribute precedes the value it describes.
                return parse(buffer, position);
            }
            let frame = match kind {
                b'*' => Frame::Array(children),
                b'>' => Frame::Push(children),
                _ => Frame::Other,
            };
            Ok(Some((frame, position)))
        }
        other => Err(format!(
            "unexpected RESP3 type byte 0x{other:02x} on the tracking connection"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Frame {
        let (frame, used) = parse(bytes, 0).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        frame
    }

    #[test]
    fn invalidation_pushes_parse_whole_and_in_pieces() {
        let push = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$7\r\ng:s:{a}\r\n$7\r\ng:s:{b}\r\n";
        let frame = whole(push);
        let Frame::Push(items) = frame else {
            panic!("not a push")
        };
        assert!(is_invalidation(&items));
        assert_eq!(
            items[1],
            Frame::Array(vec![
                Frame::Bulk(b"g:s:{a}".to_vec()),
                Frame::Bulk(b"g:s:{b}".to_vec())
            ])
        );
        for cut in 0..push.len() {
            assert_eq!(parse(&push[..cut], 0).expect("valid"), None, "cut at {cut}");
        }
        // After FLUSHALL the keys are a null.
        let Frame::Push(items) = whole(b">2\r\n$10\r\ninvalidate\r\n_\r\n") else {
            panic!("not a push")
        };
        assert_eq!(items[1], Frame::Null);
    }

    #[test]
    fn hello_maps_and_errors_parse() {
        let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nmodules\r\n*0\r\n";
        assert_eq!(whole(hello), Frame::Other);
        assert_eq!(
            whole(b"-WRONGPASS invalid username-password pair\r\n"),
            Frame::Error("WRONGPASS invalid username-password pair".into())
        );
        assert_eq!(whole(b"+PONG\r\n"), Frame::Simple("PONG".into()));
        assert!(parse(b"?what\r\n", 0).is_err());
    }
}
