//! The edge: what is decided once per request, before any handler runs — whether the
//! request head is within bounds, and who the client is. Handlers read the result from the
//! request's extensions; they never look at the peer address or `X-Forwarded-For`
//! themselves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpRequest};
use ipnet::IpNet;

use crate::error::{ApiError, Problem};
use crate::routes::AppState;

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
}

/// Refuses an oversized request head with 431 and records the client IP, for every path.
/// Its refusals are responses (not `Err`), rendered with the request id like a handler's.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let server = &state.settings.server;
    if head_bytes(req.headers()) > server.max_header_bytes {
        let limit = server.max_header_bytes;
        let problem = ApiError::new(Problem::HeaderTooLarge).detail(format!(
            "The request's header lines may be {limit} bytes together."
        ));
        return Ok(req.error_response(problem).map_into_boxed_body());
    }
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let forwarded = req
        .headers()
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok());
    let client = client_ip(peer, forwarded, &server.trusted_proxies);
    tracing::Span::current().record("client_ip", tracing::field::display(client));
    req.extensions_mut().insert(ClientIp(client));
    Ok(next.call(req).await?.map_into_boxed_body())
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
