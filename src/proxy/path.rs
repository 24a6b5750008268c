//! The request path, checked and normalised once, before any routing: nothing that could be
//! read as a different path by some later hop (an upstream, a file server) gets through, and
//! what the route table matches is what the upstream receives.
//!
//! The normal form (RFC 3986 §6.2.2): percent-encoded unreserved characters (letters,
//! digits, `-`, `_`, `~`) decoded, every other escape kept with upper-case hex. An upstream
//! that decodes `%61dmin` reads `admin`; so does the route table.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request path is not acceptable: {0}")]
pub struct UnsafePath(pub &'static str);

/// Escapes that would change the path's structure once an upstream decodes them. `%3b` is
/// there because Tomcat, Jetty and Spring cut a segment at its first `;` (a matrix
/// parameter): an encoded one could hide a dot segment from every check before them. `%2e`
/// because a decoded dot could make a dot segment, or a trailing dot, after the checks.
const FORBIDDEN_ESCAPES: &[&str] = &["%2e", "%2f", "%5c", "%23", "%25", "%3b"];

/// The path's normal form: `None` when the raw path already is one (no `%` in it, the
/// common case, so no copy), else the normalised copy.
pub fn normalise_request_path(raw: &str) -> Result<Option<String>, UnsafePath> {
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
    let bytes = raw.as_bytes();
    if !bytes.contains(&b'%') {
        check_segments(raw)?;
        return Ok(None);
    }
    let mut normal = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        normal.push_str(&rest[..at]);
        let escape = rest
            .get(at..at + 3)
            .filter(|e| e.as_bytes()[1].is_ascii_hexdigit() && e.as_bytes()[2].is_ascii_hexdigit());
        let Some(escape) = escape else {
            // `%u0061` (IIS) and a lone `%` mean different things to different decoders.
            return Err(UnsafePath("a `%` not followed by two hex digits"));
        };
        if FORBIDDEN_ESCAPES
            .iter()
            .any(|forbidden| escape.eq_ignore_ascii_case(forbidden))
        {
            return Err(UnsafePath(
                "encoded dot, slash, backslash, hash, semicolon or percent",
            ));
        }
        let byte = u8::from_str_radix(&escape[1..], 16).map_err(|_| UnsafePath("bad escape"))?;
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'~' {
            normal.push(char::from(byte));
        } else {
            normal.push('%');
            normal.push_str(&escape[1..].to_ascii_uppercase());
        }
        rest = &rest[at + 3..];
    }
    normal.push_str(rest);
    let decoded = percent_decode_str(&normal).collect::<Vec<u8>>();
    if decoded
        .iter()
        .any(|b| b.is_ascii_control() || *b == b'\\' || *b == b'#')
    {
        return Err(UnsafePath("encoded control character"));
    }
    // Overlong and other invalid UTF-8 (`%c0%ae` is an overlong `.`) is refused rather than
    // replaced: some decoder further on may still read it as a dot or a slash.
    let decoded = String::from_utf8(decoded).map_err(|_| UnsafePath("invalid UTF-8"))?;
    check_segments(&decoded)?;
    Ok(Some(normal))
}

/// [`normalise_request_path`] without the copy, for a yes or no.
pub fn check_request_path(raw: &str) -> Result<(), UnsafePath> {
    normalise_request_path(raw).map(drop)
}

/// The request's path in normal form, decided once by the edge and kept in the request's
/// extensions: `None` when the raw path is already normal.
#[derive(Debug, Clone)]
pub struct NormalPath(pub Option<String>);

impl NormalPath {
    /// The request's normal path, as the edge decided it (normalised here for a request
    /// that did not come through the edge, which only a test harness makes).
    pub fn of(req: &actix_web::HttpRequest) -> Result<Cow<'_, str>, UnsafePath> {
        use actix_web::HttpMessage;
        let normal = match req.extensions().get::<NormalPath>() {
            Some(NormalPath(normal)) => normal.clone(),
            None => normalise_request_path(req.path())?,
        };
        Ok(normal.map_or(Cow::Borrowed(req.path()), Cow::Owned))
    }
}

/// Segment by segment, decoded: no dot segment, no empty one but the last, and none that an
/// upstream would trim to another name (`admin.`, `admin%20`: Windows and several Java
/// stacks drop a trailing dot or white space).
fn check_segments(decoded: &str) -> Result<(), UnsafePath> {
    let mut segments = decoded[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        // A Java upstream reads `..;jsessionid=x` as `..`: what counts is the part before
        // the first `;`.
        let name = segment.split(';').next().unwrap_or_default();
        if name == "." || name == ".." {
            return Err(UnsafePath("dot segment"));
        }
        if segment.is_empty() && segments.peek().is_some() {
            return Err(UnsafePath("empty path segment"));
        }
        if trimmable(name) || trimmable(segment) {
            return Err(UnsafePath(
                "a segment starting or ending with white space, or ending with a dot",
            ));
        }
    }
    Ok(())
}

fn trimmable(text: &str) -> bool {
    let space = |c: char| c.is_whitespace() || c == '\u{200b}' || c == '\u{feff}';
    text.ends_with('.') || text.starts_with(space) || text.ends_with(space)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(raw: &str) -> Result<String, UnsafePath> {
        normalise_request_path(raw).map(|n| n.unwrap_or_else(|| raw.to_owned()))
    }

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
            "/api/%2561dmin",
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
            "/%2e",
            "/api/x%2E",
            "/api/x%3B",
            "/api/x%5C",
            "/api/%41%00",
            // Names an upstream would trim to another one.
            "/api/admin./secret",
            "/api/admin%20/secret",
            "/api/%20admin/secret",
            "/api/admin%09/secret",
            "/api/admin%C2%A0/secret",
            "/api/admin%E2%80%8B/secret",
            "/api/admin;x./secret",
            "/api/admin.;x/secret",
            "/api/...",
            "/api/...;",
            "/app.",
            // Escapes that are not two hex digits.
            "/api/x%",
            "/api/x%2",
            "/api/50%",
            "/api/%u0061dmin",
            "/api/%g1",
        ] {
            assert!(normalise_request_path(path).is_err(), "{path} was accepted");
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
            "/api/x;v=1.2/y",
            "/api/..x;y",
            "/api/%41%42",
            "/.well-known/x",
        ] {
            assert!(normalise_request_path(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn unreserved_characters_are_decoded_and_other_escapes_upper_cased() {
        for (raw, expected) in [
            ("/api/orders", "/api/orders"),
            ("/api/%61dmin/secret", "/api/admin/secret"),
            ("/api/%41DMIN", "/api/ADMIN"),
            ("/%61%70%69/%61%64%6d%69%6e", "/api/admin"),
            ("/api/%7e%2d%5f%30", "/api/~-_0"),
            ("/api/caf%c3%a9", "/api/caf%C3%A9"),
            ("/api/a%20b", "/api/a%20b"),
            ("/api/x%3a%40", "/api/x%3A%40"),
            ("/api/x;v=%32", "/api/x;v=2"),
        ] {
            assert_eq!(normal(raw).as_deref(), Ok(expected), "{raw}");
        }
        assert_eq!(normalise_request_path("/api/orders"), Ok(None));
    }

    #[test]
    fn the_normal_form_is_a_fixed_point_and_decodes_as_the_raw_path() {
        // Every path of up to four pieces from an alphabet of the characters and escapes
        // that matter: a path either is refused, or its normal form normalises to itself
        // and percent-decodes to the same text as the raw path.
        let pieces = [
            "/", ".", "..", ";", "a", "A", "%", "%2", "%2e", "%2f", "%25", "%3b", "%5C", "%23",
            "%00", "%41", "%61", "%7e", "%7E", "%20", "%c0%ae", "%C3%A9", "%c3%a9", "%ff", "\\",
            "#", " ", "~", "x;y",
        ];
        let mut accepted = 0;
        let mut check = |path: &str| {
            let Ok(normalised) = normal(path) else { return };
            accepted += 1;
            assert_eq!(
                normal(&normalised).as_deref(),
                Ok(normalised.as_str()),
                "{path:?}"
            );
            assert_eq!(
                percent_decode_str(&normalised).collect::<Vec<u8>>(),
                percent_decode_str(path).collect::<Vec<u8>>(),
                "{path:?}"
            );
            assert!(
                !normalised.contains("%4")
                    && !normalised.contains("%6")
                    && !normalised.contains("%7E"),
                "{path:?} -> {normalised:?} keeps an unreserved escape"
            );
        };
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    check(&format!("/{a}{b}{c}"));
                    for d in pieces {
                        check(&format!("/{a}{b}{c}{d}"));
                    }
                }
            }
        }
        assert!(accepted > 30_000, "{accepted}");
    }
}
