//! What crosses the proxy besides the body (issue 23, parts 4 and 5): request headers on an
//! allow-list, sent over raw TCP in every spelling (a client library would tidy them), and
//! `Cache-Control: private, no-store` on answers that carried a user's token.

use serde_json::Value;

use crate::helpers::echo::{raw_request, spawn_echo, EchoUpstream};
use crate::helpers::{spawn_app_with, AppOptions, Route, TestApp};

/// The headers that reached upstreams through the former deny-list (issue 23, part 4).
const HOSTILE: &[&str] = &[
    "Proxy",
    "Client-IP",
    "X-Originating-IP",
    "X-Forwarded",
    "Forwarded-For",
    "X-ProxyUser-Ip",
    "X-Userid",
    "X-Principal",
    "Impersonate-User",
    "Impersonate-Group",
    "X-Consumer-Username",
    "X-Credential-Username",
    "X-Envoy-Original-Path",
    "X-HTTP-Method-Override",
    "X-Method-Override",
    "X-HTTP-Method",
];

/// Headers a browser's `fetch` sends, which must still arrive.
const ORDINARY: &[(&str, &str)] = &[
    ("Accept", "application/json"),
    ("Accept-Language", "de-CH, en;q=0.5"),
    ("Accept-Encoding", "gzip"),
    ("If-None-Match", "\"v7\""),
    ("If-Modified-Since", "Sat, 05 Dec 2026 10:00:00 GMT"),
    ("Cache-Control", "no-cache"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("X-Requested-With", "XMLHttpRequest"),
    ("Sec-Fetch-Mode", "cors"),
    ("Origin", "http://127.0.0.1"),
];

/// `name` as written, in upper case, in lower case, and each with `_` for `-`.
fn spellings(name: &str) -> [String; 6] {
    let cases = [
        name.to_owned(),
        name.to_ascii_uppercase(),
        name.to_ascii_lowercase(),
    ];
    let underscored = cases.clone().map(|n| n.replace('-', "_"));
    let [a, b, c] = cases;
    let [d, e, f] = underscored;
    [a, b, c, d, e, f]
}

/// Lower case, `_` read as `-`: how an upstream that treats them alike sees a name.
fn normalised(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn route(echo: &EchoUpstream, prefix: &str) -> Route {
    Route::new(prefix, &echo.base)
}

/// The body of a raw HTTP/1.1 response, de-chunked when it came in chunks.
fn body_of(text: &str) -> String {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// A GET as written, with the session cookie and the anti-forgery header; the echo's JSON.
async fn raw_call(app: &TestApp, path: &str, cookie: &str, headers: &[String]) -> Value {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let (status, text) = raw_request(
        app.port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-CSRF: 1\r\nCookie: {}={cookie}\r\n{extra}Connection: close\r\n\r\n",
            app.port,
            app.cookie_name()
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&body_of(&text)).unwrap_or_else(|_| panic!("not the echo: {text}"))
}

/// The (lower-case) names of the request headers the upstream received.
fn upstream_names(echo: &Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(|pair| pair[0].as_str().map(str::to_owned))
        .collect()
}

fn upstream_values<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    crate::helpers::echo::echoed_header(echo, name)
}

#[tokio::test]
async fn headers_a_browser_must_not_set_never_reach_the_upstream_in_any_spelling() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![route(&echo, "/api").token("user")],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("session");

    // One request per spelling (a request has a bounded number of header lines), each
    // with every hostile header in that spelling and the ordinary ones beside them.
    for spelling in 0..6 {
        let mut headers: Vec<String> = HOSTILE
            .iter()
            .map(|name| format!("{}: mallory", spellings(name)[spelling]))
            .collect();
        headers.extend(
            ORDINARY
                .iter()
                .map(|(name, value)| format!("{name}: {value}")),
        );
        let seen = raw_call(&app, "/api/orders/7", &cookie, &headers).await;
        let names = upstream_names(&seen);
        for hostile in HOSTILE {
            assert!(
                !names.iter().any(|n| normalised(n) == normalised(hostile)),
                "{hostile} (spelling {spelling}) reached the upstream: {names:?}"
            );
        }
        assert!(
            !seen.to_string().contains("mallory"),
            "a hostile value reached the upstream: {seen}"
        );
        for (name, value) in ORDINARY {
            assert_eq!(upstream_values(&seen, name), vec![*value], "{name}: {seen}");
        }
        assert_eq!(upstream_values(&seen, "authorization").len(), 1);
        assert_eq!(upstream_values(&seen, "x-forwarded-for"), vec!["127.0.0.1"]);
    }

    // Ordinary headers in a `_` spelling are not the ordinary headers: dropped too.
    let seen = raw_call(
        &app,
        "/api/orders/7",
        &cookie,
        &[
            "Accept_Language: xx".to_owned(),
            "user_agent: mallory-agent".to_owned(),
            "X-Api-Version: 2".to_owned(),
        ],
    )
    .await;
    let names = upstream_names(&seen);
    for dropped in ["accept_language", "user_agent", "x-api-version"] {
        assert!(!names.iter().any(|n| n == dropped), "{dropped}: {names:?}");
    }
}

#[tokio::test]
async fn a_route_lets_its_own_headers_through_as_listed() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![
            route(&echo, "/tenant")
                .token("user")
                .forward_headers(&["X-Tenant", "X_Legacy_Id"]),
            route(&echo, "/api").token("user"),
        ],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("session");
    let sent = [
        "x-TENANT: acme".to_owned(),
        "X_Tenant: evil-underscore".to_owned(),
        "X_Legacy_Id: 7".to_owned(),
        "X-Legacy-Id: evil-dash".to_owned(),
        "X-Principal: mallory".to_owned(),
    ];

    let seen = raw_call(&app, "/tenant/x", &cookie, &sent).await;
    assert_eq!(upstream_values(&seen, "x-tenant"), vec!["acme"], "{seen}");
    assert_eq!(upstream_values(&seen, "x_legacy_id"), vec!["7"], "{seen}");
    assert!(upstream_values(&seen, "x_tenant").is_empty(), "{seen}");
    assert!(upstream_values(&seen, "x-legacy-id").is_empty(), "{seen}");
    assert!(upstream_values(&seen, "x-principal").is_empty(), "{seen}");

    // Another route's headers are not this one's.
    let seen = raw_call(&app, "/api/x", &cookie, &sent).await;
    for name in ["x-tenant", "x_tenant", "x_legacy_id", "x-legacy-id"] {
        assert!(upstream_values(&seen, name).is_empty(), "{name}: {seen}");
    }
}

#[test]
fn forward_headers_naming_what_gatehouse_owns_are_refused_at_start_up() {
    let load = |forward_headers: &str| {
        let config = format!(
            "[server]\npublic_url = \"https://app.example.com\"\n\
             [providers.main]\nissuer = \"https://id.example.com\"\nclient_id = \"spa\"\n\
             [[routes]]\nprefix = \"/api\"\nupstream = \"https://api.example.com\"\n\
             forward_headers = [{forward_headers}]\ncache_private = false\n\
             [routes.inject_headers]\n\"X-Api-Key\" = {{ env = \"K\" }}\n"
        );
        let env = vec![
            ("K".to_owned(), "v".to_owned()),
            (
                "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".to_owned(),
                "s".to_owned(),
            ),
        ];
        gatehouse::config::load(Some(&config), env)
    };
    let refused = [
        "X-Forwarded-For",
        "x_user_id",
        "Authorization",
        "X-Request-Id",
        "Impersonate-User",
        "X-HTTP-Method-Override",
        "Proxy",
        "X-CSRF",
        "X-Api-Key",
        "bad name",
    ];
    let listed: Vec<String> = ["X-Tenant"]
        .iter()
        .chain(&refused)
        .map(|name| format!("\"{name}\""))
        .collect();
    let problems = load(&listed.join(", ")).expect_err("invalid").0;
    // Every one reported, together, naming the header.
    assert_eq!(problems.len(), refused.len(), "{problems:#?}");
    for (problem, name) in problems.iter().zip(refused) {
        assert!(
            problem.starts_with(&format!("routes[0].forward_headers: `{name}` ")),
            "{problem}"
        );
    }
    assert!(problems[0].contains("never forwarded"), "{}", problems[0]);
    assert!(problems[7].contains("anti-forgery"), "{}", problems[7]);
    assert!(problems[8].contains("inject_headers"), "{}", problems[8]);

    let settings = load("\"X-Tenant\", \"x-tenant\", \"X_Legacy\"").expect("valid");
    assert_eq!(settings.routes[0].forward_headers, ["x-tenant", "x_legacy"]);
    assert!(!settings.routes[0].cache_private);
}

// ---------------------------------------------------------------------------------------
// Cache-Control on authenticated answers
// ---------------------------------------------------------------------------------------

fn cache_control(resp: &crate::helpers::Resp) -> Option<&str> {
    let mut values = resp.headers.get_all("cache-control").iter();
    let first = values.next().map(|v| v.to_str().expect("ascii"));
    assert!(
        values.next().is_none(),
        "one Cache-Control: {}",
        resp.transcript()
    );
    first
}

#[tokio::test]
async fn answers_that_carried_a_user_token_are_kept_out_of_shared_caches() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![
            route(&echo, "/api").token("user"),
            route(&echo, "/public").token("none"),
            route(&echo, "/optional").token("optional"),
            route(&echo, "/mixed").token("user-or-client"),
            route(&echo, "/cached").token("user").cache_private(false),
        ],
        ..AppOptions::default()
    })
    .await;
    let mut anonymous = app.browser();
    let mut browser = app.browser();
    browser.login("alice").await;

    // A user-token route whose upstream sets no Cache-Control, also on a path that looks
    // like a static file to a CDN (web cache deception).
    for path in ["/api/orders/7", "/api/orders/7/x.css"] {
        let resp = browser.api_get(path).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(cache_control(&resp), Some("private, no-store"), "{path}");
    }
    // The upstream's own value wins, whatever it is.
    for value in ["public, max-age=60", "no-cache", "private, max-age=5"] {
        let path = format!(
            "/api/cache-control?value={}",
            crate::helpers::urlencode(value)
        );
        let resp = browser.api_get(&path).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(cache_control(&resp), Some(value));
    }
    // A streamed answer (server-sent events) with the upstream's own `no-cache`.
    let events = browser.api_get("/api/events?count=1&ms=1").await;
    assert_eq!(cache_control(&events), Some("no-cache"));

    // A public route is unchanged, for anybody.
    for who in [&mut anonymous, &mut browser] {
        let resp = who.api_get("/public/orders/7").await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(cache_control(&resp), None);
    }
    // `optional` and `user-or-client`: private when the user's token went, not otherwise.
    for prefix in ["/optional", "/mixed"] {
        let resp = browser.api_get(&format!("{prefix}/orders/7")).await;
        assert_eq!(resp.status, 200, "{prefix}: {}", resp.body);
        assert_eq!(cache_control(&resp), Some("private, no-store"), "{prefix}");
    }
    let resp = anonymous.api_get("/optional/orders/7").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(cache_control(&resp), None);

    // The route option turns the default off.
    let resp = browser.api_get("/cached/orders/7").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(cache_control(&resp), None);
}
