//! Logout that completes at the provider (issue 24): `POST /auth/logout` names a one-time
//! continuation on gatehouse, which carries `id_token_hint` to the provider's end-session
//! endpoint without any JSON answer holding the ID token. And several logins in flight in
//! one browser: each completes, in any order.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::helpers::echo::{raw_request, status_of};
use crate::helpers::provider_logout::confirm_end_session;
use crate::helpers::{captured_logs, spawn_app, urlencode, Browser, Resp, TestApp};

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn post_logout_redirect(app: &TestApp) -> String {
    app.settings.providers["main"]
        .post_logout_redirect
        .to_string()
}

/// Every JSON answer the test saw, checked for the ID token.
fn assert_no_id_token(answers: &[&Resp], id_token: &str) {
    for answer in answers {
        assert!(
            !answer.body.contains(id_token),
            "an answer holds the ID token: {}",
            answer.transcript()
        );
    }
}

/// A silent login (`prompt=none`): where the app is sent back to.
async fn silent_login(browser: &mut Browser<'_>) -> String {
    let start = browser
        .get("/auth/login?returnTo=%2Fafter&prompt=none")
        .await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = start.location().expect("to the provider").to_owned();
    let callback = browser.authenticate_at_provider(&authorize, "alice").await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.transcript());
    back.location().expect("back in the app").to_owned()
}

#[tokio::test]
async fn logout_carries_the_hint_to_the_provider_and_ends_its_session_and_refresh_token() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let refresh = browser.refresh_token().await;
    let id_token = browser.tokens().await.id_token.expose_secret().to_owned();
    assert_eq!(app.introspect(&refresh).await["active"], true);
    // With a provider session, a silent login succeeds (the check below can fail).
    let mut probe = app.browser();
    probe.provider_http = browser.provider_http.clone();
    assert!(!silent_login(&mut probe).await.contains("login_error"));

    let user = browser.api_get("/auth/user").await;
    let logout = browser.api_post("/auth/logout", Vec::new()).await;
    assert_eq!(logout.status, 200, "{}", logout.body);
    assert_no_id_token(&[&user, &logout], &id_token);
    let next = logout.json()["redirect_to"]
        .as_str()
        .expect("redirect_to")
        .to_owned();
    assert!(
        next.starts_with(&format!("{}/auth/logout/continue?t=", app.base)),
        "{next}"
    );

    let continued = browser.get(&next).await;
    assert_eq!(continued.status, 302, "{}", continued.transcript());
    let end_session = continued.location().expect("to the provider").to_owned();
    assert!(
        end_session.starts_with(&format!("{}/session/end?", app.issuer)),
        "{end_session}"
    );
    assert_eq!(
        query_param(&end_session, "id_token_hint").as_deref(),
        Some(id_token.as_str())
    );
    assert_eq!(
        query_param(&end_session, "client_id").as_deref(),
        Some(app.client_id.as_str())
    );
    assert_eq!(
        query_param(&end_session, "post_logout_redirect_uri"),
        Some(post_logout_redirect(&app))
    );
    let landed = confirm_end_session(&browser.provider_http, &app.issuer, &end_session).await;
    assert_eq!(
        landed,
        post_logout_redirect(&app),
        "back at gatehouse's page"
    );

    assert_eq!(app.introspect(&refresh).await["active"], false);
    assert_eq!(
        silent_login(&mut browser).await,
        "/after?login_error=login_required",
        "the provider's own session is gone"
    );

    // Used once: the second time it leads to post_logout_redirect, not the provider.
    let again = browser.get(&next).await;
    assert_eq!(again.status, 302);
    assert_eq!(again.location(), Some(post_logout_redirect(&app).as_str()));

    // Of everything gatehouse answered this browser, only the continuation's redirect
    // carried the ID token, and no body did.
    let seen: Vec<&Resp> = browser.seen.iter().collect();
    assert!(seen.len() >= 8, "{}", seen.len());
    assert_no_id_token(&seen, &id_token);
    let carrying: Vec<&&Resp> = seen
        .iter()
        .filter(|answer| answer.location().is_some_and(|l| l.contains(&id_token)))
        .collect();
    assert_eq!(
        carrying.len(),
        1,
        "only the continuation's 302 names the ID token"
    );
}

#[tokio::test]
async fn a_continuation_expires_after_a_minute_and_forged_ones_lead_home() {
    let app = spawn_app().await;
    let home = post_logout_redirect(&app);
    let mut browser = app.browser();
    browser.login("bob").await;
    let logout = browser.api_post("/auth/logout", Vec::new()).await;
    let next = logout.json()["redirect_to"]
        .as_str()
        .expect("redirect_to")
        .to_owned();
    app.clock.advance(Duration::from_secs(61));
    let late = browser.get(&next).await;
    assert_eq!(late.status, 302);
    assert_eq!(late.location(), Some(home.as_str()), "expired");

    let token = query_param(&next, "t").expect("t");
    let (id, secret) = token.split_once('.').expect("id.secret");
    let flipped = format!(
        "{id}.{}{}",
        if secret.starts_with('A') { 'B' } else { 'A' },
        &secret[1..]
    );
    for t in [
        flipped,
        String::new(),
        ".".into(),
        id.to_owned(),
        format!("{token}{token}"),
        "A".repeat(5000),
        urlencode(&token),
        format!("{token}%0d%0aSet-Cookie:%20x=1"),
        format!("{token}%00"),
        "%zz".into(),
        format!("{id}%2E{secret}"),
    ] {
        let (status, answer) = raw_request(
            app.port,
            &format!(
                "GET /auth/logout/continue?t={t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(
            status == 302 || status == 400 || status == 431,
            "{t}: {answer}"
        );
        if status == 302 {
            assert!(
                answer
                    .lines()
                    .any(|line| line.eq_ignore_ascii_case(&format!("location: {home}"))),
                "{t}: {answer}"
            );
        }
        assert!(!answer.contains("Set-Cookie: x=1") && !answer.contains("set-cookie: x=1"));
    }
    let (_, answer) = raw_request(
        app.port,
        "GET /auth/logout/continue?t=x\r\nSet-Cookie: y HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(status_of(&answer) < 500, "{answer}");
}

#[tokio::test]
async fn ending_ones_own_session_from_the_list_continues_to_the_provider_too() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let id_token = browser.tokens().await.id_token.expose_secret().to_owned();
    let list = browser.api_get("/auth/sessions").await;
    let own = list.json()["sessions"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let ended = browser
        .request(
            reqwest::Method::DELETE,
            &format!("/auth/sessions/{own}"),
            &[("x-csrf", "1")],
            None,
        )
        .await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_no_id_token(&[&list, &ended], &id_token);
    let next = ended.json()["redirect_to"]
        .as_str()
        .expect("redirect_to")
        .to_owned();
    let continued = browser.get(&next).await;
    assert_eq!(
        continued
            .location()
            .and_then(|l| query_param(l, "id_token_hint"))
            .as_deref(),
        Some(id_token.as_str())
    );
}

/// Starts a login in `browser` and walks the provider's pages: the callback URL.
async fn start_tab(browser: &mut Browser<'_>, return_to: &str) -> String {
    let start = browser.start_login(Some(return_to)).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = start.location().expect("to the provider").to_owned();
    browser.authenticate_at_provider(&authorize, "alice").await
}

#[tokio::test]
async fn three_tabs_log_in_at_once_and_complete_in_any_order() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    browser.login("alice").await;
    let mut replaced = vec![browser.session_cookie().expect("cookie")];

    let mut callbacks = Vec::new();
    for tab in ["/tab1", "/tab2", "/tab3"] {
        callbacks.push(start_tab(&mut browser, tab).await);
    }
    for (index, tab) in [(1, "/tab2"), (2, "/tab3"), (0, "/tab1")] {
        let answer = browser.get(&callbacks[index]).await;
        assert_eq!(answer.status, 302, "{tab}: {}", answer.transcript());
        assert_eq!(answer.location(), Some(tab));
        replaced.push(browser.session_cookie().expect("cookie"));
    }
    let current = replaced.pop().expect("the last login's");
    assert_eq!(browser.api_get("/auth/user").await.status, 200);
    assert_eq!(
        app.session_key_count().await,
        1,
        "one session for the browser"
    );
    for cookie in &replaced {
        assert!(
            app.session_for(cookie).await.is_none(),
            "a replaced session is gone"
        );
    }
    assert!(app.session_for(&current).await.is_some());
    // All four logins came from one provider session, so one grant: revoking a replaced
    // session's refresh token would revoke the grant, the live session's token with it.
    assert_eq!(
        app.introspect(&browser.refresh_token().await).await["active"],
        true
    );
    let login_cookie = &app.settings.session.login_cookie_name;
    assert!(
        !browser.cookies.contains_key(login_cookie),
        "no login left in flight: {:?}",
        browser.cookies.keys()
    );
}

#[tokio::test]
async fn a_login_from_another_provider_session_revokes_the_session_it_replaces() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    browser.login("bob").await;
    let bobs = browser.refresh_token().await;
    // Signed in at the provider afresh (another provider session, another grant): as
    // alice now, in the same browser as far as gatehouse can tell.
    browser.provider_http = app.browser().provider_http;
    browser.login("alice").await;
    assert_eq!(browser.api_get("/auth/user").await.json()["sub"], "alice");
    assert_eq!(app.session_key_count().await, 1);
    assert_eq!(
        app.introspect(&bobs).await["active"],
        false,
        "bob's revoked"
    );
    assert_eq!(
        app.introspect(&browser.refresh_token().await).await["active"],
        true
    );
    assert!(captured_logs()
        .lines()
        .any(|line| line.contains("logout.completed")
            && line.contains("replaced by a new login in the same browser")));
}

#[tokio::test]
async fn a_ninth_login_in_flight_drops_the_oldest() {
    let app = spawn_app().await;
    let mut browser = app.browser();
    let mut callbacks = Vec::new();
    for tab in 1..=9 {
        callbacks.push(start_tab(&mut browser, &format!("/tab{tab}")).await);
    }
    let oldest = browser.get(&callbacks[0]).await;
    assert_eq!(oldest.status, 302, "{}", oldest.transcript());
    assert_eq!(
        oldest.location(),
        Some("/tab1?login_error=login_state_invalid"),
        "back in the app, told to try again"
    );
    assert!(browser.session_cookie().is_none());
    assert_eq!(app.session_key_count().await, 0);
    let newest = browser.get(&callbacks[8]).await;
    assert_eq!(newest.location(), Some("/tab9"), "{}", newest.transcript());
    let second = browser.get(&callbacks[1]).await;
    assert_eq!(second.location(), Some("/tab2"), "{}", second.transcript());
    assert_eq!(app.session_key_count().await, 1);
}
