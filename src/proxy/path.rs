//! Request-path safety, checked before any routing: nothing that could be read as a
//! different path by some later hop (an upstream, a file server) gets through.

use std::borrow::Cow;

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
    // Every `%` followed by two characters, compared case-insensitively in place (no
    // lower-cased copy of the path per request).
    let bytes = raw.as_bytes();
    let forbidden_escape = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && FORBIDDEN_ESCAPES
                .iter()
                .any(|escape| w.eq_ignore_ascii_case(escape.as_bytes()))
    });
    if forbidden_escape {
        return Err(UnsafePath(
            "encoded dot, slash, backslash, hash, semicolon or percent",
        ));
    }
    // Without a `%` the decoded path is the path itself, already checked above.
    let decoded: Cow<'_, str> = if bytes.contains(&b'%') {
        let decoded = percent_decode_str(raw).collect::<Vec<u8>>();
        if decoded
            .iter()
            .any(|b| b.is_ascii_control() || *b == b'\\' || *b == b'#')
        {
            return Err(UnsafePath("encoded control character"));
        }
        // Overlong and other invalid UTF-8 (`%c0%ae` is an overlong `.`) is refused rather
        // than replaced: some decoder further on may still read it as a dot or a slash.
        match String::from_utf8(decoded) {
            Ok(decoded) => Cow::Owned(decoded),
            Err(_) => return Err(UnsafePath("invalid UTF-8")),
        }
    } else {
        Cow::Borrowed(raw)
    };
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
            "/%2e",
            "/api/x%2E",
            "/api/x%3B",
            "/api/x%5C",
            "/api/%41%00",
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
            "/api/%41%42",
            "/api/x%",
            "/api/x%2",
            "/api/50%",
        ] {
            assert_eq!(check_request_path(path), Ok(()), "{path}");
        }
    }

    /// The check as it was before it stopped copying the path (lower-cased copy, decoded
    /// copy, collected segments): the new one must decide every path the same way.
    fn former_check(raw: &str) -> Result<(), UnsafePath> {
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
        let Ok(decoded) = std::str::from_utf8(&decoded) else {
            return Err(UnsafePath("invalid UTF-8"));
        };
        let segments: Vec<&str> = decoded[1..].split('/').collect();
        for (index, segment) in segments.iter().enumerate() {
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

    #[test]
    fn same_decisions_as_the_former_check() {
        // Every path of up to four pieces from an alphabet of the characters and escapes
        // that matter, plus a deterministic pseudo-random sample of longer ones.
        let pieces = [
            "/", ".", "..", ";", "a", "%", "%2", "%2e", "%2E", "%2f", "%25", "%3b", "%5C", "%23",
            "%00", "%41", "%c0%ae", "%C3%A9", "%ff", "\u{e9}", "\\", "#", " ", "~", "x;y",
        ];
        let mut checked = 0;
        let mut compare = |path: &str| {
            assert_eq!(check_request_path(path), former_check(path), "{path:?}");
            checked += 1;
        };
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    compare(&format!("{a}{b}{c}"));
                    compare(&format!("/{a}{b}{c}"));
                    for d in pieces {
                        compare(&format!("/{a}{b}{c}{d}"));
                    }
                }
            }
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut path = String::from("/");
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                path.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            compare(&path);
        }
        assert!(checked > 400_000);
    }
}
