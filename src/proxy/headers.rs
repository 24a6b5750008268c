//! Which request and response headers cross the proxy. Names only, no framework types.
//!
//! Request headers cross on an allow-list: what a browser's `fetch` legitimately sends,
//! what the kind of request needs on top (a WebSocket handshake, a dev server's page loads),
//! and a route's own `forward_headers`. The names gatehouse reserves
//! (`config::reserved_headers`) never cross, whatever a route lists.

pub use crate::config::reserved_headers::same_header;
use crate::config::reserved_headers::{is_hop_by_hop, never_from_browser};

/// What the browser's request goes on as: the headers it may carry beyond the common ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// A call to an API route.
    Api,
    /// A WebSocket handshake on an API route: the relay speaks the protocol itself and
    /// offers no extension, so the key, version and subprotocols cross.
    ApiWebSocket,
    /// The frontend dev server: page loads, assets and a hot-reload socket tunnelled as
    /// bytes (so its extensions cross too). It gets no `forward_headers`.
    DevServer,
}

/// The request headers a browser's `fetch` legitimately sends to an API: content
/// negotiation, conditional and range requests, the body's description, language, user
/// agent, the browser's own fetch metadata and client hints, `Origin` and `Referer`,
/// `Last-Event-ID` (an `EventSource` reconnecting), `X-Requested-With`. `name` in lower
/// case, as `http::HeaderName` keeps it: one `match` on the string, no copy.
/// `Content-Length` and the trace context (`traceparent`, `tracestate`) are not here:
/// gatehouse sets them itself.
fn fetch_header(name: &str) -> bool {
    matches!(
        name,
        "accept"
            | "accept-charset"
            | "accept-encoding"
            | "accept-language"
            | "cache-control"
            | "pragma"
            | "content-type"
            | "content-encoding"
            | "content-language"
            | "content-disposition"
            | "if-match"
            | "if-none-match"
            | "if-modified-since"
            | "if-unmodified-since"
            | "if-range"
            | "range"
            | "user-agent"
            | "origin"
            | "referer"
            | "dnt"
            | "sec-gpc"
            | "priority"
            | "last-event-id"
            | "x-requested-with"
    ) || name.starts_with("sec-fetch-")
        || name.starts_with("sec-ch-ua")
}

/// A WebSocket handshake's own headers (RFC 6455 §4.1), without extensions.
fn websocket_header(name: &str) -> bool {
    matches!(
        name,
        "sec-websocket-key" | "sec-websocket-version" | "sec-websocket-protocol"
    )
}

/// What a dev server gets beyond an API: the WebSocket handshake with its extensions (the
/// tunnel copies bytes), and the headers of a navigation and of a service worker's script.
fn dev_server_header(name: &str) -> bool {
    websocket_header(name)
        || matches!(
            name,
            "sec-websocket-extensions"
                | "upgrade-insecure-requests"
                | "sec-purpose"
                | "purpose"
                | "service-worker"
        )
}

/// How one request's headers are filtered.
pub struct RequestHeaderPolicy<'a> {
    pub forwarding: Forwarding,
    /// The route's own `forward_headers` (lower case); empty for the dev server.
    pub route_headers: &'a [String],
    /// The anti-forgery header: never forwarded, even if a list names it.
    pub csrf_header: &'a str,
    /// Tokens of the request's `Connection` header (lower case): hop-by-hop for it.
    pub connection_tokens: &'a [String],
}

/// Whether a header the browser sent may go on to the upstream. `name` is lower case (as
/// `http::HeaderName` keeps it); the common case, a header on no list, costs one `match`.
/// A name spelled with `_` for `-` is on no default list, so only a route listing that
/// exact spelling lets it through. gatehouse sets Host, Authorization, Content-Length,
/// X-Forwarded-*, X-Request-Id, `traceparent` and `tracestate` itself.
pub fn forward_request_header(name: &str, policy: &RequestHeaderPolicy<'_>) -> bool {
    let allowed = fetch_header(name)
        || match policy.forwarding {
            Forwarding::Api => false,
            Forwarding::ApiWebSocket => websocket_header(name),
            Forwarding::DevServer => dev_server_header(name),
        }
        || (policy
            .route_headers
            .iter()
            .any(|listed| name.eq_ignore_ascii_case(listed))
            && !never_from_browser(name));
    allowed
        && !policy
            .connection_tokens
            .iter()
            .any(|token| name.eq_ignore_ascii_case(token))
        && !same_header(name, policy.csrf_header)
}

/// Tokens named by a `Connection` header: also hop-by-hop for this message.
pub fn connection_tokens(connection_values: &[&str]) -> Vec<String> {
    connection_values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether an upstream response header may go back to the browser.
pub fn forward_response_header(
    name: &str,
    connection_tokens: &[String],
    pass_set_cookie: bool,
) -> bool {
    !(is_hop_by_hop(name)
        || connection_tokens
            .iter()
            .any(|token| name.eq_ignore_ascii_case(token))
        || name.eq_ignore_ascii_case("content-length")
        || (!pass_set_cookie && name.eq_ignore_ascii_case("set-cookie")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy<'a>(
        forwarding: Forwarding,
        route_headers: &'a [String],
        tokens: &'a [String],
    ) -> RequestHeaderPolicy<'a> {
        RequestHeaderPolicy {
            forwarding,
            route_headers,
            csrf_header: "X-CSRF",
            connection_tokens: tokens,
        }
    }

    /// The headers of issue 23 that reached upstreams under the former deny-list, and the
    /// ones it already stopped, in several spellings (as actix hands them over: lower case).
    const HOSTILE: &[&str] = &[
        "proxy",
        "client-ip",
        "client_ip",
        "x-originating-ip",
        "x-forwarded",
        "forwarded-for",
        "x-proxyuser-ip",
        "x-userid",
        "x-principal",
        "impersonate-user",
        "impersonate-group",
        "impersonate_user",
        "x-consumer-username",
        "x-credential-username",
        "x-envoy-original-path",
        "x-http-method-override",
        "x-method-override",
        "x-http-method",
        "x_http_method_override",
        "x-forwarded-user",
        "x_forwarded_user",
        "x-user-id",
        "remote-user",
        "x-real-ip",
        "forwarded",
        "cookie",
        "x-csrf",
        "x_csrf",
        "authorization",
        "host",
        "content-length",
        "traceparent",
        "tracestate",
        "x-request-id",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "x-trace",
        "accept_language",
        "user_agent",
        "if_none_match",
        "é-header",
    ];

    #[test]
    fn only_listed_request_headers_cross() {
        for forwarding in [
            Forwarding::Api,
            Forwarding::ApiWebSocket,
            Forwarding::DevServer,
        ] {
            for name in HOSTILE {
                assert!(
                    !forward_request_header(name, &policy(forwarding, &[], &[])),
                    "{name} forwarded ({forwarding:?})"
                );
            }
            for name in [
                "accept",
                "accept-encoding",
                "accept-language",
                "content-type",
                "if-none-match",
                "if-modified-since",
                "range",
                "user-agent",
                "cache-control",
                "x-requested-with",
                "last-event-id",
                "sec-fetch-mode",
                "sec-ch-ua-platform",
                "origin",
            ] {
                assert!(
                    forward_request_header(name, &policy(forwarding, &[], &[])),
                    "{name} dropped ({forwarding:?})"
                );
            }
        }
        let api = policy(Forwarding::Api, &[], &[]);
        let socket = policy(Forwarding::ApiWebSocket, &[], &[]);
        let dev = policy(Forwarding::DevServer, &[], &[]);
        for name in ["sec-websocket-key", "sec-websocket-protocol"] {
            assert!(!forward_request_header(name, &api), "{name}");
            assert!(forward_request_header(name, &socket), "{name}");
            assert!(forward_request_header(name, &dev), "{name}");
        }
        assert!(!forward_request_header("sec-websocket-extensions", &socket));
        assert!(forward_request_header("sec-websocket-extensions", &dev));
        assert!(!forward_request_header("upgrade-insecure-requests", &api));
        assert!(forward_request_header("upgrade-insecure-requests", &dev));
    }

    #[test]
    fn a_route_lets_its_own_headers_through_and_never_a_reserved_one() {
        let listed: Vec<String> = ["x-tenant", "x_legacy", "x-forwarded-user", "x-csrf"]
            .map(String::from)
            .to_vec();
        let route = policy(Forwarding::Api, &listed, &[]);
        assert!(forward_request_header("x-tenant", &route));
        assert!(
            !forward_request_header("x_tenant", &route),
            "only as listed"
        );
        assert!(forward_request_header("x_legacy", &route));
        assert!(!forward_request_header("x-legacy", &route));
        assert!(!forward_request_header("x-forwarded-user", &route));
        assert!(!forward_request_header("x-csrf", &route));
        assert!(!forward_request_header("x-other", &route));
    }

    #[test]
    fn connection_named_headers_are_hop_by_hop() {
        let tokens = connection_tokens(&["keep-alive, Accept-Language"]);
        let api = policy(Forwarding::Api, &[], &tokens);
        assert!(!forward_request_header("accept-language", &api));
        assert!(forward_request_header("accept", &api));
        let tokens = connection_tokens(&["X-Hop"]);
        assert!(!forward_response_header("X-Hop", &tokens, true));
    }

    #[test]
    fn response_policy() {
        assert!(!forward_response_header("set-cookie", &[], false));
        assert!(forward_response_header("set-cookie", &[], true));
        assert!(!forward_response_header("transfer-encoding", &[], true));
        assert!(forward_response_header("location", &[], false));
        assert!(!forward_response_header("Content-Length", &[], true));
        assert!(!forward_response_header("Set-Cookie", &[], false));
        assert!(forward_response_header("Set-Cookie", &[], true));
        assert!(!forward_response_header("Proxy-Authenticate", &[], true));
    }
}
