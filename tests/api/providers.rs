//! Several identity providers side by side (issue 10): two real provider instances, on
//! 127.0.0.2 and 127.0.0.3, each with its own keys and its own client for one gatehouse.
//! Each session refreshes, revokes and ends at its own provider; a code from one provider
//! with the state of a login started at the other is refused unredeemed; a back-channel
//! logout from one ends none of the other's sessions.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::echo::spawn_echo;
use crate::helpers::logout_tokens::{post_logout_token, sign, unix_now};
use crate::helpers::processes::{shared_provider, ProviderOptions, ProviderProcess};
use crate::helpers::{
    grants_at, register_client, spawn_app_with, AppOptions, Browser, Frontend, Preset, Provider,
    RegisteredClient, Route, SessionKeys, TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);

struct TwoProviders {
    app: TestApp,
    second: ProviderProcess,
    second_client: RegisteredClient,
}

/// gatehouse with `main` (the shared provider) and `second` (a provider of its own on
/// 127.0.0.3), a route to an echo upstream, and long sessions.
async fn two_providers() -> TwoProviders {
    two_providers_with(None).await
}

async fn two_providers_with(frontend: Option<Frontend>) -> TwoProviders {
    let second = ProviderProcess::start(&ProviderOptions {
        host: "127.0.0.3",
        ..ProviderOptions::default()
    });
    let echo = spawn_echo().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let main_issuer = shared_provider().issuer.clone();
    let main_client = register_client(&main_issuer, &base).await;
    let second_client = register_client(&second.issuer, &base).await;
    let app = spawn_app_with(AppOptions {
        preset: Some(Preset {
            issuer: main_issuer,
            client: main_client,
            listener,
        }),
        session: SessionKeys::long(),
        providers: vec![Provider::new(
            "second",
            &second.issuer,
            &second_client.client_id,
        )],
        routes: vec![Route::new("/api", &echo.base)],
        frontend,
        env: vec![
            ("GATEHOUSE_DEFAULT_PROVIDER".into(), "main".into()),
            (
                "GATEHOUSE_PROVIDERS__SECOND__CLIENT_SECRET".into(),
                second_client.client_secret.clone(),
            ),
        ],
        ..AppOptions::default()
    })
    .await;
    app.wait_until_ready().await;
    TwoProviders {
        app,
        second,
        second_client,
    }
}

impl TwoProviders {
    async fn main_counts(&self) -> Value {
        grants_at(&self.app.issuer, &self.app.client_id).await
    }

    async fn second_counts(&self) -> Value {
        grants_at(&self.second.issuer, &self.second_client.client_id).await
    }
}

/// A login at `provider` (by name) as `user`, walked through that provider's pages.
async fn login_at(browser: &mut Browser<'_>, provider: &str, user: &str) {
    let start = browser
        .get(&format!("/auth/login?provider={provider}"))
        .await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    let authorize = start.location().expect("to the provider").to_owned();
    let callback = browser.authenticate_at_provider(&authorize, user).await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "callback: {}", done.transcript());
}

fn count(counts: &Value, what: &str) -> u64 {
    counts[what].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn each_session_refreshes_revokes_and_ends_at_its_own_provider() {
    let bed = two_providers().await;
    let app = &bed.app;
    let mut stranger = app.browser();
    stranger
        .get("/auth/login?provider=third")
        .await
        .assert_problem(400, "invalid-request");
    let listed = stranger.get("/auth/providers").await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json(),
        serde_json::json!({
            "default": "main",
            "providers": [
                {"name": "main", "login_url": "/auth/login?provider=main"},
                {"name": "second", "login_url": "/auth/login?provider=second"},
            ],
        })
    );
    let mut at_main = app.browser();
    login_at(&mut at_main, "main", "alice").await;
    let mut at_second = app.browser();
    login_at(&mut at_second, "second", "alice").await;

    assert_eq!(
        at_main.api_get("/auth/user").await.json()["session"]["provider"],
        "main"
    );
    assert_eq!(
        at_second.api_get("/auth/user").await.json()["session"]["provider"],
        "second"
    );
    assert_eq!(count(&bed.main_counts().await, "authorization_code"), 1);
    assert_eq!(count(&bed.second_counts().await, "authorization_code"), 1);

    // Both access tokens expire; each session refreshes at its own provider.
    app.clock.advance(HOUR + Duration::from_secs(1));
    assert_eq!(at_main.api_get("/api/x").await.status, 200);
    assert_eq!(count(&bed.main_counts().await, "refresh_token"), 1);
    assert_eq!(count(&bed.second_counts().await, "refresh_token"), 0);
    assert_eq!(at_second.api_get("/api/x").await.status, 200);
    assert_eq!(count(&bed.main_counts().await, "refresh_token"), 1);
    assert_eq!(count(&bed.second_counts().await, "refresh_token"), 1);

    // Logging out revokes at the session's provider and sends the browser to its
    // end-session endpoint.
    let main_logout = at_main.api_post("/auth/logout", Vec::new()).await;
    assert_eq!(main_logout.status, 200, "{}", main_logout.transcript());
    let next = main_logout.json()["redirect_to"]
        .as_str()
        .expect("redirect_to")
        .to_owned();
    let next = at_main.get(&next).await; // the continuation on gatehouse
    let next = next.location().expect("to the provider");
    assert!(next.starts_with(&app.issuer), "{next}");
    assert!(count(&bed.main_counts().await, "revoked") >= 1);
    assert_eq!(count(&bed.second_counts().await, "revoked"), 0);
    assert_eq!(at_second.api_get("/api/x").await.status, 200, "untouched");

    let second_logout = at_second.api_post("/auth/logout", Vec::new()).await;
    let next = second_logout.json()["redirect_to"]
        .as_str()
        .expect("redirect_to")
        .to_owned();
    let next = at_second.get(&next).await;
    let next = next.location().expect("to the provider");
    assert!(next.starts_with(&bed.second.issuer), "{next}");
    assert!(count(&bed.second_counts().await, "revoked") >= 1);
}

#[tokio::test]
async fn a_code_from_one_provider_with_the_state_of_the_other_is_refused_unredeemed() {
    let bed = two_providers().await;
    let app = &bed.app;

    // The attacker obtains a code at `second` and does not redeem it.
    let mut attacker = app.browser();
    let start = attacker.get("/auth/login?provider=second").await;
    let callback = attacker
        .authenticate_at_provider(start.location().expect("to second"), "mallory")
        .await;
    let callback = url::Url::parse(&callback).expect("callback url");
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let code = param("code").expect("code from second");
    let iss = param("iss").expect("second says who it is (RFC 9207)");
    assert_eq!(iss, bed.second.issuer);

    // Each time a victim logs in at `main`, the attacker's code replaces the victim's on
    // the way back, with the victim's state: with second's `iss` as is, with the tell-tale
    // `iss` stripped, and with it forged to main's.
    for iss in [Some(iss.as_str()), None, Some(app.issuer.as_str())] {
        // The victim's login at `main` goes as far as the callback URL, whose state the
        // attacker's code is paired with.
        let mut victim = app.browser();
        let start = victim.get("/auth/login?provider=main").await;
        let own_callback = victim
            .authenticate_at_provider(start.location().expect("to main"), "victim")
            .await;
        let state = url::Url::parse(&own_callback)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "state")
            .expect("state")
            .1
            .into_owned();
        let mut query = vec![("code", code.as_str()), ("state", state.as_str())];
        if let Some(iss) = iss {
            query.push(("iss", iss));
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        let answer = victim.get(&format!("/auth/callback?{query}")).await;
        assert_eq!(answer.status, 400, "iss {iss:?}: {}", answer.transcript());
        assert!(
            victim.session_cookie().is_none(),
            "no session from a foreign code"
        );
    }
    let second = bed.second_counts().await;
    assert_eq!(
        (
            count(&second, "authorization_code"),
            count(&second, "authorization_code_errors")
        ),
        (0, 0),
        "second's token endpoint never saw its code"
    );
    // Only with `iss` forged to main's does the code pass the issuer check; it then goes
    // to main's token endpoint (the login's own provider), which does not know it.
    let main = bed.main_counts().await;
    assert_eq!(
        (
            count(&main, "authorization_code"),
            count(&main, "authorization_code_errors")
        ),
        (0, 1),
        "{main}"
    );
}

#[tokio::test]
async fn a_back_channel_logout_from_one_provider_ends_none_of_the_others_sessions() {
    let bed = two_providers().await;
    let app = &bed.app;
    let mut at_main = app.browser();
    login_at(&mut at_main, "main", "alice").await;
    let mut at_second = app.browser();
    login_at(&mut at_second, "second", "alice").await;

    // `second` logs alice out (by `sub`), signed with its own key.
    let token = sign(
        &bed.second.issuer,
        json!({}),
        json!({
            "iss": bed.second.issuer, "aud": bed.second_client.client_id, "iat": unix_now(),
            "jti": crate::helpers::random_name("jti"), "sub": "alice",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }),
    )
    .await;
    let answer = post_logout_token(app, &token).await;
    assert_eq!(answer.status, 200, "{}", answer.transcript());

    assert_eq!(at_second.api_get("/api/x").await.status, 401, "ended");
    assert_eq!(
        at_main.api_get("/api/x").await.status,
        200,
        "main's alice is another user"
    );

    // The same token claiming to come from `main` but signed by `second` is refused.
    let forged = sign(
        &bed.second.issuer,
        json!({}),
        json!({
            "iss": app.issuer, "aud": app.client_id, "iat": unix_now(),
            "jti": crate::helpers::random_name("jti"), "sub": "alice",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }),
    )
    .await;
    assert_eq!(post_logout_token(app, &forged).await.status, 400);
    assert_eq!(at_main.api_get("/api/x").await.status, 200);
}

/// The demo SPA offers one login button per provider: the default one, and one for each
/// other that /auth/providers lists, each coming back to the page.
#[tokio::test]
async fn the_demo_spa_offers_a_login_at_each_provider() {
    let bed = two_providers_with(Some(Frontend::dir(
        crate::helpers::processes::repo_root().join("static"),
    )))
    .await;
    let app = &bed.app;
    let chrome = crate::helpers::webdriver::Chrome::start().await;
    let outcome = chrome
        .run_scenario("browser-two-providers", async {
            chrome.goto(&format!("{}/", app.base)).await;
            chrome.wait_for_visible("anonymous").await;
            let links = chrome
                .wait_for(
                    "a login button for the second provider",
                    "const links = [...document.querySelectorAll('#anonymous a')]; \
                     return links.length === 2 \
                       ? links.map((a) => [a.textContent, a.getAttribute('href')]) : null;",
                )
                .await;
            assert_eq!(
                links,
                json!([
                    ["Log in", "/auth/login?returnTo=%2F"],
                    [
                        "Log in at second",
                        "/auth/login?provider=second&returnTo=%2F"
                    ],
                ])
            );
        })
        .await;
    chrome.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    // Each leads to its provider.
    let mut browser = app.browser();
    let start = browser
        .get("/auth/login?provider=second&returnTo=%2F")
        .await;
    assert!(start
        .location()
        .is_some_and(|l| l.starts_with(&bed.second.issuer)));
}
