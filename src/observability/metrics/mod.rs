//! Prometheus metrics: one [`Registry`] per application (no global registry), served on the
//! admin listener's `/metrics`. Handlers and middleware record through [`Metrics`], a cheap
//! clone of a shared handle. Names are a contract (docs/metrics.md); every label value comes
//! from a fixed list or from the configuration (route prefixes, provider names), never from a
//! request's path, a subject or an id, so the number of series is bounded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use arc_swap::ArcSwap;
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
use crate::observability::events::SecurityEvent;
use crate::oidc::Providers;
use crate::ratelimit::{LimitName, RateDecision, RateLimit};
mod collectors;
mod exposition;
mod http;
mod policy;
mod store;

use collectors::{ProcessCollector, StateCollector};
pub use exposition::metrics;
use exposition::openmetrics_to_prometheus;
pub use http::RequestMeasure;
pub use store::Timed;

use crate::session::store::{
    CacheStatistics, FetchedSession, IdlePolicy, Locks, OneTimeRecords, RateBuckets, ReplayMemory,
    SessionRecord, SessionRecords, SessionSummary, StoreHealth, StoreResult,
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
    /// An operator ended it through the admin API, one count per session ended.
    Operator,
}

impl LogoutKind {
    fn label(self) -> &'static str {
        match self {
            LogoutKind::User => "user",
            LogoutKind::Backchannel => "backchannel",
            LogoutKind::Frontchannel => "frontchannel",
            LogoutKind::Expired => "expired",
            LogoutKind::Operator => "operator",
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
    config_reloads: Family<Labels<1>, Counter>,
    config_info: Family<Labels<1>, prometheus_client::metrics::gauge::Gauge>,
    policy_set_info: Family<Labels<1>, prometheus_client::metrics::gauge::Gauge>,
    policy_set_loaded_at: prometheus_client::metrics::gauge::Gauge,
    policy_reloads: Family<Labels<1>, Counter>,
    /// Configured names (route prefixes, provider names), shared by every series that uses
    /// them. A name not in here is reported as `unknown`. Replaced by a reload.
    names: ArcSwap<HashMap<String, Arc<str>>>,
    /// The providers whose readiness a scrape reports (the live configuration's).
    providers: Arc<ArcSwap<Providers>>,
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
        store: Arc<dyn StoreHealth>,
    ) -> Self {
        Self::with_spans_dropped(names, providers, store, Counter::default())
    }

    /// [`Metrics::new`], with the trace export's count of dropped spans (it counts them
    /// itself: the export starts before the application, with the log).
    pub fn with_spans_dropped<'a>(
        names: impl IntoIterator<Item = &'a str>,
        providers: Arc<Providers>,
        store: Arc<dyn StoreHealth>,
        spans_dropped: Counter,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "gatehouse_trace_spans_dropped",
            "Finished spans dropped because the trace export's queue was full (0 without export)",
            spans_dropped,
        );
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
        let config_reloads = Family::<Labels<1>, Counter>::default();
        for result in ReloadResult::ALL {
            let _ = config_reloads.get_or_create(&[("result", Text::Static(result.label()))]);
        }
        registry.register(
            "gatehouse_config_reloads",
            "Configuration reloads (SIGHUP, gatehouse reload), by result",
            config_reloads.clone(),
        );
        let config_info = registered(
            &mut registry,
            "gatehouse_config_info",
            "The configuration in force: its file's SHA-256 (always 1)",
            Family::<Labels<1>, prometheus_client::metrics::gauge::Gauge>::default(),
        );
        let policy_set_info = registered(
            &mut registry,
            "gatehouse_policy_set_info",
            "The live Cedar policy set, by digest (always 1; no series without [policies])",
            Family::<Labels<1>, prometheus_client::metrics::gauge::Gauge>::default(),
        );
        let policy_set_loaded_at = registered(
            &mut registry,
            "gatehouse_policy_set_loaded_timestamp_seconds",
            "When the live policy set was loaded, in Unix seconds (0 without [policies])",
            prometheus_client::metrics::gauge::Gauge::default(),
        );
        let policy_reloads = registered(
            &mut registry,
            "gatehouse_policy_reloads",
            "Policy set reloads (SIGHUP, a changed file), by result (ok, failed)",
            Family::<Labels<1>, Counter>::default(),
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
        let providers = Arc::new(ArcSwap::new(providers));
        registry.register_collector(Box::new(StateCollector {
            providers: providers.clone(),
            store,
        }));
        let names = ArcSwap::from_pointee(shared_names(names));
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
            config_reloads,
            config_info,
            policy_set_info,
            policy_set_loaded_at,
            policy_reloads,
            names,
            providers,
        }))
    }

    /// A reloaded configuration: its names become label values (the old ones stay too, so
    /// series already counted keep their label), its providers are the ones reported.
    pub fn configuration_changed<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        providers: Arc<Providers>,
    ) {
        let mut known = HashMap::clone(&self.0.names.load());
        known.extend(shared_names(names));
        self.0.names.store(Arc::new(known));
        self.0.providers.store(providers);
    }

    pub fn config_reload(&self, result: ReloadResult) {
        self.0
            .config_reloads
            .get_or_create(&[("result", Text::Static(result.label()))])
            .inc();
    }

    /// The configuration in force is the file with this SHA-256 (hex).
    pub fn config_in_force(&self, sha256: &str) {
        self.0.config_info.clear();
        self.0
            .config_info
            .get_or_create(&[("sha256", Text::Shared(Arc::from(sha256)))])
            .set(1);
    }

    /// A configured name as a label value; anything else is `unknown` (bounded).
    fn name(&self, name: &str) -> Text {
        match self.0.names.load().get(name) {
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
}

fn shared_names<'a>(names: impl IntoIterator<Item = &'a str>) -> HashMap<String, Arc<str>> {
    names
        .into_iter()
        .map(|name| (name.to_owned(), Arc::from(name)))
        .collect()
}

/// How a configuration reload ended, for `gatehouse_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration is in force.
    Ok,
    /// It does not load (a file that does not parse, a value out of range…).
    Invalid,
    /// It changes a key that cannot change while running.
    Refused,
    /// It loads but could not be put in force (a provider or the frontend cannot be built).
    Failed,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 4] = [
        ReloadResult::Ok,
        ReloadResult::Invalid,
        ReloadResult::Refused,
        ReloadResult::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Refused => "refused",
            ReloadResult::Failed => "failed",
        }
    }
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}

impl<T> Tap for T {}
