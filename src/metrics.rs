//! Prometheus metrics: one [`Registry`] per application (no global registry), served on the
//! admin listener's `/metrics`. Handlers and middleware record through [`Metrics`], a cheap
//! clone of a shared handle. Names are a contract (docs/metrics.md); every label value comes
//! from a fixed list or from the configuration (route prefixes, provider names), never from a
//! request's path, a subject or an id, so the number of series is bounded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::BoxFuture;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::clock::UnixMillis;
use crate::events::SecurityEvent;
use crate::oidc::Providers;
use crate::ratelimit::{LimitName, RateDecision, RateLimit};
use crate::session::store::{
    CacheStatistics, FetchedSession, IdlePolicy, SessionRecord, SessionStore, SessionSummary,
    StoreResult,
};

/// A label value: a fixed word, a configured name (shared, not copied per request) or a
/// status code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Code(u16),
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Text::Static(text) => encoder.write_str(text),
            Text::Shared(text) => encoder.write_str(text),
            Text::Code(code) => write!(encoder, "{code}"),
        }
    }
}

type Labels<const N: usize> = [(&'static str, Text); N];

/// What kind of request a public-listener request was, for `gatehouse_http_*`.
pub const KIND_AUTH: &str = "auth";
pub const KIND_PROXY: &str = "proxy";
pub const KIND_FRONTEND: &str = "frontend";
pub const KIND_HEALTH: &str = "health";

/// The result of one upstream call, for `gatehouse_upstream_request_duration_seconds`.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamOutcome {
    Ok,
    Timeout,
    Unreachable,
    Tls,
}

impl UpstreamOutcome {
    fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Unreachable => "unreachable",
            UpstreamOutcome::Tls => "tls",
        }
    }
}

/// How a token refresh went, for `gatehouse_token_refreshes_total`.
#[derive(Debug, Clone, Copy)]
pub enum RefreshOutcome {
    Ok,
    InvalidGrant,
    Transient,
    /// Another call (or instance) refreshed meanwhile; its result was used.
    Waited,
}

impl RefreshOutcome {
    fn label(self) -> &'static str {
        match self {
            RefreshOutcome::Ok => "ok",
            RefreshOutcome::InvalidGrant => "invalid_grant",
            RefreshOutcome::Transient => "transient",
            RefreshOutcome::Waited => "waited",
        }
    }
}

/// Why a session ended, for `gatehouse_logouts_total`.
#[derive(Debug, Clone, Copy)]
pub enum LogoutKind {
    /// The user logged out (`/auth/logout`).
    User,
    /// The provider ended it (back-channel logout), one count per session ended.
    Backchannel,
    /// The provider's page ended it (front-channel logout), one count per session ended.
    Frontchannel,
    /// Its tokens ran out: the provider refused the refresh token, or the access token expired
    /// with no refresh token to renew it.
    Expired,
}

impl LogoutKind {
    fn label(self) -> &'static str {
        match self {
            LogoutKind::User => "user",
            LogoutKind::Backchannel => "backchannel",
            LogoutKind::Frontchannel => "frontchannel",
            LogoutKind::Expired => "expired",
        }
    }
}

/// Request latencies: 1 ms to ~16 s.
fn request_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

/// Store latencies: 0.1 ms to ~1.6 s.
fn store_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15)
}

/// Registers `metric` under `name` and hands it back (the registry keeps a clone; both
/// share the same values).
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

struct Inner {
    registry: Registry,
    http_requests: Family<Labels<4>, Counter>,
    http_duration: HistogramFamily<2>,
    upstream_duration: HistogramFamily<2>,
    logins: Family<Labels<2>, Counter>,
    logouts: Family<Labels<2>, Counter>,
    refreshes: Family<Labels<2>, Counter>,
    security_events: Family<Labels<1>, Counter>,
    rate_limited: Family<Labels<1>, Counter>,
    store_duration: HistogramFamily<1>,
    store_errors: Family<Labels<1>, Counter>,
    websockets_open: Family<Labels<1>, prometheus_client::metrics::gauge::Gauge>,
    websockets_closed: Family<Labels<2>, Counter>,
    /// Configured names (route prefixes, provider names), shared by every series that uses
    /// them. A name not in here is reported as `unknown`.
    names: HashMap<String, Arc<str>>,
}

/// The application's metrics: a cloneable handle.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The registry with every metric; `names` are the configured route prefixes and provider
    /// names (the only non-fixed label values). The providers' readiness and the store's
    /// cache are read at scrape time (`store`: the undecorated one).
    pub fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        providers: Arc<Providers>,
        store: Arc<dyn SessionStore>,
    ) -> Self {
        let mut registry = Registry::default();
        let http_requests = registered(
            &mut registry,
            "gatehouse_http_requests",
            "Requests on the public listener, by kind, route, method and status",
            Family::<Labels<4>, Counter>::default(),
        );
        let http_duration: HistogramFamily<2> = registered(
            &mut registry,
            "gatehouse_http_request_duration_seconds",
            "Time to the response head on the public listener, by kind and route",
            Family::new_with_constructor(|| Histogram::new(request_buckets())),
        );
        let upstream_duration: HistogramFamily<2> = registered(
            &mut registry,
            "gatehouse_upstream_request_duration_seconds",
            "Time to an upstream's response head, by route and outcome",
            Family::new_with_constructor(|| Histogram::new(request_buckets())),
        );
        let logins = registered(
            &mut registry,
            "gatehouse_logins",
            "Completed login callbacks, by provider and outcome",
            Family::<Labels<2>, Counter>::default(),
        );
        let logouts = registered(
            &mut registry,
            "gatehouse_logouts",
            "Sessions this instance ended, by provider and kind (user, backchannel, expired)",
            Family::<Labels<2>, Counter>::default(),
        );
        let refreshes = registered(
            &mut registry,
            "gatehouse_token_refreshes",
            "Access token refreshes, by provider and outcome",
            Family::<Labels<2>, Counter>::default(),
        );
        let security_events = Family::<Labels<1>, Counter>::default();
        for event in SecurityEvent::ALL {
            // Every event exists from the start, at 0.
            let _ = security_events.get_or_create(&[("event", Text::Static(event.name()))]);
        }
        registry.register(
            "gatehouse_security_events",
            "Security events from the catalogue, by event name",
            security_events.clone(),
        );
        let rate_limited = registered(
            &mut registry,
            "gatehouse_rate_limited",
            "Requests refused by a rate limit, by limit",
            Family::<Labels<1>, Counter>::default(),
        );
        let store_duration: HistogramFamily<1> = registered(
            &mut registry,
            "gatehouse_store_operation_duration_seconds",
            "Session store operations, by operation",
            Family::new_with_constructor(|| Histogram::new(store_buckets())),
        );
        let store_errors = registered(
            &mut registry,
            "gatehouse_store_errors",
            "Session store operations that failed, by operation",
            Family::<Labels<1>, Counter>::default(),
        );
        let websockets_open = registered(
            &mut registry,
            "gatehouse_websockets_open",
            "WebSockets open through API routes, by route",
            Family::<Labels<1>, prometheus_client::metrics::gauge::Gauge>::default(),
        );
        let websockets_closed = registered(
            &mut registry,
            "gatehouse_websockets_closed",
            "WebSockets closed, by route and why (peer, session_ended, idle, max_duration)",
            Family::<Labels<2>, Counter>::default(),
        );
        registry.register(
            "gatehouse_build_info",
            "The running version (always 1)",
            Family::<Labels<1>, prometheus_client::metrics::gauge::Gauge>::default().tap(
                |family| {
                    family
                        .get_or_create(&[("version", Text::Static(env!("CARGO_PKG_VERSION")))])
                        .set(1);
                },
            ),
        );
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(StateCollector { providers, store }));
        let names = names
            .into_iter()
            .map(|name| (name.to_owned(), Arc::from(name)))
            .collect();
        Metrics(Arc::new(Inner {
            registry,
            http_requests,
            http_duration,
            upstream_duration,
            logins,
            logouts,
            refreshes,
            security_events,
            rate_limited,
            store_duration,
            store_errors,
            websockets_open,
            websockets_closed,
            names,
        }))
    }

    /// A configured name as a label value; anything else is `unknown` (bounded).
    fn name(&self, name: &str) -> Text {
        match self.0.names.get(name) {
            Some(shared) => Text::Shared(shared.clone()),
            None => Text::Static("unknown"),
        }
    }

    /// The exposition: OpenMetrics text when asked for, else Prometheus text 0.0.4.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut text = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut text, &self.0.registry).is_err() {
            tracing::error!("cannot encode the metrics");
        }
        if openmetrics {
            text
        } else {
            openmetrics_to_prometheus(&text)
        }
    }

    pub fn http_request(
        &self,
        kind: &'static str,
        route: Text,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.0
            .http_requests
            .get_or_create(&[
                ("kind", Text::Static(kind)),
                ("route", route.clone()),
                ("method", Text::Static(method)),
                ("status", Text::Code(status)),
            ])
            .inc();
        self.0
            .http_duration
            .get_or_create(&[("kind", Text::Static(kind)), ("route", route)])
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream_request(&self, route: &str, outcome: UpstreamOutcome, elapsed: Duration) {
        self.0
            .upstream_duration
            .get_or_create(&[
                ("route", self.name(route)),
                ("outcome", Text::Static(outcome.label())),
            ])
            .observe(elapsed.as_secs_f64());
    }

    pub fn websocket_opened(&self, route: &str) {
        self.0
            .websockets_open
            .get_or_create(&[("route", self.name(route))])
            .inc();
    }

    pub fn websocket_closed(&self, route: &str, reason: &'static str) {
        self.0
            .websockets_open
            .get_or_create(&[("route", self.name(route))])
            .dec();
        self.0
            .websockets_closed
            .get_or_create(&[
                ("route", self.name(route)),
                ("reason", Text::Static(reason)),
            ])
            .inc();
    }

    /// `provider`: `None` when the failure came before the login state said which.
    pub fn login(&self, provider: Option<&str>, ok: bool) {
        let provider = provider.map_or(Text::Static("unknown"), |p| self.name(p));
        let outcome = Text::Static(if ok { "ok" } else { "failed" });
        self.0
            .logins
            .get_or_create(&[("provider", provider), ("outcome", outcome)])
            .inc();
    }

    pub fn logouts(&self, provider: &str, kind: LogoutKind, sessions: u64) {
        if sessions == 0 {
            return;
        }
        self.0
            .logouts
            .get_or_create(&[
                ("provider", self.name(provider)),
                ("kind", Text::Static(kind.label())),
            ])
            .inc_by(sessions);
    }

    pub fn refresh(&self, provider: &str, outcome: RefreshOutcome) {
        self.0
            .refreshes
            .get_or_create(&[
                ("provider", self.name(provider)),
                ("outcome", Text::Static(outcome.label())),
            ])
            .inc();
    }

    pub fn security_event(&self, event: SecurityEvent) {
        self.0
            .security_events
            .get_or_create(&[("event", Text::Static(event.name()))])
            .inc();
    }

    pub fn rate_limited(&self, limit: LimitName<'_>) {
        let limit = match limit {
            LimitName::Login => Text::Static("login"),
            LimitName::Api => Text::Static("api"),
            LimitName::Route(prefix) => self.name(prefix),
        };
        self.0.rate_limited.get_or_create(&[("limit", limit)]).inc();
    }

    fn store_operation(&self, op: &'static str, elapsed: Duration, failed: bool) {
        let labels = [("op", Text::Static(op))];
        self.0
            .store_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if failed {
            self.0.store_errors.get_or_create(&labels).inc();
        }
    }

    /// Runs `future` (a request) with this handle as the one [`record_security_event`]
    /// counts into.
    pub fn scope<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self.clone(), future)
    }
}

tokio::task_local! {
    /// The metrics of the application serving the current request: security events are
    /// logged from deep inside the flows, which hold no handle of their own.
    static CURRENT: Metrics;
}

/// Counts a security event for the application serving the current request (nothing outside
/// one).
pub fn record_security_event(event: SecurityEvent) {
    let _ = CURRENT.try_with(|metrics| metrics.security_event(event));
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}

impl<T> Tap for T {}

/// The standard methods by name; any other is `other` (a client may send any token).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: a counter's `# HELP`/`# TYPE` name its samples
/// (`x_total`), and the OpenMetrics-only lines (`# UNIT`, `# EOF`) go. Everything else is the
/// same in both formats (no exemplars or `_created` series are used here).
fn openmetrics_to_prometheus(text: &str) -> String {
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
// Read at scrape time
// ---------------------------------------------------------------------------------------

/// `gatehouse_provider_up` and `gatehouse_sessions_active`.
struct StateCollector {
    providers: Arc<Providers>,
    store: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "gatehouse_provider_up",
                "1 when the provider's metadata and keys are loaded",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (name, provider) in &self.providers.by_name {
                let labels = [("provider", name.as_str())];
                ConstGauge::new(i64::from(provider.is_ready()))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        // The sessions held in this instance's session cache: the sessions used lately (at
        // most session.cache_entries); 0 without a cache. No store scan.
        let active = self
            .store
            .cache_statistics()
            .map_or(0, |statistics| statistics.entries as i64);
        let gauge = ConstGauge::new(active);
        gauge.encode(encoder.encode_descriptor(
            "gatehouse_sessions_active",
            "Sessions held in this instance's session cache (used lately); 0 without a cache",
            None,
            gauge.metric_type(),
        )?)?;
        Ok(())
    }
}

/// `process_*` from /proc (Linux); nothing elsewhere.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(process) = read_process() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(process.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let resident = ConstGauge::new(process.resident_bytes);
        resident.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            resident.metric_type(),
        )?)?;
        if let Some(fds) = process.open_fds {
            let fds = ConstGauge::new(fds);
            fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                fds.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: i64,
    open_fds: Option<i64>,
}

fn read_process() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: the fields start after it.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: i64 = statm.split(' ').nth(1)?.trim().parse().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as i64);
    Some(ProcessStats {
        cpu_seconds: ticks / per_second.max(1) as f64,
        resident_bytes: resident_pages * page.max(1) as i64,
        open_fds,
    })
}

// ---------------------------------------------------------------------------------------
// The public listener's requests
// ---------------------------------------------------------------------------------------

/// What to call a public-listener request: its kind and a bounded route label (`None`: the
/// frontend, named once the status is known).
fn classify(
    path: &str,
    routes: &crate::proxy::routes::RouteTable,
    metrics: &Metrics,
) -> (&'static str, Option<Text>) {
    if let Some(endpoint) = path.strip_prefix("/auth/") {
        let name = match endpoint {
            "login" => "login",
            "callback" => "callback",
            "user" => "user",
            "providers" => "providers",
            "logout" => "logout",
            "logout/continue" => "logout_continue",
            "backchannel-logout" => "backchannel_logout",
            "frontchannel-logout" => "frontchannel_logout",
            _ => "unmatched",
        };
        return (KIND_AUTH, Some(Text::Static(name)));
    }
    match path {
        "/healthz" => return (KIND_HEALTH, Some(Text::Static("healthz"))),
        "/readyz" => return (KIND_HEALTH, Some(Text::Static("readyz"))),
        _ => {}
    }
    if let Ok(Some((route, _))) = routes.find(path) {
        return (KIND_PROXY, Some(metrics.name(&route.prefix)));
    }
    (KIND_FRONTEND, None)
}

/// One public-listener request being measured (only with an admin listener): started when
/// it came in, counted and timed with its final status by the edge middleware
/// (`telemetry::front`), which also scopes it for [`record_security_event`].
pub struct RequestMeasure {
    started: Instant,
    method: &'static str,
    kind: &'static str,
    route: Option<Text>,
}

impl RequestMeasure {
    pub fn begin(
        method: &Method,
        path: &str,
        routes: &crate::proxy::routes::RouteTable,
        metrics: &Metrics,
    ) -> Self {
        let (kind, route) = classify(path, routes, metrics);
        Self {
            started: Instant::now(),
            method: method_label(method),
            kind,
            route,
        }
    }

    pub fn finish(self, metrics: &Metrics, status: u16) {
        // The SPA's files; a path nothing serves is one series however many there are.
        let route = self.route.unwrap_or(Text::Static(if status == 404 {
            "unmatched"
        } else {
            "frontend"
        }));
        metrics.http_request(
            self.kind,
            route,
            self.method,
            status,
            self.started.elapsed(),
        );
    }
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

// ---------------------------------------------------------------------------------------
// The session store, timed
// ---------------------------------------------------------------------------------------

/// Times every operation of the store it wraps (`op` = the method's name) and counts the
/// ones that fail.
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    metrics: Metrics,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn SessionStore>, metrics: Metrics) -> Arc<dyn SessionStore> {
        Arc::new(Self { inner, metrics })
    }

    fn timed<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        future: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = future.await;
            self.metrics
                .store_operation(op, started.elapsed(), result.is_err());
            result
        })
    }
}

impl SessionStore for MeteredStore {
    fn insert<'a>(
        &'a self,
        key: &'a str,
        record: &'a SessionRecord,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.timed("insert", self.inner.insert(key, record, now, idle))
    }

    fn fetch<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
        idle: IdlePolicy,
    ) -> BoxFuture<'a, StoreResult<Option<FetchedSession>>> {
        self.timed("fetch", self.inner.fetch(key, now, idle))
    }

    fn replace_sealed<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        revocation: Option<&'a [u8]>,
        absolute_expires_at: UnixMillis,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed(
            "replace_sealed",
            self.inner
                .replace_sealed(key, sealed, revocation, absolute_expires_at, now),
        )
    }

    fn try_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("try_lock", self.inner.try_lock(name, owner, ttl, now))
    }

    fn renew_lock<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("renew_lock", self.inner.renew_lock(name, owner, ttl, now))
    }

    fn unlock<'a>(&'a self, name: &'a str, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.timed("unlock", self.inner.unlock(name, owner))
    }

    fn remember_once<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("remember_once", self.inner.remember_once(name, ttl, now))
    }

    fn count(&self) -> BoxFuture<'_, StoreResult<u64>> {
        self.timed("count", self.inner.count())
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        self.timed("remove", self.inner.remove(key))
    }

    fn keys_by_sub<'a>(
        &'a self,
        provider: &'a str,
        sub: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.timed("keys_by_sub", self.inner.keys_by_sub(provider, sub, now))
    }

    fn keys_by_sid<'a>(
        &'a self,
        provider: &'a str,
        sid: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.timed("keys_by_sid", self.inner.keys_by_sid(provider, sid, now))
    }

    fn summary<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionSummary>>> {
        self.timed("summary", self.inner.summary(key))
    }

    fn put_login_state<'a>(
        &'a self,
        key: &'a str,
        sealed: &'a [u8],
        ttl: Duration,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.timed(
            "put_login_state",
            self.inner.put_login_state(key, sealed, ttl, now),
        )
    }

    fn take_login_state<'a>(
        &'a self,
        key: &'a str,
        now: UnixMillis,
    ) -> BoxFuture<'a, StoreResult<Option<Vec<u8>>>> {
        self.timed("take_login_state", self.inner.take_login_state(key, now))
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.timed("ping", self.inner.ping())
    }

    fn cache_statistics(&self) -> Option<CacheStatistics> {
        self.inner.cache_statistics()
    }

    fn rate_limit<'a>(
        &'a self,
        bucket: &'a str,
        limit: RateLimit,
        now: UnixMillis,
        want: u32,
    ) -> BoxFuture<'a, StoreResult<RateDecision>> {
        self.timed(
            "rate_limit",
            self.inner.rate_limit(bucket, limit, now, want),
        )
    }
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

    #[test]
    fn methods_beyond_the_standard_ones_are_other() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let brew = Method::from_bytes(b"BREW").expect("a token");
        assert_eq!(method_label(&brew), "other");
    }

    #[test]
    fn process_statistics_are_read_on_linux() {
        let process = read_process().expect("/proc is readable");
        assert!(process.resident_bytes > 0);
        assert!(process.open_fds.is_some_and(|fds| fds > 0));
    }
}
