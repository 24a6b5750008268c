//! `preset = "…"`: each preset's effect against the real test provider made to behave like
//! that provider, and the configurations each preset refuses (docs/providers.md).

use std::collections::HashMap;

use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::{config_dir, register_client, spawn_app_with, AppOptions, Preset, TestApp};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| {
            (
                format!("GATEHOUSE_PROVIDERS__MAIN__{key}"),
                value.to_string(),
            )
        })
        .collect()
}

/// The authorization request's parameters as the browser carries them (no pushed
/// authorization, so they are all in the URL).
async fn authorize_params(app: &TestApp) -> HashMap<String, String> {
    let mut browser = app.browser();
    let start = browser.start_login(None).await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    let location = url::Url::parse(start.location().expect("location")).expect("url");
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/auth?", app.issuer)),
        "{location}"
    );
    location.query_pairs().into_owned().collect()
}

fn scopes(params: &HashMap<String, String>) -> Vec<&str> {
    let mut scopes: Vec<&str> = params["scope"].split(' ').collect();
    scopes.sort_unstable();
    scopes
}

#[tokio::test]
async fn presets_send_their_default_scopes_and_parameters() {
    for (preset, expected) in [
        ("keycloak", vec!["email", "openid", "profile"]),
        (
            "auth0",
            vec!["email", "offline_access", "openid", "profile"],
        ),
        ("okta", vec!["email", "offline_access", "openid", "profile"]),
        (
            "entra",
            vec!["email", "offline_access", "openid", "profile"],
        ),
        ("google", vec!["email", "openid", "profile"]),
    ] {
        let app = spawn_app_with(AppOptions {
            env: env(&[("PRESET", preset), ("PUSHED_AUTHORIZATION", "never")]),
            ..AppOptions::default()
        })
        .await;
        let params = authorize_params(&app).await;
        assert_eq!(scopes(&params), expected, "preset {preset}");
        if preset == "google" {
            assert_eq!(params["access_type"], "offline", "google: refresh tokens");
            assert_eq!(params["prompt"], "consent", "google: refresh tokens");
        } else {
            assert!(!params.contains_key("access_type"), "preset {preset}");
            assert!(!params.contains_key("prompt"), "preset {preset}");
        }
    }
}

/// Configured scopes and parameters win over a preset's defaults; Auth0's `audience` goes
/// through `extra_authorize_params` and the login works with it.
#[tokio::test]
async fn configured_scopes_and_parameters_win_and_auth0_gets_its_audience() {
    let app = spawn_app_with(AppOptions {
        env: env(&[
            ("PRESET", "auth0"),
            ("PUSHED_AUTHORIZATION", "never"),
            ("SCOPES", r#"["openid", "email"]"#),
            (
                "EXTRA_AUTHORIZE_PARAMS__AUDIENCE",
                "https://api.example.com",
            ),
        ]),
        ..AppOptions::default()
    })
    .await;
    let params = authorize_params(&app).await;
    assert_eq!(scopes(&params), ["email", "openid"]);
    assert_eq!(params["audience"], "https://api.example.com");

    let app = spawn_app_with(AppOptions {
        env: env(&[
            ("PRESET", "google"),
            ("PUSHED_AUTHORIZATION", "never"),
            ("EXTRA_AUTHORIZE_PARAMS__PROMPT", "select_account"),
        ]),
        ..AppOptions::default()
    })
    .await;
    let params = authorize_params(&app).await;
    assert_eq!(
        params["prompt"], "select_account",
        "the configured value wins"
    );
    assert_eq!(params["access_type"], "offline");

    let app = spawn_app_with(AppOptions {
        env: env(&[
            ("PRESET", "auth0"),
            (
                "EXTRA_AUTHORIZE_PARAMS__AUDIENCE",
                "https://api.example.com",
            ),
        ]),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    assert!(browser.tokens().await.refresh_token.is_some());
}

/// Google: the provider has no end-session endpoint; the login (with `prompt=consent`)
/// yields a refresh token, and logout revokes it, ends the session and lands on
/// `post_logout_redirect`.
#[tokio::test]
async fn google_logs_in_with_consent_and_logs_out_without_an_end_session_endpoint() {
    let provider = ProviderProcess::start(&ProviderOptions {
        end_session: false,
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        env: env(&[
            ("PRESET", "google"),
            ("PUSHED_AUTHORIZATION", "never"),
            ("POST_LOGOUT_REDIRECT", "/goodbye"),
        ]),
        ..AppOptions::default()
    })
    .await;
    let params = authorize_params(&app).await;
    assert_eq!(params["prompt"], "consent");

    let mut browser = app.browser();
    browser.login("alice").await;
    let refresh = browser.refresh_token().await;
    assert_eq!(app.introspect(&refresh).await["active"], true);

    let answer = browser.api_post("/auth/logout", Vec::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.transcript());
    assert_eq!(
        answer.json()["redirect_to"],
        format!("{}/goodbye", app.base)
    );
    assert_eq!(app.introspect(&refresh).await["active"], false, "revoked");
    browser
        .api_get("/auth/user")
        .await
        .assert_problem(401, "unauthenticated");
}

/// Entra ID multi-tenant: discovery names `…/{tenantid}/v2.0`, ID tokens the tenant's
/// issuer and `tid`. With the preset the template is accepted and each token checked
/// against it; `allowed_tenants` keeps other tenants out — at the authorization response's
/// `iss` (RFC 9207) when the provider sends one, else at the ID token.
#[tokio::test]
async fn entra_accepts_the_tenant_template_and_only_the_allowed_tenants() {
    for auth_response_iss in [true, false] {
        let provider = ProviderProcess::start(&ProviderOptions {
            entra_tenant: Some("tenant-a"),
            auth_response_iss,
            ..ProviderOptions::default()
        });
        for (allowed, refusal) in [
            (None, None),
            (Some(r#"["tenant-b", "tenant-a"]"#), None),
            (
                Some(r#"["tenant-b"]"#),
                Some(if auth_response_iss {
                    "invalid-callback"
                } else {
                    "login-failed"
                }),
            ),
        ] {
            let app = entra_app(&provider, allowed).await;
            let mut browser = app.browser();
            match refusal {
                None => {
                    browser.login("alice").await;
                    let user = browser.api_get("/auth/user").await.json();
                    assert_eq!(user["claims"]["tid"], "tenant-a", "{user}");
                }
                Some(problem) => {
                    browser
                        .login_with("alice", None)
                        .await
                        .assert_problem(400, problem);
                    assert!(browser.session_cookie().is_none());
                    assert_eq!(app.session_key_count().await, 0);
                }
            }
        }
        if !auth_response_iss {
            assert!(
                crate::helpers::captured_logs()
                    .contains("tenant `tenant-a` is not in allowed_tenants"),
                "refused by the ID token check"
            );
        }
    }
}

async fn entra_app(provider: &ProviderProcess, allowed_tenants: Option<&str>) -> TestApp {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let client = register_client(&provider.issuer, &base).await;
    let mut settings = vec![("PRESET", "entra")];
    if let Some(allowed) = allowed_tenants {
        settings.push(("ALLOWED_TENANTS", allowed));
    }
    let app = spawn_app_with(AppOptions {
        preset: Some(Preset {
            issuer: format!("{}/organizations/v2.0", provider.issuer),
            client,
            listener,
        }),
        env: env(&settings),
        ..AppOptions::default()
    })
    .await;
    app.wait_until_ready().await;
    app
}

/// Without the preset, the same issuer is refused at discovery: the template is accepted
/// only where a preset says the provider uses one.
#[tokio::test]
async fn without_the_entra_preset_a_tenant_template_is_an_issuer_mismatch() {
    let provider = ProviderProcess::start(&ProviderOptions {
        entra_tenant: Some("tenant-a"),
        ..ProviderOptions::default()
    });
    let output = crate::helpers::check_online::check_online(
        &format!("{}/organizations/v2.0", provider.issuer),
        "",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("{tenantid}"),
        "{stdout}{stderr}"
    );

    let output = crate::helpers::check_online::check_online(
        &format!("{}/organizations/v2.0", provider.issuer),
        "preset = \"entra\"\n",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
}

#[test]
fn check_config_reports_what_each_preset_refuses_with_every_other_problem() {
    let broken = r#"
[server]
public_url = "https://app.example.com"
bind = "not-an-address"
[providers.google]
preset = "google"
issuer = "https://accounts.google.com"
client_id = "g"
client_secret_file = "secret.txt"
scopes = ["openid", "email", "offline_access"]
[providers.entra]
preset = "entra"
issuer = "https://login.microsoftonline.com/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/v2.0"
client_id = "e"
client_secret_file = "secret.txt"
allowed_tenants = ["8eaef023-2b34-4da1-9baa-8bc8c9d6a490"]
[providers.okta]
preset = "okta"
issuer = "https://example.okta.com"
client_id = "o"
client_secret_file = "secret.txt"
allowed_tenants = ["t"]
[providers.azure]
preset = "azure"
issuer = "https://login.microsoftonline.com/common/v2.0"
client_id = "a"
client_secret_file = "secret.txt"
"#;
    let dir = config_dir(broken);
    std::fs::write(dir.join("secret.txt"), "s3cret\n").expect("secret");
    let output = crate::helpers::check_config_in(&dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "server.bind",
        "providers.google.scopes: `offline_access` does not work with preset = \"google\"",
        "providers.entra.allowed_tenants needs a multi-tenant issuer",
        "providers.okta.allowed_tenants is only used with preset = \"entra\"",
        "providers.azure.preset: `azure` is not one of keycloak, entra, auth0, google, okta",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }

    let good = r#"
default_provider = "google"
[server]
public_url = "https://app.example.com"
[providers.google]
preset = "google"
issuer = "https://accounts.google.com"
client_id = "g"
client_secret_file = "secret.txt"
[providers.entra]
preset = "entra"
issuer = "https://login.microsoftonline.com/organizations/v2.0"
client_id = "e"
client_secret_file = "secret.txt"
allowed_tenants = ["8eaef023-2b34-4da1-9baa-8bc8c9d6a490"]
"#;
    let dir = config_dir(good);
    std::fs::write(dir.join("secret.txt"), "s3cret\n").expect("secret");
    let output = crate::helpers::check_config_in(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
