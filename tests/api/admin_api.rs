//! The admin API (issue 30): on the admin listener only, behind an operator's bearer token,
//! an operator lists a user's sessions and ends one or all of them; every call is a security
//! event naming the operator.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::echo::{spawn_echo, EchoUpstream};
use crate::helpers::websocket_echo::{
    close_code, open, spawn_websocket_echo, Socket, WebSocketEcho,
};
use crate::helpers::{
    captured_logs, operator_token, operator_token_file, record_secret, spawn_app_with, AppOptions,
    Browser, Resp, Route, TestApp,
};

struct Operators {
    oncall: String,
    soar: String,
}

/// The app and the upstreams its routes lead to (kept running while the test holds them).
struct Bed {
    app: TestApp,
    operators: Operators,
    _upstreams: (WebSocketEcho, EchoUpstream),
}

/// An app with an admin listener whose API knows two operators, a revocation key (so ending
/// another device's session revokes its refresh token), `/ws` WebSockets and `/api`.
async fn admin_app() -> Bed {
    let operators = Operators {
        oncall: operator_token(),
        soar: operator_token(),
    };
    let file = operator_token_file(&[("oncall", &operators.oncall), ("soar", &operators.soar)]);
    let revocation_key =
        gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    record_secret(&revocation_key);
    let ws = spawn_websocket_echo().await;
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        admin: true,
        admin_api_token_file: Some(file),
        routes: vec![
            Route::new("/ws", &format!("{}/socket", ws.base)).websocket(),
            Route::new("/api", &echo.base),
        ],
        env: vec![(
            "GATEHOUSE_SESSION__REVOCATION_KEY".to_owned(),
            revocation_key,
        )],
        ..AppOptions::default()
    })
    .await;
    Bed {
        app,
        operators,
        _upstreams: (ws, echo),
    }
}

struct Device<'a> {
    _browser: Browser<'a>,
    cookie: String,
    refresh: String,
}

async fn log_in<'a>(app: &'a TestApp, user: &str) -> Device<'a> {
    let mut browser = app.browser();
    browser.login(user).await;
    let cookie = browser.session_cookie().expect("cookie");
    let tokens = browser.tokens().await;
    let refresh = tokens
        .refresh_token
        .as_ref()
        .expect("a refresh token")
        .expose_secret()
        .to_owned();
    Device {
        _browser: browser,
        cookie,
        refresh,
    }
}

/// A call to `base` (the admin or the public listener) with `token` as the bearer.
async fn admin_call(
    app: &TestApp,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> Resp {
    let mut request = app.http.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("gatehouse answers");
    Resp {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

fn admin(app: &TestApp) -> &str {
    app.admin_base.as_deref().expect("an admin listener")
}

async fn list(app: &TestApp, token: &str, sub: &str) -> Vec<Value> {
    let resp = admin_call(
        app,
        admin(app),
        reqwest::Method::GET,
        &format!("/admin/sessions?sub={sub}"),
        Some(token),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["sessions"]
        .as_array()
        .expect("sessions")
        .clone()
}

async fn user_status(app: &TestApp, cookie: &str) -> u16 {
    app.get_with_session("/auth/user", cookie)
        .await
        .status()
        .as_u16()
}

async fn echoes(socket: &mut Socket, text: &str) -> bool {
    if socket.send(Message::Text(text.into())).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await,
        Ok(Some(Ok(Message::Text(echoed)))) if echoed == text
    )
}

fn logged_by(operator: &str, event: &str, needle: &str) -> bool {
    captured_logs().lines().any(|line| {
        line.contains(event)
            && line.contains(&format!("operator=\"{operator}\""))
            && line.contains(needle)
    })
}

#[tokio::test]
async fn an_operator_lists_and_ends_one_session_and_then_all_of_a_users() {
    let bed = admin_app().await;
    let (app, operators) = (&bed.app, &bed.operators);
    let laptop = log_in(app, "alice").await;
    let phone = log_in(app, "alice").await;
    let bob = log_in(app, "bob").await;
    let mut alice_socket = open(app, "/ws/live", Some(&phone.cookie))
        .await
        .expect("alice's socket");
    let mut bob_socket = open(app, "/ws/live", Some(&bob.cookie))
        .await
        .expect("bob's socket");

    // The list: alice's two sessions, with what an operator needs and no secret.
    let sessions = list(app, &operators.oncall, "alice").await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for session in &sessions {
        assert_eq!(session["provider"], "main");
        assert_eq!(session["id"].as_str().expect("id").len(), 43);
        assert!(session["device"].is_string());
        let created = session["created_at"].as_i64().expect("created_at");
        let used = session["last_used_at"].as_i64().expect("last_used_at");
        assert!(created > 1_700_000_000 && used >= created, "{session}");
        assert!(session.get("sub").is_none() || session["sub"] == "alice");
    }
    let text = serde_json::to_string(&sessions).expect("json");
    assert!(!text.contains(&laptop.cookie) && !text.contains(&laptop.refresh));
    assert!(logged_by(
        "oncall",
        "admin.sessions_listed",
        "listed 2 session(s)"
    ));

    // One session, by its id: the laptop's (the one whose socket is not open).
    let laptop_key = app
        .session_for(&laptop.cookie)
        .await
        .expect("laptop session")
        .store_key;
    assert!(
        sessions.iter().any(|s| s["id"] == laptop_key.as_str()),
        "the operator's id is the store key, which the events show the start of"
    );
    let ended = admin_call(
        app,
        admin(app),
        reqwest::Method::DELETE,
        &format!("/admin/sessions/{laptop_key}"),
        Some(&operators.soar),
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(ended.json()["ended"], 1);
    assert_eq!(ended.json()["revoked"], 1);
    assert_eq!(user_status(app, &laptop.cookie).await, 401);
    assert_eq!(app.introspect(&laptop.refresh).await["active"], false);
    assert!(logged_by("soar", "admin.session_ended", &laptop_key[..12]));
    // The same id again: it is gone.
    let again = admin_call(
        app,
        admin(app),
        reqwest::Method::DELETE,
        &format!("/admin/sessions/{laptop_key}"),
        Some(&operators.soar),
    )
    .await;
    again.assert_problem(404, "not-found");

    // All of alice's: her phone's session ends, its socket closes; bob's stays.
    let ended = admin_call(
        app,
        admin(app),
        reqwest::Method::DELETE,
        "/admin/sessions?sub=alice",
        Some(&operators.oncall),
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(ended.json()["ended"], 1);
    assert_eq!(ended.json()["revoked"], 1);
    let (code, after) = close_code(&mut alice_socket, Duration::from_secs(10)).await;
    assert_eq!(
        code,
        Some(CloseCode::Policy),
        "alice's socket closed with 1008"
    );
    assert!(after < Duration::from_secs(5), "closed {after:?} later");
    assert_eq!(user_status(app, &phone.cookie).await, 401);
    assert_eq!(app.introspect(&phone.refresh).await["active"], false);
    assert!(list(app, &operators.oncall, "alice").await.is_empty());

    assert!(echoes(&mut bob_socket, "bob is still here").await);
    assert_eq!(user_status(app, &bob.cookie).await, 200);
    assert_eq!(app.introspect(&bob.refresh).await["active"], true);
    assert_eq!(list(app, &operators.oncall, "bob").await.len(), 1);
}

#[tokio::test]
async fn without_a_valid_token_or_on_the_public_listener_nothing_is_listed_or_ended() {
    let bed = admin_app().await;
    let (app, operators) = (&bed.app, &bed.operators);
    let alice = log_in(app, "alice").await;
    let alice_key = app
        .session_for(&alice.cookie)
        .await
        .expect("session")
        .store_key;
    let wrong = operator_token();
    // A token's prefix, and a known token with one character changed, are as wrong.
    let prefix = operators.oncall[..20].to_owned();
    let mut flipped = operators.oncall.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");

    let calls = [
        (reqwest::Method::GET, "/admin/sessions?sub=alice".to_owned()),
        (
            reqwest::Method::DELETE,
            "/admin/sessions?sub=alice".to_owned(),
        ),
        (
            reqwest::Method::DELETE,
            format!("/admin/sessions/{alice_key}"),
        ),
    ];
    for (method, path) in &calls {
        for token in [None, Some(wrong.as_str()), Some(&prefix), Some(&flipped)] {
            let resp = admin_call(app, admin(app), method.clone(), path, token).await;
            resp.assert_problem(401, "operator-token-required");
            assert!(
                !resp.body.contains("alice"),
                "nothing listed: {}",
                resp.body
            );
            assert_eq!(
                resp.headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer realm=\"gatehouse-admin\"")
            );
        }
        // The public listener does not serve the admin API, even with a valid token.
        let public = admin_call(
            app,
            &app.base,
            method.clone(),
            path,
            Some(&operators.oncall),
        )
        .await;
        assert_eq!(public.status, 404, "{method} {path}: {}", public.body);
        assert!(!public.body.contains(&alice_key));
    }
    // A token sent another way than as a bearer does not count either.
    let basic = app
        .http
        .get(format!("{}/admin/sessions?sub=alice", admin(app)))
        .basic_auth("oncall", Some(&operators.oncall))
        .send()
        .await
        .expect("answer");
    assert_eq!(basic.status(), 401);

    // Nothing changed: alice is still logged in and her refresh token is live.
    assert_eq!(user_status(app, &alice.cookie).await, 200);
    assert_eq!(app.introspect(&alice.refresh).await["active"], true);
    assert_eq!(list(app, &operators.oncall, "alice").await.len(), 1);
    assert!(captured_logs()
        .lines()
        .any(|line| line.contains("admin.rejected") && line.contains("unknown token")));

    // A bad request with a good token: 400, and nothing ends.
    let no_sub = admin_call(
        app,
        admin(app),
        reqwest::Method::DELETE,
        "/admin/sessions",
        Some(&operators.oncall),
    )
    .await;
    no_sub.assert_problem(400, "invalid-request");
    let twice = admin_call(
        app,
        admin(app),
        reqwest::Method::DELETE,
        "/admin/sessions?sub=alice&sub=bob",
        Some(&operators.oncall),
    )
    .await;
    twice.assert_problem(400, "invalid-request");
    assert_eq!(user_status(app, &alice.cookie).await, 200);
}

#[tokio::test]
async fn without_an_api_token_file_the_admin_api_does_not_exist() {
    let app = spawn_app_with(AppOptions {
        admin: true,
        ..AppOptions::default()
    })
    .await;
    let alice = log_in(&app, "alice").await;
    let resp = admin_call(
        &app,
        admin(&app),
        reqwest::Method::DELETE,
        "/admin/sessions?sub=alice",
        Some(&operator_token()),
    )
    .await;
    assert_eq!(resp.status, 404);
    assert_eq!(user_status(&app, &alice.cookie).await, 200);
}
