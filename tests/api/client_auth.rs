//! `client_auth_method = "private_key_jwt"` (RFC 7523, issue 10): the JWKS that `gatehouse
//! keys jwks` prints is registered at the real provider, and every call that authenticates
//! the client there — the pushed authorization request, code exchange, refresh, client
//! credentials, revocation — carries a fresh assertion signed with the key. Keys are made
//! at test time (EC with rcgen, RSA with the rsa crate); none is committed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::echo::{echoed_header, spawn_echo};
use crate::helpers::processes::{artifacts_dir, shared_provider};
use crate::helpers::{
    config_dir, grants_at, random_name, register_client_with, spawn_app_with, AppOptions, Preset,
    Route, SessionKeys, TestApp,
};

const HOUR: Duration = Duration::from_secs(3600);
/// For configs the binary only reads (no provider is asked).
const ISSUER: &str = "http://127.0.0.1:9";

#[derive(Clone, Copy, Debug)]
enum KeyKind {
    Ec,
    Rsa,
}

/// A fresh private key in a PEM file under target/test-artifacts.
fn new_key(kind: KeyKind) -> PathBuf {
    let path = artifacts_dir().join(format!("{}.pem", random_name("client-key-")));
    match kind {
        KeyKind::Ec => {
            let pem = rcgen::KeyPair::generate().expect("EC key").serialize_pem();
            std::fs::write(&path, pem).expect("write key");
        }
        KeyKind::Rsa => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
            let pem = key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
            std::fs::write(&path, pem.as_bytes()).expect("write key");
        }
    }
    path
}

/// The config a key's JWKS is printed from: the provider entry as it will run, before the
/// client exists at the provider.
fn key_config(key: &std::path::Path, kid: &str) -> String {
    format!(
        "[server]\npublic_url = \"http://127.0.0.1:8080\"\n\n[providers.main]\n\
         issuer = \"{ISSUER}\"\nclient_id = \"to-be-registered\"\n\
         client_auth_method = \"private_key_jwt\"\nclient_key_file = \"{}\"\n\
         client_key_id = \"{kid}\"\n",
        key.display()
    )
}

fn run_gatehouse(args: &[&str], config: &str) -> std::process::Output {
    let dir = config_dir(config);
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .args(["--config", "gatehouse.toml"])
        .current_dir(&dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET")
        .output()
        .expect("run gatehouse")
}

/// `gatehouse keys jwks` on a config with this key, as an operator would run it.
fn jwks_for(key: &std::path::Path, kid: &str) -> Value {
    let output = run_gatehouse(&["keys", "jwks"], &key_config(key, kid));
    assert!(
        output.status.success(),
        "keys jwks failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("keys jwks prints JSON")
}

struct KeyedApp {
    app: TestApp,
}

/// gatehouse signing with `key` (id `kid`), its client registered at the shared provider
/// with `registered_jwks`; a user route and a `token = "client"` route to an echo upstream.
async fn app_with_key(
    key: &std::path::Path,
    kid: &str,
    registered_jwks: Value,
    extra_env: &[(&str, &str)],
) -> KeyedApp {
    let issuer = shared_provider().issuer.clone();
    let echo = spawn_echo().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let client = register_client_with(
        &issuer,
        &base,
        json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": registered_jwks,
        }),
    )
    .await;
    assert!(
        client.client_secret.is_empty(),
        "a private_key_jwt client gets no secret"
    );
    let mut env: Vec<(String, String)> = vec![
        (
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_AUTH_METHOD".into(),
            "private_key_jwt".into(),
        ),
        (
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_FILE".into(),
            key.display().to_string(),
        ),
        (
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_ID".into(),
            kid.into(),
        ),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let app = spawn_app_with(AppOptions {
        preset: Some(Preset {
            issuer,
            client,
            listener,
        }),
        session: SessionKeys::long(),
        routes: vec![
            Route::new("/api", &echo.base),
            Route::new("/service", &echo.base).token("client"),
        ],
        env,
        ..AppOptions::default()
    })
    .await;
    app.wait_until_ready().await;
    KeyedApp { app }
}

fn count(counts: &Value, what: &str) -> u64 {
    counts[what].as_u64().unwrap_or(0)
}

async fn every_client_call_authenticates_with(kind: KeyKind) {
    let key = new_key(kind);
    let kid = random_name("kid-");
    let jwks = jwks_for(&key, &kid);
    let jwk = &jwks["keys"][0];
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
    assert_eq!(jwk["kid"], kid.as_str());
    assert_eq!(jwk["use"], "sig");
    match kind {
        KeyKind::Ec => {
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["crv"], "P-256");
            assert_eq!(jwk["alg"], "ES256");
            assert!(jwk["x"].is_string() && jwk["y"].is_string(), "{jwk}");
        }
        KeyKind::Rsa => {
            assert_eq!(jwk["kty"], "RSA");
            assert_eq!(jwk["alg"], "RS256");
            assert_eq!(jwk["e"], "AQAB");
            assert!(jwk["n"].as_str().is_some_and(|n| n.len() > 300), "{jwk}");
            // The same key in PKCS#1 form ("BEGIN RSA PRIVATE KEY") is the same JWK.
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::{DecodePrivateKey, LineEnding};
            let pkcs8 = std::fs::read_to_string(&key).expect("PKCS#8 key");
            let parsed = rsa::RsaPrivateKey::from_pkcs8_pem(&pkcs8).expect("an RSA key");
            let pkcs1 = key.with_extension("pkcs1.pem");
            let pem = parsed.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM");
            std::fs::write(&pkcs1, pem.as_bytes()).expect("write key");
            let text = std::fs::read_to_string(&pkcs1).expect("PKCS#1 key");
            assert!(
                text.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
                "not PKCS#1"
            );
            assert_eq!(jwks_for(&pkcs1, &kid), jwks, "PKCS#1 and PKCS#8 agree");
        }
    }
    assert!(
        jwk.get("d").is_none() && jwk.get("p").is_none(),
        "no private part: {jwk}"
    );

    let bed = app_with_key(&key, &kid, jwks.clone(), &[]).await;
    let app = &bed.app;
    let counts = || grants_at(&app.issuer, &app.client_id);

    // Login: the pushed authorization request (the provider offers PAR) and the code
    // exchange both authenticate with an assertion.
    let mut browser = app.browser();
    browser.login("alice").await;
    assert_eq!(
        browser.api_get("/auth/user").await.json()["session"]["provider"],
        "main"
    );
    assert_eq!(count(&counts().await, "authorization_code"), 1);

    // The access token lapses; the proxied call refreshes.
    app.clock.advance(HOUR + Duration::from_secs(1));
    let call = browser.api_get("/api/x").await;
    assert_eq!(call.status, 200, "{}", call.transcript());
    assert_eq!(count(&counts().await, "refresh_token"), 1);

    // gatehouse's own token (client credentials).
    let call = browser.api_get("/service/x").await;
    assert_eq!(call.status, 200, "{}", call.transcript());
    let body = call.json();
    let sent = echoed_header(&body, "authorization");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].starts_with("Bearer "), "{sent:?}");
    assert_eq!(count(&counts().await, "client_credentials"), 1);

    // Logout revokes at the provider.
    let logout = browser.api_post("/auth/logout", Vec::new()).await;
    assert_eq!(logout.status, 200, "{}", logout.transcript());
    assert!(count(&counts().await, "revoked") >= 1, "{}", counts().await);
    assert_eq!(browser.api_get("/auth/user").await.status, 401);

    // Nothing of the key or the assertions in the log.
    let pem = std::fs::read_to_string(&key).expect("key");
    let body_line = pem.lines().nth(1).expect("PEM body");
    let logs = crate::helpers::captured_logs();
    assert!(!logs.contains(body_line), "the private key was logged");
    assert!(
        !logs.contains("client_assertion="),
        "an assertion was logged"
    );
}

#[tokio::test]
async fn private_key_jwt_with_an_ec_key() {
    every_client_call_authenticates_with(KeyKind::Ec).await;
}

#[tokio::test]
async fn private_key_jwt_with_an_rsa_key() {
    every_client_call_authenticates_with(KeyKind::Rsa).await;
}

#[tokio::test]
async fn the_wrong_key_is_refused_with_a_clear_problem_and_no_session() {
    // The client is registered with the JWKS of one key; gatehouse signs with another
    // (same key id).
    let kid = random_name("kid-");
    let registered = jwks_for(&new_key(KeyKind::Ec), &kid);
    let used = new_key(KeyKind::Ec);

    // Without PAR the login reaches the callback, whose code exchange the provider refuses.
    let bed = app_with_key(
        &used,
        &kid,
        registered.clone(),
        &[("GATEHOUSE_PROVIDERS__MAIN__PUSHED_AUTHORIZATION", "never")],
    )
    .await;
    let app = &bed.app;
    let mut browser = app.browser();
    let callback = browser.callback_url_for("alice").await;
    let answer = browser.get(&callback).await;
    answer.assert_problem(400, "login-failed");
    assert_eq!(answer.json()["provider_error"], "invalid_client");
    assert!(browser.session_cookie().is_none(), "no session cookie");
    assert_eq!(browser.api_get("/auth/user").await.status, 401);
    assert_eq!(app.session_key_count().await, 0, "no session in the store");
    assert_eq!(
        count(
            &grants_at(&app.issuer, &app.client_id).await,
            "authorization_code"
        ),
        0
    );

    // With PAR the push itself is refused: the browser goes back to the app, told why.
    let bed = app_with_key(&used, &kid, registered, &[]).await;
    let mut browser = bed.app.browser();
    let start = browser.start_login(None).await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    assert_eq!(start.location(), Some("/?login_error=invalid_client"));
    assert!(browser.session_cookie().is_none());
}

#[test]
fn check_config_reports_every_key_problem_at_once() {
    let config = format!(
        "[server]\npublic_url = \"http://127.0.0.1:8080\"\n\n[providers.main]\nissuer = \"{}\"\n\
         client_id = \"c\"\nclient_auth_method = \"private_key_jwt\"\n\
         client_key_file = \"{}\"\nscopes = [\"profile\"]\n",
        ISSUER,
        artifacts_dir().join("no-such-key.pem").display()
    );
    let output = run_gatehouse(&["check-config"], &config);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "providers.main.client_key_file (private_key_jwt): cannot read",
        "providers.main.client_key_id is required",
        "providers.main.scopes must include `openid`",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }

    // A file that is not a usable key, and a secret set alongside the key.
    let not_a_key = artifacts_dir().join(format!("{}.pem", random_name("not-a-key-")));
    std::fs::write(
        &not_a_key,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let config = format!(
        "[server]\npublic_url = \"http://127.0.0.1:8080\"\n\n[providers.main]\nissuer = \"{}\"\n\
         client_id = \"c\"\nclient_auth_method = \"private_key_jwt\"\n\
         client_key_file = \"{}\"\nclient_key_id = \"k\"\n",
        ISSUER,
        not_a_key.display()
    );
    let dir = config_dir(&config);
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config", "--config", "gatehouse.toml"])
        .current_dir(&dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET",
            "a-leftover-secret",
        )
        .output()
        .expect("run gatehouse");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "providers.main.client_key_file (private_key_jwt):",
        "no PEM private key found",
        "providers.main.client_secret is set, but client_auth_method = \"private_key_jwt\"",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    assert!(!stderr.contains("a-leftover-secret"), "{stderr}");
}

#[test]
fn check_config_online_accepts_private_key_jwt_and_says_what_to_register() {
    let issuer = &shared_provider().issuer;
    let key = new_key(KeyKind::Ec);
    let config = key_config(&key, "online-kid").replace(ISSUER, issuer);
    let output = run_gatehouse(&["check-config", "--online"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "client authentication     private_key_jwt, with the public key `online-kid` (ES256)"
        ),
        "{stdout}"
    );
}
