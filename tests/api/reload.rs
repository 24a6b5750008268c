//! Live configuration reload: SIGHUP (or `gatehouse reload`) re-reads the configuration;
//! routes, providers, rate limits and the frontend change at once, a call in flight
//! finishes on the configuration it started with, and a configuration that does not load
//! or changes what cannot change live is refused with the old one still serving.

use futures_util::StreamExt;
use gatehouse::live::{sha256_hex, ReloadOutcome};

use crate::helpers::echo::spawn_echo;
use crate::helpers::gatehouse_process::GatehouseProcess;
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::scrape::{scrape_at, value};
use crate::helpers::{
    random_name, register_client, spawn_app_with, AppOptions, Browser, Frontend, Provider,
    RateLimits, Route, ServerKeys, SessionKeys,
};

const RELOADED: &str = "configuration reloaded";
const NOT_RELOADED: &str = "configuration not reloaded";

async fn status(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url)
        .header("x-csrf", "1")
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

fn reloads(scrape: &prometheus_parse::Scrape, result: &str) -> f64 {
    value(
        scrape,
        "gatehouse_config_reloads_total",
        &[("result", result)],
    )
}

#[tokio::test]
async fn a_route_added_by_sighup_answers() {
    let echo = spawn_echo().await;
    let options = |routes: Vec<Route>| AppOptions {
        routes,
        admin: true,
        ..AppOptions::default()
    };
    let app = spawn_app_with(options(vec![Route::new("/api", &echo.base).token("none")])).await;
    let gatehouse = GatehouseProcess::start(&app).await;
    let http = reqwest::Client::new();
    let admin = gatehouse.admin_base.clone().expect("admin listener");
    assert_eq!(
        status(&http, &format!("{}/new/x", gatehouse.base)).await,
        404
    );
    let before = scrape_at(&http, &admin).await;
    let started_with = sha256_hex(Some(
        &std::fs::read_to_string(gatehouse.config_path()).expect("config"),
    ));
    assert_eq!(
        value(
            &before,
            "gatehouse_config_info",
            &[("sha256", started_with.as_str())]
        ),
        1.0
    );

    gatehouse.write_config(&app.config_with(options(vec![
        Route::new("/api", &echo.base).token("none"),
        Route::new("/new", &echo.base).token("none"),
    ])));
    gatehouse.signal(libc::SIGHUP);
    gatehouse.wait_for_log(RELOADED, 0).await;

    assert_eq!(
        status(&http, &format!("{}/new/x", gatehouse.base)).await,
        200
    );
    assert_eq!(
        status(&http, &format!("{}/api/x", gatehouse.base)).await,
        200
    );
    let after = scrape_at(&http, &admin).await;
    assert_eq!(reloads(&after, "ok") - reloads(&before, "ok"), 1.0);
    let now_in_force = sha256_hex(Some(
        &std::fs::read_to_string(gatehouse.config_path()).expect("config"),
    ));
    assert_ne!(now_in_force, started_with);
    assert_eq!(
        value(
            &after,
            "gatehouse_config_info",
            &[("sha256", now_in_force.as_str())]
        ),
        1.0,
        "the hash of the file in force"
    );
    assert!(
        !after
            .samples
            .iter()
            .any(|s| s.metric == "gatehouse_config_info"
                && s.labels.get("sha256") == Some(started_with.as_str())),
        "the old hash is gone"
    );
}

#[tokio::test]
async fn a_removed_route_gives_404_while_a_download_started_before_finishes_intact() {
    let echo = spawn_echo().await;
    let options = |routes: Vec<Route>| AppOptions {
        routes,
        server: ServerKeys::new().pid_file("gatehouse.pid"),
        ..AppOptions::default()
    };
    let app = spawn_app_with(options(vec![
        Route::new("/api", &echo.base).token("none"),
        Route::new("/other", &echo.base).token("none"),
    ]))
    .await;
    let gatehouse = GatehouseProcess::start(&app).await;
    let http = reqwest::Client::new();

    // 20 events, 100 ms apart: two seconds of download.
    let download = http
        .get(format!("{}/api/events?count=20&ms=100", gatehouse.base))
        .header("x-csrf", "1")
        .send()
        .await
        .expect("download starts");
    assert_eq!(download.status(), 200);
    let mut body = download.bytes_stream();
    let mut received = Vec::new();
    received.extend_from_slice(&body.next().await.expect("a first event").expect("bytes"));

    gatehouse.write_config(&app.config_with(options(vec![
        Route::new("/other", &echo.base).token("none"),
    ])));
    let reload = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["reload", "--config", "gatehouse.toml"])
        .current_dir(gatehouse.dir())
        .env_remove("GATEHOUSE_CONFIG")
        .env(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET",
            &app.client_secret,
        )
        .output()
        .expect("gatehouse reload");
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    gatehouse.wait_for_log(RELOADED, 0).await;
    assert_eq!(
        status(&http, &format!("{}/api/x", gatehouse.base)).await,
        404,
        "the route is gone"
    );
    assert_eq!(
        status(&http, &format!("{}/other/x", gatehouse.base)).await,
        200
    );

    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.expect("the download goes on"));
    }
    let text = String::from_utf8(received).expect("text");
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "every event, in order: {text}");
}

#[tokio::test]
async fn gatehouse_reload_without_a_pid_file_says_how() {
    let app = spawn_app_with(AppOptions::default()).await;
    let gatehouse = GatehouseProcess::start(&app).await;
    let reload = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["reload", "--config", "gatehouse.toml"])
        .current_dir(gatehouse.dir())
        .env_remove("GATEHOUSE_CONFIG")
        .env(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET",
            &app.client_secret,
        )
        .output()
        .expect("gatehouse reload");
    assert_eq!(reload.status.code(), Some(2));
    let said = String::from_utf8_lossy(&reload.stderr);
    assert!(said.contains("server.pid_file"), "{said}");
    assert!(said.contains("kill -HUP"), "{said}");
}

#[tokio::test]
async fn a_second_provider_added_live_can_log_users_in_and_removed_cannot() {
    let second = ProviderProcess::start(&ProviderOptions {
        host: "127.0.0.3",
        ..ProviderOptions::default()
    });
    let app = spawn_app_with(AppOptions {
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await;
    let client = register_client(&second.issuer, &app.base).await;
    let secret_file = crate::helpers::processes::artifacts_dir().join(random_name("secret-"));
    std::fs::write(&secret_file, &client.client_secret).expect("secret file");

    let mut browser = Browser::new(&app);
    let refused = browser.get("/auth/login?provider=second").await;
    assert_eq!(refused.status, 400, "{}", refused.transcript());

    let config = app.config_with(AppOptions {
        session: SessionKeys::long(),
        default_provider: Some("main".into()),
        providers: vec![Provider::new("second", &second.issuer, &client.client_id)
            .client_secret_file(&secret_file)],
        ..AppOptions::default()
    });
    let outcome = app
        .reloader
        .reload_text(Some(&config), app.env.clone())
        .await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );

    let start = browser.get("/auth/login?provider=second").await;
    assert_eq!(start.status, 302, "{}", start.transcript());
    let authorize = start.location().expect("to the provider").to_owned();
    assert!(authorize.starts_with(&second.issuer), "{authorize}");
    let callback = browser.authenticate_at_provider(&authorize, "bob").await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "callback: {}", done.transcript());
    let user = browser.api_get("/auth/user").await;
    assert_eq!(user.status, 200, "{}", user.transcript());
    assert_eq!(user.json()["session"]["provider"], "second");
    assert_eq!(user.json()["sub"], "bob");

    // The first provider still logs users in.
    let mut other = Browser::new(&app);
    other.login("alice").await;

    // Removed again: no new login there.
    let outcome = app
        .reloader
        .reload_text(
            Some(&app.config_with(AppOptions {
                session: SessionKeys::long(),
                ..AppOptions::default()
            })),
            app.env.clone(),
        )
        .await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let mut third = Browser::new(&app);
    let refused = third.get("/auth/login?provider=second").await;
    assert_eq!(refused.status, 400, "{}", refused.transcript());
    third.login("carol").await;
}

#[tokio::test]
async fn a_bad_file_and_an_unchangeable_key_are_refused_with_the_old_config_serving() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api", &echo.base).token("none")],
        admin: true,
        ..AppOptions::default()
    })
    .await;
    let gatehouse = GatehouseProcess::start(&app).await;
    let http = reqwest::Client::new();
    let admin = gatehouse.admin_base.clone().expect("admin listener");
    let before = scrape_at(&http, &admin).await;
    let in_force = std::fs::read_to_string(gatehouse.config_path()).expect("config");

    // A file with two problems: both are logged, nothing changes.
    gatehouse.write_config(&app.config_with(AppOptions {
        routes: vec![
            Route::new("/api", &echo.base).token("none"),
            Route::new("/new", "not a url").token("none"),
            Route::new("/third", &echo.base).token("nonsense"),
        ],
        admin: true,
        ..AppOptions::default()
    }));
    gatehouse.signal(libc::SIGHUP);
    let logs = gatehouse.wait_for_log(NOT_RELOADED, 0).await;
    let problems: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("configuration reload: problem"))
        .collect();
    assert!(problems.len() >= 2, "every problem logged: {logs}");
    assert!(
        problems
            .iter()
            .any(|line| line.contains("routes[1].upstream")),
        "{logs}"
    );
    assert!(
        problems.iter().any(|line| line.contains("routes[2].token")),
        "{logs}"
    );
    assert_eq!(
        status(&http, &format!("{}/api/x", gatehouse.base)).await,
        200
    );
    assert_eq!(
        status(&http, &format!("{}/new/x", gatehouse.base)).await,
        404
    );

    // Not TOML at all.
    std::fs::write(gatehouse.config_path(), "[server\nbind = ").expect("write");
    gatehouse.signal(libc::SIGHUP);
    gatehouse.wait_for_log(NOT_RELOADED, 1).await;
    assert_eq!(
        status(&http, &format!("{}/api/x", gatehouse.base)).await,
        200
    );

    // A new route beside keys that cannot change live: all of it refused, the keys named.
    gatehouse.write_config(&app.config_with(AppOptions {
        routes: vec![
            Route::new("/api", &echo.base).token("none"),
            Route::new("/new", &echo.base).token("none"),
        ],
        session: SessionKeys::new().cookie_name("__Host-other"),
        server: ServerKeys::new().header_timeout_ms(4000),
        admin: true,
        ..AppOptions::default()
    }));
    gatehouse.signal(libc::SIGHUP);
    let logs = gatehouse.wait_for_log(NOT_RELOADED, 2).await;
    let refusal = logs
        .lines()
        .find(|line| line.contains("cannot change while gatehouse runs"))
        .unwrap_or_else(|| panic!("a refusal naming the keys: {logs}"));
    assert!(refusal.contains("session.cookie_name"), "{refusal}");
    assert!(refusal.contains("server.header_timeout_ms"), "{refusal}");
    assert!(!refusal.contains("routes"), "routes may change: {refusal}");
    assert_eq!(
        status(&http, &format!("{}/api/x", gatehouse.base)).await,
        200
    );
    assert_eq!(
        status(&http, &format!("{}/new/x", gatehouse.base)).await,
        404,
        "nothing of a refused configuration is in force"
    );
    assert_eq!(gatehouse.log_count(RELOADED), 0, "{logs}");

    let after = scrape_at(&http, &admin).await;
    assert_eq!(
        reloads(&after, "invalid") - reloads(&before, "invalid"),
        2.0
    );
    assert_eq!(
        reloads(&after, "refused") - reloads(&before, "refused"),
        1.0
    );
    assert_eq!(reloads(&after, "ok"), reloads(&before, "ok"));
    assert_eq!(
        value(
            &after,
            "gatehouse_config_info",
            &[("sha256", sha256_hex(Some(&in_force)).as_str())]
        ),
        1.0,
        "the configuration in force is still the first"
    );
}

#[tokio::test]
async fn a_rate_limit_changed_live_applies_to_the_next_calls() {
    let echo = spawn_echo().await;
    let options = |limits: RateLimits| AppOptions {
        routes: vec![Route::new("/api", &echo.base).token("none")],
        rate_limits: limits,
        ..AppOptions::default()
    };
    let app = spawn_app_with(options(RateLimits::new().api(1000, 60))).await;
    let http = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(status(&http, &format!("{}/api/x", app.base)).await, 200);
    }
    let outcome = app
        .reloader
        .reload_text(
            Some(&app.config_with(options(RateLimits::new().api(2, 60)))),
            app.env.clone(),
        )
        .await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let url = format!("{}/api/x", app.base);
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..4).map(|_| status(&http, &url))).await;
    assert!(
        statuses.contains(&429),
        "two calls a minute from now on: {statuses:?}"
    );
}

#[tokio::test]
async fn the_frontends_settings_change_live() {
    let dir = crate::helpers::processes::artifacts_dir().join(random_name("site-"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("index.html"), "<!doctype html><p>app</p>").expect("index");
    let options = |policy: &str| AppOptions {
        frontend: Some(Frontend::dir(&dir).content_security_policy(policy)),
        ..AppOptions::default()
    };
    let app = spawn_app_with(options("default-src 'self'")).await;
    let csp = |response: reqwest::Response| {
        response.headers()["content-security-policy"]
            .to_str()
            .expect("text")
            .to_owned()
    };
    let page = app
        .http
        .get(format!("{}/", app.base))
        .send()
        .await
        .expect("page");
    assert_eq!(csp(page), "default-src 'self'");
    let outcome = app
        .reloader
        .reload_text(
            Some(&app.config_with(options("default-src 'none'"))),
            app.env.clone(),
        )
        .await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let page = app
        .http
        .get(format!("{}/", app.base))
        .send()
        .await
        .expect("page");
    assert_eq!(csp(page), "default-src 'none'");
}

#[tokio::test]
async fn a_client_secret_changed_alone_is_used_from_the_next_reload_on() {
    let app = crate::helpers::spawn_app().await;
    // A second client at the same provider, whose secret file first holds a stale secret.
    let client = register_client(&app.issuer, &app.base).await;
    let secret_file = crate::helpers::processes::artifacts_dir().join(random_name("secret-"));
    let stale = [
        "a-secret-the-provider-no-longer-takes",
        "another-stale-secret",
    ];
    // The whole-run log check then shows that no reload logs a secret, old or new.
    for secret in stale.iter().copied().chain([client.client_secret.as_str()]) {
        crate::helpers::record_secret(secret);
    }
    std::fs::write(&secret_file, stale[0]).expect("secret file");
    let config = app.config_with(AppOptions {
        default_provider: Some("main".into()),
        providers: vec![Provider::new("second", &app.issuer, &client.client_id)
            .client_secret_file(&secret_file)],
        ..AppOptions::default()
    });
    let reload = || async {
        let outcome = app
            .reloader
            .reload_text(Some(&config), app.env.clone())
            .await;
        assert!(
            matches!(outcome, ReloadOutcome::Applied { .. }),
            "{outcome:?}"
        );
    };
    reload().await;
    // Where a login at `second` ends for the browser, and whether it has a session then.
    let login_at_second = || async {
        let mut browser = Browser::new(&app);
        let start = browser.get("/auth/login?provider=second").await;
        assert_eq!(start.status, 302, "{}", start.transcript());
        let location = start.location().expect("a redirect").to_owned();
        // The provider's pushed authorization request takes the client's secret already.
        if !location.starts_with(&app.issuer) {
            return (location, browser.session_cookie());
        }
        let callback = browser.authenticate_at_provider(&location, "bob").await;
        let done = browser.get(&callback).await;
        assert_eq!(done.status, 302, "callback: {}", done.transcript());
        let location = done.location().expect("a redirect").to_owned();
        (location, browser.session_cookie())
    };
    let refused = ("/?login_error=invalid_client".to_owned(), None);
    assert_eq!(login_at_second().await, refused, "the stale secret");

    // The operator writes the new secret into the same file and reloads: nothing else
    // changes, and the provider's next client authentication carries the new secret.
    std::fs::write(&secret_file, &client.client_secret).expect("secret file");
    reload().await;
    let (landed, cookie) = login_at_second().await;
    assert_eq!(landed, "/");
    assert!(cookie.is_some(), "logged in with the new secret");

    // And once more: a secret changed again is used again (the provider refuses this one).
    std::fs::write(&secret_file, stale[1]).expect("secret file");
    reload().await;
    assert_eq!(login_at_second().await, refused, "the stale secret again");
}
