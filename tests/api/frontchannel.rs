//! Front-channel logout (issue 25): the provider's page frames
//! `/auth/frontchannel-logout?iss=…&sid=…`, which ends the sessions of that provider
//! session at every instance — without the session cookie, which a third-party frame does
//! not carry — and closes their WebSockets.

use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::webdriver::Chrome;
use crate::helpers::websocket_echo::{close_code, open, spawn_websocket_echo};
use crate::helpers::{captured_logs, spawn_app_with, urlencode, AppOptions, Route, TestApp};

fn frontchannel_path(iss: Option<&str>, sid: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(iss) = iss {
        query.append_pair("iss", iss);
    }
    if let Some(sid) = sid {
        query.append_pair("sid", sid);
    }
    format!("/auth/frontchannel-logout?{}", query.finish())
}

/// The provider session id of the session behind `cookie`.
async fn provider_sid(app: &TestApp, cookie: &str) -> String {
    app.session_for(cookie)
        .await
        .expect("a session")
        .data
        .provider_sid
        .clone()
        .expect("the ID token names the provider session")
}

/// A cookie-less GET, as from the provider's iframe.
async fn framed_get(app: &TestApp, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("answer")
}

#[tokio::test]
async fn the_providers_iss_and_sid_end_that_session_everywhere_and_close_its_sockets() {
    let ws = spawn_websocket_echo().await;
    let first = spawn_app_with(AppOptions {
        routes: vec![Route::new("/ws", &format!("{}/socket", ws.base)).websocket()],
        ..AppOptions::default()
    })
    .await;
    let second = spawn_app_with(AppOptions {
        share: Some(&first),
        routes: vec![Route::new("/ws", &format!("{}/socket", ws.base)).websocket()],
        ..AppOptions::default()
    })
    .await;
    let mut alice = first.browser();
    alice.login("alice").await;
    let alice_cookie = alice.session_cookie().expect("alice");
    let mut bob = first.browser();
    bob.login("bob").await;
    let bob_cookie = bob.session_cookie().expect("bob");
    let sid = provider_sid(&first, &alice_cookie).await;
    let mut socket = open(&second, "/ws/live", Some(&alice_cookie))
        .await
        .expect("alice's socket at the second instance");

    // Nothing ends for a wrong iss, a missing sid or an unknown sid.
    let elsewhere = "https://login.example.com";
    for (path, status) in [
        (frontchannel_path(Some(elsewhere), Some(&sid)), 400),
        (
            frontchannel_path(Some(&format!("{}/", first.issuer)), Some(&sid)),
            400,
        ),
        (frontchannel_path(None, Some(&sid)), 400),
        (frontchannel_path(Some(&first.issuer), None), 400),
        (frontchannel_path(Some(&first.issuer), Some("")), 400),
        (
            frontchannel_path(Some(&first.issuer), Some("not-a-session")),
            200,
        ),
    ] {
        assert_eq!(framed_get(&first, &path).await.status(), status, "{path}");
    }
    assert!(first.session_for(&alice_cookie).await.is_some());
    assert!(first.session_for(&bob_cookie).await.is_some());

    // Issued at the first instance, received at the second.
    let answer = framed_get(&second, &frontchannel_path(Some(&first.issuer), Some(&sid))).await;
    assert_eq!(answer.status(), 200);
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("cache-control"), "no-store");
    let origin = url::Url::parse(&first.issuer)
        .expect("issuer")
        .origin()
        .ascii_serialization();
    assert_eq!(
        header("content-security-policy"),
        format!("default-src 'none'; frame-ancestors {origin}")
    );
    assert!(header("content-type").starts_with("text/html"));
    assert_eq!(answer.text().await.expect("body"), "");

    assert!(
        first.session_for(&alice_cookie).await.is_none(),
        "alice's ended"
    );
    assert!(
        first.session_for(&bob_cookie).await.is_some(),
        "bob's untouched"
    );
    assert_eq!(alice.api_get("/auth/user").await.status, 401);
    let (code, after) = close_code(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Policy), "1008 after {after:?}");
    assert!(captured_logs()
        .lines()
        .any(|line| line.contains("logout.frontchannel") && line.contains("ended 1 session(s)")));

    // Every other page still refuses to be framed.
    let page = framed_get(&first, "/auth/providers").await;
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}

#[tokio::test]
async fn a_page_on_the_providers_origin_frames_the_logout_in_a_real_browser() {
    let app = spawn_app_with(AppOptions::default()).await;
    let mut alice = app.browser();
    alice.login("alice").await;
    let cookie = alice.session_cookie().expect("alice");
    let sid = provider_sid(&app, &cookie).await;
    let target = format!(
        "{}{}",
        app.base,
        frontchannel_path(Some(&app.issuer), Some(&sid))
    );
    let page = format!("{}/__test/frame?src={}", app.issuer, urlencode(&target));

    let chrome = Chrome::start().await;
    let outcome = chrome
        .run_scenario("browser-frontchannel-logout", async {
            chrome.goto(&page).await;
            chrome
                .wait_for(
                    "the frame loaded",
                    "return document.getElementById('status').textContent === 'done'",
                )
                .await;
            let deadline = Instant::now() + Duration::from_secs(5);
            while app.session_for(&cookie).await.is_some() {
                assert!(Instant::now() < deadline, "the framed logout ended nothing");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    chrome.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(alice.api_get("/auth/user").await.status, 401);
}
