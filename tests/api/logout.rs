use secrecy::ExposeSecret;

use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::{spawn_app, spawn_app_with, AppOptions};

#[tokio::test]
async fn logout_revokes_at_the_provider_and_forgets_everything() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let tokens = browser.tokens().await;
    let refresh = tokens
        .refresh_token
        .as_ref()
        .expect("refresh token")
        .expose_secret()
        .to_owned();
    assert_eq!(
        app.introspect(&refresh).await["active"],
        true,
        "live before logout"
    );
    assert!(!app.session_data_dump().await.is_empty());

    let user = browser.api_get("/auth/user").await.json();
    let logout_url = user["session"]["logout_url"]
        .as_str()
        .expect("logout_url")
        .to_owned();

    // Without the session's sid, a cross-site link cannot log anybody out.
    browser
        .get("/auth/logout?sid=guess")
        .await
        .assert_problem(400, "invalid-request");
    assert_eq!(browser.api_get("/auth/user").await.status, 200);

    let response = browser.get(&logout_url).await;
    assert_eq!(response.status, 302);
    let location = url::Url::parse(response.location().expect("location")).expect("absolute");
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/session/end?", app.issuer)),
        "{location}"
    );
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["client_id"], app.client_id);
    assert_eq!(params["post_logout_redirect_uri"], format!("{}/", app.base));
    assert_eq!(params["id_token_hint"], tokens.id_token.expose_secret());
    assert!(
        response
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("__Host-gatehouse=;")),
        "cookie expired"
    );

    assert_eq!(
        app.introspect(&refresh).await["active"],
        false,
        "refresh token revoked"
    );
    assert!(
        app.session_data_dump().await.is_empty(),
        "session and indices gone: {:?}",
        app.session_data_dump().await.keys()
    );

    let mut old_cookie = app.browser();
    old_cookie
        .cookies
        .insert(app.cookie_name().to_owned(), cookie);
    old_cookie
        .api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn post_logout_from_the_spa_names_the_next_stop() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    browser.login("bob").await;

    browser
        .request(reqwest::Method::POST, "/auth/logout", &[], None)
        .await
        .assert_problem(401, "csrf-header-required");
    assert_eq!(
        browser.api_get("/auth/user").await.status,
        200,
        "still logged in"
    );

    let response = browser.api_post("/auth/logout", Vec::new()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let next = response.json()["redirect_to"]
        .as_str()
        .expect("redirect_to")
        .to_owned();
    // On gatehouse itself: the continuation carries the ID token to the provider.
    assert!(
        next.starts_with(&format!("{}/auth/logout/continue?t=", app.base)),
        "{next}"
    );
    browser
        .api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");
    // Only the continuation is left: a one-time record that lives a minute.
    let left = app.session_data_dump().await;
    assert!(
        left.keys().all(|key| key.contains(":l:")),
        "{:?}",
        left.keys()
    );
    assert_eq!(left.len(), 1);

    // Logging out without a session still sends the browser somewhere sensible.
    let again = browser.api_post("/auth/logout", Vec::new()).await;
    assert_eq!(again.status, 200);
}

/// A provider without an end-session endpoint (Google has none): logging out still revokes
/// the refresh token there and ends the local session, and the browser lands on
/// `post_logout_redirect`.
#[tokio::test]
async fn without_an_end_session_endpoint_logout_lands_on_the_post_logout_redirect() {
    let provider = ProviderProcess::start(&ProviderOptions {
        end_session: false,
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        env: vec![(
            "GATEHOUSE_PROVIDERS__MAIN__POST_LOGOUT_REDIRECT".into(),
            "/goodbye".into(),
        )],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let refresh = browser.refresh_token().await;

    let answer = browser.api_post("/auth/logout", Vec::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.transcript());
    assert_eq!(
        answer.json()["redirect_to"],
        format!("{}/goodbye", app.base),
        "no end-session endpoint to visit"
    );
    assert_eq!(app.introspect(&refresh).await["active"], false, "revoked");
    browser
        .api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");

    // The GET form of logout from another session goes there directly too.
    browser.login("alice").await;
    let user = browser.api_get("/auth/user").await.json();
    let logout_url = user["session"]["logout_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let answer = browser.get(&logout_url).await;
    assert_eq!(answer.status, 302);
    assert_eq!(
        answer.location(),
        Some(format!("{}/goodbye", app.base).as_str())
    );
    assert!(browser.session_cookie().is_none());
}
