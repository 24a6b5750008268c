//! Discovery that does not give up: endpoints the openid-configuration lacks are taken from
//! the provider's RFC 8414 metadata or from the config, every revocation is a security
//! event, and `check-config --online` says where each endpoint came from and warns when
//! there is none.

use secrecy::ExposeSecret;

use crate::helpers::check_online::check_online;
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::{captured_logs, random_name, spawn_app_with, AppOptions, TestApp};

/// Logs `browser` out with `GET /auth/logout?sid=…` under a request id of its own; returns
/// where it was sent and the security-event lines logged for that request.
async fn logout(browser: &mut crate::helpers::Browser<'_>) -> (String, Vec<String>) {
    let user = browser.api_get("/auth/user").await.json();
    let logout_url = user["session"]["logout_url"]
        .as_str()
        .expect("logout_url")
        .to_owned();
    let request_id = random_name("logout-");
    let answer = browser
        .request(
            reqwest::Method::GET,
            &logout_url,
            &[("x-request-id", &request_id)],
            None,
        )
        .await;
    assert_eq!(answer.status, 302, "{}", answer.transcript());
    let events = captured_logs()
        .lines()
        .filter(|line| line.contains(&request_id) && line.contains("security event"))
        .map(str::to_owned)
        .collect();
    (answer.location().expect("location").to_owned(), events)
}

fn event<'a>(events: &'a [String], name: &str) -> &'a str {
    events
        .iter()
        .find(|line| line.contains(&format!("\"{name}\"")))
        .unwrap_or_else(|| panic!("no `{name}` event among {events:#?}"))
}

async fn logged_in_refresh_token(
    app: &TestApp,
    browser: &mut crate::helpers::Browser<'_>,
) -> String {
    browser.login("alice").await;
    let refresh = browser
        .tokens()
        .await
        .refresh_token
        .expect("refresh token")
        .expose_secret()
        .to_owned();
    assert_eq!(
        app.introspect(&refresh).await["active"],
        true,
        "live before logout"
    );
    refresh
}

fn output_text(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_revocation_endpoint_listed_only_in_rfc8414_metadata_is_used_and_named() {
    // As django-oauth-toolkit does: revocation_endpoint in
    // /.well-known/oauth-authorization-server only.
    let provider = ProviderProcess::start(&ProviderOptions {
        omit_from_openid_configuration: &["revocation_endpoint"],
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    let refresh = logged_in_refresh_token(&app, &mut browser).await;

    let (_, events) = logout(&mut browser).await;
    assert_eq!(
        app.introspect(&refresh).await["active"],
        false,
        "the provider took the refresh token back"
    );
    let revoked = event(&events, "token.revoked");
    assert!(revoked.contains("RFC 8414 metadata"), "{revoked}");
    assert!(
        revoked.contains("\"main\""),
        "the provider is named: {revoked}"
    );
    assert!(!revoked.contains(&refresh), "never the token");
    assert!(!events.iter().any(|l| l.contains("token.revocation_failed")));

    let output = check_online(&provider.issuer, "");
    let (stdout, stderr) = output_text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let expected = format!(
        "token revocation: yes, from RFC 8414 metadata ({}/token/revocation)",
        provider.issuer
    );
    assert!(
        stdout.contains(&expected),
        "missing `{expected}` in:\n{stdout}"
    );
    assert!(
        stdout.contains("end-session (RP-initiated logout): yes, from openid-configuration"),
        "{stdout}"
    );
    assert!(!stderr.contains("no revocation endpoint"), "{stderr}");
}

#[tokio::test]
async fn endpoints_set_in_the_config_win_over_the_providers_documents() {
    // The provider names a revocation endpoint nowhere; the operator knows it.
    let provider = ProviderProcess::start(&ProviderOptions {
        omit_from_openid_configuration: &["revocation_endpoint"],
        omit_from_rfc8414: &["all"],
        ..ProviderOptions::default()
    });
    let revocation = format!("{}/token/revocation", provider.issuer);
    // An end-session endpoint of the operator's choosing, over the discovered one.
    let end_session = format!("{}/session/end?ui=custom", provider.issuer);
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        env: vec![
            (
                "GATEHOUSE_PROVIDERS__MAIN__REVOCATION_ENDPOINT".into(),
                revocation.clone(),
            ),
            (
                "GATEHOUSE_PROVIDERS__MAIN__END_SESSION_ENDPOINT".into(),
                end_session.clone(),
            ),
        ],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    let refresh = logged_in_refresh_token(&app, &mut browser).await;

    let (next, events) = logout(&mut browser).await;
    assert!(
        next.starts_with(&format!("{end_session}&id_token_hint=")),
        "the configured end-session endpoint: {next}"
    );
    assert_eq!(app.introspect(&refresh).await["active"], false);
    let revoked = event(&events, "token.revoked");
    assert!(revoked.contains("reason=\"config\""), "{revoked}");

    let output = check_online(
        &provider.issuer,
        &format!(
            "revocation_endpoint = \"{revocation}\"\nend_session_endpoint = \"{end_session}\""
        ),
    );
    let (stdout, stderr) = output_text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    for needle in [
        format!("token revocation: yes, from config ({revocation})"),
        format!("end-session (RP-initiated logout): yes, from config ({end_session})"),
    ] {
        assert!(stdout.contains(&needle), "missing `{needle}` in:\n{stdout}");
    }
}

#[tokio::test]
async fn without_any_revocation_endpoint_logout_says_so_and_the_online_check_warns() {
    let provider = ProviderProcess::start(&ProviderOptions {
        omit_from_openid_configuration: &["revocation_endpoint"],
        omit_from_rfc8414: &["all"],
        end_session: false,
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    let refresh = logged_in_refresh_token(&app, &mut browser).await;

    let (_, events) = logout(&mut browser).await;
    let failed = event(&events, "token.revocation_failed");
    assert!(failed.contains("no revocation endpoint"), "{failed}");
    assert!(failed.contains("WARN"), "{failed}");
    assert_eq!(
        app.introspect(&refresh).await["active"],
        true,
        "what the warning is about: the provider was never told"
    );

    let output = check_online(&provider.issuer, "");
    let (stdout, stderr) = output_text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "warnings only: {stdout}\n{stderr}"
    );
    for needle in [
        "token revocation: not advertised",
        "end-session (RP-initiated logout): not advertised",
        "RFC 8414 metadata: not used (",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    assert!(!stdout.contains(": no\n"), "never a bare `no`: {stdout}");
    for needle in [
        "provider `main`: warning: no revocation endpoint",
        "refresh tokens stay valid at the provider after logout",
        "no end-session endpoint",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
}
