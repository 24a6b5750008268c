//! `config::load` as a whole: every rule, and every problem reported at once.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MINIMAL: &str = r#"
    [server]
    public_url = "https://app.example.com"
    [providers.main]
    issuer = "https://id.example.com"
    client_id = "spa"
"#;

#[test]
fn the_revocation_key_comes_from_the_environment_or_a_file_and_is_checked() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let settings = load(Some(MINIMAL), secret.clone()).expect("valid");
    assert!(settings.session.revocation_key.is_none(), "off by default");

    let key = crate::session::crypto::b64(&[7u8; 32]);
    let mut with_key = secret.clone();
    with_key.push(("GATEHOUSE_SESSION__REVOCATION_KEY".into(), key.clone()));
    let settings = load(Some(MINIMAL), with_key).expect("valid");
    assert!(settings.session.revocation_key.is_some());
    // As `basenc --base64url` writes it: padded.
    let mut padded = secret.clone();
    padded.push((
        "GATEHOUSE_SESSION__REVOCATION_KEY".into(),
        format!("{key}="),
    ));
    assert!(load(Some(MINIMAL), padded)
        .expect("valid")
        .session
        .revocation_key
        .is_some());
    assert!(
        !format!("{settings:?}").contains(&key),
        "Debug shows no key"
    );

    let dir = std::env::temp_dir().join(format!("gatehouse-rk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("revocation.key");
    std::fs::write(&file, format!("{key}\n")).expect("write");
    let from_file = format!(
        "{MINIMAL}\n[session]\nrevocation_key_file = \"{}\"\n",
        file.display()
    );
    let settings = load(Some(&from_file), secret.clone()).expect("valid");
    assert!(settings.session.revocation_key.is_some());

    for bad in ["short", "!!!", &crate::session::crypto::b64(&[1u8; 31])] {
        let mut with_bad = secret.clone();
        with_bad.push(("GATEHOUSE_SESSION__REVOCATION_KEY".into(), bad.to_owned()));
        let errors = load(Some(MINIMAL), with_bad).expect_err("invalid key").0;
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("session.revocation_key must be 32 random bytes")),
            "{errors:?}"
        );
        assert!(
            !errors.iter().any(|e| e.contains(bad)),
            "the value is not echoed"
        );
    }

    let in_file = format!("{MINIMAL}\n[session]\nrevocation_key = \"{key}\"\n");
    let errors = load(Some(&in_file), secret.clone())
        .expect_err("in the file")
        .0;
    assert!(errors
        .iter()
        .any(|e| e.starts_with("session.revocation_key must not be in the config file")));

    let mut both = secret;
    both.push(("GATEHOUSE_SESSION__REVOCATION_KEY".into(), key));
    let errors = load(Some(&from_file), both).expect_err("both").0;
    assert!(errors.iter().any(|e| e.contains("are both set")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_admin_listener_is_off_unless_bound_to_a_valid_address() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let settings = load(Some(MINIMAL), secret.clone()).expect("valid");
    assert_eq!(settings.admin.bind, None);

    let with_admin = format!("{MINIMAL}\n[admin]\nbind = \"127.0.0.1:9091\"\n");
    let settings = load(Some(&with_admin), secret.clone()).expect("valid");
    assert_eq!(
        settings.admin.bind,
        Some("127.0.0.1:9091".parse().expect("addr"))
    );

    let mut bad = secret.clone();
    bad.push(("GATEHOUSE_ADMIN__BIND".into(), "localhost:metrics".into()));
    let errors = load(Some(MINIMAL), bad).expect_err("invalid").0;
    assert!(errors
        .iter()
        .any(|e| e.starts_with("admin.bind: `localhost:metrics`")));

    let mut same = secret;
    same.push(("GATEHOUSE_ADMIN__BIND".into(), "127.0.0.1:8080".into()));
    let errors = load(Some(MINIMAL), same)
        .expect_err("same as server.bind")
        .0;
    assert!(errors
        .iter()
        .any(|e| e == "admin.bind must differ from server.bind"));
}

#[test]
fn websocket_routes_open_with_get_and_say_how_long_they_may_idle() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let with_route = |route: &str| {
        format!(
            "{MINIMAL}\n[[routes]]\nprefix = \"/live\"\nupstream = \"http://127.0.0.1:9000\"\n{route}\n"
        )
    };
    let settings = load(Some(&with_route("websocket = true")), secret.clone()).expect("valid");
    let idle = settings.routes[0].websocket.map(|ws| ws.idle);
    assert_eq!(
        idle,
        Some(Duration::from_secs(300)),
        "the default idle limit"
    );
    let settings = load(Some(&with_route("")), secret.clone()).expect("valid");
    assert!(settings.routes[0].websocket.is_none());

    for (route, problem) in [
        (
            "websocket_idle_secs = 30",
            "routes[0].websocket_idle_secs applies only with `websocket = true`",
        ),
        (
            "websocket = true\nwebsocket_idle_secs = 0",
            "routes[0].websocket_idle_secs must be greater than zero",
        ),
        (
            "websocket = true\nmethods = [\"POST\"]",
            "routes[0].websocket: a WebSocket opens with GET, so `methods` must include it",
        ),
    ] {
        let errors = load(Some(&with_route(route)), secret.clone())
            .expect_err(route)
            .0;
        assert!(errors.iter().any(|e| e == problem), "{route}: {errors:?}");
    }
}

#[test]
fn private_key_jwt_needs_a_key_and_no_secret() {
    let dir = std::env::temp_dir().join(format!("gatehouse-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("client.pem");
    std::fs::write(
        &key,
        rcgen::KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write key");
    let key_env = |secret: &str| {
        env(&[
            (
                "GATEHOUSE_PROVIDERS__MAIN__CLIENT_AUTH_METHOD",
                "private_key_jwt",
            ),
            (
                "GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_FILE",
                key.to_str().expect("utf-8"),
            ),
            ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_ID", "k1"),
            ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", secret),
        ])
    };
    // An empty secret counts as unset.
    let settings = load(Some(MINIMAL), key_env("")).expect("valid");
    let provider = settings.provider("main").expect("main");
    assert_eq!(provider.client_auth_method, ClientAuthMethod::PrivateKeyJwt);
    let client_key = provider.client_key.as_ref().expect("key loaded");
    assert_eq!((client_key.kid(), client_key.alg()), ("k1", "ES256"));
    assert!(
        !format!("{provider:?}").contains("PRIVATE KEY"),
        "Debug shows no key"
    );

    let errors = load(Some(MINIMAL), key_env("s3cret"))
        .expect_err("secret and key")
        .0;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("client_secret is set, but")),
        "{errors:?}"
    );
    assert!(!errors.join("\n").contains("s3cret"));

    let errors = load(
        Some(MINIMAL),
        env(&[
            ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s"),
            ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_KEY_ID", "k1"),
        ]),
    )
    .expect_err("a key id without private_key_jwt")
    .0;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("client_key_id is only used with")),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_audit_file_is_optional_and_must_name_a_file() {
    let secret = || env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let settings = load(Some(MINIMAL), secret()).expect("valid");
    assert_eq!(settings.log.audit_file, None);
    let with = |value: &str| format!("{MINIMAL}\n[log]\naudit_file = {value:?}\n");
    let settings = load(Some(&with("/var/log/gatehouse/audit.log")), secret()).expect("valid");
    assert_eq!(
        settings.log.audit_file.as_deref(),
        Some(Path::new("/var/log/gatehouse/audit.log"))
    );
    let from_env = load(
        Some(MINIMAL),
        env(&[
            ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s"),
            ("GATEHOUSE_LOG__AUDIT_FILE", "/tmp/audit.log"),
        ]),
    )
    .expect("valid");
    assert_eq!(
        from_env.log.audit_file.as_deref(),
        Some(Path::new("/tmp/audit.log"))
    );
    for bad in ["", "  ", "/var/log/", "/"] {
        let errors = load(Some(&with(bad)), secret()).expect_err(bad).0;
        assert!(
            errors.iter().any(|e| e.starts_with("log.audit_file")),
            "{bad:?}: {errors:?}"
        );
    }
}

#[test]
fn env_layers_over_file_and_supplies_the_secret() {
    let settings = load(
        Some(MINIMAL),
        env(&[
            ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "12345"),
            ("GATEHOUSE_SESSION__IDLE_TIMEOUT_SECS", "90"),
            ("GATEHOUSE_PROVIDERS__MAIN__SCOPES", r#"["openid","roles"]"#),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("valid");
    let provider = settings.provider("main").expect("main");
    assert_eq!(provider.client_secret.expose_secret(), "12345");
    assert_eq!(provider.scopes, vec!["openid", "roles"]);
    assert_eq!(settings.session.idle_timeout, Duration::from_secs(90));
    assert_eq!(
        provider.redirect_uri.as_str(),
        "https://app.example.com/auth/callback"
    );
    assert_eq!(settings.session.cookie_name, "__Host-gatehouse");
    assert_eq!(settings.default_provider, "main");
}

#[test]
fn reports_every_problem_at_once() {
    let text = r#"
        colour = "blue"
        [server]
        public_url = "http://app.example.com"
        bind = "nowhere"
        [session]
        idle_timeout_secs = 10
        touch_interval_secs = 60
        [providers.main]
        issuer = "http://id.example.com"
        client_secret = "in-the-file"
        client_auth_method = "private_key_jwt"
        scopes = ["profile"]
        flavour = "x"
    "#;
    let errors = load(Some(text), Vec::new()).expect_err("invalid").0;
    let joined = errors.join("\n");
    for needle in [
        "unknown key `colour`",
        "unknown key `providers.main.flavour`",
        "server.bind",
        "server.public_url",
        "touch_interval_secs",
        "providers.main.issuer",
        "client_secret must not be in the config file",
        "private_key_jwt",
        "providers.main.scopes must include `openid`",
        "providers.main.client_id is required",
    ] {
        assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
    }
}

#[test]
fn frontend_defaults_and_problems() {
    let secret = ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s");
    let settings = load(Some(MINIMAL), env(&[secret])).expect("valid");
    assert_eq!(
        settings.frontend.source,
        FrontendSource::Dir {
            path: PathBuf::from("static"),
            configured: false
        }
    );
    assert_eq!(
        settings.frontend.content_security_policy.as_deref(),
        Some(DEFAULT_CSP)
    );
    assert_eq!(settings.frontend.referrer_policy, "no-referrer");

    let dev = load(
        Some(MINIMAL),
        env(&[
            secret,
            ("GATEHOUSE_FRONTEND__DEV_SERVER", "http://127.0.0.1:5173"),
        ]),
    )
    .expect("valid");
    assert!(matches!(dev.frontend.source, FrontendSource::DevServer(_)));
    assert_eq!(
        dev.frontend.content_security_policy.as_deref(),
        Some(DEFAULT_DEV_CSP)
    );

    let text = format!(
        "{MINIMAL}\n[frontend]\ndir = \"/nonexistent/dist\"\ndev_server = \"http://127.0.0.1:5173\"\n\
         referrer_policy = \"sometimes\"\ncontent_security_policy = \"default-src 'self', img-src *\"\n\
         colour = 1\n"
    );
    let errors = load(Some(&text), env(&[secret])).expect_err("invalid").0;
    let joined = errors.join("\n");
    for needle in [
        "frontend.dir and frontend.dev_server are both set",
        "frontend.referrer_policy: `sometimes`",
        "frontend.content_security_policy",
        "unknown key `frontend.colour`",
    ] {
        assert!(joined.contains(needle), "missing `{needle}` in:\n{joined}");
    }

    for (key, value, needle) in [
        (
            "DIR",
            "/nonexistent/dist",
            "/nonexistent/dist is not a directory",
        ),
        (
            "DEV_SERVER",
            "http://127.0.0.1:5173/app",
            "must be an http(s) origin",
        ),
        ("DEV_SERVER", "ftp://127.0.0.1", "must be an http(s) origin"),
    ] {
        let errors = load(
            Some(MINIMAL),
            env(&[secret, (&format!("GATEHOUSE_FRONTEND__{key}"), value)]),
        )
        .expect_err("invalid")
        .0
        .join("\n");
        assert!(errors.contains(needle), "{key}={value}: {errors}");
    }
}

#[test]
fn insecure_http_drops_host_prefix_and_secure() {
    let settings = load(
        Some(MINIMAL),
        env(&[
            ("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s"),
            ("GATEHOUSE_SERVER__INSECURE_HTTP", "true"),
            ("GATEHOUSE_SERVER__PUBLIC_URL", "http://devbox.local:8080"),
        ]),
    )
    .expect("valid");
    assert!(!settings.session.secure_cookies);
    assert_eq!(settings.session.cookie_name, "gatehouse");
}

mod operations;
mod upstream_and_policy_routes;
