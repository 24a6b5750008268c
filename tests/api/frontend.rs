//! The frontend beside gatehouse: static files (fallback, cache policy, content types,
//! precompressed variants, path safety), the dev-server pass-through (WebSockets included),
//! and the security headers on every response.

use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::dev_server::spawn_dev_server;
use crate::helpers::echo::{raw_request, spawn_echo};
use crate::helpers::{random_name, spawn_app_with, AppOptions, Frontend, Resp, Route, TestApp};

const NAVIGATION: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const SHELL: &str = "<!doctype html><title>the app shell</title>";
const APP_JS: &str = "console.log('the fingerprinted bundle');";
const OUTSIDE: &str = "SECRET-FROM-OUTSIDE-THE-FRONTEND-DIR";

/// A frontend build in a fresh directory, with a secret file beside it (outside) that
/// symlinks inside point to. Removed on drop.
struct Build {
    base: PathBuf,
    dir: PathBuf,
}

impl Build {
    fn new() -> Build {
        let base = std::env::temp_dir().join(random_name("gatehouse-frontend-"));
        let dir = base.join("dist");
        let write = |path: &str, bytes: &[u8]| {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        };
        write("index.html", SHELL.as_bytes());
        write("app.3f9a2c1b.js", APP_JS.as_bytes());
        write("app.3f9a2c1b.js.br", b"brotli bytes of the bundle");
        write("app.3f9a2c1b.js.gz", b"gzip bytes of the bundle");
        write("style.css", b"body { color: black }");
        write("logo.png", b"\x89PNG\r\n\x1a\nnot really");
        write("fonts/inter.woff2", b"wOF2");
        write("manifest.webmanifest", b"{}");
        write("docs/index.html", b"<!doctype html><title>docs</title>");
        write("caf\u{e9}.txt", "caf\u{e9}".as_bytes());
        write(".env", OUTSIDE.as_bytes());
        std::fs::create_dir_all(base.join("outside")).expect("mkdir");
        std::fs::write(base.join("outside/secret.txt"), OUTSIDE).expect("write");
        std::os::unix::fs::symlink(base.join("outside/secret.txt"), dir.join("escape.txt"))
            .expect("symlink");
        std::os::unix::fs::symlink(base.join("outside"), dir.join("linked")).expect("symlink");
        // A variant that leads out must not be served in place of an honest file.
        std::os::unix::fs::symlink(base.join("outside/secret.txt"), dir.join("style.css.br"))
            .expect("symlink");
        std::os::unix::fs::symlink(dir.join("app.3f9a2c1b.js"), dir.join("alias.js"))
            .expect("symlink");
        Build { base, dir }
    }

    fn frontend(&self) -> Frontend {
        Frontend::dir(&self.dir)
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

async fn app_serving(build: &Build) -> TestApp {
    spawn_app_with(AppOptions {
        frontend: Some(build.frontend()),
        ..AppOptions::default()
    })
    .await
}

fn header<'a>(response: &'a Resp, name: &str) -> &'a str {
    response
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in:\n{}", response.transcript()))
}

#[tokio::test]
async fn files_are_served_with_their_type_and_cache_policy() {
    let build = Build::new();
    let app = app_serving(&build).await;
    let mut browser = app.browser();

    for (path, body, content_type, cache) in [
        ("/", SHELL, "text/html; charset=utf-8", "no-cache"),
        ("/index.html", SHELL, "text/html; charset=utf-8", "no-cache"),
        (
            "/app.3f9a2c1b.js",
            APP_JS,
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
        (
            "/style.css",
            "body { color: black }",
            "text/css; charset=utf-8",
            "public, max-age=60",
        ),
        (
            "/fonts/inter.woff2",
            "wOF2",
            "font/woff2",
            "public, max-age=60",
        ),
        (
            "/manifest.webmanifest",
            "{}",
            "application/manifest+json",
            "public, max-age=60",
        ),
        (
            "/docs/",
            "<!doctype html><title>docs</title>",
            "text/html; charset=utf-8",
            "no-cache",
        ),
        (
            "/docs",
            "<!doctype html><title>docs</title>",
            "text/html; charset=utf-8",
            "no-cache",
        ),
        (
            "/caf%C3%A9.txt",
            "caf\u{e9}",
            "text/plain; charset=utf-8",
            "public, max-age=60",
        ),
        (
            "/alias.js",
            APP_JS,
            "text/javascript; charset=utf-8",
            "public, max-age=60",
        ),
    ] {
        let response = browser.get(path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.transcript());
        assert_eq!(response.body, body, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert_eq!(header(&response, "cache-control"), cache, "{path}");
        assert!(response.headers.get("content-encoding").is_none(), "{path}");
    }

    let png = app
        .http
        .get(format!("{}/logo.png", app.base))
        .send()
        .await
        .expect("png");
    assert_eq!(png.headers()["content-type"], "image/png");
    assert_eq!(
        &png.bytes().await.expect("bytes")[..],
        b"\x89PNG\r\n\x1a\nnot really"
    );

    // Revalidation: the entity tag answers 304, with the same caching headers.
    let first = browser.get("/").await;
    let etag = header(&first, "etag").to_owned();
    let again = browser
        .request(Method::GET, "/", &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(again.status, 304, "{}", again.transcript());
    assert_eq!(again.body, "");
    assert_eq!(header(&again, "cache-control"), "no-cache");
    assert_eq!(header(&again, "etag"), etag);
    let changed = browser
        .request(Method::GET, "/", &[("if-none-match", "\"other\"")], None)
        .await;
    assert_eq!(changed.status, 200);

    // HEAD: the headers of a GET, no body.
    let head = browser
        .request(Method::HEAD, "/app.3f9a2c1b.js", &[], None)
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    assert_eq!(header(&head, "content-length"), APP_JS.len().to_string());
    assert_eq!(
        header(&head, "content-type"),
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test]
async fn unknown_pages_get_the_app_shell_and_missing_assets_404() {
    let build = Build::new();
    let app = app_serving(&build).await;
    let mut browser = app.browser();

    // Client-side routes: a navigation (Accept: text/html) gets index.html, uncached.
    for path in [
        "/orders/7",
        "/users/john.doe",
        "/settings/",
        "/deep/a/b/c?tab=2",
    ] {
        let response = browser
            .request(Method::GET, path, &[("accept", NAVIGATION)], None)
            .await;
        assert_eq!(response.status, 200, "{path}: {}", response.transcript());
        assert_eq!(response.body, SHELL, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&response, "cache-control"), "no-cache");
    }
    let head = browser
        .request(Method::HEAD, "/orders/7", &[("accept", NAVIGATION)], None)
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(header(&head, "content-length"), SHELL.len().to_string());

    // A missing asset is a broken reference: 404, never the shell (a script tag that got
    // HTML would fail in a confusing way).
    for (path, accept) in [
        ("/app.0000aaaa.js", "*/*"),
        ("/missing.css", "text/css,*/*;q=0.1"),
        ("/img/missing.png", "image/avif,image/webp,*/*;q=0.8"),
        ("/missing.js", NAVIGATION),
        ("/orders/7", "*/*"),
        ("/orders/7", "application/json"),
    ] {
        let response = browser
            .request(Method::GET, path, &[("accept", accept)], None)
            .await;
        response.assert_problem(404, "not-found");
        assert!(!response.body.contains("app shell"), "{path}");
    }

    // gatehouse's own paths never fall back to the shell, and neither do other methods.
    browser
        .request(
            Method::GET,
            "/auth/nothing",
            &[("accept", NAVIGATION)],
            None,
        )
        .await
        .assert_problem(404, "not-found");
    browser
        .request(
            Method::POST,
            "/orders/7",
            &[("accept", NAVIGATION)],
            Some(vec![]),
        )
        .await
        .assert_problem(404, "not-found");
}

#[tokio::test]
async fn precompressed_variants_are_served_when_the_client_accepts_them() {
    let build = Build::new();
    let app = app_serving(&build).await;
    let raw_get = |accept_encoding: Option<&'static str>, path: &'static str| {
        let mut request = app.http.get(format!("{}{path}", app.base));
        if let Some(value) = accept_encoding {
            request = request.header("accept-encoding", value);
        }
        async move {
            let response = request.send().await.expect("response");
            let headers = response.headers().clone();
            let body = response.bytes().await.expect("body").to_vec();
            (headers, body)
        }
    };

    for (accept_encoding, encoding, body) in [
        (
            Some("gzip, deflate, br, zstd"),
            Some("br"),
            &b"brotli bytes of the bundle"[..],
        ),
        (Some("gzip"), Some("gzip"), &b"gzip bytes of the bundle"[..]),
        (
            Some("br;q=0, gzip;q=0.8"),
            Some("gzip"),
            &b"gzip bytes of the bundle"[..],
        ),
        (Some("identity"), None, APP_JS.as_bytes()),
        (None, None, APP_JS.as_bytes()),
    ] {
        let (headers, bytes) = raw_get(accept_encoding, "/app.3f9a2c1b.js").await;
        assert_eq!(bytes, body, "{accept_encoding:?}");
        assert_eq!(
            headers
                .get("content-encoding")
                .map(|v| v.to_str().expect("ascii")),
            encoding,
            "{accept_encoding:?}"
        );
        // The type and the cache policy are the file's, not the variant's.
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(headers["vary"], "Accept-Encoding");
        assert_eq!(headers["content-length"], body.len().to_string());
    }
    // Each representation has its own entity tag.
    let (brotli, _) = raw_get(Some("br"), "/app.3f9a2c1b.js").await;
    let (plain, _) = raw_get(None, "/app.3f9a2c1b.js").await;
    assert_ne!(brotli["etag"], plain["etag"]);

    // style.css.br is a symlink out of the directory: the plain file is served instead.
    let (headers, bytes) = raw_get(Some("br, gzip"), "/style.css").await;
    assert_eq!(bytes, b"body { color: black }");
    assert!(headers.get("content-encoding").is_none());
}

#[tokio::test]
async fn nothing_outside_the_directory_is_ever_served() {
    let build = Build::new();
    let app = app_serving(&build).await;
    let mut browser = app.browser();

    for path in [
        "/escape.txt",
        "/linked/secret.txt",
        "/.env",
        "/style.css.br",
    ] {
        let response = browser.get(path).await;
        response.assert_problem(404, "not-found");
        // Not even as the app shell for a navigation.
        let navigation = browser
            .request(Method::GET, path, &[("accept", NAVIGATION)], None)
            .await;
        assert!(!navigation.body.contains(OUTSIDE), "{path}");
    }
    for request_line in [
        "GET /../outside/secret.txt HTTP/1.1",
        "GET /linked/../../outside/secret.txt HTTP/1.1",
        "GET /%2e%2e/outside/secret.txt HTTP/1.1",
        "GET /..%2foutside%2fsecret.txt HTTP/1.1",
        "GET /docs/..%5c..%5coutside/secret.txt HTTP/1.1",
        "GET //etc/passwd HTTP/1.1",
    ] {
        let (status, text) = raw_request(
            app.port,
            &format!("{request_line}\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{request_line}: {text}");
        assert!(!text.contains(OUTSIDE), "{request_line}");
        assert!(!text.contains("root:"), "{request_line}");
    }
    assert!(
        build.path().join("escape.txt").exists(),
        "the trap is in place"
    );
}

#[tokio::test]
async fn a_release_symlink_swapped_under_a_running_gatehouse_is_followed() {
    let base = std::env::temp_dir().join(random_name("gatehouse-releases-"));
    for release in ["r1", "r2"] {
        std::fs::create_dir_all(base.join(release)).expect("mkdir");
        std::fs::write(base.join(release).join("index.html"), release).expect("write");
    }
    std::os::unix::fs::symlink(base.join("r1"), base.join("current")).expect("symlink");
    let app = spawn_app_with(AppOptions {
        frontend: Some(Frontend::dir(base.join("current"))),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    assert_eq!(browser.get("/").await.body, "r1");
    // An atomic deploy: a new symlink renamed over the old one.
    std::os::unix::fs::symlink(base.join("r2"), base.join("next")).expect("symlink");
    std::fs::rename(base.join("next"), base.join("current")).expect("swap");
    assert_eq!(browser.get("/").await.body, "r2");
    assert_eq!(browser.get("/index.html").await.body, "r2");
    let _ = std::fs::remove_dir_all(&base);
}

/// The headers every response carries, checked on one response of every kind.
fn assert_security_headers(response: &Resp, what: &str, csp: &str, referrer: &str) {
    let text = response.transcript();
    assert_eq!(
        response
            .headers
            .get("x-content-type-options")
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..]),
        "{what}: {text}"
    );
    assert_eq!(
        response
            .headers
            .get("referrer-policy")
            .map(|v| v.as_bytes()),
        Some(referrer.as_bytes()),
        "{what}: {text}"
    );
    assert_eq!(
        response
            .headers
            .get_all("content-security-policy")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect::<Vec<_>>(),
        vec![csp],
        "{what}: {text}"
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let build = Build::new();
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        frontend: Some(build.frontend()),
        routes: vec![Route::new("/api", &echo.base)],
        ..AppOptions::default()
    })
    .await;
    let csp = gatehouse::config::DEFAULT_CSP;
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(csp.contains("default-src 'self'"));
    let mut browser = app.browser();

    let mut responses = vec![
        ("static file", browser.get("/app.3f9a2c1b.js").await),
        (
            "app shell",
            browser
                .request(Method::GET, "/orders", &[("accept", NAVIGATION)], None)
                .await,
        ),
        ("missing asset", browser.get("/nope.js").await),
        ("healthz", browser.get("/healthz").await),
        ("readyz", browser.get("/readyz").await),
        ("anonymous /auth/user", browser.api_get("/auth/user").await),
        ("/auth/user without csrf", browser.get("/auth/user").await),
        ("proxy without csrf", browser.get("/api/x").await),
        ("login start", browser.start_login(Some("/orders")).await),
    ];
    let callback = browser.login_with("alice", Some("/orders")).await;
    assert_eq!(callback.status, 302);
    responses.push(("callback", callback));
    responses.push(("/auth/user", browser.api_get("/auth/user").await));
    responses.push(("proxied API call", browser.api_get("/api/orders").await));
    responses.push(("304", {
        let etag = browser.get("/").await.headers["etag"]
            .to_str()
            .expect("etag")
            .to_owned();
        browser
            .request(Method::GET, "/", &[("if-none-match", &etag)], None)
            .await
    }));
    responses.push((
        "POST logout",
        browser.api_post("/auth/logout", Vec::new()).await,
    ));
    for (what, response) in &responses {
        assert_security_headers(response, what, csp, "no-referrer");
        assert!(
            response.headers.get("strict-transport-security").is_none(),
            "{what}: plain http gets no HSTS"
        );
    }

    // The path guard's refusal comes from a middleware, not a handler: same headers, and
    // rendered with the request id like every problem.
    let (status, text) = raw_request(
        app.port,
        "GET /a/%2e%2e/b HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let lower = text.to_ascii_lowercase();
    for needle in [
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "content-security-policy: default-src 'self'",
        "content-type: application/problem+json",
        "x-request-id: ",
    ] {
        assert!(lower.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(!text.contains("\"request_id\":\"unknown\""), "{text}");
}

#[tokio::test]
async fn every_auth_response_is_no_store() {
    let app = spawn_app_with(AppOptions::default()).await;
    let mut browser = app.browser();
    let mut responses = vec![
        ("login start", browser.start_login(None).await),
        ("anonymous user", browser.api_get("/auth/user").await),
        ("user without csrf", browser.get("/auth/user").await),
        (
            "bad returnTo",
            browser.start_login(Some("//evil.example")).await,
        ),
        (
            "callback without state",
            browser.get("/auth/callback?code=x").await,
        ),
        ("unknown auth path", browser.get("/auth/other").await),
        (
            "logout, anonymous",
            browser.api_post("/auth/logout", vec![]).await,
        ),
    ];
    responses.push(("callback", browser.login_with("bob", None).await));
    responses.push(("user", browser.api_get("/auth/user").await));
    let logout_url = responses.last().expect("user").1.json()["session"]["logout_url"]
        .as_str()
        .expect("logout_url")
        .to_owned();
    responses.push(("GET logout", browser.get(&logout_url).await));
    for (what, response) in &responses {
        assert_eq!(
            response
                .headers
                .get_all("cache-control")
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect::<Vec<_>>(),
            vec!["no-store"],
            "{what}: {}",
            response.transcript()
        );
    }
    assert_eq!(responses[7].1.status, 302, "the login completed");
}

#[tokio::test]
async fn configured_policies_replace_the_defaults_and_https_adds_hsts() {
    let build = Build::new();
    let port_app = spawn_app_with(AppOptions {
        frontend: Some(
            build
                .frontend()
                .content_security_policy(
                    "default-src 'none'; script-src 'self'; frame-ancestors 'self'",
                )
                .referrer_policy("strict-origin-when-cross-origin"),
        ),
        public_url: Some("https://app.example.test".into()),
        ..AppOptions::default()
    })
    .await;
    let mut browser = port_app.browser();
    for (what, response) in [
        ("page", browser.get("/").await),
        ("problem", browser.get("/missing.js").await),
        ("auth", browser.api_get("/auth/user").await),
    ] {
        assert_security_headers(
            &response,
            what,
            "default-src 'none'; script-src 'self'; frame-ancestors 'self'",
            "strict-origin-when-cross-origin",
        );
        assert_eq!(
            response.headers["strict-transport-security"], "max-age=31536000",
            "{what}"
        );
    }

    // An empty policy turns the header off (for a frontend that sets its own in a proxy).
    let app = spawn_app_with(AppOptions {
        frontend: Some(build.frontend().content_security_policy("")),
        ..AppOptions::default()
    })
    .await;
    let response = app.browser().get("/").await;
    assert!(response.headers.get("content-security-policy").is_none());
    assert_eq!(response.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_dev_server_gets_what_pages_and_hot_reload_need_websockets_included() {
    let dev = spawn_dev_server().await;
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        frontend: Some(Frontend::dev_server(&dev.origin)),
        routes: vec![Route::new("/api", &echo.base)],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;

    // Pages and modules come from the dev server, as it sent them.
    let module = browser
        .request(
            Method::GET,
            "/src/main.ts?t=1700000000",
            &[
                ("accept", "*/*"),
                ("x-csrf", "1"),
                ("x-forwarded-user", "mallory"),
                ("x-http-method-override", "DELETE"),
                ("x-unlisted", "stays at gatehouse"),
            ],
            None,
        )
        .await;
    assert_eq!(module.status, 200, "{}", module.transcript());
    assert_eq!(header(&module, "x-dev-server"), "yes");
    let seen = module.json();
    assert_eq!(seen["path"], "/src/main.ts?t=1700000000");
    let names: Vec<&str> = seen["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(|h| h[0].as_str())
        .collect();
    for name in [
        "cookie",
        "x-csrf",
        "x-forwarded-user",
        "authorization",
        "x-http-method-override",
        "x-unlisted",
    ] {
        assert!(
            !names.contains(&name),
            "the dev server saw {name}: {names:?}"
        );
    }
    assert!(names.contains(&"accept"), "{names:?}");
    assert!(
        module.set_cookies().is_empty(),
        "the dev server sets no cookie here"
    );
    assert!(browser.session_cookie().is_some(), "the session survived");
    assert_security_headers(
        &module,
        "dev module",
        gatehouse::config::DEFAULT_DEV_CSP,
        "no-referrer",
    );

    let page = browser
        .request(Method::GET, "/some/route", &[("accept", NAVIGATION)], None)
        .await;
    assert_eq!(page.json()["path"], "/some/route");
    let posted = browser
        .request(
            Method::POST,
            "/__dev/endpoint",
            &[("content-type", "text/plain")],
            Some(b"hello dev".to_vec()),
        )
        .await;
    assert_eq!(posted.json()["method"], "POST");
    assert_eq!(posted.json()["body"], "hello dev");
    let missing = browser.get("/missing").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, "no such module", "the dev server's own 404");

    // gatehouse's own paths and the API routes are not the dev server's.
    assert_eq!(browser.api_get("/auth/user").await.json()["sub"], "alice");
    assert_eq!(browser.get("/healthz").await.status, 200);
    assert_eq!(
        browser.api_get("/api/orders").await.json()["path"],
        "/orders"
    );
    let dev_paths: Vec<String> = dev.seen().iter().map(|r| r.path.clone()).collect();
    assert!(
        !dev_paths
            .iter()
            .any(|p| p.starts_with("/auth") || p.starts_with("/api") || p == "/healthz"),
        "{dev_paths:?}"
    );

    // Hot reload: a WebSocket through gatehouse to the dev server and back.
    let mut request = format!("ws://127.0.0.1:{}/?token=hmr-token", app.port)
        .into_client_request()
        .expect("ws request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "vite-hmr".parse().expect("value"));
    request.headers_mut().insert(
        "cookie",
        format!(
            "{}={}",
            app.cookie_name(),
            browser.session_cookie().expect("cookie")
        )
        .parse()
        .expect("value"),
    );
    let (mut socket, handshake) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket through gatehouse");
    assert_eq!(handshake.status(), 101);
    assert_eq!(handshake.headers()["sec-websocket-protocol"], "vite-hmr");
    for text in ["ping", "{\"type\":\"custom\",\"event\":\"x\"}"] {
        socket
            .send(Message::Text(text.to_owned()))
            .await
            .expect("send");
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("reply in time")
            .expect("open")
            .expect("frame");
        assert_eq!(reply, Message::Text(format!("echo: {text}")));
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    socket
        .send(Message::Binary(big.clone()))
        .await
        .expect("send");
    let reply = socket.next().await.expect("open").expect("frame");
    assert_eq!(reply, Message::Binary(big), "large frames cross intact");
    socket.close(None).await.expect("close");

    let handshake = dev
        .seen()
        .into_iter()
        .find(|r| r.header("upgrade").is_some())
        .expect("the dev server saw the upgrade");
    assert_eq!(handshake.path, "/?token=hmr-token");
    assert_eq!(handshake.header("sec-websocket-protocol"), Some("vite-hmr"));
    assert!(
        handshake.header("cookie").is_none(),
        "no session cookie to the dev server"
    );
}

#[tokio::test]
async fn a_dev_server_that_is_down_is_a_clear_502() {
    let port = crate::helpers::processes::free_port();
    let app = spawn_app_with(AppOptions {
        frontend: Some(Frontend::dev_server(&format!("http://127.0.0.1:{port}"))),
        ..AppOptions::default()
    })
    .await;
    let response = app.browser().get("/").await;
    response.assert_problem(502, "upstream-unreachable");
    assert!(
        response.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("dev server")),
        "{}",
        response.body
    );
}
