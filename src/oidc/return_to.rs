//! `returnTo` must stay on this origin: only a local absolute path is accepted.

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("returnTo must be a local path such as /orders/7")]
pub struct InvalidReturnTo;

/// Accepts `/path?query#fragment` only. Browsers treat `//host`, `/\host` and `\\host` as
/// other origins and strip tabs and newlines before parsing, so anything that could turn
/// into one of those, in the raw text or after percent-decoding (once or twice), is refused.
pub fn validate_return_to(raw: &str) -> Result<String, InvalidReturnTo> {
    if raw.is_empty() || raw.len() > 2048 {
        return Err(InvalidReturnTo);
    }
    let mut layers = vec![raw.to_owned()];
    for _ in 0..2 {
        let Some(last) = layers.last() else { break };
        let decoded = percent_decode_str(last)
            .decode_utf8()
            .map_err(|_| InvalidReturnTo)?
            .into_owned();
        if &decoded == last {
            break;
        }
        layers.push(decoded);
    }
    // Raw text: no whitespace anywhere. Decoded: no control characters anywhere, and no
    // whitespace in the path (an encoded space in a query, `?q=a%20b`, is ordinary).
    for (depth, layer) in layers.iter().enumerate() {
        let checked = if depth == 0 {
            layer.as_str()
        } else {
            layer.split(['?', '#']).next().unwrap_or("")
        };
        if !is_plain_local_path(checked) || layer.chars().any(char::is_control) {
            return Err(InvalidReturnTo);
        }
    }
    Ok(raw.to_owned())
}

/// `return_to` (already validated) with `login_error=<code>` added to its query, before any
/// fragment: where the browser goes when the provider reported an error, so the app can
/// say what happened.
pub fn with_login_error(return_to: &str, code: &str) -> String {
    let (before_fragment, fragment) = match return_to.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (return_to, None),
    };
    let param: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("login_error", code)
        .finish();
    let separator = match before_fragment.split_once('?') {
        None => '?',
        Some((_, "")) => '\0',
        Some(_) => '&',
    };
    let mut target = before_fragment.to_owned();
    if separator != '\0' {
        target.push(separator);
    }
    target.push_str(&param);
    if let Some(fragment) = fragment {
        target.push('#');
        target.push_str(fragment);
    }
    target
}

fn is_plain_local_path(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false; // relative paths, schemes (`javascript:`, `https:x`) and `\\x`
    }
    if matches!(bytes.get(1), Some(b'/') | Some(b'\\')) {
        return false; // protocol-relative `//host` and `/\host`
    }
    !text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_error_joins_the_query_before_the_fragment() {
        for (return_to, expected) in [
            ("/", "/?login_error=login_required"),
            ("/app/x", "/app/x?login_error=login_required"),
            ("/app?tab=2", "/app?tab=2&login_error=login_required"),
            ("/app?", "/app?login_error=login_required"),
            ("/app#top", "/app?login_error=login_required#top"),
            ("/app?a=1#top", "/app?a=1&login_error=login_required#top"),
        ] {
            assert_eq!(with_login_error(return_to, "login_required"), expected);
        }
        assert_eq!(
            with_login_error("/", "a b&c"),
            "/?login_error=a+b%26c",
            "encoded, whatever the code"
        );
    }

    pub const HOSTILE: &[&str] = &[
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "http://evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        "/%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/x\ny",
        "/x%0d%0aSet-Cookie:a=b",
        "/ x",
        "/x%09y",
        "/%252F%252Fevil",
        "/x%20y",
        "/a?b=%0d%0a",
        "JaVaScRiPt:alert(1)",
        "evil.example",
        "",
        "/\t/evil.example",
    ];

    #[test]
    fn rejects_hostile_values() {
        for value in HOSTILE {
            assert_eq!(
                validate_return_to(value),
                Err(InvalidReturnTo),
                "{value:?} was accepted"
            );
        }
    }

    #[test]
    fn accepts_local_paths() {
        for value in ["/", "/orders/7", "/search?q=a%20b&x=1#top", "/caf%C3%A9"] {
            assert_eq!(validate_return_to(value), Ok(value.to_string()));
        }
    }
}
