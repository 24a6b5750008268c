//! `[routes.inject_headers]` and `forward_headers`: the headers a route adds from secrets
//! gatehouse holds, and the API's own headers a browser may send it.

use super::*;

/// Headers an operator may not hand to `inject_headers`: gatehouse sets them itself, or
/// they frame the message.
const NOT_INJECTABLE: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "traceparent",
    "tracestate",
];

pub(super) fn validate_injected_headers(
    at: &str,
    raw: BTreeMap<String, RawInjectedHeader>,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Vec<InjectedHeader> {
    let mut headers = Vec::new();
    for (name, source) in raw {
        let key = format!("{at}.\"{name}\"");
        let lower = name.to_ascii_lowercase();
        if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!("{key}: not a valid header name"));
            continue;
        }
        if NOT_INJECTABLE.contains(&lower.as_str()) {
            problems.push(format!("{key}: gatehouse sets {name} itself"));
            continue;
        }
        let value = match (source.env, source.file) {
            (Some(var), None) => match env.get(&var) {
                Some(value) if !value.is_empty() => Some(SecretString::from(value.clone())),
                _ => {
                    problems.push(format!("{key}: environment variable {var} is not set"));
                    None
                }
            },
            (None, Some(path)) => read_secret_file(&path, &key, problems),
            _ => {
                problems.push(format!("{key}: give exactly one of env and file"));
                None
            }
        };
        let Some(value) = value else { continue };
        // The value is never quoted: it is a secret.
        if actix_web::http::header::HeaderValue::from_str(value.expose_secret()).is_err() {
            problems.push(format!("{key}: the value is not a valid header value"));
            continue;
        }
        headers.push(InjectedHeader { name: lower, value });
    }
    headers
}

/// `forward_headers`: valid names, none that gatehouse reserves, sets or injects itself.
pub(super) fn validate_forward_headers(
    at: &str,
    raw: Vec<String>,
    inject_headers: &[InjectedHeader],
    csrf_header: &str,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in raw {
        if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!("{at}: `{name}` is not a valid header name"));
        } else if reserved_headers::never_from_browser(&name) {
            problems.push(format!(
                "{at}: `{name}` is a header gatehouse sets itself, a hop-by-hop header, or an \
                 identity, client-address or method-override header an upstream may trust \
                 (in any case, with `_` or `-`): a browser's copy is never forwarded"
            ));
        } else if reserved_headers::same_header(&name, csrf_header) {
            problems.push(format!(
                "{at}: `{name}` is the anti-forgery header (csrf.header), which stops at gatehouse"
            ));
        } else if inject_headers
            .iter()
            .any(|injected| reserved_headers::same_header(&name, &injected.name))
        {
            problems.push(format!(
                "{at}: `{name}` is injected by this route (inject_headers): it never comes from the browser"
            ));
        } else {
            let lower = name.to_ascii_lowercase();
            if !names.contains(&lower) {
                names.push(lower);
            }
        }
    }
    names
}
