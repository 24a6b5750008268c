use crate::helpers::spawn_app;

fn query_param(url: &str, name: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    parsed.to_string()
}

#[tokio::test]
async fn callback_with_missing_or_unknown_state_creates_no_session() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let callback = browser.callback_url_for("alice").await;

    let missing = browser.get(&with_param(&callback, "state", None)).await;
    missing.assert_problem(400, "invalid-callback");
    let wrong = browser
        .get(&with_param(&callback, "state", Some("not-the-state")))
        .await;
    wrong.assert_problem(400, "login-state-invalid");
    let empty = browser.get(&with_param(&callback, "state", Some(""))).await;
    empty.assert_problem(400, "invalid-callback");
    let doubled = browser.get(&format!("{callback}&state=x")).await;
    doubled.assert_problem(400, "invalid-request");

    assert!(browser.session_cookie().is_none());
    assert_eq!(app.session_key_count().await, 0);

    // None of that consumed the real state: the genuine callback still works.
    let genuine = browser.get(&callback).await;
    assert_eq!(genuine.status, 302, "{}", genuine.body);
    assert_eq!(app.session_key_count().await, 1);
}

#[tokio::test]
async fn a_callback_from_another_browser_is_refused_and_burns_the_state() {
    let app = spawn_app().await;
    let mut victim = app.browser();
    let callback = victim.callback_url_for("alice").await;

    // The attacker's browser has no login cookie, or its own one from another login: no
    // session, and back to the app with the error (a browser navigated here).
    let mut attacker = app.browser();
    let answer = attacker.get(&callback).await;
    assert_eq!(answer.status, 302, "{}", answer.transcript());
    assert_eq!(answer.location(), Some("/?login_error=login_state_invalid"));
    let mut attacker_with_own = app.browser();
    attacker_with_own.start_login(None).await;
    // The state went with the first try: a 400 now, nothing to go back to.
    attacker_with_own
        .get(&callback)
        .await
        .assert_problem(400, "login-state-invalid");

    assert!(attacker.session_cookie().is_none() && attacker_with_own.session_cookie().is_none());
    // Single use: the state is gone even for the right browser now.
    victim
        .get(&callback)
        .await
        .assert_problem(400, "login-state-invalid");
    assert_eq!(app.session_key_count().await, 0);
}

#[tokio::test]
async fn a_replayed_callback_finds_nothing() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let start = browser.start_login(None).await;
    let login_cookie = browser.cookies.clone();
    let callback = browser
        .authenticate_at_provider(start.location().expect("location"), "alice")
        .await;
    assert_eq!(browser.get(&callback).await.status, 302);
    assert_eq!(app.session_key_count().await, 1);

    // Replay with the original login cookie restored, as an attacker with the whole
    // browser state would.
    let mut replay = app.browser();
    replay.cookies = login_cookie;
    replay
        .get(&callback)
        .await
        .assert_problem(400, "login-state-invalid");
    assert_eq!(app.session_key_count().await, 1, "no second session");
}

#[tokio::test]
async fn cancelling_at_the_provider_goes_back_to_the_app_with_the_error_and_no_session() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let start = browser.start_login(Some("/orders?tab=2#list")).await;
    let authorize = start.location().expect("location").to_owned();

    // Walk to the provider's login page and press its Cancel link.
    let mut url = authorize;
    let page_url = loop {
        let response = browser
            .provider_http
            .get(&url)
            .send()
            .await
            .expect("provider");
        if response.status().is_redirection() {
            let location = response.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
            url = if location.starts_with('/') {
                format!("{}{location}", app.issuer)
            } else {
                location
            };
            continue;
        }
        break url;
    };
    let abort = browser
        .provider_http
        .get(format!("{page_url}/abort"))
        .send()
        .await
        .expect("abort");
    assert!(abort.status().is_redirection());
    let mut location = abort.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    while !location.starts_with(&app.base) {
        let absolute = if location.starts_with('/') {
            format!("{}{location}", app.issuer)
        } else {
            location.clone()
        };
        let next = browser
            .provider_http
            .get(&absolute)
            .send()
            .await
            .expect("provider");
        location = next.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
    }
    assert_eq!(query_param(&location, "error"), "access_denied");

    let response = browser.get(&location).await;
    assert_eq!(response.status, 302, "{}", response.transcript());
    assert_eq!(
        response.location(),
        Some("/orders?tab=2&login_error=access_denied#list"),
        "back in the app, which is told why"
    );
    assert!(browser.session_cookie().is_none());
    assert_eq!(app.session_key_count().await, 0);

    // The state was used: the same answer again is a 400, not a second trip to the app.
    browser
        .get(&location)
        .await
        .assert_problem(400, "login-state-invalid");
    // A provider error with a state nobody issued stays a 400 too.
    browser
        .get(&with_param(&location, "state", Some("forged")))
        .await
        .assert_problem(400, "login-state-invalid");
}

#[tokio::test]
async fn a_silent_login_returns_to_the_app_with_login_required_or_signs_the_user_in() {
    let app = spawn_app().await;
    let mut browser = app.browser();

    // Nobody is logged in at the provider: it answers prompt=none with login_required.
    let start = browser.get("/auth/login?prompt=none&returnTo=%2Fx").await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    let authorize = start.location().expect("to the provider").to_owned();
    let callback = browser.authenticate_at_provider(&authorize, "unused").await;
    assert_eq!(query_param(&callback, "error"), "login_required");
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.transcript());
    assert_eq!(back.location(), Some("/x?login_error=login_required"));
    assert!(browser.session_cookie().is_none());
    assert_eq!(app.session_key_count().await, 0);

    // Once the browser has a session at the provider, the same silent login signs in.
    browser.login("alice").await;
    browser.cookies.clear(); // gatehouse's cookies only; the provider's stay
    let start = browser.get("/auth/login?prompt=none&returnTo=%2Fx").await;
    let authorize = start.location().expect("to the provider").to_owned();
    let callback = browser.authenticate_at_provider(&authorize, "unused").await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.transcript());
    assert_eq!(back.location(), Some("/x"));
    assert!(
        browser.session_cookie().is_some(),
        "signed in without a page"
    );
}

#[tokio::test]
async fn a_callback_naming_another_issuer_is_refused() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let callback = browser.callback_url_for("alice").await;
    let mixed_up = with_param(&callback, "iss", Some("https://attacker.example"));
    browser
        .get(&mixed_up)
        .await
        .assert_problem(400, "invalid-callback");

    // The provider advertises RFC 9207, so a response without `iss` is refused too.
    let mut second = app.browser();
    let callback = second.callback_url_for("alice").await;
    second
        .get(&with_param(&callback, "iss", None))
        .await
        .assert_problem(400, "invalid-callback");
    assert_eq!(app.session_key_count().await, 0);
}
