//! deploy/prometheus/alerts.yml: the rules parse, and every metric they name is in a real
//! scrape of the admin listener (after a login and a proxied call, so that every labelled
//! family has series).

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::helpers::echo::spawn_echo;
use crate::helpers::{spawn_app_with, AppOptions, Route};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

/// Every `gatehouse_…` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("gatehouse_") {
        let start = i + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn the_alert_rules_parse_and_name_only_metrics_a_scrape_contains() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(path).expect("alerts.yml");
    let rules: RuleFile = serde_yaml::from_str(&text).expect("a Prometheus rule file");
    let mut named = BTreeSet::new();
    let mut alerts = BTreeSet::new();
    for group in &rules.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            assert!(alerts.insert(rule.alert.clone()), "{} twice", rule.alert);
            assert!(
                rule.labels.contains_key("severity"),
                "{} has no severity",
                rule.alert
            );
            assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
            if let Some(duration) = &rule.for_ {
                assert!(
                    duration.ends_with('m') || duration.ends_with('s'),
                    "{}: for = {duration}",
                    rule.alert
                );
            }
            let names = metric_names(&rule.expr);
            assert!(
                !names.is_empty(),
                "{} names no gatehouse metric",
                rule.alert
            );
            named.extend(names);
        }
    }
    for expected in [
        "GatehouseLoginFailures",
        "GatehouseRefreshFailures",
        "GatehouseUpstreamErrors",
        "GatehouseUpstreamTimeouts",
        "GatehouseRateLimitingSpike",
        "GatehouseProviderDown",
        "GatehouseStoreErrors",
    ] {
        assert!(alerts.contains(expected), "no {expected} rule");
    }

    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        admin: true,
        routes: vec![Route::new("/api", &echo.base)],
        ..AppOptions::default()
    })
    .await;
    let mut browser = app.browser();
    browser.login("alice").await;
    assert_eq!(browser.api_get("/api/data").await.status, 200);
    let admin = app.admin_base.as_deref().expect("admin listener");
    let scrape = app
        .http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    // A family is in the scrape when it has samples, or (a counter nothing has counted yet,
    // e.g. refreshes) when the scrape declares it in a TYPE line.
    let samples: BTreeSet<&str> = scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let declared: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let present = |name: &str| {
        let family = ["_count", "_sum", "_bucket"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        samples.contains(name) || declared.contains(name) || declared.contains(family)
    };
    let missing: Vec<&String> = named.iter().filter(|name| !present(name)).collect();
    assert!(
        missing.is_empty(),
        "alert rules name metrics that a scrape does not contain: {missing:?}"
    );
}
