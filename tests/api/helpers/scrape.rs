//! The admin listener's `/metrics`, scraped and read as Prometheus does.

use prometheus_parse::{Scrape, Value};

use super::TestApp;

pub fn admin(app: &TestApp) -> &str {
    app.admin_base.as_deref().expect("an admin listener")
}

/// Scrapes `/metrics` as Prometheus does without OpenMetrics, and parses it.
pub async fn scrape(app: &TestApp) -> Scrape {
    scrape_at(&app.http, admin(app)).await
}

/// [`scrape`] of the admin listener at `admin_base` (a gatehouse process's, say).
pub async fn scrape_at(http: &reqwest::Client, admin_base: &str) -> Scrape {
    let response = http
        .get(format!("{admin_base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
    let text = response.text().await.expect("body");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("prometheus text")
}

/// The samples of `metric` whose labels include `labels`: each one's value, a histogram's
/// sample count.
fn matching(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("no summaries here"),
        })
        .collect()
}

/// The sum of the samples of `metric` whose labels include `labels`. Panics when no series
/// matches, so a misnamed metric or label cannot pass for a zero.
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let values = matching(scrape, metric, labels);
    assert!(
        !values.is_empty(),
        "no series {metric}{labels:?} in the scrape"
    );
    values.iter().sum()
}

/// Like [`value`], for a family whose series appear only once counted: 0 when none matches,
/// but the family itself must be declared (its `# HELP` line), or the name is wrong.
pub fn declared_total(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    assert!(
        scrape.docs.contains_key(metric),
        "no metric family {metric} in the scrape"
    );
    matching(scrape, metric, labels).iter().sum()
}
