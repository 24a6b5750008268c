use secrecy::ExposeSecret;

use crate::helpers::check_online::check_online;
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::{spawn_app, spawn_app_with, urlencode, AppOptions};

#[tokio::test]
async fn alice_logs_in_and_the_spa_sees_her_claims() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let callback = browser.login("alice").await;
    assert_eq!(callback.location(), Some("/"), "default returnTo is /");

    let user = browser.api_get("/auth/user").await;
    assert_eq!(user.status, 200, "{}", user.body);
    let body = user.json();
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["claims"]["name"], "Alice");
    assert_eq!(body["claims"]["email"], "alice@example.test");
    assert_eq!(
        body["claims"]["roles"],
        serde_json::json!(["support", "user"])
    );
    for protocol_claim in ["nonce", "at_hash", "iss", "aud", "exp", "iat", "sid"] {
        assert!(
            body["claims"].get(protocol_claim).is_none(),
            "{protocol_claim} leaked into claims: {body}"
        );
    }
    let session = &body["session"];
    assert_eq!(session["provider"], "main");
    assert!(
        session["expires_in"]
            .as_i64()
            .is_some_and(|s| s > 8 * 3600 - 60),
        "{session}"
    );
    assert!(
        session["idle_expires_in"]
            .as_i64()
            .is_some_and(|s| s > 29 * 60),
        "{session}"
    );
    assert!(
        session["logout_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("/auth/logout?sid=")),
        "{session}"
    );
    assert_eq!(user.headers["cache-control"], "no-store");
}

#[tokio::test]
async fn user_endpoint_needs_the_anti_forgery_header_and_a_session() {
    let app = spawn_app().await;
    let mut browser = app.browser();

    browser
        .api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");
    browser
        .get("/auth/user")
        .await
        .assert_problem(401, "csrf-header-required");

    browser.login("alice").await;
    browser
        .get("/auth/user")
        .await
        .assert_problem(401, "csrf-header-required");
    let wrong_value = browser
        .request(reqwest::Method::GET, "/auth/user", &[("x-csrf", "0")], None)
        .await;
    wrong_value.assert_problem(401, "csrf-header-required");
    assert_eq!(browser.api_get("/auth/user").await.status, 200);

    // A forged cookie (right shape, wrong secret) is no session, not an error.
    let cookie = browser.session_cookie().expect("cookie");
    let (id, _) = cookie.split_once('.').expect("id.secret");
    let forged = format!("{id}.{}", "A".repeat(43));
    browser.cookies.insert(app.cookie_name().to_owned(), forged);
    browser
        .api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn session_cookie_is_locked_down_and_no_token_reaches_the_browser() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let callback = browser.login("alice").await;

    let session_set_cookie = callback
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-gatehouse="))
        .expect("session Set-Cookie");
    let cookie = cookie::Cookie::parse(session_set_cookie.clone()).expect("parses");
    assert_eq!(cookie.name(), "__Host-gatehouse");
    assert_eq!(cookie.http_only(), Some(true), "{session_set_cookie}");
    assert_eq!(cookie.secure(), Some(true), "{session_set_cookie}");
    assert_eq!(
        cookie.same_site(),
        Some(cookie::SameSite::Strict),
        "{session_set_cookie}"
    );
    assert_eq!(cookie.path(), Some("/"), "{session_set_cookie}");
    assert_eq!(cookie.domain(), None, "{session_set_cookie}");
    let (id, secret) = cookie.value().split_once('.').expect("id.secret");
    assert_eq!(
        (id.len(), secret.len()),
        (43, 43),
        "two 256-bit base64url values"
    );

    // The login-binding cookie is Lax (it must survive the provider's redirect back) and
    // is cleared by the callback.
    let start = app.browser().start_login(None).await;
    let login_cookie = start
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-gatehouse-login="))
        .expect("login cookie");
    let login_cookie = cookie::Cookie::parse(login_cookie).expect("parses");
    assert_eq!(login_cookie.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(login_cookie.http_only(), Some(true));
    assert_eq!(login_cookie.secure(), Some(true));
    assert!(
        callback
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("__Host-gatehouse-login=;")),
        "login cookie cleared"
    );

    let tokens = browser.tokens().await;
    let refresh = tokens
        .refresh_token
        .as_ref()
        .expect("provider issued a refresh token")
        .expose_secret()
        .to_owned();
    let access = tokens.access_token.expose_secret().to_owned();
    let id_token = tokens.id_token.expose_secret().to_owned();

    assert_eq!(browser.api_get("/auth/user").await.status, 200);
    let logout_url = browser.api_get("/auth/user").await.json()["session"]["logout_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let logout = browser.get(&logout_url).await;
    assert_eq!(logout.status, 302);

    for response in &browser.seen {
        let text = response.transcript();
        assert!(
            !text.contains(&access),
            "access token in a response: {text}"
        );
        assert!(
            !text.contains(&refresh),
            "refresh token in a response: {text}"
        );
        if text.contains(&id_token) {
            // The one place the ID token may go: RP-initiated logout's id_token_hint
            // (operators can switch that off with end_session_id_token_hint = false).
            let location = response.location().expect("only in a redirect");
            let url = url::Url::parse(location).expect("absolute");
            assert!(
                url.as_str()
                    .starts_with(&format!("{}/session/end", app.issuer)),
                "{location}"
            );
            let hint = url
                .query_pairs()
                .find(|(k, _)| k == "id_token_hint")
                .map(|(_, v)| v.into_owned());
            assert_eq!(hint.as_deref(), Some(id_token.as_str()));
            assert!(
                !response.body.contains(&id_token)
                    && response
                        .headers
                        .iter()
                        .filter(|(n, _)| *n != "location")
                        .all(|(_, v)| !String::from_utf8_lossy(v.as_bytes()).contains(&id_token))
            );
        }
    }

    let logs = crate::helpers::captured_logs();
    for (what, token) in [
        ("access", &access),
        ("refresh", &refresh),
        ("id", &id_token),
    ] {
        assert!(!logs.contains(token.as_str()), "{what} token in the logs");
    }
    assert!(!logs.contains(cookie.value()), "session cookie in the logs");
}

#[tokio::test]
async fn hostile_return_to_values_are_refused_before_the_provider() {
    let app = spawn_app().await;
    let hostile = [
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "http://evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "/%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%5C%5Cevil.example",
        "/x\ny",
        "/x\ty",
        "/x%0D%0ALocation:%20http://evil",
        "/x%00",
        " /x",
        "/x y",
        "/%09/evil.example",
        "/%252F%252Fevil.example",
        "evil.example",
    ];
    for value in hostile {
        let mut browser = app.browser();
        let response = browser.start_login(Some(value)).await;
        response.assert_problem(400, "invalid-return-to");
        assert!(
            response.set_cookies().is_empty(),
            "{value:?} started a login"
        );
    }
    assert_eq!(
        app.session_data_dump().await.len(),
        0,
        "no login state stored for hostile values"
    );

    let mut browser = app.browser();
    let callback = browser
        .login_with("alice", Some("/orders/7?tab=open%20items#top"))
        .await;
    assert_eq!(callback.status, 302);
    assert_eq!(callback.location(), Some("/orders/7?tab=open%20items#top"));
}

#[tokio::test]
async fn a_planted_session_cookie_is_never_the_session_after_login() {
    let app = spawn_app().await;

    // Attacker-chosen value of the right shape.
    let planted = format!("{}.{}", "B".repeat(43), "C".repeat(43));
    let mut browser = app.browser();
    browser
        .cookies
        .insert(app.cookie_name().to_owned(), planted.clone());
    browser.login("alice").await;
    let after = browser.session_cookie().expect("cookie");
    assert_ne!(after, planted);
    assert!(
        !after.starts_with(&"B".repeat(43)),
        "session id reused from the planted cookie"
    );

    // A real earlier session: logging in again replaces it with a new id, and the old
    // cookie stops working.
    let before = after;
    browser.login("alice").await;
    let renewed = browser.session_cookie().expect("cookie");
    assert_ne!(renewed.split('.').next(), before.split('.').next());
    let mut old = app.browser();
    old.cookies.insert(app.cookie_name().to_owned(), before);
    old.api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");
    assert_eq!(browser.api_get("/auth/user").await.status, 200);
}

#[tokio::test]
async fn redis_holds_neither_tokens_nor_the_session_secret() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let cookie = browser.session_cookie().expect("cookie");
    let (id, secret) = cookie.split_once('.').expect("id.secret");
    let tokens = browser.tokens().await;

    let dump = app.redis_dump().await;
    assert!(
        dump.keys().any(|k| k.contains(":s:")),
        "a session key exists: {:?}",
        dump.keys()
    );
    assert!(
        dump.keys().filter(|k| k.contains(":x:")).count() >= 2,
        "sub and sid indices: {:?}",
        dump.keys()
    );
    let mut haystack: Vec<u8> = Vec::new();
    for (key, values) in &dump {
        haystack.extend_from_slice(key.as_bytes());
        for value in values {
            haystack.extend_from_slice(value);
            haystack.push(b'\n');
        }
    }
    let haystack = String::from_utf8_lossy(&haystack);
    let needles = [
        (
            "access token",
            tokens.access_token.expose_secret().to_owned(),
        ),
        (
            "refresh token",
            tokens
                .refresh_token
                .as_ref()
                .expect("refresh")
                .expose_secret()
                .to_owned(),
        ),
        ("ID token", tokens.id_token.expose_secret().to_owned()),
        (
            "ID token payload",
            tokens
                .id_token
                .expose_secret()
                .split('.')
                .nth(1)
                .expect("payload")
                .to_owned(),
        ),
        ("session secret", secret.to_owned()),
        ("session id", id.to_owned()),
        ("user's email", "alice@example.test".to_owned()),
    ];
    for (what, needle) in needles {
        assert!(!haystack.contains(&needle), "{what} found in Redis");
    }
}

#[tokio::test]
async fn a_valid_return_to_survives_url_encoding_round_trip() {
    // The parameters travel in the browser's URL only without pushed authorization.
    let app = spawn_app_with(AppOptions {
        env: vec![(
            "GATEHOUSE_PROVIDERS__MAIN__PUSHED_AUTHORIZATION".into(),
            "never".into(),
        )],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    let response = browser
        .get(&format!("/auth/login?returnTo={}", urlencode("/a/b?c=d")))
        .await;
    assert_eq!(response.status, 302);
    let location = url::Url::parse(response.location().expect("location")).expect("url");
    assert!(location
        .as_str()
        .starts_with(&format!("{}/auth", app.issuer)));
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["client_id"], app.client_id);
    assert_eq!(
        params["redirect_uri"],
        format!("{}/auth/callback", app.base)
    );
    assert!(params["scope"].split(' ').any(|s| s == "openid"));
    for key in ["state", "nonce", "code_challenge"] {
        assert!(params[key].len() >= 22, "{key} too short");
    }
    assert!(
        !location.as_str().contains("/a/b"),
        "returnTo stays server-side"
    );
}

#[tokio::test]
async fn hmac_signed_id_tokens_are_refused_even_when_the_provider_advertises_them() {
    use crate::helpers::{
        register_client_with, shared_provider, spawn_app_with, AppOptions, Preset,
    };
    let provider = shared_provider();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let client = register_client_with(
        &provider.issuer,
        &base,
        serde_json::json!({"id_token_signed_response_alg": "HS256"}),
    )
    .await;
    let app = spawn_app_with(AppOptions {
        preset: Some(Preset {
            issuer: provider.issuer.clone(),
            client,
            listener,
        }),
        ..AppOptions::default()
    })
    .await;
    app.wait_until_ready().await;
    let mut browser = app.browser();
    let callback = browser.login_with("alice", None).await;
    callback.assert_problem(400, "login-failed");
    assert!(browser.session_cookie().is_none());
    assert_eq!(app.session_key_count().await, 0);
    assert!(
        crate::helpers::captured_logs().contains("Disallowed signature algorithm"),
        "refused for its algorithm"
    );
}

fn pushed_authorization(setting: &str) -> Vec<(String, String)> {
    vec![(
        "GATEHOUSE_PROVIDERS__MAIN__PUSHED_AUTHORIZATION".into(),
        setting.into(),
    )]
}

/// RFC 9126: with a provider that offers pushed authorization requests, the parameters go
/// over the back channel and the browser carries only a reference to them.
#[tokio::test]
async fn a_provider_that_offers_pushed_requests_gets_them_and_the_login_works() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let start = browser.start_login(Some("/orders")).await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    let location = url::Url::parse(start.location().expect("location")).expect("url");
    let keys: Vec<String> = location
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    assert_eq!(keys, vec!["client_id", "request_uri"], "{location}");
    let callback = browser
        .authenticate_at_provider(location.as_str(), "alice")
        .await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.transcript());
    assert_eq!(done.location(), Some("/orders"));
    assert!(browser.session_cookie().is_some());
}

#[tokio::test]
async fn a_provider_that_requires_pushed_requests_logs_users_in_unless_they_are_turned_off() {
    let provider = ProviderProcess::start(&ProviderOptions {
        pushed_authorization: "required",
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        ..AppOptions::default()
    })
    .await;
    app.browser().login("alice").await;

    // Turned off, the provider refuses the login, and the online check says why first.
    let never = spawn_app_with(AppOptions {
        provider: Some(&provider),
        env: pushed_authorization("never"),
        ..AppOptions::default()
    })
    .await;
    let mut browser = never.browser();
    let start = browser.start_login(None).await;
    let callback = browser
        .authenticate_at_provider(start.location().expect("location"), "alice")
        .await;
    let back = browser.get(&callback).await;
    assert_eq!(
        back.location(),
        Some("/?login_error=invalid_request"),
        "the provider refused the unpushed request: {}",
        back.transcript()
    );
    assert!(browser.session_cookie().is_none());
    let output = check_online(&provider.issuer, "pushed_authorization = \"never\"");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("requires pushed authorization requests"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("pushed authorization requests: yes (required)"),
        "{stdout}"
    );
    assert_eq!(check_online(&provider.issuer, "").status.code(), Some(0));
}

#[tokio::test]
async fn pushed_authorization_always_needs_a_provider_that_offers_it() {
    let provider = ProviderProcess::start(&ProviderOptions {
        pushed_authorization: "off",
        ..ProviderOptions::default()
    });
    let output = check_online(&provider.issuer, "pushed_authorization = \"always\"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("advertises no pushed authorization request endpoint"));
    // Where pushing is optional, the same provider is fine.
    assert_eq!(check_online(&provider.issuer, "").status.code(), Some(0));
}
