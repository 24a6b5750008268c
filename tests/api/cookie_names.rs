//! Cookies count only under the literal names gatehouse set (issue 23, part 2). A name that
//! percent-decodes to `__Host-…` is not prefixed for the browser, so a sibling subdomain or
//! a man in the middle on plain http can plant it: it must never stand in for the session
//! or the login binding, nor spoil the real one. Sent over raw TCP, exactly as spelled.

use crate::helpers::echo::raw_request;
use crate::helpers::{spawn_app, TestApp};

/// Spellings of `name` (which starts with `__Host-`) that a percent-decoding reader takes
/// for it, and a browser does not.
fn look_alikes(name: &str) -> Vec<String> {
    let rest = name
        .strip_prefix("__Host-")
        .unwrap_or_else(|| panic!("{name} has no __Host- prefix"));
    let last = rest.len() - 1;
    vec![
        format!("__%48ost-{rest}"),
        format!("%5F%5FHost-{rest}"),
        format!("%5f%5fHost-{rest}"),
        format!("_%5FHost-{rest}"),
        format!("__Host%2D{rest}"),
        format!("__Host%2d{rest}"),
        format!("__H%6Fst-{rest}"),
        format!("__Host-{}%{:02X}", &rest[..last], rest.as_bytes()[last]),
    ]
}

/// A request as written, with one `Cookie` header per entry of `cookie_headers`.
async fn raw_get(app: &TestApp, path: &str, cookie_headers: &[String]) -> (u16, String) {
    let cookies: String = cookie_headers
        .iter()
        .map(|value| format!("Cookie: {value}\r\n"))
        .collect();
    raw_request(
        app.port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-CSRF: 1\r\n{cookies}Connection: close\r\n\r\n",
            app.port
        ),
    )
    .await
}

fn sub_in(text: &str) -> Option<String> {
    let body = &text[text.find("\r\n\r\n")? + 4..];
    let start = body.find('{')?;
    let end = body.rfind('}')?;
    let json: serde_json::Value = serde_json::from_str(&body[start..=end]).ok()?;
    json["sub"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_look_alike_session_cookie_is_neither_the_session_nor_in_its_way() {
    let app = spawn_app().await;
    let name = app.cookie_name().to_owned();
    let mut attacker = app.browser();
    attacker.login("mallory").await;
    let attackers = attacker.session_cookie().expect("attacker's session");
    let mut victim = app.browser();
    victim.login("alice").await;
    let victims = victim.session_cookie().expect("victim's session");

    // The genuine cookies answer as their owners.
    let (status, text) = raw_get(&app, "/auth/user", &[format!("{name}={attackers}")]).await;
    assert_eq!((status, sub_in(&text).as_deref()), (200, Some("mallory")));
    let (status, text) = raw_get(&app, "/auth/user", &[format!("{name}={victims}")]).await;
    assert_eq!((status, sub_in(&text).as_deref()), (200, Some("alice")));

    for look_alike in look_alikes(&name) {
        // The swap: the attacker's session under a look-alike name is no session at all.
        let planted = format!("{look_alike}={attackers}");
        let (status, text) = raw_get(&app, "/auth/user", std::slice::from_ref(&planted)).await;
        assert_eq!(status, 401, "{look_alike} was read as the session: {text}");
        assert!(
            text.contains("urn:gatehouse:problem:unauthenticated"),
            "{text}"
        );

        // The denial: next to the victim's real cookie, in either order or its own header,
        // the victim's own session answers.
        let real = format!("{name}={victims}");
        for headers in [
            vec![format!("{planted}; {real}")],
            vec![format!("{real}; {planted}")],
            vec![planted.clone(), real.clone()],
            vec![real.clone(), planted.clone()],
        ] {
            let (status, text) = raw_get(&app, "/auth/user", &headers).await;
            assert_eq!(
                (status, sub_in(&text).as_deref()),
                (200, Some("alice")),
                "{headers:?}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn a_look_alike_login_binding_cookie_cannot_log_the_victim_in_as_the_attacker() {
    let app = spawn_app().await;
    let login_cookie = app.settings.session.login_cookie_name.clone();
    for look_alike in look_alikes(&login_cookie) {
        // The attacker stops their own login at the callback, keeping its binding cookie.
        let mut attacker = app.browser();
        let start = attacker.start_login(None).await;
        let binding = attacker
            .cookies
            .get(&login_cookie)
            .cloned()
            .expect("login binding cookie");
        let callback = attacker
            .authenticate_at_provider(start.location().expect("to the provider"), "mallory")
            .await;
        let path = callback
            .strip_prefix(&app.base)
            .expect("gatehouse's callback");

        // The victim's browser carries only the planted look-alike.
        // The login is not this browser's: it lands back in the app, told so, with no
        // session.
        let (status, text) = raw_get(&app, path, &[format!("{look_alike}={binding}")]).await;
        assert_eq!(status, 302, "{look_alike}: {text}");
        assert!(
            text.lines().any(
                |line| line.eq_ignore_ascii_case("location: /?login_error=login_state_invalid")
            ),
            "{look_alike}: {text}"
        );
        assert!(
            !text.to_ascii_lowercase().contains(&format!(
                "set-cookie: {}=",
                app.cookie_name().to_ascii_lowercase()
            )),
            "{look_alike}: a session cookie was set: {text}"
        );
    }
    assert_eq!(app.session_key_count().await, 0, "nobody is logged in");

    // A look-alike planted next to the victim's own binding does not spoil the victim's
    // login either: the victim ends up as the victim.
    let mut attacker = app.browser();
    attacker.start_login(None).await;
    let attackers_binding = attacker.cookies[&login_cookie].clone();
    let mut victim = app.browser();
    let start = victim.start_login(None).await;
    let victims_binding = victim.cookies[&login_cookie].clone();
    let callback = victim
        .authenticate_at_provider(start.location().expect("to the provider"), "alice")
        .await;
    let path = callback
        .strip_prefix(&app.base)
        .expect("gatehouse's callback");
    let planted = format!("{}={attackers_binding}", look_alikes(&login_cookie)[0]);
    let (status, text) = raw_get(
        &app,
        path,
        &[format!("{planted}; {login_cookie}={victims_binding}")],
    )
    .await;
    assert_eq!(status, 302, "{text}");
    let session = text
        .lines()
        .filter_map(|line| line.strip_prefix("set-cookie: "))
        .find_map(|cookie| cookie.strip_prefix(&format!("{}=", app.cookie_name())))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {text}"))
        .to_owned();
    let (status, text) = raw_get(
        &app,
        "/auth/user",
        &[format!("{}={session}", app.cookie_name())],
    )
    .await;
    assert_eq!((status, sub_in(&text).as_deref()), (200, Some("alice")));
}
