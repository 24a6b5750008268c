//! Authorization policies per route with Cedar (issue 29): own resources, time and
//! network, refunds after a recent MFA login, hostile spellings of a path parameter, broken
//! policy sets (check-config, SIGHUP, a changed file), and what the denials log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::echo::{raw_request, spawn_echo, EchoUpstream};
use crate::helpers::processes::{free_port, serve_command, spawn_in_nursery};
use crate::helpers::processes::{ProviderOptions, ProviderProcess};
use crate::helpers::scrape::{declared_total, scrape};
use crate::helpers::{
    captured_logs, config_dir, random_name, shared_provider, spawn_app_with, AppOptions, Browser,
    Policies, Resp, Route, ServerKeys, SessionKeys, TestApp,
};

/// The entity model and context of docs/policies.md, with the attributes these tests use.
const SCHEMA: &str = r#"
entity Role;
entity User in [Role] {
  sub: String,
  email?: String,
};
entity Route {
  customer?: String,
  order_id?: String,
  record_id?: String,
};
type RequestContext = {
  ip: ipaddr,
  now: Long,
  hour: Long,
  weekday: Long,
  amr: Set<String>,
  provider: String,
  acr?: String,
  auth_age?: Long,
};
action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" appliesTo {
  principal: [User],
  resource: [Route],
  context: RequestContext,
};
"#;

const OWN_ORDERS: &str = r#"
// A customer reads their own orders.
@id("customers-read-own-orders")
permit (principal, action == Action::"GET", resource == Route::"customer-orders")
when { resource has customer && resource.customer == principal.sub };

// Support staff read anyone's.
@id("support-reads-all-orders")
permit (principal in Role::"support", action == Action::"GET", resource == Route::"customer-orders");
"#;

const RECORDS: &str = r#"
@id("records-read")
permit (principal, action == Action::"GET", resource == Route::"records");

@id("records-delete")
permit (principal, action == Action::"DELETE", resource == Route::"records");

@id("no-delete-outside-office-hours")
forbid (principal, action == Action::"DELETE", resource == Route::"records")
unless { context.hour >= 9 && context.hour < 17 };

@id("no-delete-outside-the-office-network")
forbid (principal, action == Action::"DELETE", resource == Route::"records")
unless { context.ip.isInRange(ip("10.20.0.0/16")) };
"#;

/// The test provider's acr values (tests/support/provider/second_factor.mjs).
const PWD_ACR: &str = "urn:gatehouse:test:pwd";
const MFA_ACR: &str = "urn:gatehouse:test:mfa";

fn refunds_policy() -> String {
    format!(
        r#"
@id("refunds-after-a-recent-mfa-login")
permit (principal, action == Action::"POST", resource)
when {{
  (resource == Route::"refunds" || resource == Route::"refunds-no-step-up") &&
  context has acr && context.acr == "{MFA_ACR}" &&
  context has auth_age && context.auth_age < 600
}};
"#
    )
}

/// A directory with the schema and the given policy files.
fn policy_files(files: &[(&str, &str)]) -> (PathBuf, Vec<PathBuf>) {
    let dir = config_dir("");
    std::fs::write(dir.join("schema.cedarschema"), SCHEMA).expect("schema");
    let paths = files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("policy file");
            path
        })
        .collect();
    (dir, paths)
}

fn policies(dir: &Path, files: &[PathBuf]) -> Policies {
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    Policies::new(&dir.join("schema.cedarschema"), &files)
}

fn orders_route(echo: &EchoUpstream) -> Route {
    Route::new("/api/customers", &echo.base)
        .name("customer-orders")
        .paths(&["/{customer}/orders", "/{customer}/orders/{order_id}"])
        .methods(&["GET"])
        .policy()
        .rate_limit_off()
}

async fn call(browser: &mut Browser<'_>, method: reqwest::Method, path: &str) -> Resp {
    browser
        .request(method, path, &[("x-csrf", "1")], None)
        .await
}

async fn get(browser: &mut Browser<'_>, path: &str) -> Resp {
    call(browser, reqwest::Method::GET, path).await
}

#[tokio::test]
async fn customers_read_their_own_orders_and_support_reads_everyones() {
    let echo = spawn_echo().await;
    let (dir, files) = policy_files(&[("orders.cedar", OWN_ORDERS)]);
    let app = spawn_app_with(AppOptions {
        routes: vec![orders_route(&echo)],
        policies: Some(policies(&dir, &files).roles_claim("roles")),
        ..AppOptions::default()
    })
    .await;
    let mut bob = app.browser();
    bob.login("bob").await; // roles = ["user"]
    let mut alice = app.browser();
    alice.login("alice").await; // roles = ["support", "user"]

    let own = get(&mut bob, "/api/customers/bob/orders/7").await;
    assert_eq!(own.status, 200, "{}", own.body);
    let refused = get(&mut bob, "/api/customers/alice/orders").await;
    refused.assert_problem(403, "forbidden-by-policy");
    let refused = get(&mut bob, "/api/customers/alice/orders/7").await;
    refused.assert_problem(403, "forbidden-by-policy");
    assert_eq!(
        echo.seen(),
        vec!["/bob/orders/7"],
        "bob reached only his own"
    );

    for path in ["/api/customers/bob/orders", "/api/customers/carol/orders/9"] {
        let read = get(&mut alice, path).await;
        assert_eq!(read.status, 200, "support reads {path}: {}", read.body);
    }
    // Only the templates' paths are served: nothing else under the prefix goes out.
    for path in [
        "/api/customers/bob",
        "/api/customers/bob/orders/7/items",
        "/api/customers",
    ] {
        get(&mut alice, path).await.assert_problem(404, "not-found");
    }
    assert_eq!(
        echo.seen(),
        vec!["/bob/orders/7", "/bob/orders", "/carol/orders/9"]
    );
    // Anonymous: 401, as for any user route; the policy is not asked.
    let mut anonymous = app.browser();
    get(&mut anonymous, "/api/customers/bob/orders")
        .await
        .assert_problem(401, "unauthenticated");
}

/// Moves the app's clock back to the most recent `hour:30` UTC.
fn set_time_of_day(app: &TestApp, hour: i64) {
    let now = gatehouse::clock::Clock::now_millis(&app.clock);
    let day = 86_400_000;
    let target = hour * 3_600_000 + 30 * 60_000;
    let back = (now.rem_euclid(day) - target).rem_euclid(day);
    app.clock.rewind(Duration::from_millis(back as u64));
    let hour_now = gatehouse::clock::Clock::now_millis(&app.clock).rem_euclid(day) / 3_600_000;
    assert_eq!(hour_now, hour);
}

#[tokio::test]
async fn deletes_are_refused_outside_office_hours_and_outside_the_office_network() {
    let echo = spawn_echo().await;
    let (dir, files) = policy_files(&[("records.cedar", RECORDS)]);
    let app = spawn_app_with(AppOptions {
        routes: vec![Route::new("/api/records", &echo.base)
            .name("records")
            .paths(&["/{record_id}"])
            .methods(&["GET", "DELETE"])
            .policy()
            .rate_limit_off()],
        policies: Some(policies(&dir, &files)),
        // The test client is the office's reverse proxy; the browser's address is in
        // X-Forwarded-For.
        server: ServerKeys::new().trusted_proxies(&["127.0.0.1/32"]),
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await;
    let mut user = app.browser();
    user.login("dora").await;
    let from = |ip: &'static str| [("x-csrf", "1"), ("x-forwarded-for", ip)];
    let office = "10.20.3.4";
    let outside = "203.0.113.9";

    set_time_of_day(&app, 12);
    let deleted = user
        .request(
            reqwest::Method::DELETE,
            "/api/records/1",
            &from(office),
            None,
        )
        .await;
    assert_eq!(
        deleted.status, 200,
        "in hours, in the office: {}",
        deleted.body
    );
    user.request(
        reqwest::Method::DELETE,
        "/api/records/2",
        &from(outside),
        None,
    )
    .await
    .assert_problem(403, "forbidden-by-policy");
    let read = user
        .request(reqwest::Method::GET, "/api/records/2", &from(outside), None)
        .await;
    assert_eq!(read.status, 200, "reads are not limited: {}", read.body);

    set_time_of_day(&app, 20);
    user.request(
        reqwest::Method::DELETE,
        "/api/records/3",
        &from(office),
        None,
    )
    .await
    .assert_problem(403, "forbidden-by-policy");
    set_time_of_day(&app, 8);
    user.request(
        reqwest::Method::DELETE,
        "/api/records/4",
        &from(office),
        None,
    )
    .await
    .assert_problem(403, "forbidden-by-policy");
    set_time_of_day(&app, 16);
    let deleted = user
        .request(
            reqwest::Method::DELETE,
            "/api/records/5",
            &from(office),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "16:30 is in hours: {}", deleted.body);
    assert_eq!(echo.seen(), vec!["/1", "/2", "/5"]);

    // The events name the policies that decided.
    let logs = captured_logs();
    assert!(
        logs.contains("policy: forbidden by no-delete-outside-the-office-network"),
        "{logs}"
    );
    assert!(
        logs.contains("policy: forbidden by no-delete-outside-office-hours"),
        "{logs}"
    );
}

async fn provider_switch(provider: &ProviderProcess, path_and_query: &str) {
    reqwest::Client::new()
        .post(format!("{}/__test/{path_and_query}", provider.issuer))
        .send()
        .await
        .expect("provider test switch")
        .error_for_status()
        .expect("switch accepted");
}

#[tokio::test]
async fn refunds_need_a_recent_mfa_login_step_up_first_then_the_policy() {
    let provider = ProviderProcess::start(&ProviderOptions::default());
    let echo = spawn_echo().await;
    let (dir, files) = policy_files(&[("refunds.cedar", &refunds_policy())]);
    let app = spawn_app_with(AppOptions {
        provider: Some(&provider),
        routes: vec![
            // Asks for MFA itself: a session without it is sent to step up (401).
            Route::new("/api/orders", &echo.base)
                .name("refunds")
                .paths(&["/{order_id}/refund"])
                .methods(&["POST"])
                .require_acr(&[MFA_ACR])
                .policy()
                .rate_limit_off(),
            // Leaves it all to the policy: 403.
            Route::new("/api/quick-orders", &echo.base)
                .name("refunds-no-step-up")
                .paths(&["/{order_id}/refund"])
                .methods(&["POST"])
                .policy()
                .rate_limit_off(),
        ],
        policies: Some(policies(&dir, &files)),
        env: vec![(
            "GATEHOUSE_PROVIDERS__MAIN__ALLOWED_ACR_VALUES".to_owned(),
            format!("[\"{PWD_ACR}\", \"{MFA_ACR}\"]"),
        )],
        session: SessionKeys::long(),
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("erin").await;
    let refused = browser
        .request(
            reqwest::Method::POST,
            "/api/orders/7/refund",
            &[("x-csrf", "1"), ("x-return-to", "/orders/7")],
            None,
        )
        .await;
    refused.assert_problem(401, "step-up-required");
    call(
        &mut browser,
        reqwest::Method::POST,
        "/api/quick-orders/7/refund",
    )
    .await
    .assert_problem(403, "forbidden-by-policy");
    assert!(echo.seen().is_empty());

    // Step up: a new login with MFA.
    let login_url = refused.json()["login_url"]
        .as_str()
        .expect("login_url")
        .to_owned();
    let start = browser.get(&login_url).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = start.location().expect("to the provider").to_owned();
    let callback = browser.authenticate_at_provider(&authorize, "erin").await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 302, "{}", back.body);

    for path in ["/api/orders/7/refund", "/api/quick-orders/8/refund"] {
        let refunded = call(&mut browser, reqwest::Method::POST, path).await;
        assert_eq!(refunded.status, 200, "{path}: {}", refunded.body);
    }
    assert_eq!(echo.seen(), vec!["/7/refund", "/8/refund"]);

    // Ten minutes on, the MFA login is too old: the policy refuses (403; the route's own
    // step-up asks for the acr only, which the session still has).
    app.clock.advance(Duration::from_secs(601));
    provider_switch(&provider, "clock?advance_secs=601").await;
    for path in ["/api/orders/7/refund", "/api/quick-orders/8/refund"] {
        call(&mut browser, reqwest::Method::POST, path)
            .await
            .assert_problem(403, "forbidden-by-policy");
    }
    assert_eq!(echo.seen().len(), 2);
}

async fn raw_call(app: &TestApp, path: &str, cookie: &str) -> (u16, String) {
    raw_request(
        app.port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nCookie: {}={cookie}\r\n\
             Connection: close\r\n\r\n",
            app.cookie_name()
        ),
    )
    .await
}

/// Spellings of one path segment: escaped letters, double escapes, `;` parameters plain and
/// escaped, case, and what an upstream would trim.
fn spellings_of(segment: &str) -> Vec<String> {
    let mut out = vec![segment.to_owned()];
    for (at, byte) in segment.bytes().enumerate() {
        let (head, tail) = (&segment[..at], &segment[at + 1..]);
        out.push(format!("{head}%{byte:02X}{tail}"));
        out.push(format!("{head}%{byte:02x}{tail}"));
        out.push(format!("{head}%25{byte:02X}{tail}"));
    }
    out.push(segment.bytes().map(|b| format!("%{b:02x}")).collect());
    for suffix in [
        ";", ";x", ";x=1", "%3bx", "%3Bx", "%253bx", ".", "%2e", "%20", "%09", "%00", "%2f", "%5c",
        "/", "/..", "%2F..", "%40", "@",
    ] {
        out.push(format!("{segment}{suffix}"));
    }
    out.push(segment.to_uppercase());
    out.push(format!("%20{segment}"));
    out.push(format!("..;/{segment}"));
    out.push(format!("x;/../{segment}"));
    out
}

#[tokio::test]
async fn no_spelling_of_a_path_parameter_shows_the_policy_one_value_and_the_upstream_another() {
    let echo = spawn_echo().await;
    let (dir, files) = policy_files(&[
        ("orders.cedar", OWN_ORDERS),
        (
            "orders-ci.cedar",
            &OWN_ORDERS
                .replace("customer-orders", "customer-orders-ci")
                .replace("@id(\"", "@id(\"ci-"),
        ),
    ]);
    let app = spawn_app_with(AppOptions {
        routes: vec![
            Route::new("/api", &format!("{}/broad", echo.base)).rate_limit_off(),
            orders_route(&echo),
            // The same, in front of an upstream that ignores case.
            Route::new("/api/ci-customers", &echo.base)
                .name("customer-orders-ci")
                .paths(&["/{customer}/orders"])
                .methods(&["GET"])
                .match_case(false)
                .policy()
                .rate_limit_off(),
        ],
        policies: Some(policies(&dir, &files)),
        ..AppOptions::default()
    })
    .await;
    let mut bob = app.browser();
    bob.login("bob").await;
    let cookie = bob.session_cookie().expect("bob's session");

    let mut outcomes = std::collections::BTreeMap::<u16, usize>::new();
    for prefix in ["/api/customers", "/api/ci-customers"] {
        for (whose, spellings) in [
            ("alice", spellings_of("alice")),
            ("bob", spellings_of("bob")),
        ] {
            for spelling in spellings {
                let path = format!("{prefix}/{spelling}/orders");
                let (status, text) = raw_call(&app, &path, &cookie).await;
                *outcomes.entry(status).or_default() += 1;
                assert!(
                    [200, 400, 403, 404].contains(&status),
                    "{path} answered {status}:\n{text}"
                );
                if status == 200 {
                    // Only bob's own orders, the path the policy judged (as an upstream that
                    // ignores case reads it).
                    assert_eq!(whose, "bob", "{path} reached the upstream:\n{text}");
                    let received = if prefix == "/api/ci-customers" {
                        text.to_lowercase()
                    } else {
                        text.clone()
                    };
                    assert!(
                        received.contains("\"path\":\"/bob/orders\""),
                        "{path} reached the upstream as another path:\n{text}"
                    );
                } else {
                    assert!(text.contains("application/problem+json"), "{path}: {text}");
                }
            }
        }
    }
    for seen in echo.seen() {
        assert_eq!(
            seen.to_lowercase(),
            "/bob/orders",
            "the upstream received {seen}"
        );
    }
    for status in [200, 400, 403, 404] {
        assert!(
            outcomes.get(&status).is_some_and(|n| *n > 0),
            "{outcomes:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Broken policy sets
// ---------------------------------------------------------------------------------------

const SYNTAX_ERROR: &str = r#"
@id("fine")
permit (principal, action == Action::"GET", resource == Route::"records");

permit (principal, action == Action::"GET", resource == Route::"records")
when { context.hour >= };
"#;

const SCHEMA_ERROR: &str = r#"
@id("reads-a-claim-the-schema-lacks")
permit (principal, action == Action::"GET", resource == Route::"records")
when { principal.department == "sales" };
"#;

fn minimal_config(port: u16, admin_port: u16, policies: &str, routes: &str) -> String {
    format!(
        "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         workers = 1\nshutdown_timeout_secs = 1\n[admin]\nbind = \"127.0.0.1:{admin_port}\"\n\
         [providers.main]\nissuer = \"{}\"\nclient_id = \"policy-tests\"\n{policies}\n{routes}",
        shared_provider().issuer
    )
}

fn policies_table(files: &[&str]) -> String {
    let files: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "[policies]\nfiles = [{}]\nschema = \"schema.cedarschema\"\npoll_secs = 3600\n",
        files.join(", ")
    )
}

const RECORDS_ROUTE: &str =
    "[[routes]]\nprefix = \"/api/records\"\nupstream = \"http://127.0.0.1:9\"\n\
    name = \"records\"\npath = \"/{record_id}\"\npolicy = true\nmethods = [\"GET\", \"DELETE\"]\n";

fn check_config(dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config", "--config", "gatehouse.toml"])
        .current_dir(dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "not-used")
        .output()
        .expect("run gatehouse check-config")
}

#[tokio::test]
async fn check_config_names_every_broken_policy_by_file_and_line_and_exits_2() {
    let dir = config_dir("");
    std::fs::write(dir.join("schema.cedarschema"), SCHEMA).expect("schema");
    std::fs::write(dir.join("syntax.cedar"), SYNTAX_ERROR).expect("file");
    std::fs::write(dir.join("claims.cedar"), SCHEMA_ERROR).expect("file");
    // A route whose parameter the schema does not declare, and one with a method it lacks.
    let routes = format!(
        "{RECORDS_ROUTE}\n[[routes]]\nprefix = \"/api/shelves\"\nupstream = \"http://127.0.0.1:9\"\n\
         name = \"shelves\"\npath = \"/{{shelf}}\"\npolicy = true\nmethods = [\"PURGE\"]\n"
    );
    let config = minimal_config(
        free_port(),
        free_port(),
        &policies_table(&["syntax.cedar", "claims.cedar"]),
        &routes,
    );
    std::fs::write(dir.join("gatehouse.toml"), config).expect("config");
    let output = check_config(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("syntax.cedar:6:"), "{stderr}");
    assert!(stderr.contains("claims.cedar:4:"), "{stderr}");
    assert!(stderr.contains("department"), "{stderr}");
    assert!(
        stderr.contains("route `shelves` (/api/shelves)") && stderr.contains("shelf"),
        "{stderr}"
    );
    assert!(stderr.contains("PURGE"), "{stderr}");

    // Fixed, it passes.
    std::fs::write(dir.join("syntax.cedar"), RECORDS).expect("file");
    std::fs::write(dir.join("claims.cedar"), OWN_ORDERS).expect("file");
    let config = minimal_config(
        free_port(),
        free_port(),
        &policies_table(&["syntax.cedar", "claims.cedar"]),
        RECORDS_ROUTE,
    );
    std::fs::write(dir.join("gatehouse.toml"), config).expect("config");
    let output = check_config(&dir);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("policy set is valid: 6 polic"));
}

async fn metrics_text(http: &reqwest::Client, admin_port: u16) -> Option<String> {
    let response = http
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

fn live_digest(metrics: &str) -> Option<String> {
    metrics
        .lines()
        .find(|line| line.starts_with("gatehouse_policy_set_info{"))
        .and_then(|line| line.split("digest=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn at_sighup_a_broken_set_leaves_the_old_one_live_logs_why_and_the_metric_shows_it() {
    let dir = config_dir("");
    std::fs::write(dir.join("schema.cedarschema"), SCHEMA).expect("schema");
    std::fs::write(dir.join("records.cedar"), RECORDS).expect("file");
    let (port, admin_port) = (free_port(), free_port());
    let config = minimal_config(
        port,
        admin_port,
        &policies_table(&["records.cedar"]),
        RECORDS_ROUTE,
    );
    std::fs::write(dir.join("gatehouse.toml"), config).expect("config");
    let (command, stderr) = serve_command(&dir, "not-used");
    let mut child = spawn_in_nursery(command);
    let logs = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(digest) = metrics_text(&http, admin_port)
            .await
            .as_deref()
            .and_then(live_digest)
        {
            break digest;
        }
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().expect("status").is_none(),
            "gatehouse did not come up: {}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let metrics = metrics_text(&http, admin_port).await.expect("metrics");
    assert!(
        counter(&metrics, "gatehouse_policy_set_loaded_timestamp_seconds ") > 1.7e9,
        "{metrics}"
    );

    let pid = child.id();
    let sighup = || {
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP");
    };
    std::fs::write(dir.join("records.cedar"), SYNTAX_ERROR).expect("broken");
    sighup();
    let failed = "gatehouse_policy_reloads_total{result=\"failed\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = metrics_text(&http, admin_port).await.unwrap_or_default();
        if counter(&metrics, failed) >= 1.0 {
            break metrics;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed reload counted: {metrics}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(live_digest(&metrics).as_deref(), Some(first.as_str()));
    let text = logs();
    assert!(
        text.contains("policy set not reloaded") && text.contains("records.cedar:6"),
        "{text}"
    );
    assert!(child.try_wait().expect("status").is_none(), "still running");

    // A good set at the next SIGHUP goes live.
    std::fs::write(dir.join("records.cedar"), format!("{RECORDS}\n// v2\n")).expect("fixed");
    sighup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = metrics_text(&http, admin_port).await.unwrap_or_default();
        let digest = live_digest(&metrics);
        if digest.is_some() && digest.as_deref() != Some(first.as_str()) {
            assert!(counter(&metrics, "gatehouse_policy_reloads_total{result=\"ok\"}") >= 1.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{metrics}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logs().contains("policy set reloaded"), "{}", logs());
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_changed_file_reloads_the_set_and_a_broken_change_keeps_deciding_with_the_old_one() {
    let echo = spawn_echo().await;
    let (dir, files) = policy_files(&[("orders.cedar", OWN_ORDERS)]);
    let app = spawn_app_with(AppOptions {
        routes: vec![orders_route(&echo)],
        policies: Some(policies(&dir, &files).poll_secs(1)),
        admin: true,
        ..AppOptions::default()
    })
    .await;
    let mut bob = app.browser();
    bob.login("bob").await;
    assert_eq!(get(&mut bob, "/api/customers/bob/orders").await.status, 200);
    let before = scrape(&app).await;
    assert_eq!(
        declared_total(
            &before,
            "gatehouse_policy_reloads_total",
            &[("result", "failed")]
        ),
        0.0
    );

    std::fs::write(&files[0], SCHEMA_ERROR).expect("broken");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(&app).await;
        let failed = declared_total(
            &metrics,
            "gatehouse_policy_reloads_total",
            &[("result", "failed")],
        );
        if failed >= 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no failed reload");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still decided by the old set.
    assert_eq!(get(&mut bob, "/api/customers/bob/orders").await.status, 200);
    get(&mut bob, "/api/customers/alice/orders")
        .await
        .assert_problem(403, "forbidden-by-policy");

    // A valid change that drops the customers' rule goes live.
    std::fs::write(
        &files[0],
        OWN_ORDERS.replace("resource.customer == principal.sub", "false"),
    )
    .expect("new set");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&mut bob, "/api/customers/bob/orders").await.status == 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new set never went live"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    get(&mut bob, "/api/customers/bob/orders")
        .await
        .assert_problem(403, "forbidden-by-policy");
}

#[tokio::test]
async fn denials_are_logged_as_authz_denied_with_policy_ids_and_no_claim_value() {
    let echo = spawn_echo().await;
    let (dir, files) = policy_files(&[("orders.cedar", OWN_ORDERS)]);
    let app = spawn_app_with(AppOptions {
        routes: vec![orders_route(&echo)],
        policies: Some(policies(&dir, &files)),
        ..AppOptions::default()
    })
    .await;
    // Any id is an account at the test provider: its email and name claims are unique.
    let user = random_name("policy-user").to_lowercase();
    let mut browser = app.browser();
    browser.login(&user).await;
    get(&mut browser, "/api/customers/someone-else/orders")
        .await
        .assert_problem(403, "forbidden-by-policy");

    let logs = captured_logs();
    let denial = logs
        .lines()
        .find(|line| line.contains("authz.denied") && line.contains(&user))
        .unwrap_or_else(|| panic!("no authz.denied for {user}: {logs}"));
    assert!(denial.contains("policy: no policy permits"), "{denial}");
    let email = format!("{user}@example.test");
    let mut name = user.clone();
    name[..1].make_ascii_uppercase();
    for claim_value in [email.as_str(), name.as_str()] {
        assert!(
            !logs.contains(claim_value),
            "`{claim_value}` reached the log"
        );
    }
    let events_md =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.md"))
            .expect("docs/events.md");
    assert!(
        events_md.contains("forbidden-by-policy"),
        "authz.denied documents policy denials"
    );
}

#[tokio::test]
async fn the_demo_policy_lets_users_read_only_their_own_profile_and_support_the_support_area() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/policies");
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        routes: vec![
            Route::new("/api/users", &echo.base)
                .name("users")
                .paths(&["/{sub}"])
                .methods(&["GET"])
                .policy(),
            Route::new("/api/support", &echo.base)
                .name("support")
                .methods(&["GET"])
                .policy(),
        ],
        policies: Some(Policies::new(
            &demo.join("gatehouse.cedarschema"),
            &[&demo.join("demo.cedar")],
        )),
        ..AppOptions::default()
    })
    .await;
    let mut bob = app.browser();
    bob.login("bob").await;
    let mut alice = app.browser();
    alice.login("alice").await; // the support role

    assert_eq!(get(&mut bob, "/api/users/bob").await.status, 200);
    get(&mut bob, "/api/users/alice")
        .await
        .assert_problem(403, "forbidden-by-policy");
    get(&mut bob, "/api/support")
        .await
        .assert_problem(403, "forbidden-by-policy");
    assert_eq!(get(&mut alice, "/api/users/alice").await.status, 200);
    get(&mut alice, "/api/users/bob")
        .await
        .assert_problem(403, "forbidden-by-policy");
    assert_eq!(get(&mut alice, "/api/support/tickets").await.status, 200);
    assert_eq!(echo.seen(), vec!["/bob", "/alice", "/tickets"]);

    // The demo's own configuration passes check-config with its policy set.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config", "--config", "demo/gatehouse.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("GATEHOUSE_CONFIG")
        .env("GATEHOUSE_PROVIDERS__DEMO__CLIENT_SECRET", "not-used")
        .env("GATEHOUSE_PROVIDERS__PARTNER__CLIENT_SECRET", "not-used")
        .output()
        .expect("check-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("policy set is valid: 2 polic"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
