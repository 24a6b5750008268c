//! Per connection: the request in progress, and a kept-alive connection whose next request
//! head trickles in is cut off. Also the response body that holds something until sent.

use std::any::Any;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::rt::net::TcpStream;
use bytes::Bytes;

/// Marks the request's connection busy (not waiting for a head) until the response is sent.
pub fn hold_connection(req: &ServiceRequest) -> Option<RequestTicket> {
    req.conn_data::<ConnectionGuard>()
        .map(|guard| guard.0.begin_request())
}

/// The response, holding the connection's ticket until its body has gone out whole.
pub fn release_when_sent(
    response: ServiceResponse<BoxBody>,
    ticket: Option<RequestTicket>,
) -> ServiceResponse<BoxBody> {
    match ticket {
        Some(ticket) => response
            .map_body(|_, body| HoldingBody::boxed(body, ticket))
            .map_into_boxed_body(),
        None => response,
    }
}

// ---------------------------------------------------------------------------------------
// Slow request heads on kept-alive connections
// ---------------------------------------------------------------------------------------

/// How long an idle connection stays open between two requests (actix's keep-alive).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// actix times the request head only for a connection's first request; on a kept-alive
/// connection the keep-alive timer stops at the next request's first byte and nothing limits
/// how slowly the rest arrives. This watch closes that gap from outside actix: it knows when
/// the connection last finished a response and whether a request is being served now, and
/// holds a second handle on the socket to shut it down. A connection with no request in
/// progress `KEEP_ALIVE + header_timeout` after its last response is either idle (actix has
/// closed it already) or trickling a head: it is shut down.
pub struct ConnectionWatch {
    socket: socket2::Socket,
    started: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `started` at which the last response finished; 0 before any.
    idle_since_ms: AtomicU64,
}

impl ConnectionWatch {
    fn begin_request(self: &Arc<Self>) -> RequestTicket {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestTicket(self.clone())
    }

    /// How much longer an idle connection may wait for its next head; `None` while a
    /// request is in progress or before the first one (actix times that one itself).
    fn head_deadline_in(&self, grace: Duration) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let idle_since = self.idle_since_ms.load(Ordering::SeqCst);
        if idle_since == 0 {
            return None;
        }
        let deadline = Duration::from_millis(idle_since) + grace;
        Some(deadline.saturating_sub(self.started.elapsed()))
    }
}

/// Kept in the connection's data: when the connection ends it goes, and with it (the patrol
/// holds only a weak reference) the second socket handle, so the socket closes at once.
pub struct ConnectionGuard(Arc<ConnectionWatch>);

/// One request in progress on a watched connection; dropped once its response body is done.
pub struct RequestTicket(Arc<ConnectionWatch>);

impl Drop for RequestTicket {
    fn drop(&mut self) {
        let since = (self.0.started.elapsed().as_millis() as u64).max(1);
        self.0.idle_since_ms.store(since, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that holds something (its request's ticket, the unread rest of a
/// request body) until it is sent whole (or abandoned).
pub struct HoldingBody<T> {
    body: BoxBody,
    _held: T,
}

impl<T: Unpin> HoldingBody<T> {
    pub fn boxed(body: BoxBody, held: T) -> BoxBody
    where
        T: 'static,
    {
        BoxBody::new(Self { body, _held: held })
    }
}

impl<T: Unpin> MessageBody for HoldingBody<T> {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// The `on_connect` hook: watches plain and TLS HTTP/1 connections (HTTP/2 frames its own
/// headers and keeps its own pings).
pub fn watch_connection(io: &dyn Any, data: &mut Extensions, header_timeout: Duration) {
    let tcp = if let Some(tcp) = io.downcast_ref::<TcpStream>() {
        tcp
    } else if let Some(tls) =
        io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
    {
        let (tcp, session) = tls.get_ref();
        if session.alpn_protocol() == Some(b"h2") {
            return;
        }
        tcp
    } else {
        return;
    };
    let Ok(socket) = socket2::SockRef::from(tcp).try_clone() else {
        return;
    };
    let watch = Arc::new(ConnectionWatch {
        socket,
        started: Instant::now(),
        in_flight: AtomicU32::new(0),
        idle_since_ms: AtomicU64::new(0),
    });
    actix_web::rt::spawn(patrol(Arc::downgrade(&watch), KEEP_ALIVE + header_timeout));
    data.insert(ConnectionGuard(watch));
}

async fn patrol(watch: Weak<ConnectionWatch>, grace: Duration) {
    loop {
        let wait = match watch.upgrade() {
            None => return,
            Some(watch) => match watch.head_deadline_in(grace) {
                Some(left) if left.is_zero() => {
                    tracing::info!(
                        "closing a kept-alive connection whose request head is too slow"
                    );
                    let _ = watch.socket.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Some(left) => left,
                None => grace,
            },
        };
        actix_web::rt::time::sleep(wait.max(Duration::from_millis(50))).await;
    }
}
