//! Request-path safety, checked before any routing: nothing that could be read as a
//! different path by some later hop (an upstream, a file server) gets through.

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request path is not acceptable: {0}")]
pub struct UnsafePath(pub &'static str);

/// Escapes that would change the path's structure once an upstream decodes them. `%3b` is
/// there because Tomcat, Jetty and Spring cut a segment at its first `;` (a matrix
/// parameter): an encoded one could hide a dot segment from every check before them.
const FORBIDDEN_ESCAPES: &[&str] = &["%2e", "%2f", "%5c", "%23", "%25", "%3b"];

pub fn check_request_path(raw: &str) -> Result<(), UnsafePath> {
    if !raw.starts_with('/') {
        return Err(UnsafePath("not an absolute path"));
    }
    if raw
        .bytes()
        .any(|b| b == b'\\' || b == b'#' || b.is_ascii_control() || b == b' ')
    {
        return Err(UnsafePath(
            "backslash, fragment, space or control character",
        ));
    }
    let lower = raw.to_ascii_lowercase();
    if FORBIDDEN_ESCAPES
        .iter()
        .any(|escape| lower.contains(escape))
    {
        return Err(UnsafePath(
            "encoded dot, slash, backslash, hash, semicolon or percent",
        ));
    }
    let decoded = percent_decode_str(raw).collect::<Vec<u8>>();
    if decoded
        .iter()
        .any(|b| b.is_ascii_control() || *b == b'\\' || *b == b'#')
    {
        return Err(UnsafePath("encoded control character"));
    }
    // Overlong and other invalid UTF-8 (`%c0%ae` is an overlong `.`) is refused rather than
    // replaced: some decoder further on may still read it as a dot or a slash.
    let Ok(decoded) = std::str::from_utf8(&decoded) else {
        return Err(UnsafePath("invalid UTF-8"));
    };
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        // A Java upstream reads `..;jsessionid=x` as `..`: what counts is the part before
        // the first `;`.
        let name = segment.split(';').next().unwrap_or_default();
        if name == "." || name == ".." {
            return Err(UnsafePath("dot segment"));
        }
        if segment.is_empty() && index + 1 != segments.len() {
            return Err(UnsafePath("empty path segment"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for path in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E%2E/admin",
            "/api/..%2fadmin",
            "/api/%2fadmin",
            "/api/%2Fadmin",
            "/api\\..\\admin",
            "/api/x%00",
            "/api/orders#x",
            "/api/orders%23x",
            "/api/%252e%252e/admin",
            "/api/%5c..%5cadmin",
            "/api//admin",
            "/api/x%0aSet-Cookie:",
            "/api/x%7f",
            "/api/.",
            "/api/..",
            "api/x",
            "/api/%2e",
            "/api/echo/..;/admin",
            "/api/echo/.;/admin",
            "/api/echo/..;jsessionid=x/admin",
            "/api/echo/%2e%2e;/admin",
            "/api/echo/..%3b/admin",
            "/api/echo/..%3B/admin",
            "/api/echo/%2E.;x/admin",
            "/api/echo/.%2e;/admin",
            "/api/echo/x%3bjsessionid=1",
            "/api/echo/..;",
            "/api/echo/%c0%ae%c0%ae/admin",
            "/api/echo/%C0%AE./admin",
            "/api/echo/%e0%80%ae/admin",
            "/api/echo/%ff",
        ] {
            assert!(check_request_path(path).is_err(), "{path} was accepted");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "/",
            "/api/orders",
            "/api/orders/",
            "/api/orders/7",
            "/api/caf%C3%A9",
            "/api/a%20b",
            "/app.v2.js",
            "/api/x..y",
            "/api/x;v=1/y",
            "/api/..x;y",
            "/api/...;",
        ] {
            assert_eq!(check_request_path(path), Ok(()), "{path}");
        }
    }
}
