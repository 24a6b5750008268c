//! Who the client is: the peer, or — behind a trusted proxy — the address that proxy
//! reports. Decided once per request and kept in its extensions.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderName;
use actix_web::{HttpMessage, HttpRequest};
use ipnet::IpNet;

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
}
