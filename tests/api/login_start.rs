//! A login that fails before the browser leaves gatehouse goes back to `returnTo` with
//! `login_error=<code>`, as a provider's error at the callback does: a browser navigated to
//! `/auth/login`, and a JSON page would strand the user. A `returnTo` that is not local
//! stays a 400: there is nothing safe to go back to.

use crate::helpers::processes::free_port;
use crate::helpers::{spawn_app_with, AppOptions, Preset, RegisteredClient};

#[tokio::test]
async fn a_refused_pushed_authorization_request_sends_the_browser_back_with_login_error() {
    // The provider refuses the push: gatehouse authenticates with the wrong secret.
    let app = spawn_app_with(AppOptions {
        env: vec![(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".into(),
            "not-the-registered-secret".into(),
        )],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    let start = browser.start_login(Some("/orders?tab=2#top")).await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    assert_eq!(
        start.location(),
        Some("/orders?tab=2&login_error=invalid_client#top"),
        "back to the app, before the fragment"
    );
    assert!(
        start.set_cookies().is_empty(),
        "no login binding for a login that never left: {:?}",
        start.set_cookies()
    );
    assert_eq!(
        app.session_data_dump().await.len(),
        0,
        "no login state kept"
    );

    browser
        .start_login(Some("//evil.example/x"))
        .await
        .assert_problem(400, "invalid-return-to");
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_at_login_start_sends_the_browser_back() {
    // Nobody listens at the issuer: discovery never succeeds.
    let issuer = format!("http://127.0.0.2:{}", free_port());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = spawn_app_with(AppOptions {
        preset: Some(Preset {
            issuer,
            client: RegisteredClient {
                client_id: "nobody-home".into(),
                client_secret: "nobody-home-secret".into(),
            },
            listener,
        }),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    let start = browser.start_login(Some("/a/b")).await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    assert_eq!(
        start.location(),
        Some("/a/b?login_error=temporarily_unavailable")
    );
    let start = browser.start_login(None).await;
    assert_eq!(
        start.location(),
        Some("/?login_error=temporarily_unavailable"),
        "{}",
        start.transcript()
    );

    browser
        .start_login(Some("https://evil.example/"))
        .await
        .assert_problem(400, "invalid-return-to");
    // A link that needs fixing, not a passing outage: still the problem it was.
    browser
        .get("/auth/login?prompt=sometimes")
        .await
        .assert_problem(400, "invalid-request");
}
