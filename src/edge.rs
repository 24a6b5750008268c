//! The edge: what is decided once per request, before any handler runs — whether the
//! request head is within bounds, and who the client is. Handlers read the result from the
//! request's extensions; they never look at the peer address or `X-Forwarded-For`
//! themselves. And per connection: a kept-alive connection whose next request head trickles
//! in is cut off.

use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::rt::net::TcpStream;
use actix_web::{HttpMessage, HttpRequest};
use bytes::Bytes;
use ipnet::IpNet;

use crate::error::{ApiError, Problem};

/// The client's address: the peer, or — behind a trusted proxy — the address that proxy
/// reports in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address the edge decided on (unspecified for a request that never went through
    /// it, which only a test harness makes).
    pub fn of(req: &HttpRequest) -> IpAddr {
        req.extensions()
            .get::<ClientIp>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ip| ip.0)
    }
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Bytes of all header lines together, as sent: `name: value` plus the line end.
pub fn head_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The client behind `peer`. Only a trusted peer's `X-Forwarded-For` counts; in it, the
/// right-most address that is not itself a trusted proxy is the client (everything left of
/// it was written by the client and proves nothing). When every address is trusted, the
/// left-most is the client; an entry that is not an address stops the walk at the last
/// address a trusted hop vouched for.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`: compare and report them
    // as the IPv4 addresses they are.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded_address(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The client's address, decided once and kept in the request's extensions for every
/// handler (`ClientIp::of`).
pub fn identify_client(req: &ServiceRequest, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let forwarded = req
        .headers()
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok());
    let client = client_ip(peer, forwarded, trusted_proxies);
    req.extensions_mut().insert(ClientIp(client));
    client
}

/// 431 for a request head over `limit` bytes (`max_header_bytes`).
pub fn check_head_size(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    if head_bytes(headers) > limit {
        return Err(ApiError::new(Problem::HeaderTooLarge).detail(format!(
            "The request's header lines may be {limit} bytes together."
        )));
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = nets(&["10.0.0.0/8"]);
        for claim in ["1.2.3.4", "10.0.0.1", "garbage", ""] {
            assert_eq!(
                client_ip(ip("203.0.113.9"), [claim].into_iter(), &trusted),
                ip("203.0.113.9")
            );
        }
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let trusted = nets(&["127.0.0.1/32"]);
        assert_eq!(
            client_ip(
                ip("::ffff:127.0.0.1"),
                ["203.0.113.7"].into_iter(),
                &trusted
            ),
            ip("203.0.113.7"),
            "a mapped trusted proxy is trusted"
        );
        assert_eq!(
            client_ip(ip("::ffff:198.51.100.4"), [].into_iter(), &trusted),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        let cases: &[(&[&str], &str)] = &[
            (&["203.0.113.7"], "203.0.113.7"),
            // The client wrote the left part itself: ignored.
            (&["6.6.6.6, 203.0.113.7"], "203.0.113.7"),
            (&["6.6.6.6", "203.0.113.7, 10.1.2.3"], "203.0.113.7"),
            (&["203.0.113.7:4711"], "203.0.113.7"),
            (&["[2001:db8::1]:4711"], "2001:db8::1"),
            (&[" 2001:db8::1 "], "2001:db8::1"),
            // All trusted: the left-most.
            (&["10.9.9.9, 10.1.1.1"], "10.9.9.9"),
            // Not an address: the last hop that a trusted proxy vouched for.
            (&["203.0.113.7, unknown, 10.1.1.1"], "10.1.1.1"),
            (&["unknown"], "127.0.0.1"),
            (&[], "127.0.0.1"),
            (&["::ffff:203.0.113.7"], "203.0.113.7"),
        ];
        for (headers, expected) in cases {
            assert_eq!(
                client_ip(peer, headers.iter().copied(), &trusted),
                ip(expected),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn head_bytes_counts_every_line() {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-a"),
            actix_web::http::header::HeaderValue::from_static("12345"),
        );
        assert_eq!(head_bytes(&headers), 3 + 5 + 4);
    }
}
