//! "Your sessions": a user lists their sessions at every instance, ends one of them, or all
//! but the current one; another user's session is out of reach.

use std::collections::BTreeSet;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::echo::{spawn_echo, status_of, EchoUpstream};
use crate::helpers::{
    captured_logs, proxied_call, record_secret, spawn_app_with, AppOptions, Browser, Resp, Route,
    SessionKeys, TestApp,
};

const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like \
                            Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) \
                             AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 \
                             Mobile/15E148 Safari/604.1";

fn new_revocation_key() -> String {
    let key = gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    record_secret(&key);
    key
}

fn options<'a>(
    echo: &EchoUpstream,
    revocation_key: Option<&str>,
    share: Option<&'a TestApp>,
) -> AppOptions<'a> {
    AppOptions {
        share,
        routes: vec![Route::new("/api", &echo.base)],
        env: revocation_key
            .map(|key| {
                vec![(
                    "GATEHOUSE_SESSION__REVOCATION_KEY".to_owned(),
                    key.to_owned(),
                )]
            })
            .unwrap_or_default(),
        ..AppOptions::default()
    }
}

/// A call with a session cookie to any instance, as the SPA makes it (with the anti-forgery
/// header unless `csrf` is false).
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: bool,
) -> Resp {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("cookie", format!("{}={cookie}", app.cookie_name()));
    if csrf {
        request = request.header("x-csrf", "1");
    }
    let response = request.send().await.expect("gatehouse answers");
    Resp {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

async fn list(app: &TestApp, cookie: &str) -> Vec<Value> {
    let resp = call(app, reqwest::Method::GET, "/auth/sessions", cookie, true).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        resp.headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    resp.json()["sessions"]
        .as_array()
        .expect("a list of sessions")
        .clone()
}

/// `DELETE /auth/sessions/{id}` with `cookie`'s session.
async fn end_session(app: &TestApp, cookie: &str, id: &str, csrf: bool) -> Resp {
    let path = format!("/auth/sessions/{id}");
    call(app, reqwest::Method::DELETE, &path, cookie, csrf).await
}

/// Whether the log holds the `session.ended_by_user` event for that session and reason.
fn logged_ending(store_key: &str, reason: &str) -> bool {
    captured_logs().lines().any(|line| {
        line.contains("session.ended_by_user")
            && line.contains(&store_key[..12])
            && line.contains(reason)
    })
}

async fn user_status(app: &TestApp, cookie: &str) -> u16 {
    call(app, reqwest::Method::GET, "/auth/user", cookie, true)
        .await
        .status
}

/// A raw request line, as a client that sends exactly these bytes: no client library
/// normalises the path first.
async fn raw_delete(app: &TestApp, path: &str, cookie: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let request = format!(
        "DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-CSRF: 1\r\nCookie: {}={cookie}\r\n\
         Connection: close\r\n\r\n",
        app.port,
        app.cookie_name()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = status_of(&answer);
    assert_ne!(status, 0, "no status line: {answer}");
    (status, answer)
}

fn devices(sessions: &[Value]) -> BTreeSet<String> {
    sessions
        .iter()
        .map(|s| s["device"].as_str().expect("device").to_owned())
        .collect()
}

fn id_of(sessions: &[Value], device: &str) -> String {
    sessions
        .iter()
        .find(|s| s["device"] == device)
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("no session on {device}: {sessions:?}"))
        .to_owned()
}

struct Device<'a> {
    browser: Browser<'a>,
    cookie: String,
    refresh: String,
    store_key: String,
}

async fn log_in<'a>(app: &'a TestApp, user: &str, user_agent: &str) -> Device<'a> {
    let mut browser = app.browser().with_user_agent(user_agent);
    browser.login(user).await;
    let cookie = browser.session_cookie().expect("cookie");
    let tokens = browser.tokens().await; // records the secrets for the log check
    let refresh = secrecy::ExposeSecret::expose_secret(
        tokens.refresh_token.as_ref().expect("a refresh token"),
    )
    .to_owned();
    let store_key = app.session_for(&cookie).await.expect("live").store_key;
    Device {
        browser,
        cookie,
        refresh,
        store_key,
    }
}

#[tokio::test]
async fn alice_sees_her_sessions_everywhere_ends_one_then_all_others_and_never_bobs() {
    let echo = spawn_echo().await;
    let key = new_revocation_key();
    let a = spawn_app_with(options(&echo, Some(&key), None)).await;
    let b = spawn_app_with(options(&echo, Some(&key), Some(&a))).await;

    let laptop = log_in(&a, "alice", CHROME_LINUX).await;
    let desktop = log_in(&a, "alice", FIREFOX_WINDOWS).await;
    let phone = log_in(&a, "alice", SAFARI_IPHONE).await;
    let bob = log_in(&a, "bob", FIREFOX_WINDOWS).await;
    // In Redis: each session has its envelope and a coarse device label, never the header.
    let dump = a.session_data_dump().await;
    let session_hashes: Vec<_> = dump.iter().filter(|(k, _)| k.contains(":s:")).collect();
    assert_eq!(session_hashes.len(), 4);
    for (_, fields) in &session_hashes {
        assert!(fields.iter().any(|f| f.as_slice() == b"v"), "an envelope");
        assert!(fields.iter().any(|f| f.as_slice() == b"d"), "a device");
    }
    for values in dump.values() {
        for value in values {
            let text = String::from_utf8_lossy(value);
            assert!(
                !text.contains("Mozilla") && !text.contains("AppleWebKit"),
                "{text}"
            );
        }
    }
    // The phone and the desktop go on through the other instance (their sessions are cached
    // there once used).
    for device in [&phone, &desktop] {
        assert_eq!(user_status(&b, &device.cookie).await, 200);
        assert_eq!(proxied_call(&b, &device.cookie).await.0, 200);
    }

    // Listed through instance B: all three of alice's, hers marked, nothing secret.
    let resp = call(
        &b,
        reqwest::Method::GET,
        "/auth/sessions",
        &laptop.cookie,
        true,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let sessions = list(&b, &laptop.cookie).await;
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "exactly one current: {sessions:?}");
    assert_eq!(current[0]["device"], "Chrome on Linux");
    assert_eq!(
        devices(&sessions),
        ["Chrome on Linux", "Firefox on Windows", "Safari on iPhone"]
            .map(str::to_owned)
            .into(),
    );
    let now_secs = gatehouse::clock::Clock::now_millis(&a.clock) / 1000;
    for session in &sessions {
        assert_eq!(session["provider"], "main");
        let id = session["id"].as_str().expect("id");
        assert_eq!(id.len(), 43, "{id}");
        for time in ["created_at", "last_used_at"] {
            let at = session[time].as_i64().expect("seconds");
            assert!((now_secs - 120..=now_secs + 1).contains(&at), "{time} {at}");
        }
        let mut fields: Vec<&str> = session
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "created_at",
                "current",
                "device",
                "id",
                "last_used_at",
                "provider"
            ]
        );
    }
    let transcript = resp.transcript();
    for device in [&laptop, &desktop, &phone, &bob] {
        let tokens = device.browser.tokens().await;
        for secret in [
            device.cookie.as_str(),
            device.cookie.split('.').next().expect("id"),
            device.store_key.as_str(),
            device.refresh.as_str(),
            secrecy::ExposeSecret::expose_secret(&tokens.access_token),
            secrecy::ExposeSecret::expose_secret(&tokens.id_token),
        ] {
            assert!(!transcript.contains(secret), "the list holds a secret");
        }
    }
    assert!(!transcript.contains(&key));
    // The same through instance A, from another device: same ids, another `current`.
    let from_phone = list(&a, &phone.cookie).await;
    assert_eq!(
        from_phone
            .iter()
            .map(|s| s["id"].to_string())
            .collect::<BTreeSet<_>>(),
        sessions
            .iter()
            .map(|s| s["id"].to_string())
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        id_of(&from_phone, "Safari on iPhone"),
        id_of(&sessions, "Safari on iPhone")
    );
    assert!(from_phone
        .iter()
        .any(|s| s["current"] == true && s["device"] == "Safari on iPhone"));

    // Bob sees only his own.
    let bobs = list(&a, &bob.cookie).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["current"], true);
    let bob_id = bobs[0]["id"].as_str().expect("id").to_owned();

    // Without the anti-forgery header: refused, and nothing changes.
    call(
        &b,
        reqwest::Method::GET,
        "/auth/sessions",
        &laptop.cookie,
        false,
    )
    .await
    .assert_problem(401, "csrf-header-required");
    let phone_id = id_of(&sessions, "Safari on iPhone");
    end_session(&b, &laptop.cookie, &phone_id, false)
        .await
        .assert_problem(401, "csrf-header-required");
    call(
        &b,
        reqwest::Method::POST,
        "/auth/sessions/end-others",
        &laptop.cookie,
        false,
    )
    .await
    .assert_problem(401, "csrf-header-required");
    // Without a session: 401.
    call(&b, reqwest::Method::GET, "/auth/sessions", "nobody", true)
        .await
        .assert_problem(401, "unauthenticated");
    assert_eq!(list(&b, &laptop.cookie).await.len(), 3);

    // Bob's id in alice's DELETE: 404, and bob's session is untouched.
    end_session(&b, &laptop.cookie, &bob_id, true)
        .await
        .assert_problem(404, "not-found");
    assert_eq!(user_status(&a, &bob.cookie).await, 200);
    assert_eq!(a.introspect(&bob.refresh).await["active"], true);

    // Malformed ids, sent byte for byte: 404 problem+json (or, for what the path guard
    // refuses before any routing, its 400), and nothing changes.
    let desktop_id = id_of(&sessions, "Firefox on Windows");
    let percent_encoded: String = desktop_id.bytes().map(|b| format!("%{b:02X}")).collect();
    let cases = [
        (percent_encoded, 404),
        // Not a valid escape: refused by the path guard.
        (format!("%zz{}", &desktop_id[3..]), 400),
        ("A".repeat(4000), 404),
        (format!("{desktop_id}{}", "A".repeat(3000)), 404),
        (format!("{desktop_id};"), 404),
        (format!("{};x", &desktop_id[..42]), 404),
        (";".to_owned(), 404),
        // A trailing dot, which some upstreams trim: refused by the path guard.
        (format!("{}..", &desktop_id[..41]), 400),
        ("..".to_owned(), 400),
        (format!("../{desktop_id}"), 400),
        (format!("{desktop_id}/.."), 400),
        (format!("{desktop_id}%3B"), 400),
        (format!("{bob_id}%00"), 400),
        (desktop_id.to_lowercase(), 404),
    ];
    for (id, expected) in &cases {
        let (status, answer) =
            raw_delete(&b, &format!("/auth/sessions/{id}"), &laptop.cookie).await;
        assert_eq!(status, *expected, "{id}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{id}: {answer}"
        );
    }
    assert_eq!(list(&b, &laptop.cookie).await.len(), 3, "nothing changed");
    for device in [&laptop, &desktop, &phone, &bob] {
        assert_eq!(user_status(&a, &device.cookie).await, 200);
    }

    // Alice ends her phone's session from her laptop, through B: the phone's next call is
    // 401 at either instance, and its refresh token is revoked at the provider.
    assert_eq!(a.introspect(&phone.refresh).await["active"], true);
    let ended = end_session(&b, &laptop.cookie, &phone_id, true).await;
    assert_eq!(ended.status, 204, "{}", ended.body);
    assert!(
        ended.set_cookies().is_empty(),
        "not the caller's own session: its cookie stays"
    );
    assert_eq!(proxied_call(&b, &phone.cookie).await.0, 401);
    assert_eq!(proxied_call(&a, &phone.cookie).await.0, 401);
    assert_eq!(user_status(&a, &phone.cookie).await, 401);
    assert_eq!(a.introspect(&phone.refresh).await["active"], false);
    let left = list(&a, &laptop.cookie).await;
    assert_eq!(
        devices(&left),
        ["Chrome on Linux", "Firefox on Windows"]
            .map(str::to_owned)
            .into()
    );
    // Once ended, the id is unknown.
    end_session(&b, &laptop.cookie, &phone_id, true)
        .await
        .assert_problem(404, "not-found");

    // All others: only the current one remains; the desktop's token is revoked too.
    let others = call(
        &a,
        reqwest::Method::POST,
        "/auth/sessions/end-others",
        &laptop.cookie,
        true,
    )
    .await;
    assert_eq!(others.status, 200, "{}", others.body);
    assert_eq!(others.json()["ended"], 1);
    assert_eq!(user_status(&b, &desktop.cookie).await, 401);
    assert_eq!(proxied_call(&b, &desktop.cookie).await.0, 401);
    assert_eq!(a.introspect(&desktop.refresh).await["active"], false);
    let only = list(&b, &laptop.cookie).await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["current"], true);
    assert_eq!(proxied_call(&b, &laptop.cookie).await.0, 200);
    assert_eq!(a.introspect(&laptop.refresh).await["active"], true);
    // Bob, through all of it: untouched.
    assert_eq!(user_status(&b, &bob.cookie).await, 200);
    assert_eq!(a.introspect(&bob.refresh).await["active"], true);

    // One security event per session ended, naming the ended session.
    for ended in [&phone, &desktop] {
        assert!(
            logged_ending(&ended.store_key, "other, revoked"),
            "no event for {}",
            &ended.store_key[..12]
        );
    }
}

#[tokio::test]
async fn without_a_revocation_key_ending_another_session_deletes_it_and_ending_ones_own_logs_out() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(options(&echo, None, None)).await;
    let laptop = log_in(&app, "alice", CHROME_LINUX).await;
    let phone = log_in(&app, "alice", SAFARI_IPHONE).await;
    let dump = app.session_data_dump().await;
    let session_hashes: Vec<_> = dump.iter().filter(|(k, _)| k.contains(":s:")).collect();
    assert_eq!(session_hashes.len(), 2, "both sessions checked");
    for (_, fields) in &session_hashes {
        assert!(
            fields.iter().any(|f| f.as_slice() == b"d"),
            "a session hash"
        );
        assert!(
            !fields.iter().any(|v| v.as_slice() == b"v"),
            "no revocation envelope without the key"
        );
    }

    let sessions = list(&app, &laptop.cookie).await;
    assert_eq!(sessions.len(), 2);
    let phone_id = id_of(&sessions, "Safari on iPhone");
    let ended = end_session(&app, &laptop.cookie, &phone_id, true).await;
    assert_eq!(ended.status, 204, "{}", ended.body);
    assert_eq!(user_status(&app, &phone.cookie).await, 401);
    assert_eq!(proxied_call(&app, &phone.cookie).await.0, 401);
    // Documented: without the server-held key its refresh token cannot be read, so the
    // provider is not told; the token is unusable here, its only copy gone.
    assert_eq!(app.introspect(&phone.refresh).await["active"], true);
    assert!(logged_ending(&phone.store_key, "other, deleted only"));

    // Ending one's own session from the list is a logout: the cookie goes, the refresh
    // token is revoked (the caller's own tokens are at hand).
    let own_id = id_of(&list(&app, &laptop.cookie).await, "Chrome on Linux");
    let own = end_session(&app, &laptop.cookie, &own_id, true).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(
        own.json()["redirect_to"]
            .as_str()
            .is_some_and(|next| next.starts_with(&format!("{}/auth/logout/continue?t=", app.base))),
        "{}",
        own.body
    );
    let expired = own
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{}=", app.cookie_name())))
        .expect("the session cookie is expired");
    assert!(expired.contains("Max-Age=0"), "{expired}");
    assert_eq!(user_status(&app, &laptop.cookie).await, 401);
    assert_eq!(app.introspect(&laptop.refresh).await["active"], false);
    assert_eq!(app.session_key_count().await, 0);
}

#[tokio::test]
async fn the_envelope_follows_a_refresh_so_ending_the_session_revokes_the_rotated_token() {
    let echo = spawn_echo().await;
    let key = new_revocation_key();
    let mut options = options(&echo, Some(&key), None);
    options.session = SessionKeys::long();
    let app = spawn_app_with(options).await;
    let laptop = log_in(&app, "alice", CHROME_LINUX).await;
    let phone = log_in(&app, "alice", SAFARI_IPHONE).await;

    // The phone's access token expires; its next call refreshes, which rotates the refresh
    // token (the old one is dead at the provider).
    app.clock
        .advance(std::time::Duration::from_secs(3600) + std::time::Duration::from_secs(1));
    assert_eq!(proxied_call(&app, &phone.cookie).await.0, 200);
    let rotated = phone.browser.refresh_token().await;
    assert_ne!(rotated, phone.refresh);
    assert_eq!(app.introspect(&rotated).await["active"], true);

    // Ended from the laptop: the token revoked is the rotated one.
    let phone_id = id_of(&list(&app, &laptop.cookie).await, "Safari on iPhone");
    let ended = end_session(&app, &laptop.cookie, &phone_id, true).await;
    assert_eq!(ended.status, 204, "{}", ended.body);
    assert_eq!(app.introspect(&rotated).await["active"], false);
    assert_eq!(proxied_call(&app, &phone.cookie).await.0, 401);
    assert_eq!(user_status(&app, &laptop.cookie).await, 200);
}
