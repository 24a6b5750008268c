//! A stricter route nested in a broader one (issue 23): no spelling of the stricter route's
//! prefix reaches the broader route. Sent over raw TCP, as a client library would clean the
//! path up first.

use crate::helpers::echo::{raw_request, spawn_echo, EchoUpstream};
use crate::helpers::{spawn_app_with, AppOptions, Route, TestApp};

/// `/api` for every user; `/api/v2/admin` GET only and for the `support` role, on an
/// upstream that ignores case (`match_case = false`). Both on the same upstream, as in the
/// report: what `/api` forwards as `/v2/admin/…` is the admin API itself.
async fn nested_routes(echo: &EchoUpstream) -> TestApp {
    spawn_app_with(AppOptions {
        routes: vec![
            Route::new("/api", &format!("{}/", echo.base)).rate_limit_off(),
            Route::new("/api/v2/admin", &format!("{}/v2/admin", echo.base))
                .methods(&["GET"])
                .match_case(false)
                .rate_limit_off()
                .require_claim("roles", "support"),
        ],
        ..AppOptions::default()
    })
    .await
}

async fn raw_call(app: &TestApp, method: &str, path: &str, cookie: &str) -> (u16, String) {
    raw_request(
        app.port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nCookie: {}={cookie}\r\n\
             Connection: close\r\n\r\n",
            app.cookie_name()
        ),
    )
    .await
}

/// Every spelling of `/api/v2/admin` this test tries.
fn spellings() -> Vec<String> {
    let segments = ["api", "v2", "admin"];
    let join = |parts: &[String]| format!("/{}", parts.join("/"));
    let plain: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        let with = |replacement: String| {
            let mut parts = plain.clone();
            parts[index] = replacement;
            join(&parts)
        };
        // Each letter and digit percent-encoded, in both cases of hex, and double-encoded.
        for (at, byte) in segment.bytes().enumerate() {
            let (head, tail) = (&segment[..at], &segment[at + 1..]);
            out.push(with(format!("{head}%{byte:02X}{tail}")));
            out.push(with(format!("{head}%{byte:02x}{tail}")));
            out.push(with(format!("{head}%25{byte:02X}{tail}")));
            out.push(with(format!("{head}%2525{byte:02x}{tail}")));
        }
        out.push(with(segment.bytes().map(|b| format!("%{b:02x}")).collect()));
        // Path parameters, plain and encoded.
        for parameter in [
            ";",
            ";x",
            ";x=1",
            ";jsessionid=abc",
            ";a;b",
            "%3bx",
            "%253bx",
        ] {
            out.push(with(format!("{segment}{parameter}")));
        }
        // Case.
        out.push(with(segment.to_uppercase()));
        out.push(with(
            segment
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
        ));
        // What an upstream would trim.
        for suffix in [
            ".",
            "%2e",
            "%2E",
            "%252e",
            "%20",
            "%2520",
            "%09",
            "%C2%A0",
            "%E2%80%8B",
            "..",
            "./",
            "%00",
        ] {
            out.push(with(format!("{segment}{suffix}")));
        }
        out.push(with(format!("%20{segment}")));
        // Encoded separators around it.
        out.push(with(format!("{segment}%2f")));
        out.push(with(format!("{segment}%5c")));
    }
    // Dotless i and long s fold to i and s in a case-insensitive upstream.
    out.push("/api/v2/adm%C4%B1n".into());
    out.push("/api/v2/ADM%C4%B1N".into());
    out
}

#[tokio::test]
async fn no_spelling_of_a_stricter_prefix_reaches_the_broader_route() {
    let echo = spawn_echo().await;
    let app = nested_routes(&echo).await;
    let mut bob = app.browser();
    bob.login("bob").await; // roles = ["user"]: not for the admin route
    let cookie = bob.session_cookie().expect("bob's session");

    // The plain spellings first: the checks hold, the broader route works.
    let (status, text) = raw_call(&app, "GET", "/api/v2/admin/secret", &cookie).await;
    assert_eq!(status, 403, "{text}");
    let (status, text) = raw_call(&app, "GET", "/api/v2/other", &cookie).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(echo.seen(), vec!["/v2/other".to_owned()]);

    let spellings = spellings();
    assert!(spellings.len() > 100, "{}", spellings.len());
    let mut outcomes = std::collections::BTreeMap::<u16, usize>::new();
    for spelling in &spellings {
        for (method, allowed) in [("GET", [403, 400]), ("DELETE", [405, 400])] {
            let path = format!("{spelling}/secret");
            let (status, text) = raw_call(&app, method, &path, &cookie).await;
            assert!(
                allowed.contains(&status),
                "{method} {path} answered {status} (the broader route?):\n{text}"
            );
            if status == 400 {
                assert!(text.contains("application/problem+json"), "{text}");
            }
            *outcomes.entry(status).or_default() += 1;
        }
    }
    assert_eq!(
        echo.seen(),
        vec!["/v2/other".to_owned()],
        "the upstream received one of the spellings"
    );
    // Both kinds of answer occurred: the test saw matched spellings and refused ones.
    for status in [400, 403, 405] {
        assert!(
            outcomes.get(&status).is_some_and(|n| *n > 10),
            "{outcomes:?}"
        );
    }
}

#[tokio::test]
async fn the_upstream_receives_the_normalised_path_and_parameters_after_the_prefix_pass() {
    let echo = spawn_echo().await;
    let app = nested_routes(&echo).await;
    let mut alice = app.browser();
    alice.login("alice").await; // roles include support
    let cookie = alice.session_cookie().expect("alice's session");

    for (sent, received) in [
        ("/api/v2/admin/secret;v=2", "/v2/admin/secret;v=2"),
        ("/api/v2/%61dmin/%73ecret", "/v2/admin/secret"),
        ("/api/v2/ADMIN/secret", "/v2/admin/secret"),
        (
            "/%61pi/v%32/admin/x;v=%32/caf%c3%a9",
            "/v2/admin/x;v=2/caf%C3%A9",
        ),
        ("/api/v2/admin/a%7eb%2Dc", "/v2/admin/a~b-c"),
        ("/api/other;v=2/x", "/other;v=2/x"),
    ] {
        let (status, text) = raw_call(&app, "GET", sent, &cookie).await;
        assert_eq!(status, 200, "{sent}: {text}");
        assert!(
            text.contains(&format!("\"path\":\"{received}\"")),
            "{sent} should reach the upstream as {received}: {text}"
        );
    }
}
