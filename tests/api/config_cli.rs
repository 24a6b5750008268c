//! The real binary: `check-config` and `serve` report every configuration problem at once.

use std::process::Command;

const BROKEN: &str = r#"
colour = "blue"
[server]
public_url = "http://app.example.com"
bind = "not-an-address"
trusted_proxies = ["10.0.0.0/33", "not-an-ip"]
max_header_bytes = 0
[session]
idle_timeout_secs = 7200
absolute_timeout_secs = 3600
[providers.main]
issuer = "ftp://id.example.com"
client_secret = "committed-by-mistake"
scopes = ["profile"]
[rate_limits.login]
requests = 0
[rate_limits.api]
requests = 10
per_secs = -5
[[routes]]
prefix = "/api"
upstream = "http://api.internal"
rate_limit = "sometimes"
"#;

/// The least a config needs (its client secret comes from the environment).
const MINIMAL: &str = r#"
[server]
public_url = "https://app.example.com"
[providers.main]
issuer = "https://id.example.com"
client_id = "spa"
"#;

fn gatehouse(args: &[&str], config: &str) -> std::process::Output {
    let dir = crate::helpers::config_dir(config);
    let path = dir.join("gatehouse.toml");
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .current_dir(&dir) // no stray .env
        .env_remove("GATEHOUSE_CONFIG")
        .env(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_AUTH_METHOD",
            "private_key_jwt",
        )
        .output()
        .expect("run gatehouse")
}

fn assert_full_report(output: &std::process::Output) {
    assert!(!output.status.success(), "must exit non-zero");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "unknown key `colour`",
        "server.bind",
        "server.public_url",
        "idle_timeout_secs must not exceed",
        "providers.main.issuer",
        "client_secret must not be in the config file",
        "providers.main.client_id is required",
        "scopes must include `openid`",
        "private_key_jwt",
        "`10.0.0.0/33` is not an IP address or CIDR block",
        "`not-an-ip` is not an IP address or CIDR block",
        "server.max_header_bytes must be greater than zero",
        "rate_limits.login.requests must be a positive number",
        "rate_limits.api.per_secs must be greater than zero",
        "routes[0].rate_limit: `sometimes`",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    assert!(
        !stderr.contains("committed-by-mistake"),
        "a secret was echoed"
    );
}

#[test]
fn check_config_reports_every_problem_in_one_run() {
    let output = gatehouse(&["check-config"], BROKEN);
    assert_eq!(output.status.code(), Some(2));
    assert_full_report(&output);
}

#[test]
fn serve_with_a_broken_config_exits_with_the_same_report() {
    let output = gatehouse(&["serve"], BROKEN);
    assert_full_report(&output);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&gatehouse(&["check-config"], BROKEN).stderr)
    );
}

#[test]
fn check_config_accepts_a_good_config() {
    let good = r#"
[server]
public_url = "https://app.example.com"
[providers.main]
issuer = "https://id.example.com"
client_id = "spa"
client_secret_file = "secret.txt"
"#;
    let dir = crate::helpers::config_dir(good);
    std::fs::write(dir.join("secret.txt"), "s3cret\n").expect("secret");
    let output = crate::helpers::check_config_in(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration is valid"));
}

#[test]
fn env_example_documents_a_valid_configuration() {
    let text = std::fs::read_to_string(crate::helpers::processes::repo_root().join(".env.example"))
        .expect(".env.example");
    let env: Vec<(String, String)> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && line.contains('='))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    assert!(env.len() > 20, "the example documents the keys");
    let settings = gatehouse::config::load(None, env)
        .unwrap_or_else(|e| panic!(".env.example is not valid: {e}"));
    assert_eq!(settings.providers["main"].client_id, "spa-bff");
    assert_eq!(settings.frontend.referrer_policy, "no-referrer");
}

#[test]
fn a_dot_env_file_fills_in_unset_variables_but_never_overrides_set_ones() {
    let dir = crate::helpers::config_dir(MINIMAL);
    std::fs::write(
        dir.join(".env"),
        "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET=from-dot-env\nGATEHOUSE_SESSION__IDLE_TIMEOUT_SECS=120\n",
    )
    .expect(".env");
    let run = |extra: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command
            .args(["check-config", "--config", "gatehouse.toml"])
            .current_dir(&dir)
            .env_remove("GATEHOUSE_CONFIG")
            .env_remove("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET")
            .env_remove("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS");
        for (k, v) in extra {
            command.env(k, v);
        }
        command.output().expect("run")
    };
    let output = run(&[]);
    assert!(
        output.status.success(),
        "the secret came from .env: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The process environment wins: an idle timeout above the absolute one is refused.
    let output = run(&[("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS", "999999")]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("idle_timeout_secs must not exceed"));
}

/// `check-config --online` against real providers: it reads their discovery documents and
/// keys (and redeems nothing), checks what the configuration needs, and says what to
/// register there.
pub(crate) fn check_online(issuer: &str, extra: &str) -> std::process::Output {
    let config = format!(
        "[server]\npublic_url = \"https://app.example.com\"\n\
         [providers.main]\nissuer = \"{issuer}\"\nclient_id = \"spa\"\n{extra}\n"
    );
    let dir = crate::helpers::config_dir(&config);
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config", "--online", "--config", "gatehouse.toml"])
        .current_dir(&dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET",
            "not-sent-anywhere",
        )
        .output()
        .expect("run")
}

#[test]
fn check_config_online_reports_what_the_provider_supports_and_what_to_register() {
    let issuer = &crate::helpers::shared_provider().issuer;
    let output = check_online(issuer, "");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for needle in [
        &format!("provider `main` ({issuer}): ok"),
        "PKCE S256: yes",
        "end-session (RP-initiated logout): yes",
        "token revocation: yes",
        "back-channel logout: yes",
        "front-channel logout: not advertised",
        "issuer in authorization responses (RFC 9207): yes",
        "redirect URI              https://app.example.com/auth/callback",
        "back-channel logout URI   https://app.example.com/auth/backchannel-logout",
        "front-channel logout URI  https://app.example.com/auth/frontchannel-logout (with iss",
        "grant types               authorization_code, refresh_token",
        "client authentication     client_secret_basic",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
}

#[test]
fn check_config_online_fails_on_a_wrong_issuer_or_an_unsupported_client_authentication() {
    let provider = crate::helpers::processes::ProviderProcess::start(
        &crate::helpers::processes::ProviderOptions {
            client_auth_methods: Some("client_secret_basic"),
            ..Default::default()
        },
    );
    // The issuer as the provider writes it, but with a trailing slash.
    let output = check_online(&format!("{}/", provider.issuer), "");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must match exactly"), "{stderr}");

    let output = check_online(
        &provider.issuer,
        "client_auth_method = \"client_secret_post\"",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("client_auth_method `client_secret_post` is not supported"),
        "{stderr}"
    );
    assert!(
        stderr.contains("it supports client_secret_basic"),
        "{stderr}"
    );

    // Nobody answers: a clear problem, not a hang.
    let port = crate::helpers::processes::free_port();
    let output = check_online(&format!("http://127.0.0.1:{port}"), "http_timeout_secs = 2");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("discovery failed"));
}

#[test]
fn check_config_checks_the_revocation_keys_format_and_where_it_comes_from() {
    let dir = crate::helpers::config_dir(MINIMAL);
    let run = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check-config", "--config", "gatehouse.toml"])
            .current_dir(&dir)
            .env_remove("GATEHOUSE_CONFIG")
            .env("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")
            .env("GATEHOUSE_SESSION__REVOCATION_KEY", key)
            .output()
            .expect("run")
    };
    let key = gatehouse::session::crypto::b64(&gatehouse::session::crypto::random_bytes());
    let output = run(&key);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bad = "not-32-bytes-of-base64url-but-a-typo";
    let output = run(bad);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("session.revocation_key must be 32 random bytes in base64url"),
        "{stderr}"
    );
    assert!(!stderr.contains(bad), "the value is not echoed: {stderr}");

    let in_file = format!("{MINIMAL}[session]\nrevocation_key = \"{key}\"\n");
    let output = gatehouse(&["check-config"], &in_file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("session.revocation_key must not be in the config file"),
        "{stderr}"
    );
    assert!(!stderr.contains(&key), "the key is not echoed: {stderr}");
}
