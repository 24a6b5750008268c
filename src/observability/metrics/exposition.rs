//! The exposition: the admin listener's `/metrics`, in OpenMetrics or Prometheus text.

use super::*;

/// OpenMetrics text to Prometheus text 0.0.4: a counter's `# HELP`/`# TYPE` name its samples
/// (`x_total`), and the OpenMetrics-only lines (`# UNIT`, `# EOF`) go. Everything else is the
/// same in both formats (no exemplars or `_created` series are used here).
pub(super) fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut help: Option<&str> = None;
    for line in text.lines() {
        if line.starts_with("# HELP ") {
            if let Some(previous) = help.replace(line) {
                out.push_str(previous);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let counter = rest
                .strip_suffix(" counter")
                .filter(|name| !name.ends_with("_total"));
            if let Some(help) = help.take() {
                match counter {
                    Some(name) => {
                        let doc = help["# HELP ".len()..]
                            .strip_prefix(name)
                            .unwrap_or_default();
                        let _ = writeln!(out, "# HELP {name}_total{doc}");
                    }
                    None => {
                        out.push_str(help);
                        out.push('\n');
                    }
                }
            }
            match counter {
                Some(name) => {
                    let _ = writeln!(out, "# TYPE {name}_total counter");
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        if let Some(help) = help.take() {
            out.push_str(help);
            out.push('\n');
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(help) = help {
        out.push_str(help);
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// The admin listener
// ---------------------------------------------------------------------------------------

/// `GET /metrics` on the admin listener.
pub async fn metrics(req: HttpRequest, metrics: web::Data<Metrics>) -> HttpResponse {
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(metrics.render(openmetrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let providers = Arc::new(Providers {
            by_name: Default::default(),
            default: "main".into(),
        });
        let store = Arc::new(crate::session::memory::MemoryStore::new());
        let metrics = Metrics::new(["/api"], providers, store);
        metrics.rate_limited(LimitName::Route("/api"));
        metrics.rate_limited(LimitName::Route("/elsewhere"));
        let text = metrics.render(false);
        assert!(text.contains("# TYPE gatehouse_rate_limited_total counter\n"));
        assert!(text.contains("# HELP gatehouse_rate_limited_total Requests refused"));
        assert!(text.contains("gatehouse_rate_limited_total{limit=\"/api\"} 1\n"));
        assert!(text.contains("gatehouse_rate_limited_total{limit=\"unknown\"} 1\n"));
        assert!(text.contains("gatehouse_security_events_total{event=\"csrf.rejected\"} 0\n"));
        assert!(text.contains("gatehouse_build_info{version="));
        assert!(
            text.contains("# TYPE gatehouse_sessions_active gauge\ngatehouse_sessions_active 0\n")
        );
        assert!(!text.contains("# EOF"));
        let open = metrics.render(true);
        assert!(open.contains("# TYPE gatehouse_rate_limited counter\n"));
        assert!(open.ends_with("# EOF\n"));
    }
}
