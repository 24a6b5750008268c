//! End to end in a real browser: the demo SPA (static/) behind gatehouse, the demo's sample
//! API (demo/sample-api.mjs) as the upstream, the real provider's login forms.

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::helpers::echo::spawn_echo;
use crate::helpers::processes::{repo_root, SampleApi};
use crate::helpers::webdriver::Chrome;
use crate::helpers::{shared_provider, spawn_app_with, AppOptions, Frontend, Route, TestApp};

/// Everything a page's JavaScript can see, gathered inside the page.
const PAGE_VIEW: &str = r#"
return {
  url: location.href,
  cookie: document.cookie,
  local: JSON.stringify(Object.entries(localStorage)),
  session: JSON.stringify(Object.entries(sessionStorage)),
  html: document.documentElement.outerHTML,
  seen: window.__gatehouseTestSeen ?? null,
  fetched: performance.getEntriesByType('resource')
    .filter((e) => e.initiatorType === 'fetch' || e.initiatorType === 'xmlhttprequest')
    .map((e) => e.name),
};
"#;

/// The secrets of the live session: what must never reach the page.
struct Secrets {
    named: Vec<(&'static str, String)>,
}

impl Secrets {
    async fn of(app: &TestApp, cookie_value: &str) -> Secrets {
        let session = app.session_for(cookie_value).await.expect("a live session");
        let tokens = &session.data.tokens;
        let mut named = vec![
            (
                "access token",
                tokens.access_token.expose_secret().to_owned(),
            ),
            ("ID token", tokens.id_token.expose_secret().to_owned()),
            ("session cookie", cookie_value.to_owned()),
        ];
        if let Some(refresh) = &tokens.refresh_token {
            named.push(("refresh token", refresh.expose_secret().to_owned()));
        }
        // A JWT's signature alone is as good as a leak of the whole token.
        if let Some(signature) = tokens.id_token.expose_secret().rsplit('.').next() {
            named.push(("ID token signature", signature.to_owned()));
        }
        for (name, value) in &named {
            assert!(value.len() >= 16, "{name} is too short to search for");
        }
        Secrets { named }
    }

    fn find_in(&self, place: &str, text: &str, findings: &mut Vec<String>) {
        for (name, value) in &self.named {
            if text.contains(value.as_str()) {
                findings.push(format!("the {name} is in {place}"));
            }
        }
    }
}

/// Looks at everything the page can see and returns each place a secret shows up. Fails
/// when the recorder did not see a response the page fetched (the check would be blind).
async fn leaks(chrome: &Chrome, secrets: &Secrets, cookie_name: &str) -> Vec<String> {
    let view = chrome.eval(PAGE_VIEW, vec![]).await;
    let mut findings = Vec::new();
    let cookie = view["cookie"].as_str().expect("cookie");
    if cookie.contains(cookie_name) {
        findings.push(format!(
            "document.cookie shows the session cookie: {cookie}"
        ));
    }
    for place in ["url", "cookie", "local", "session", "html"] {
        secrets.find_in(place, view[place].as_str().expect(place), &mut findings);
    }
    for storage in ["local", "session"] {
        let text = view[storage].as_str().expect("storage");
        // Any JWT at all in storage is a token the page kept.
        if text.contains("eyJ") {
            findings.push(format!(
                "{storage}Storage holds something like a JWT: {text}"
            ));
        }
    }
    let seen = view["seen"]
        .as_array()
        .expect("the response recorder runs in the page");
    for entry in seen {
        let place = format!("the response to {}", entry["url"]);
        for part in ["headers", "body"] {
            secrets.find_in(
                &format!("{place} ({part})"),
                entry[part].as_str().unwrap_or(""),
                &mut findings,
            );
        }
    }
    let recorded: Vec<&str> = seen.iter().filter_map(|e| e["url"].as_str()).collect();
    for fetched in view["fetched"].as_array().expect("fetched") {
        let url = fetched.as_str().expect("url");
        assert!(
            recorded.contains(&url),
            "the page fetched {url} but the recorder did not see it: {recorded:?}"
        );
    }
    findings
}

/// Walks the provider's login and consent pages as `user` until the browser is back at
/// gatehouse.
async fn log_in_at_the_provider(chrome: &Chrome, app: &TestApp, user: &str) {
    let mut acted_on = String::new();
    for _ in 0..300 {
        let url = chrome.url().await;
        if url.starts_with(&app.base) {
            return;
        }
        if url.starts_with(&app.issuer) && url != acted_on {
            let page = chrome
                .eval(
                    "if (document.readyState !== 'complete') return null; \
                     if (document.querySelector('input[name=login]')) return 'login'; \
                     if (document.querySelector('input[name=prompt][value=consent]')) return 'consent'; \
                     return null;",
                    vec![],
                )
                .await;
            match page.as_str() {
                Some("login") => {
                    chrome.type_into("input[name=login]", user).await;
                    chrome
                        .type_into("input[name=password]", "any password")
                        .await;
                    chrome.click("button[type=submit]").await;
                    acted_on = url;
                }
                Some("consent") => {
                    chrome.click("button[type=submit]").await;
                    acted_on = url;
                }
                _ => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "the login did not come back to gatehouse (at {})",
        chrome.url().await
    );
}

/// From the demo page, anonymous, through the provider's forms, back logged in.
pub(crate) async fn log_in_on_the_demo_page(chrome: &Chrome, app: &TestApp, user: &str) {
    chrome.goto(&format!("{}/", app.base)).await;
    chrome.wait_for_visible("anonymous").await;
    chrome.click("#login").await;
    log_in_at_the_provider(chrome, app, user).await;
    chrome.wait_for_visible("user").await;
}

async fn session_cookie(chrome: &Chrome, name: &str) -> Option<String> {
    chrome
        .client
        .get_all_cookies()
        .await
        .expect("cookies")
        .into_iter()
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

#[tokio::test]
async fn the_demo_spa_logs_in_calls_the_api_and_logs_out_in_a_real_browser() {
    let sample_api = SampleApi::start(&shared_provider().issuer);
    // A second route to an upstream that reflects every header it got, Authorization
    // included: the leak detector's own test.
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        frontend: Some(Frontend::dir(repo_root().join("static"))),
        routes: vec![
            Route::new("/api/hello", &format!("{}/hello", sample_api.url)),
            Route::new("/api/echo", &echo.base),
        ],
        ..AppOptions::default()
    })
    .await;
    let chrome = Chrome::start().await;
    let outcome = chrome
        .run_scenario("browser-demo-spa", scenario(&chrome, &app))
        .await;
    chrome.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(chrome: &Chrome, app: &TestApp) {
    let cookie_name = app.cookie_name().to_owned();

    // Anonymous: the page offers a login that comes back here.
    chrome.goto(&format!("{}/", app.base)).await;
    assert!(chrome
        .wait_for_visible("anonymous")
        .await
        .contains("You are not logged in"));
    assert!(!chrome.is_visible("user").await);
    let login_href = chrome
        .eval(
            "return document.getElementById('login').getAttribute('href');",
            vec![],
        )
        .await;
    assert_eq!(login_href, "/auth/login?returnTo=%2F");

    // Cancelled at the provider: back in the app, which says why and tidies the address.
    chrome.click("#login").await;
    chrome
        .wait_for(
            "the provider's login page",
            "return document.querySelector('a[href$=\"/abort\"]') ? true : null;",
        )
        .await;
    chrome.click("a[href$='/abort']").await;
    let message = chrome.wait_for_visible("error").await;
    assert!(message.contains("cancelled"), "{message}");
    assert!(message.contains("access_denied"), "{message}");
    assert_eq!(
        chrome.url().await,
        format!("{}/", app.base),
        "login_error removed"
    );
    assert!(chrome.is_visible("anonymous").await);

    // Log in through the provider's own forms.
    chrome.click("#login").await;
    log_in_at_the_provider(chrome, app, "brenda").await;
    assert_eq!(chrome.wait_for_visible("name").await, "Brenda");
    assert_eq!(chrome.url().await, format!("{}/", app.base));
    let claims = chrome.wait_for_visible("claims").await;
    assert!(claims.contains("brenda@example.test"), "{claims}");
    assert!(
        !claims.contains("nonce"),
        "protocol claims are not shown: {claims}"
    );

    // The API through gatehouse: the upstream got a bearer token that the provider accepts.
    chrome.click("#call-api").await;
    let answer = chrome
        .wait_for(
            "the API's answer",
            "const t = document.getElementById('api-result').innerText; \
             return t.includes('bearer_token_received') ? t : null;",
        )
        .await;
    let answer: Value =
        serde_json::from_str(answer.as_str().expect("text")).expect("the answer is JSON");
    assert_eq!(answer["message"], "Hello, Brenda!", "{answer}");
    assert_eq!(answer["bearer_token_received"], true);
    assert_eq!(answer["token_accepted_by_provider"], true);
    assert_eq!(answer["path"], "/hello");

    // Nothing the page can see holds a token or the session cookie.
    let cookie_value = session_cookie(chrome, &cookie_name)
        .await
        .expect("the browser holds the session cookie");
    let secrets = Secrets::of(app, &cookie_value).await;
    let view = chrome.eval(PAGE_VIEW, vec![]).await;
    let seen_urls: Vec<&str> = view["seen"]
        .as_array()
        .expect("seen")
        .iter()
        .filter_map(|e| e["url"].as_str())
        .collect();
    for path in ["/auth/user", "/api/hello"] {
        assert!(
            seen_urls.contains(&format!("{}{path}", app.base).as_str()),
            "the recorder saw {path}: {seen_urls:?}"
        );
    }
    let found = leaks(chrome, &secrets, &cookie_name).await;
    assert!(
        found.is_empty(),
        "the page can see secrets:\n{}",
        found.join("\n")
    );

    // The detector finds a leak when there is one: a call to an upstream that reflects its
    // request headers hands the access token to the page.
    let reflected = chrome
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/api/echo/whoami', { headers: { 'X-CSRF': '1' } }) \
               .then((r) => r.text()).then(done, (e) => done(String(e)));",
            vec![],
        )
        .await
        .expect("canary fetch");
    assert!(reflected.as_str().is_some_and(|t| t.contains("Bearer ")));
    let found = leaks(chrome, &secrets, &cookie_name).await;
    assert!(
        found
            .iter()
            .any(|f| f.contains("access token") && f.contains("/api/echo/whoami")),
        "the leak detector missed a reflected token: {found:?}"
    );

    // The session ends behind the page's back (a logout in another tab): the next API call
    // answers 401 and the page offers a fresh login.
    let ended = app
        .http
        .post(format!("{}/auth/logout", app.base))
        .header("cookie", format!("{cookie_name}={cookie_value}"))
        .header("x-csrf", "1")
        .send()
        .await
        .expect("logout elsewhere");
    assert_eq!(ended.status(), 200);
    chrome.click("#call-api").await;
    assert!(chrome
        .wait_for_visible("expired")
        .await
        .contains("Your session has ended"));
    assert!(!chrome.is_visible("user").await);
    chrome.click("#login-again").await;
    log_in_at_the_provider(chrome, app, "brenda").await;
    assert_eq!(chrome.wait_for_visible("name").await, "Brenda");

    // Log out: gatehouse, then the provider's confirmation, then back to the app.
    let second_cookie = session_cookie(chrome, &cookie_name)
        .await
        .expect("a new session");
    assert_ne!(
        second_cookie, cookie_value,
        "a fresh session after logging in again"
    );
    let logout_href = chrome
        .eval(
            "return document.getElementById('logout').getAttribute('href');",
            vec![],
        )
        .await;
    assert!(
        logout_href
            .as_str()
            .is_some_and(|h| h.starts_with("/auth/logout?sid=")),
        "{logout_href}"
    );
    chrome.click("#logout").await;
    chrome
        .wait_for(
            "the provider's logout confirmation",
            "return document.querySelector('button[name=logout][value=yes]') !== null;",
        )
        .await;
    chrome.click("button[name=logout][value=yes]").await;
    assert!(chrome
        .wait_for_visible("anonymous")
        .await
        .contains("You are not logged in"));
    assert_eq!(chrome.url().await, format!("{}/", app.base));
    assert_eq!(session_cookie(chrome, &cookie_name).await, None);
    assert!(
        app.session_for(&second_cookie).await.is_none(),
        "the session is gone on the server"
    );
    let user = chrome
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/auth/user', { headers: { 'X-CSRF': '1' } }).then((r) => done(r.status));",
            vec![],
        )
        .await
        .expect("fetch");
    assert_eq!(user, json!(401));

    // The page ran without script errors or CSP violations; the only failed loads are the
    // expected 401s (and the provider's own pages' business).
    let problems = console_problems(chrome, app).await;
    assert!(
        problems.is_empty(),
        "console problems:\n{}",
        problems.join("\n")
    );
}

/// Script errors, CSP violations and failed loads other than the expected 401s (the
/// provider's own pages are their business).
pub(crate) async fn console_problems(chrome: &Chrome, app: &TestApp) -> Vec<String> {
    let console = chrome.console().await;
    console
        .iter()
        .filter(|entry| {
            let message = entry["message"].as_str().unwrap_or("");
            let source = entry["source"].as_str().unwrap_or("");
            let severe = entry["level"] == "SEVERE";
            message.contains("Content Security Policy")
                || source == "security"
                || (severe && source == "javascript")
                || (severe && message.starts_with(&app.base) && !message.contains("status of 401"))
        })
        .map(|entry| entry.to_string())
        .collect()
}

#[tokio::test]
async fn the_demo_lists_the_users_sessions_and_signs_another_one_out() {
    let echo = spawn_echo().await;
    let revocation_key =
        gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    crate::helpers::record_secret(&revocation_key);
    let app = spawn_app_with(AppOptions {
        frontend: Some(Frontend::dir(repo_root().join("static"))),
        routes: vec![Route::new("/api", &echo.base)],
        env: vec![(
            "GATEHOUSE_SESSION__REVOCATION_KEY".to_owned(),
            revocation_key,
        )],
        ..AppOptions::default()
    })
    .await;
    let chrome = Chrome::start().await;
    let outcome = chrome
        .run_scenario("browser-your-sessions", sessions_scenario(&chrome, &app))
        .await;
    chrome.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn sessions_scenario(chrome: &Chrome, app: &TestApp) {
    let cookie_name = app.cookie_name().to_owned();
    log_in_on_the_demo_page(chrome, app, "dora").await;
    let own_cookie = session_cookie(chrome, &cookie_name)
        .await
        .expect("the browser's session");

    // A second session of the same user, from another "device" (the HTTP client).
    let mut phone = app.browser().with_user_agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
         (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    );
    phone.login("dora").await;
    let phone_cookie = phone.session_cookie().expect("the phone's session");
    let phone_refresh = phone.refresh_token().await;
    assert_eq!(phone.api_get("/auth/user").await.status, 200);

    // The list (after a reload) shows both: this browser's marked, the phone's with a
    // sign-out button.
    chrome.goto(&format!("{}/", app.base)).await;
    let listed = chrome
        .wait_for(
            "two sessions in the list",
            "const items = document.querySelectorAll('#sessions li'); \
             return items.length === 2 ? Array.from(items).map((li) => li.innerText) : null;",
        )
        .await;
    let listed: Vec<String> = serde_json::from_value(listed).expect("texts");
    let this_device = listed
        .iter()
        .find(|text| text.contains("This device"))
        .expect("this device is marked");
    assert!(this_device.contains("Chrome on Linux"), "{this_device}");
    assert!(!this_device.contains("Sign out"), "{this_device}");
    let other = listed
        .iter()
        .find(|text| !text.contains("This device"))
        .expect("the other session");
    assert!(other.contains("Safari on iPhone"), "{other}");
    assert!(other.contains("Sign out"), "{other}");
    assert!(chrome.is_visible("end-others").await);

    // Nothing the page saw holds a token or a cookie (the list included).
    let secrets = Secrets::of(app, &own_cookie).await;
    let found = leaks(chrome, &secrets, &cookie_name).await;
    assert!(
        found.is_empty(),
        "the page can see secrets:\n{}",
        found.join("\n")
    );
    let phone_secrets = Secrets::of(app, &phone_cookie).await;
    let found = leaks(chrome, &phone_secrets, &cookie_name).await;
    assert!(
        found.is_empty(),
        "the page can see the phone's secrets:\n{}",
        found.join("\n")
    );

    // Sign the phone out: it leaves the list, and its next call is 401.
    chrome
        .click("#sessions li[data-current=false] button.sign-out")
        .await;
    chrome
        .wait_for(
            "the phone to leave the list",
            "const items = document.querySelectorAll('#sessions li'); \
             return items.length === 1 && items[0].dataset.current === 'true';",
        )
        .await;
    assert_eq!(
        chrome.wait_for_visible("sessions-result").await,
        "Signed out."
    );
    assert!(!chrome.is_visible("end-others").await);
    assert_eq!(phone.api_get("/auth/user").await.status, 401);
    assert_eq!(
        crate::helpers::proxied_call(app, &phone_cookie).await.0,
        401
    );
    assert_eq!(app.introspect(&phone_refresh).await["active"], false);
    // This browser's session goes on.
    assert_eq!(crate::helpers::proxied_call(app, &own_cookie).await.0, 200);
    assert!(chrome.is_visible("user").await);

    let problems = console_problems(chrome, app).await;
    assert!(
        problems.is_empty(),
        "console problems:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn the_demo_gets_live_updates_until_the_session_ends_elsewhere() {
    let sample_api = SampleApi::start(&shared_provider().issuer);
    let app = spawn_app_with(AppOptions {
        frontend: Some(Frontend::dir(repo_root().join("static"))),
        routes: vec![Route::new("/api/live", &format!("{}/live", sample_api.url)).websocket()],
        ..AppOptions::default()
    })
    .await;
    let chrome = Chrome::start().await;
    let outcome = chrome
        .run_scenario("browser-live-updates", live_scenario(&chrome, &app))
        .await;
    chrome.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn live_scenario(chrome: &Chrome, app: &TestApp) {
    let cookie_name = app.cookie_name().to_owned();
    log_in_on_the_demo_page(chrome, app, "erin").await;

    // The page's own WebSocket: its Origin passes, and the sample API got a token the
    // provider accepts (it greets the user by the name userinfo gave it).
    chrome.click("#live-connect").await;
    assert_eq!(
        chrome
            .wait_for(
                "the greeting over the socket",
                "const t = document.getElementById('live-status').innerText; \
                 return t.startsWith('Live updates for') ? t : null;",
            )
            .await,
        "Live updates for Erin"
    );
    chrome
        .wait_for(
            "a tick",
            "return document.getElementById('live-last').innerText.startsWith('Tick') || null;",
        )
        .await;

    // A logout in another tab: the open socket is closed with 1008, and the page, without
    // any call of its own, offers a fresh login.
    let cookie_value = session_cookie(chrome, &cookie_name)
        .await
        .expect("the browser's session");
    let ended = app
        .http
        .post(format!("{}/auth/logout", app.base))
        .header("cookie", format!("{cookie_name}={cookie_value}"))
        .header("x-csrf", "1")
        .send()
        .await
        .expect("logout elsewhere");
    assert_eq!(ended.status(), 200);
    let logged_out = std::time::Instant::now();
    assert!(chrome
        .wait_for_visible("expired")
        .await
        .contains("Your session has ended"));
    assert!(
        logged_out.elapsed() < std::time::Duration::from_secs(5),
        "the page learned of the logout {:?} later",
        logged_out.elapsed()
    );
    assert_eq!(
        chrome
            .eval(
                "return document.getElementById('live-status').innerText;",
                vec![]
            )
            .await,
        "Closed: your session ended."
    );
    let problems = console_problems(chrome, app).await;
    assert!(
        problems.is_empty(),
        "console problems (a CSP refusing the socket would be one):\n{}",
        problems.join("\n")
    );
}
