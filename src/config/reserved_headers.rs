//! Header names a browser never hands on to an upstream, whatever a route says: the ones
//! gatehouse sets itself, hop-by-hop ones, and identity, client-address and method-override
//! headers that some upstream or gateway in front of it trusts. The proxy drops them; the
//! config refuses them in a route's `forward_headers`. Names only, compared without
//! allocating: lower case and `_` read as `-` (a server may treat `X_User` as `X-User`).

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the proxy-only ones; also every `proxy-*`.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
];

/// What gatehouse sets on the upstream request itself (`X-Forwarded-*` and `Forwarded` are
/// among the identity headers below), and `Proxy`, which CGI-style servers turn into
/// `HTTP_PROXY` for their outgoing calls (httpoxy).
const GATEHOUSE_OWN: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "content-length",
    "x-request-id",
    "x-user-id",
    "traceparent",
    "tracestate",
    "proxy",
];

/// Identity and client-address headers some upstream or gateway may trust.
const IDENTITY_EXACT: &[&str] = &[
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "remote-user",
    "remote-email",
    "remote-groups",
    "x-remote-user",
    "x-user",
    "x-userid",
    "x-principal",
    "x-email",
    "x-preferred-username",
    "x-access-token",
    "x-id-token",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "x-originating-ip",
    "x-proxyuser-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-rewrite-url",
    "x-host",
    // Method overrides: an upstream that honours them would run another method than the
    // one the route's `methods` admitted.
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];
const IDENTITY_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-original-",
    "x-auth-",
    "x-authenticated-",
    "x-user-",
    "x-remote-",
    "x-ms-client-principal",
    "x-goog-authenticated-",
    "x-amzn-oidc-",
    "x-webauth-",
    "x-jwt-",
    // Kubernetes' API server acts as these.
    "impersonate-",
    // Kong's authentication plugins.
    "x-consumer-",
    "x-credential-",
    // Envoy treats every x-envoy-* header as its own.
    "x-envoy-",
];

/// A header-name byte as the checks compare it: lower case, `_` read as `-`.
fn normalised(byte: u8) -> u8 {
    match byte {
        b'_' => b'-',
        other => other.to_ascii_lowercase(),
    }
}

/// Whether two names are the same once both are normalised (compared without allocating).
fn same_normalised(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| normalised(*x) == normalised(*y))
}

/// Whether `name`, normalised, starts with `prefix` (already normalised).
fn starts_normalised(name: &[u8], prefix: &str) -> bool {
    name.len() >= prefix.len() && same_normalised(&name[..prefix.len()], prefix.as_bytes())
}

/// Whether two header names are the same, ignoring case and `_` versus `-` (a proxy or
/// server in front may treat them alike).
pub fn same_header(a: &str, b: &str) -> bool {
    same_normalised(a.as_bytes(), b.as_bytes())
}

/// Hop-by-hop in any message: the fixed list or `proxy-*` (case ignored).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
        || (name.len() >= 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"proxy-"))
}

pub fn is_identity_header(name: &str) -> bool {
    let name = name.as_bytes();
    IDENTITY_EXACT
        .iter()
        .any(|exact| same_normalised(name, exact.as_bytes()))
        || IDENTITY_PREFIXES
            .iter()
            .any(|prefix| starts_normalised(name, prefix))
}

/// Whether gatehouse sets this header on the upstream request itself (or it is `Proxy`).
pub fn is_gatehouse_own(name: &str) -> bool {
    GATEHOUSE_OWN
        .iter()
        .any(|own| same_normalised(name.as_bytes(), own.as_bytes()))
}

/// A header no route may take from the browser, in any spelling.
pub fn never_from_browser(name: &str) -> bool {
    is_hop_by_hop(name) || is_gatehouse_own(name) || is_identity_header(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_in_every_spelling() {
        for name in [
            "X-Forwarded-User",
            "x_forwarded_user",
            "X_Forwarded_Email",
            "x-user-id",
            "X-USER-ID",
            "X_User_Id",
            "Remote-User",
            "x-auth-request-email",
            "X-Real-IP",
            "forwarded",
            "X-Amzn-Oidc-Data",
            "Proxy",
            "proxy",
            "Client-IP",
            "client_ip",
            "X-Originating-IP",
            "X-Forwarded",
            "x_forwarded",
            "Forwarded-For",
            "X-ProxyUser-Ip",
            "X-Userid",
            "X-Principal",
            "Impersonate-User",
            "impersonate_group",
            "Impersonate-Extra-Scopes",
            "X-Consumer-Username",
            "X-Credential-Username",
            "X-Envoy-Original-Path",
            "X-HTTP-Method-Override",
            "x_method_override",
            "X-HTTP-Method",
            "X-Original-URL",
            "X-Original-Method",
            "Authorization",
            "authorization",
            "Traceparent",
            "x_request_id",
            "Content-Length",
            "Host",
            "Cookie",
            "Connection",
            "Proxy-Authorization",
            "proxy-anything",
            "PROXY-",
        ] {
            assert!(never_from_browser(name), "{name}");
        }
        for name in [
            "x-forwardé-for",
            "x-tenant",
            "accept",
            "x-trace-id",
            "proxyish",
            "x-userids",
            "authorization-hint",
        ] {
            assert!(!never_from_browser(name), "{name}");
        }
        // Prefixes as long as the name, and names shorter than them.
        assert!(is_identity_header("X-FORWARDED-"));
        assert!(!is_identity_header("x-forwarde"));
        assert!(is_identity_header("X_Ms_Client_Principal_Name"));
        assert!(!is_hop_by_hop("proxy"));
        assert!(!is_hop_by_hop("prox"));
    }
}
