//! Which request and response headers cross the proxy. Names only, no framework types.

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the proxy-only ones.
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

/// Identity headers some upstream may trust; a client must never be able to set them.
/// Compared after lower-casing and mapping `_` to `-`.
const IDENTITY_EXACT: &[&str] = &[
    "forwarded",
    "remote-user",
    "remote-email",
    "remote-groups",
    "x-remote-user",
    "x-user",
    "x-email",
    "x-preferred-username",
    "x-access-token",
    "x-id-token",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
];
const IDENTITY_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-auth-",
    "x-authenticated-",
    "x-user-",
    "x-remote-",
    "x-ms-client-principal",
    "x-goog-authenticated-",
    "x-amzn-oidc-",
    "x-webauth-",
    "x-jwt-",
];

/// A header-name byte as the identity checks compare it: lower case, `_` read as `-`.
fn normalised(byte: u8) -> u8 {
    match byte {
        b'_' => b'-',
        other => other.to_ascii_lowercase(),
    }
}

/// Whether two header names are the same, ignoring case and `_` versus `-` (a proxy or
/// server in front may treat them alike).
pub fn same_header(a: &str, b: &str) -> bool {
    same_normalised(a.as_bytes(), b.as_bytes())
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

pub fn is_identity_header(name: &str) -> bool {
    let name = name.as_bytes();
    IDENTITY_EXACT
        .iter()
        .any(|exact| same_normalised(name, exact.as_bytes()))
        || IDENTITY_PREFIXES
            .iter()
            .any(|prefix| starts_normalised(name, prefix))
}

/// Case-insensitive `starts_with` on ASCII header names.
fn starts_ignore_case(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Hop-by-hop for this message: the fixed list, `proxy-*`, or named by its `Connection`
/// header (whose tokens `connection_tokens` lower-cased).
fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
        || starts_ignore_case(name, "proxy-")
        || connection_tokens
            .iter()
            .any(|token| name.eq_ignore_ascii_case(token))
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

/// Whether a header the browser sent may go on to the upstream. gatehouse sets Host,
/// Authorization, X-Forwarded-*, X-Request-Id, `traceparent` and `tracestate` itself (the
/// trace headers from the validated trace context: a malformed one is never passed on).
pub fn forward_request_header(name: &str, connection_tokens: &[String], csrf_header: &str) -> bool {
    // Every comparison ignores case (and the identity ones `_` versus `-`) without
    // lower-casing a copy of the name: this runs for each header of each proxied call.
    !(is_hop_by_hop(name, connection_tokens)
        || [
            "host",
            "cookie",
            "authorization",
            "x-request-id",
            "content-length",
            "traceparent",
            "tracestate",
        ]
        .iter()
        .any(|own| name.eq_ignore_ascii_case(own))
        || same_normalised(name.as_bytes(), csrf_header.as_bytes())
        || is_identity_header(name))
}

/// Whether an upstream response header may go back to the browser.
pub fn forward_response_header(
    name: &str,
    connection_tokens: &[String],
    pass_set_cookie: bool,
) -> bool {
    !(is_hop_by_hop(name, connection_tokens)
        || name.eq_ignore_ascii_case("content-length")
        || (!pass_set_cookie && name.eq_ignore_ascii_case("set-cookie")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_in_every_spelling() {
        for name in [
            "X-Forwarded-User",
            "x_forwarded_user",
            "X_Forwarded_Email",
            "x-user-id",
            "X-USER-ID",
            "Remote-User",
            "x-auth-request-email",
            "X-Real-IP",
            "forwarded",
            "X-Amzn-Oidc-Data",
        ] {
            assert!(is_identity_header(name), "{name}");
            assert!(!forward_request_header(name, &[], "X-CSRF"), "{name}");
        }
        assert!(!is_identity_header("x-trace-id"));
    }

    #[test]
    fn request_policy() {
        let tokens = connection_tokens(&["keep-alive, X-Secret-Hop"]);
        for name in [
            "cookie",
            "Cookie",
            "x-csrf",
            "X_CSRF",
            "authorization",
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "x-secret-hop",
            "host",
            "traceparent",
            "TraceParent",
            "tracestate",
            "TRACESTATE",
        ] {
            assert!(
                !forward_request_header(name, &tokens, "X-CSRF"),
                "{name} forwarded"
            );
        }
        for name in ["accept", "content-type", "x-trace-id", "if-none-match"] {
            assert!(
                forward_request_header(name, &tokens, "X-CSRF"),
                "{name} dropped"
            );
        }
    }

    #[test]
    fn response_policy() {
        assert!(!forward_response_header("set-cookie", &[], false));
        assert!(forward_response_header("set-cookie", &[], true));
        assert!(!forward_response_header("transfer-encoding", &[], true));
        assert!(forward_response_header("location", &[], false));
    }

    #[test]
    fn spellings_without_allocation_match_the_lowercased_ones() {
        // What the former normalise-then-compare decided, for the edge cases of the new
        // byte-wise comparisons: prefixes as long as the name, non-ASCII names, mixed case.
        assert!(is_identity_header("X-FORWARDED-"));
        assert!(!is_identity_header("x-forwarded"));
        assert!(!is_identity_header("x-forwardé-for"));
        assert!(is_identity_header("X_Ms_Client_Principal_Name"));
        assert!(!forward_request_header("Proxy-Anything", &[], "X-CSRF"));
        assert!(!forward_request_header("PROXY-", &[], "X-CSRF"));
        assert!(forward_request_header("proxy", &[], "X-CSRF"));
        assert!(!forward_request_header("x-csrf", &[], "x_CSRF"));
        assert!(forward_request_header("x-csrf-not", &[], "X-CSRF"));
        assert!(forward_request_header("é-header", &[], "X-CSRF"));
        let tokens = connection_tokens(&["X-Hop"]);
        assert!(!forward_request_header("X-HOP", &tokens, "X-CSRF"));
        assert!(!forward_response_header("X-Hop", &tokens, true));
        assert!(!forward_response_header("Content-Length", &[], true));
        assert!(!forward_response_header("Set-Cookie", &[], false));
        assert!(forward_response_header("Set-Cookie", &[], true));
        assert!(!forward_response_header("Proxy-Authenticate", &[], true));
    }
}
