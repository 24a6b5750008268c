//! The route table: longest prefix wins, matched on whole path segments of the normalised
//! path (`path::normalise_request_path`), which is also what the upstream receives.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::path::UnsafePath;
use crate::config::RouteSettings;

pub struct RouteTable {
    /// Longest prefix first.
    routes: Vec<RouteSettings>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<RouteSettings>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Self { routes }
    }

    /// The route for a normalised path and the rest of the path after its prefix (`""` or
    /// `/…`). A prefix segment carrying `;` parameters (`/api/admin;x/…`, which Tomcat,
    /// Jetty and Spring read as `/api/admin/…`) is refused rather than matched either way:
    /// the route it names is checked, and nothing broader can be reached through it.
    pub fn find<'a, 'p>(
        &'a self,
        path: &'p str,
    ) -> Result<Option<(&'a RouteSettings, &'p str)>, UnsafePath> {
        for route in &self.routes {
            if let Some((rest, parameters)) = match_prefix(&route.prefix, path, route.match_case) {
                if parameters {
                    return Err(UnsafePath("`;` parameters in a route's prefix"));
                }
                return Ok(Some((route, rest)));
            }
        }
        Ok(None)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RouteSettings> {
        self.routes.iter()
    }
}

/// Whether `path` starts with the segments of `prefix` (each compared without its `;`
/// parameters): the rest of the path, and whether any of those segments had parameters.
fn match_prefix<'p>(prefix: &str, path: &'p str, match_case: bool) -> Option<(&'p str, bool)> {
    let mut rest = path;
    let mut parameters = false;
    for wanted in prefix[1..].split('/') {
        let after_slash = rest.strip_prefix('/')?;
        let end = after_slash.find('/').unwrap_or(after_slash.len());
        let (segment, after) = after_slash.split_at(end);
        let name = match segment.split_once(';') {
            Some((name, _)) => {
                parameters = true;
                name
            }
            None => segment,
        };
        let same = if match_case {
            name == wanted
        } else {
            same_ignoring_case(name, wanted)
        };
        if !same {
            return None;
        }
        rest = after;
    }
    Some((rest, parameters))
}

/// Compared as Java's `equalsIgnoreCase` and .NET's ordinal ignore-case do, character by
/// character after decoding: `ı` (dotless i), `ſ` (long s) and the Kelvin sign then count as
/// `i`, `s` and `k`, as they do for the upstream such a route protects.
fn same_ignoring_case(segment: &str, wanted: &str) -> bool {
    let decoded = percent_decode_str(segment).decode_utf8_lossy();
    let mut got = decoded.chars();
    let mut want = wanted.chars();
    loop {
        match (got.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) => {
                let same = a == b
                    || a.to_uppercase().eq(b.to_uppercase())
                    || a.to_lowercase().eq(b.to_lowercase());
                if !same {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The upstream URL path: the route's base path with the rest appended. Borrowed when one of
/// the two is empty (the common case of an upstream at `/`), so no new string per call.
pub fn upstream_path<'a>(base: &'a url::Url, rest: &'a str) -> Cow<'a, str> {
    let base_path = base.path().trim_end_matches('/');
    match (base_path.is_empty(), rest.is_empty()) {
        (true, true) => Cow::Borrowed("/"),
        (true, false) => Cow::Borrowed(rest),
        (false, true) => Cow::Borrowed(base_path),
        (false, false) => Cow::Owned(format!("{base_path}{rest}")),
    }
}

/// The URL a call goes to: the route's base (scheme, host and port validated once, at config
/// time, and not parsed again) with the path and the request's query. `rest` and `query`
/// come from a normalised request path (`path::normalise_request_path`).
///
/// The WebSocket handshake (reqwest takes a `Url`) and [`upstream_uri`]'s rare slow path use
/// it. The clone of the base keeps its host as it was parsed (no IDNA) and only the path and
/// the query are read again (by `set_path` and `set_query`, which percent-encode exactly as
/// before). A full `Url::parse` of a concatenated string measured 1.5–3× slower.
pub fn upstream_url(base: &url::Url, rest: &str, query: &str) -> url::Url {
    let mut url = base.clone();
    let path = upstream_path(base, rest);
    if path != base.path() {
        url.set_path(&path);
    }
    // The base has no query (config refuses one), so an empty query leaves it as it is.
    if !query.is_empty() {
        url.set_query(Some(query));
    }
    url
}

/// The same URL as [`upstream_url`], as the `Uri` hyper takes. When the path and query hold
/// only characters a `Url` keeps as they are (and no dot segment, which it would resolve),
/// the string is put together directly; anything else goes through [`upstream_url`], so the
/// upstream sees the same bytes either way.
pub fn upstream_uri(
    base: &url::Url,
    rest: &str,
    query: &str,
) -> Result<http::Uri, http::uri::InvalidUri> {
    let path = upstream_path(base, rest);
    let plain = path.bytes().all(kept_in_path)
        && query.bytes().all(kept_in_query)
        && !path.contains("/.")
        && !contains_encoded_dot(&path);
    if !plain {
        return http::Uri::try_from(upstream_url(base, rest, query).as_str());
    }
    let origin = &base[..url::Position::BeforePath];
    let mut uri = String::with_capacity(origin.len() + path.len() + query.len() + 1);
    uri.push_str(origin);
    uri.push_str(&path);
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    http::Uri::try_from(uri)
}

fn kept_in_path(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte)
}

fn kept_in_query(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/%?".contains(&byte)
}

fn contains_encoded_dot(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'e' || w[2] == b'E'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenPolicy;
    use std::time::Duration;

    fn route(prefix: &str, upstream: &str) -> RouteSettings {
        RouteSettings {
            prefix: prefix.into(),
            upstream: url::Url::parse(upstream).expect("url"),
            token: TokenPolicy::User,
            methods: vec![],
            required_scopes: vec![],
            required_claims: Default::default(),
            step_up: Default::default(),
            timeout: Duration::from_secs(1),
            max_duration: None,
            max_body_bytes: 1,
            provider: "main".into(),
            client_scopes: vec![],
            pass_set_cookie: false,
            send_user_id_header: false,
            rate_limit: crate::config::RouteRateLimit::Default,
            tls: None,
            inject_headers: vec![],
            websocket: None,
            match_case: true,
            forward_headers: vec![],
            cache_private: true,
            resource: None,
            exchange: None,
            name: prefix.into(),
            templates: vec![],
            policy: false,
        }
    }

    #[test]
    fn parameters_in_a_prefix_segment_are_refused_whichever_route_they_would_reach() {
        let table = RouteTable::new(vec![
            route("/api", "http://a/"),
            route("/api/admin", "http://a/admin"),
        ]);
        for path in [
            "/api/admin;x/secret",
            "/api/admin;/secret",
            "/api;x/admin/secret",
            "/api;x/other",
            "/api/admin;x",
        ] {
            assert!(table.find(path).is_err(), "{path}");
        }
        let (r, rest) = table.find("/api/other;x/y").expect("ok").expect("match");
        assert_eq!((r.prefix.as_str(), rest), ("/api", "/other;x/y"));
    }

    #[test]
    fn a_case_insensitive_route_matches_every_case_and_its_unicode_folds() {
        let mut admin = route("/api/admin", "http://a/admin");
        admin.match_case = false;
        let table = RouteTable::new(vec![route("/api", "http://a/"), admin]);
        for path in [
            "/api/admin/x",
            "/api/ADMIN/x",
            "/api/aDmIn/x",
            "/API/Admin/x",
            "/api/adm%C4%B1n/x",
            "/api/ADM%C4%B1N/x",
        ] {
            let (r, rest) = table.find(path).expect("ok").expect("match");
            assert_eq!((r.prefix.as_str(), rest), ("/api/admin", "/x"), "{path}");
        }
        // A case-sensitive route is matched exactly: /api/ADMIN is another resource there.
        let table = RouteTable::new(vec![
            route("/api", "http://a/"),
            route("/api/admin", "http://a/admin"),
        ]);
        let (r, _) = table.find("/api/ADMIN/x").expect("ok").expect("match");
        assert_eq!(r.prefix, "/api");
        assert!(table.find("/API/x").expect("ok").is_none());
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let table = RouteTable::new(vec![
            route("/api", "http://a/"),
            route("/api/orders", "http://b/v1/orders"),
        ]);
        let found = |path| table.find(path).expect("no parameters in a prefix");
        let (r, rest) = found("/api/orders/7").expect("match");
        assert_eq!((r.prefix.as_str(), rest), ("/api/orders", "/7"));
        let (r, rest) = found("/api/orders").expect("match");
        assert_eq!((r.prefix.as_str(), rest), ("/api/orders", ""));
        let (r, rest) = found("/api/ordersX").expect("falls back to /api");
        assert_eq!((r.prefix.as_str(), rest), ("/api", "/ordersX"));
        assert!(found("/apix").is_none());
        assert!(found("/").is_none());
        // Parameters after the prefix are the upstream's business.
        let (orders, rest) = found("/api/orders/7;v=2").expect("match");
        assert_eq!((orders.prefix.as_str(), rest), ("/api/orders", "/7;v=2"));
        assert_eq!(upstream_path(&r.upstream, "/ordersX"), "/ordersX");
        assert_eq!(
            upstream_path(&url::Url::parse("http://b/v1/orders").expect("url"), ""),
            "/v1/orders"
        );
        assert_eq!(
            upstream_path(&url::Url::parse("http://b/v1/orders/").expect("url"), "/7"),
            "/v1/orders/7"
        );
        assert_eq!(
            upstream_path(&url::Url::parse("http://b").expect("url"), ""),
            "/"
        );
    }

    fn url(base: &str, rest: &str, query: &str) -> String {
        upstream_url(&url::Url::parse(base).expect("url"), rest, query).to_string()
    }

    #[test]
    fn the_upstream_uri_is_the_upstream_url_for_every_ascii_character() {
        let bases = [
            "http://b/",
            "http://b:8080/v1/",
            "https://b\u{fc}cher.example/api",
        ];
        let mut cases: Vec<(String, String)> = vec![
            ("/orders/7".into(), "page=2&x=%3F".into()),
            ("".into(), "".into()),
            ("/a/./b".into(), "".into()),
            ("/a/%2e%2E/b".into(), "".into()),
            ("/a/../b".into(), "q=..".into()),
            ("/caf\u{e9}".into(), "q=\u{e9}".into()),
            ("/x;v=1/y".into(), "a='1'".into()),
        ];
        for byte in 0x20u8..0x7f {
            let c = char::from(byte);
            cases.push((format!("/a{c}b"), String::new()));
            cases.push(("/a".to_owned(), format!("q=a{c}b")));
        }
        for base in bases {
            let base = url::Url::parse(base).expect("url");
            for (rest, query) in &cases {
                let Ok(uri) = upstream_uri(&base, rest, query) else {
                    // Only what the slow path cannot make a `Uri` of either.
                    assert!(
                        http::Uri::try_from(upstream_url(&base, rest, query).as_str()).is_err()
                    );
                    continue;
                };
                assert_eq!(
                    uri.to_string(),
                    upstream_url(&base, rest, query).as_str(),
                    "rest {rest:?} query {query:?}"
                );
            }
        }
    }

    #[test]
    fn upstream_urls() {
        // The prefix is the whole path: the base as configured (with or without its slash).
        assert_eq!(url("http://b/v1/orders", "", ""), "http://b/v1/orders");
        assert_eq!(url("http://b/v1/orders/", "", ""), "http://b/v1/orders");
        assert_eq!(url("http://b", "", ""), "http://b/");
        assert_eq!(url("http://b/", "", ""), "http://b/");
        // Trailing slashes: the base's is dropped, the request's kept.
        assert_eq!(url("http://b/v1/", "/7", ""), "http://b/v1/7");
        assert_eq!(url("http://b/v1", "/7/", ""), "http://b/v1/7/");
        assert_eq!(url("http://b/", "/", ""), "http://b/");
        assert_eq!(url("http://b:8080/", "/a/b", ""), "http://b:8080/a/b");
        // Query strings pass as they came, an empty one adds no `?`.
        assert_eq!(
            url("https://b/v1", "/x", "a=1&b=%2F&c"),
            "https://b/v1/x?a=1&b=%2F&c"
        );
        assert_eq!(url("https://b/v1", "", "q=1"), "https://b/v1?q=1");
        assert_eq!(url("https://b/v1/", "", "q=1"), "https://b/v1?q=1");
        // Encoded characters stay encoded; what a URL may not hold raw gets encoded.
        assert_eq!(
            url("http://b/", "/caf%C3%A9/a%20b", ""),
            "http://b/caf%C3%A9/a%20b"
        );
        assert_eq!(
            url("http://b/", "/x\"{}", "q=\"x\""),
            "http://b/x%22%7B%7D?q=%22x%22"
        );
        assert_eq!(url("http://b/", "/caf\u{e9}", ""), "http://b/caf%C3%A9");
        assert_eq!(url("http://b/v1", "/x;v=1/y", ""), "http://b/v1/x;v=1/y");
        // The host of the base is kept as it was parsed (an IDN stays in its ASCII form).
        assert_eq!(
            url("https://b\u{fc}cher.example/api", "/x", ""),
            "https://xn--bcher-kva.example/api/x"
        );
        // The same URL the former clone + set_path + set_query built, query or not.
        for (base, rest, query) in [
            ("http://b/v1/", "/orders/7", "page=2"),
            ("http://b", "/a%20b", ""),
            ("http://b/v1/orders", "", "x=%3F"),
        ] {
            let base = url::Url::parse(base).expect("url");
            let mut old = base.clone();
            old.set_path(&upstream_path(&base, rest));
            old.set_query(Some(query).filter(|q| !q.is_empty()));
            assert_eq!(upstream_url(&base, rest, query), old);
        }
    }
}
