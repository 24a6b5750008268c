//! Step-up authentication (issue 25): a route's `[routes.require] acr, amr,
//! max_auth_age_secs`, an upstream's RFC 9470 challenge, and the login parameters
//! `acr_values`, `max_age` and `prompt=login`, checked again at the callback. Each test that
//! moves the test provider (its answer, its clock) has a provider of its own.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::echo::spawn_echo;
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::{spawn_app_with, AppOptions, Browser, Resp, Route, TestApp};

/// The test provider's acr values (tests/support/provider/second_factor.mjs).
const PWD_ACR: &str = "urn:gatehouse:test:pwd";
const MFA_ACR: &str = "urn:gatehouse:test:mfa";

async fn app_with(provider: Option<&ProviderProcess>, routes: Vec<Route>) -> TestApp {
    spawn_app_with(AppOptions {
        provider,
        routes,
        env: vec![(
            "GATEHOUSE_PROVIDERS__MAIN__ALLOWED_ACR_VALUES".to_owned(),
            format!("[\"{PWD_ACR}\", \"{MFA_ACR}\"]"),
        )],
        ..AppOptions::default()
    })
    .await
}

async fn provider_switch(provider: &ProviderProcess, path_and_query: &str) {
    reqwest::Client::new()
        .post(format!("{}/__test/{path_and_query}", provider.issuer))
        .send()
        .await
        .expect("provider test switch")
        .error_for_status()
        .expect("switch accepted");
}

/// The SPA's call, naming the page it is on.
async fn call(browser: &mut Browser<'_>, path: &str) -> Resp {
    browser
        .request(
            reqwest::Method::GET,
            path,
            &[("x-csrf", "1"), ("x-return-to", "/pay?step=2")],
            None,
        )
        .await
}

fn www_authenticate(response: &Resp) -> &str {
    response.headers["www-authenticate"]
        .to_str()
        .expect("ascii")
}

/// Follows a step-up answer's `login_url` through the provider as `user`; the callback's
/// answer.
async fn step_up(browser: &mut Browser<'_>, refused: &Resp, user: &str) -> Resp {
    let login_url = refused.json()["login_url"]
        .as_str()
        .expect("login_url")
        .to_owned();
    let start = browser.get(&login_url).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = start.location().expect("to the provider").to_owned();
    let callback = browser.authenticate_at_provider(&authorize, user).await;
    browser.get(&callback).await
}

#[tokio::test]
async fn step_up_by_acr_asks_for_the_second_factor_and_then_the_call_passes() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let app = app_with(
        Some(&provider),
        vec![Route::new("/api/pay", &echo.base).require_acr(&[MFA_ACR])],
    )
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let password_only = browser.session_cookie().expect("session");

    let refused = call(&mut browser, "/api/pay/transfer").await;
    refused.assert_problem(401, "step-up-required");
    assert!(
        echo.seen().is_empty(),
        "the upstream received {:?}",
        echo.seen()
    );
    assert_eq!(
        www_authenticate(&refused),
        format!(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger \
             or more recent authentication is required\", acr_values=\"{MFA_ACR}\""
        )
    );
    let problem = refused.json();
    assert_eq!(problem["acr_values"], MFA_ACR);
    assert_eq!(
        problem["login_url"],
        format!(
            "/auth/login?returnTo=%2Fpay%3Fstep%3D2&provider=main&acr_values={}",
            crate::helpers::urlencode(MFA_ACR)
        )
    );

    let back = step_up(&mut browser, &refused, "alice").await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(back.location(), Some("/pay?step=2"));
    let stepped_up = browser.session_cookie().expect("session");
    assert_ne!(stepped_up, password_only, "a new session for the new login");
    let session = app.session_for(&stepped_up).await.expect("stored");
    assert_eq!(session.data.authentication.acr.as_deref(), Some(MFA_ACR));
    assert_eq!(session.data.authentication.amr, vec!["pwd", "otp"]);
    assert!(session.data.authentication.auth_time.is_some());

    let passed = call(&mut browser, "/api/pay/transfer").await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    assert_eq!(echo.seen(), vec!["/transfer"]);
    // What the login proved stays out of what the SPA reads about the user.
    let user = browser.api_get("/auth/user").await.json();
    for protocol in ["acr", "amr", "auth_time"] {
        assert!(user["claims"].get(protocol).is_none(), "{protocol}: {user}");
    }
}

#[tokio::test]
async fn a_provider_that_answers_a_lower_acr_sends_the_browser_back_and_the_old_session_stays() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let app = app_with(
        Some(&provider),
        vec![Route::new("/api/pay", &echo.base).require_acr(&[MFA_ACR])],
    )
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let before = browser.session_cookie().expect("session");
    let refused = call(&mut browser, "/api/pay/transfer").await;
    refused.assert_problem(401, "step-up-required");

    // From now on the provider signs in with the password alone, whatever is asked.
    provider_switch(&provider, &format!("acr-answer?acr={PWD_ACR}")).await;
    let back = step_up(&mut browser, &refused, "alice").await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert_eq!(
        back.location(),
        Some("/pay?step=2&login_error=insufficient_authentication")
    );
    assert!(
        !back
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{}=", app.cookie_name()))),
        "no session cookie set or cleared: {:?}",
        back.set_cookies()
    );
    assert_eq!(browser.session_cookie().as_deref(), Some(before.as_str()));
    let user = browser.api_get("/auth/user").await;
    assert_eq!(
        user.status, 200,
        "the old session still answers: {}",
        user.body
    );
    assert_eq!(user.json()["sub"], "alice");
    call(&mut browser, "/api/pay/transfer")
        .await
        .assert_problem(401, "step-up-required");
    assert!(echo.seen().is_empty());
}

#[tokio::test]
async fn step_up_by_age_asks_for_a_fresh_login_once_the_clock_passes_the_limit() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let app = app_with(
        Some(&provider),
        vec![Route::new("/api/pay", &echo.base).require_max_auth_age_secs(300)],
    )
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    assert_eq!(call(&mut browser, "/api/pay/a").await.status, 200);

    // gatehouse's clock and the provider's move on together.
    app.clock.advance(Duration::from_secs(301));
    provider_switch(&provider, "clock?advance_secs=301").await;
    let refused = call(&mut browser, "/api/pay/b").await;
    refused.assert_problem(401, "step-up-required");
    assert_eq!(
        www_authenticate(&refused),
        "Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger \
         or more recent authentication is required\", max_age=300"
    );
    let problem = refused.json();
    assert_eq!(problem["max_age"], 300);
    assert_eq!(
        problem["login_url"],
        "/auth/login?returnTo=%2Fpay%3Fstep%3D2&provider=main&max_age=300&prompt=login"
    );
    assert_eq!(echo.seen(), vec!["/a"], "nothing more reached the upstream");

    let back = step_up(&mut browser, &refused, "alice").await;
    assert_eq!(
        back.location(),
        Some("/pay?step=2"),
        "{}",
        back.transcript()
    );
    let passed = call(&mut browser, "/api/pay/b").await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    assert_eq!(echo.seen(), vec!["/a", "/b"]);
}

#[tokio::test]
async fn an_upstreams_challenge_reaches_the_spa_as_the_step_up_problem() {
    let echo = spawn_echo().await;
    let app = app_with(None, vec![Route::new("/api", &echo.base)]).await;
    let mut browser = app.browser();
    browser.login("alice").await;

    let challenge = format!(
        "DPoP algs=\"ES256\", Bearer realm=\"pay\", error=\"insufficient_user_authentication\", \
         error_description=\"MFA needed\", acr_values=\"{MFA_ACR}\", max_age=60"
    );
    let path = format!(
        "/api/challenge?www_authenticate={}",
        crate::helpers::urlencode(&challenge)
    );
    let answer = call(&mut browser, &path).await;
    answer.assert_problem(401, "step-up-required");
    assert_eq!(
        www_authenticate(&answer),
        format!(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger \
             or more recent authentication is required\", acr_values=\"{MFA_ACR}\", max_age=60"
        )
    );
    let problem: Value = answer.json();
    assert_eq!(problem["acr_values"], MFA_ACR);
    assert_eq!(problem["max_age"], 60);
    let login_url = problem["login_url"].as_str().expect("login_url");
    assert!(
        login_url.contains(&format!(
            "acr_values={}&max_age=60",
            crate::helpers::urlencode(MFA_ACR)
        )),
        "{login_url}"
    );
    // The login it names is one gatehouse starts.
    let start = browser.get(login_url).await;
    assert_eq!(start.status, 302, "{}", start.body);

    // The upstream's other 401s pass through as they are.
    let other = "Bearer realm=\"pay\", error=\"invalid_token\"";
    let path = format!(
        "/api/challenge?www_authenticate={}",
        crate::helpers::urlencode(other)
    );
    let answer = call(&mut browser, &path).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.body, "the upstream's own 401");
    assert_eq!(www_authenticate(&answer), other);
}

#[tokio::test]
async fn login_parameters_off_the_allow_list_are_refused_before_the_provider_is_called() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let app = app_with(Some(&provider), Vec::new()).await;
    // The provider is gone: whatever would reach it fails, and shows that it was tried.
    drop(provider);
    let mut browser = app.browser();

    let allowed = browser
        .get(&format!(
            "/auth/login?returnTo=%2Fpay&acr_values={}",
            crate::helpers::urlencode(MFA_ACR)
        ))
        .await;
    assert_eq!(
        allowed.location(),
        Some("/pay?login_error=temporarily_unavailable"),
        "an allowed value goes to the provider: {}",
        allowed.transcript()
    );

    for refused in [
        "acr_values=urn%3Aelsewhere%3Agold",
        &format!(
            "acr_values={}+urn%3Aelsewhere",
            crate::helpers::urlencode(MFA_ACR)
        ),
        "acr_values=",
        "acr_values=%22quoted%22",
        "max_age=-1",
        "max_age=soon",
    ] {
        let answer = browser
            .get(&format!("/auth/login?returnTo=%2Fpay&{refused}"))
            .await;
        answer.assert_problem(400, "invalid-request");
        assert!(answer.location().is_none(), "{refused}");
        assert!(
            answer.set_cookies().is_empty(),
            "{refused}: no login state: {:?}",
            answer.set_cookies()
        );
    }
}

#[test]
fn check_config_online_reports_the_acr_values_the_provider_supports() {
    let issuer = &crate::helpers::shared_provider().issuer;
    let output = crate::helpers::check_online::check_online(
        issuer,
        &format!("allowed_acr_values = [\"{MFA_ACR}\", \"urn:elsewhere:gold\"]"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("acr values (step-up): {PWD_ACR}, {MFA_ACR}")),
        "{stdout}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains(
            "allowed_acr_values not in the provider's acr_values_supported: urn:elsewhere:gold"
        ),
        "{all}"
    );
    assert!(
        !all.contains(&format!("acr_values_supported: {MFA_ACR}")),
        "{all}"
    );
}

#[tokio::test]
async fn what_the_login_proved_is_sealed_once_and_the_user_answer_shows_it_nowhere() {
    let app = app_with(None, Vec::new()).await;
    let mut browser = app.browser();
    let start = browser
        .get(&format!(
            "/auth/login?acr_values={}",
            crate::helpers::urlencode(MFA_ACR)
        ))
        .await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    let authorize = start.location().expect("to the provider").to_owned();
    let callback = browser.authenticate_at_provider(&authorize, "alice").await;
    assert_eq!(browser.get(&callback).await.status, 302);
    let cookie = browser.session_cookie().expect("session");

    let session = app.session_for(&cookie).await.expect("stored");
    let proved = &session.data.authentication;
    assert_eq!(proved.acr.as_deref(), Some(MFA_ACR));
    assert_eq!(proved.amr, vec!["pwd", "otp"]);
    assert!(proved.auth_time.is_some());
    let claims = session.data.claims.to_map();
    assert_eq!(claims["name"], "Alice", "the user's claims are kept");
    // The payload as it was sealed: written again from what it opened to, it has the
    // length of the sealed bytes in Redis less the seal's 41 (version, nonce, tag), so
    // nothing in it was dropped on the way.
    let payload = serde_json::to_string(&*session.data).expect("payload");
    let sealed: Vec<usize> = app
        .redis_dump()
        .await
        .iter()
        .filter(|(key, _)| key.contains(":s:"))
        .flat_map(|(_, fields)| fields.chunks(2))
        .filter(|field| field[0] == b"c")
        .map(|field| field[1].len())
        .collect();
    assert_eq!(
        sealed,
        vec![payload.len() + 41],
        "one session, this payload"
    );
    for proof in ["acr", "amr", "auth_time"] {
        assert!(!claims.contains_key(proof), "{proof} among the claims");
        assert_eq!(
            payload.matches(&format!("\"{proof}\":")).count(),
            1,
            "{proof} once in the sealed payload"
        );
    }

    // What the SPA reads is the claims as they were, without what the login proved.
    let user = browser.api_get("/auth/user").await.json();
    assert_eq!(user["claims"], serde_json::Value::Object(claims));
    for proof in ["acr", "amr", "auth_time"] {
        assert!(user["claims"].get(proof).is_none(), "{proof}: {user}");
    }
}
