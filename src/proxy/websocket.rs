//! WebSocket routes: the upstream's handshake answer checked and passed back, then messages
//! relayed both ways (parsed, not copied as bytes) so that gatehouse can end a socket with a
//! close frame of its own: 1008 when the session behind it ends, 1001 when it idles or the
//! server shuts down, 1009
//! to the side that sent a message over the limit.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::BodyStream;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::forward::{copy_response_headers, read_chunks, CHUNK};

/// How often an open socket asks whether its session still lives: a session ended
/// anywhere closes its sockets within this (plus one store read).
pub const SESSION_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long the second side of a socket may take to close after the first did.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a socket's periodic check found.
pub enum SessionState {
    Live,
    Ended,
    /// The store did not answer: the socket stays (an outage never logs anybody out).
    Unknown,
}

/// Asks whether the session a socket was opened for still lives (`None`: no session).
pub type SessionCheck = Box<dyn Fn() -> LocalBoxFuture<'static, SessionState>>;

/// Counts the socket in the metrics: open now, and closed with a reason when it ends.
pub struct SocketMetrics {
    pub metrics: crate::observability::metrics::Metrics,
    pub route: String,
}

pub struct TunnelLimits {
    /// No text or binary message either way for this long closes the socket.
    pub idle: Duration,
    /// The socket is closed after this long whatever happens on it.
    pub max_duration: Option<Duration>,
    /// The largest message (and frame) relayed, either way.
    pub max_message_bytes: usize,
    /// The socket is closed (1001) when this process starts shutting down.
    pub until: crate::drain::Drain,
}

/// The WebSockets each session holds open on this instance, up to a cap
/// (`session.websocket_max_per_session`). Instances count apart: a session spread over
/// several may hold the cap at each.
#[derive(Clone)]
pub struct SocketSlots {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open socket's place in its session's count, given back when dropped: when the relay
/// ends, or when the handshake fails before there is one.
pub struct SocketSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    session: String,
}

impl SocketSlots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more socket of `session` (its store key), or `None` at the cap.
    pub fn take(&self, session: &str) -> Option<SocketSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(session.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SocketSlot {
            open: self.open.clone(),
            session: session.to_owned(),
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.session) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.session);
            }
        }
    }
}

fn lock(open: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the browser's handshake lacks a valid Sec-WebSocket-Key or version 13")]
    BadRequest,
    #[error("the upstream's handshake answer is not a valid WebSocket acceptance")]
    BadUpstreamAnswer,
    #[error("the upstream's connection could not be taken over")]
    UpgradeFailed,
}

/// The browser's `Sec-WebSocket-Key`, checked: 16 bytes in base64, and version 13.
pub fn browser_key(req: &HttpRequest) -> Result<&str, HandshakeError> {
    let single = |name| {
        let mut values = req.headers().get_all(name);
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok(),
            _ => None,
        }
    };
    let key = single("sec-websocket-key").ok_or(HandshakeError::BadRequest)?;
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key)
        .map_err(|_| HandshakeError::BadRequest)?;
    if decoded.len() != 16 || single("sec-websocket-version") != Some("13") {
        return Err(HandshakeError::BadRequest);
    }
    Ok(key)
}

/// The upstream switched protocols: check its answer against the browser's key, answer the
/// browser with it, and relay messages until one side closes, the session ends, the socket
/// idles or `limits.max_duration` passes. The socket holds `slot` until it ends.
pub async fn tunnel(
    response: reqwest::Response,
    payload: web::Payload,
    key: &str,
    session: Option<SessionCheck>,
    limits: TunnelLimits,
    counted: SocketMetrics,
    slot: Option<SocketSlot>,
) -> Result<HttpResponse, HandshakeError> {
    let headers = response.headers();
    let accepted = headers
        .get("sec-websocket-accept")
        .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes());
    // No extension was offered upstream (permessage-deflate is not relayed), so none may be
    // in the answer: frames would not mean what they say.
    if !accepted || headers.contains_key("sec-websocket-extensions") {
        return Err(HandshakeError::BadUpstreamAnswer);
    }
    let mut answer = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    answer.upgrade("websocket");
    copy_response_headers(&mut answer, headers, false);
    let upgraded = response
        .upgrade()
        .await
        .map_err(|_| HandshakeError::UpgradeFailed)?;

    let config = WebSocketConfig {
        max_message_size: Some(limits.max_message_bytes),
        max_frame_size: Some(limits.max_message_bytes),
        ..WebSocketConfig::default()
    };
    let upstream = WebSocketStream::from_raw_socket(upgraded, Role::Client, Some(config)).await;

    // The browser's side as one duplex stream: actix hands over the upgraded connection's
    // bytes as the payload and sends the 101's body raw. The pipe's bound is the
    // backpressure: a browser that stops reading stops the relay reading the upstream.
    let (ours, theirs) = tokio::io::duplex(CHUNK);
    let (from_relay, mut to_relay) = tokio::io::split(theirs);
    actix_web::rt::spawn(async move {
        let mut payload = payload;
        while let Some(Ok(chunk)) = payload.next().await {
            if to_relay.write_all(&chunk).await.is_err() {
                return; // the relay ended
            }
        }
        let _ = to_relay.shutdown().await;
    });
    let browser = WebSocketStream::from_raw_socket(ours, Role::Server, Some(config)).await;
    counted.metrics.websocket_opened(&counted.route);
    actix_web::rt::spawn(async move {
        let reason = relay(browser, upstream, session, limits).await;
        drop(slot);
        counted.metrics.websocket_closed(&counted.route, reason);
    });
    Ok(answer.body(BodyStream::new(read_chunks(from_relay))))
}

/// The two sides of a socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Browser,
    Upstream,
}

/// Why gatehouse itself ends a socket.
#[derive(Clone, Copy)]
enum Ending {
    SessionEnded,
    Idle,
    MaxDuration,
    /// This process is shutting down (SIGTERM).
    ShuttingDown,
    /// A message (or frame) over `max_message_bytes` from this side.
    TooBig(Side),
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Ending::SessionEnded => "session_ended",
            Ending::Idle => "idle",
            Ending::MaxDuration => "max_duration",
            Ending::ShuttingDown => "shutdown",
            Ending::TooBig(_) => "message_too_big",
        }
    }

    /// The close frame for the side `to`: the sender of an oversized message gets 1009,
    /// the other side 1001 (the relay goes away; it did nothing wrong).
    fn close_frame(self, to: Side) -> CloseFrame<'static> {
        let (code, reason) = match self {
            Ending::SessionEnded => (CloseCode::Policy, "session ended"),
            Ending::Idle => (CloseCode::Away, "idle"),
            Ending::MaxDuration => (CloseCode::Away, "maximum duration reached"),
            Ending::ShuttingDown => (CloseCode::Away, "server shutting down"),
            Ending::TooBig(sender) if sender == to => (CloseCode::Size, "message too big"),
            Ending::TooBig(_) => (CloseCode::Away, "the peer sent a message too big"),
        };
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

/// Relays both directions, each on its own (a slow reader on one side does not hold up the
/// other), until either side closes or gatehouse ends the socket. Returns why it ended.
async fn relay<B, U>(
    browser: WebSocketStream<B>,
    upstream: WebSocketStream<U>,
    session: Option<SessionCheck>,
    limits: TunnelLimits,
) -> &'static str
where
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (to_browser, from_browser) = browser.split();
    let (to_upstream, from_upstream) = upstream.split();
    let last_message = Rc::new(Cell::new(Instant::now()));
    let (stop, stopped) = tokio::sync::watch::channel(None::<Ending>);
    let upward = one_way(
        (from_browser, Side::Browser),
        (to_upstream, Side::Upstream),
        last_message.clone(),
        (&stop, stopped.clone()),
    );
    let downward = one_way(
        (from_upstream, Side::Upstream),
        (to_browser, Side::Browser),
        last_message.clone(),
        (&stop, stopped),
    );
    let watch = async {
        tokio::select! {
            ending = watch_socket(session.as_ref(), &last_message, &limits) => ending,
            () = limits.until.started() => Ending::ShuttingDown,
        }
    };
    tokio::pin!(upward, downward, watch);
    // When one direction ends (its side closed or failed), the close it passed on should
    // end the other; a peer that never answers a close is let go after the grace period.
    // A direction that met an oversized message has stopped the other one, which closes
    // its sink (the sender) with 1009.
    tokio::select! {
        ending = &mut watch => {
            let _ = stop.send(Some(ending));
            let both = futures_util::future::join(&mut upward, &mut downward);
            let _ = tokio::time::timeout(CLOSE_GRACE, both).await;
            ending.label()
        }
        ending = &mut upward => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut downward).await;
            ending.map_or("peer", Ending::label)
        }
        ending = &mut downward => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut upward).await;
            ending.map_or("peer", Ending::label)
        }
    }
}

/// Waits until gatehouse should end the socket, and says why.
async fn watch_socket(
    session: Option<&SessionCheck>,
    last_message: &Cell<Instant>,
    limits: &TunnelLimits,
) -> Ending {
    let opened = Instant::now();
    let mut next_check = opened + SESSION_CHECK_INTERVAL;
    loop {
        let idle_at = last_message.get() + limits.idle;
        let mut wake = idle_at.min(next_check);
        if let Some(max) = limits.max_duration {
            wake = wake.min(opened + max);
        }
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if limits.max_duration.is_some_and(|max| now >= opened + max) {
            return Ending::MaxDuration;
        }
        if now >= last_message.get() + limits.idle {
            return Ending::Idle;
        }
        if now >= next_check {
            if let Some(check) = session {
                if let SessionState::Ended = check().await {
                    return Ending::SessionEnded;
                }
            }
            next_check = Instant::now() + SESSION_CHECK_INTERVAL;
        }
    }
}

/// Relays the messages of one direction until its source closes or fails, or gatehouse ends
/// the socket (then `sink` gets gatehouse's close frame). When the source sends a message
/// too big to relay, the other direction is stopped first (so that whatever the sink
/// answers cannot reach the source before its 1009), the sink gets 1001, and the ending is
/// returned.
async fn one_way<S, K>(
    (mut source, from): (S, Side),
    (mut sink, to): (K, Side),
    last_message: Rc<Cell<Instant>>,
    (stop, mut stopped): (
        &tokio::sync::watch::Sender<Option<Ending>>,
        tokio::sync::watch::Receiver<Option<Ending>>,
    ),
) -> Option<Ending>
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    K: futures_util::Sink<Message> + Unpin,
{
    loop {
        let message = tokio::select! {
            biased;
            _ = stopped.changed() => {
                let ending = *stopped.borrow();
                if let Some(ending) = ending {
                    let _ = sink.send(Message::Close(Some(ending.close_frame(to)))).await;
                }
                let _ = sink.close().await;
                return None;
            }
            message = source.next() => message,
        };
        let (frame, ending) = match message {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                last_message.set(Instant::now());
                if sink.send(message).await.is_err() {
                    return None;
                }
                continue;
            }
            // Each side answers its own pings (the library does); they are not relayed.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            // The other side learns why (codes gatehouse may not send are replaced).
            Some(Ok(Message::Close(frame))) => (
                frame.map(|f| CloseFrame {
                    code: relayable(f.code),
                    reason: f.reason,
                }),
                None,
            ),
            Some(Err(WsError::Capacity(_))) => {
                let ending = Ending::TooBig(from);
                let _ = stop.send(Some(ending));
                (Some(ending.close_frame(to)), Some(ending))
            }
            Some(Err(_)) | None => (
                Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "peer went away".into(),
                }),
                None,
            ),
        };
        let _ = sink.send(Message::Close(frame)).await;
        let _ = sink.close().await;
        return ending;
    }
}

/// A received close code as one that may be sent on: the reserved ones (1005, 1006, 1015)
/// never appear in a frame.
fn relayable(code: CloseCode) -> CloseCode {
    match code {
        CloseCode::Status | CloseCode::Abnormal | CloseCode::Tls => CloseCode::Away,
        other => other,
    }
}
