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

fn normalise(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

pub fn is_identity_header(name: &str) -> bool {
    let name = normalise(name);
    IDENTITY_EXACT.contains(&name.as_str()) || IDENTITY_PREFIXES.iter().any(|p| name.starts_with(p))
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
/// Authorization, X-Forwarded-* and X-Request-Id itself.
pub fn forward_request_header(name: &str, connection_tokens: &[String], csrf_header: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(HOP_BY_HOP.contains(&lower.as_str())
        || lower.starts_with("proxy-")
        || connection_tokens.contains(&lower)
        || matches!(
            lower.as_str(),
            "host" | "cookie" | "authorization" | "x-request-id" | "content-length"
        )
        || lower.eq_ignore_ascii_case(csrf_header)
        || normalise(&lower) == normalise(csrf_header)
        || is_identity_header(&lower))
}

/// Whether an upstream response header may go back to the browser.
pub fn forward_response_header(
    name: &str,
    connection_tokens: &[String],
    pass_set_cookie: bool,
) -> bool {
    let lower = name.to_ascii_lowercase();
    !(HOP_BY_HOP.contains(&lower.as_str())
        || lower.starts_with("proxy-")
        || connection_tokens.contains(&lower)
        || lower == "content-length"
        || (lower == "set-cookie" && !pass_set_cookie))
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
}
