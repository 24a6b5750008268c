//! The live configuration: the application state built from the settings, swapped whole by
//! a reload (SIGHUP, `gatehouse reload`).
//!
//! What a reload may change is the part of the state the settings' live keys make — routes,
//! providers, rate limits, the frontend ([`LIVE_KEYS`]). The parts that live for the
//! process (the store, the listeners, the metrics, the WebSocket slots…) are
//! [`LastingParts`], shared by every state built. A request takes the state in force when it
//! starts (`edge::front`) and keeps it to its end, so a call in flight finishes on the
//! configuration it started with.
//!
//! Another reloadable part (a policy set, say) joins by being built in [`build_state`] from
//! the settings, or by being swapped beside the state by the [`Reloader`]'s caller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use arc_swap::ArcSwap;

use crate::clock::SharedClock;
use crate::config::{self, ConfigErrors, Settings};
use crate::drain::Drain;
use crate::frontend::{self, Frontend};
use crate::observability::metrics::{Metrics, ReloadResult};
use crate::observability::telemetry::SecurityLog;
use crate::oidc::flows::AuthFlows;
use crate::oidc::refresh::TokenRefresher;
use crate::oidc::{OidcError, Provider, Providers};
use crate::policy::PolicyStore;
use crate::proxy::websocket::SocketSlots;
use crate::proxy::{Proxy, ProxyBuildError};
use crate::ratelimit::RateLimiter;
use crate::session::held_locks::HeldLocks;
use crate::session::{SessionManager, SessionStore};
use crate::state::{AntiForgery, AppState, Clock, CookieSettings, EdgeSettings, RateLimits};

mod diff;

/// The top-level keys a reload may change. Every other key is fixed for the life of the
/// process: a reload that changes one is refused.
pub const LIVE_KEYS: &[&str] = &[
    "routes",
    "providers",
    "default_provider",
    "rate_limits",
    "frontend",
];

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error("frontend: {0}")]
    Frontend(String),
    #[error("cannot build the proxy's upstream client: {0}")]
    ProxyClient(#[source] ProxyBuildError),
}

/// What outlives a reload: built once at start-up, shared by every state.
pub struct LastingParts {
    pub store: Arc<dyn SessionStore>,
    pub sessions: SessionManager,
    pub limiter: Arc<RateLimiter>,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub measured: bool,
    pub events: SecurityLog,
    pub dev_server_http: reqwest::Client,
    pub websockets: SocketSlots,
    /// Set on SIGTERM; every state built reads the same flag.
    pub drain: Drain,
    /// The refresh locks this process holds, whichever state's refresher took them.
    pub held_locks: HeldLocks,
    /// The Cedar policy set (`None` without `[policies]`); it reloads its own files. A
    /// route added live is decided by the whole set (it has no subset of its own).
    pub policies: Option<Arc<PolicyStore>>,
}

/// The state in force. A cheap `load_full` per request.
pub struct LiveState(ArcSwap<AppState>);

impl LiveState {
    pub fn new(state: AppState) -> Self {
        Self(ArcSwap::from_pointee(state))
    }

    pub fn load_full(&self) -> Arc<AppState> {
        self.0.load_full()
    }

    fn store(&self, state: AppState) {
        self.0.store(Arc::new(state));
    }
}

/// The providers of `settings`; one whose settings did not change since `previous`, its
/// credentials included, is the same provider (its discovered metadata, keys and background
/// discovery go on). The second list holds the new and changed ones, whose discovery is to
/// be started.
pub fn build_providers(
    settings: &Settings,
    previous: Option<&Providers>,
) -> Result<(Arc<Providers>, Vec<Arc<Provider>>), OidcError> {
    let mut by_name = BTreeMap::new();
    let mut fresh = Vec::new();
    for (name, provider_settings) in &settings.providers {
        let kept = previous
            .and_then(|previous| previous.by_name.get(name))
            .filter(|old| old.settings.same_client_as(provider_settings));
        let provider = match kept {
            Some(old) => old.clone(),
            None => {
                let provider = Arc::new(Provider::new(provider_settings.clone())?);
                fresh.push(provider.clone());
                provider
            }
        };
        by_name.insert(name.clone(), provider);
    }
    Ok((
        Arc::new(Providers {
            by_name,
            default: settings.default_provider.clone(),
        }),
        fresh,
    ))
}

/// The application state for `settings`, around the lasting parts.
pub fn build_state(
    settings: &Settings,
    providers: Arc<Providers>,
    lasting: &LastingParts,
) -> Result<AppState, BuildError> {
    let proxy = Proxy::new(
        settings.routes.clone(),
        &providers,
        &settings.server.public_url,
    )
    .map_err(BuildError::ProxyClient)?;
    let refresher = TokenRefresher::new(
        lasting.sessions.clone(),
        lasting.store.clone(),
        providers.clone(),
        lasting.clock.clone(),
        &settings.session,
        lasting.metrics.clone(),
        lasting.events.clone(),
    )
    .holding_locks_in(lasting.held_locks.clone());
    let frontend =
        Frontend::new(&settings.frontend).map_err(|e| BuildError::Frontend(e.to_string()))?;
    match &frontend {
        Frontend::Dir(root) => tracing::info!(dir = %root.display(), "serving the frontend"),
        Frontend::DevServer(origin) => {
            tracing::info!(dev_server = %origin, "passing the frontend through to a dev server")
        }
        Frontend::None => tracing::warn!(
            "no frontend: the default directory static/ is missing and frontend.dir is not \
             set; paths that are not gatehouse's own or a route answer 404"
        ),
    }
    let security_headers =
        frontend::security_headers(&settings.frontend, &settings.server.public_url)
            .into_iter()
            .map(|(name, value)| {
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    (Ok(name), Ok(value)) => Ok((name, value)),
                    _ => Err(BuildError::Frontend(format!(
                        "{name}: not a valid header value"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
    let events = lasting.events.clone();
    Ok(AppState {
        proxy,
        refresher,
        flows: AuthFlows {
            providers,
            sessions: lasting.sessions.clone(),
            replay: lasting.store.clone(),
            session_settings: settings.session.clone(),
            events: events.clone(),
        },
        limits: RateLimits::new(
            lasting.limiter.clone(),
            settings.rate_limits,
            lasting.metrics.clone(),
            events.clone(),
        ),
        cookie_settings: CookieSettings::new(&settings.session),
        anti_forgery: AntiForgery::new(&settings.csrf, events.clone()),
        public_url: settings.server.public_url.clone(),
        edge: EdgeSettings::new(&settings.server, security_headers),
        clock: Clock(lasting.clock.clone()),
        frontend,
        dev_server_http: lasting.dev_server_http.clone(),
        store_health: lasting.store.clone(),
        websockets: lasting.websockets.clone(),
        metrics: lasting.metrics.clone(),
        measured: lasting.measured,
        events,
        drain: lasting.drain.clone(),
        policies: lasting.policies.clone(),
    })
}

/// The configuration in force, as a reload compares it.
struct InForce {
    tree: toml::Table,
    providers: Arc<Providers>,
}

/// Re-reads the configuration and swaps the state. A cheap clone; reloads run one at a time.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<ReloaderInner>,
}

struct ReloaderInner {
    live: Arc<LiveState>,
    lasting: LastingParts,
    in_force: tokio::sync::Mutex<InForce>,
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration is in force (its file's SHA-256).
    Applied { sha256: String },
    /// The configuration does not load: every problem.
    Invalid(Vec<String>),
    /// It changes keys that cannot change live: their names.
    Refused(Vec<String>),
    /// It loads but could not be put in force.
    Failed(String),
}

impl ReloadOutcome {
    pub fn result(&self) -> ReloadResult {
        match self {
            ReloadOutcome::Applied { .. } => ReloadResult::Ok,
            ReloadOutcome::Invalid(_) => ReloadResult::Invalid,
            ReloadOutcome::Refused(_) => ReloadResult::Refused,
            ReloadOutcome::Failed(_) => ReloadResult::Failed,
        }
    }
}

impl Reloader {
    /// `tree`: the key tree the state in force was built from; `file_text`: its file's text.
    pub fn new(
        live: Arc<LiveState>,
        lasting: LastingParts,
        tree: toml::Table,
        providers: Arc<Providers>,
        file_text: Option<&str>,
    ) -> Self {
        lasting.metrics.config_in_force(&sha256_hex(file_text));
        Self {
            inner: Arc::new(ReloaderInner {
                live,
                lasting,
                in_force: tokio::sync::Mutex::new(InForce { tree, providers }),
            }),
        }
    }

    /// Reads `path` (or no file) and the process's environment, and puts the result in
    /// force when it loads and changes only live keys. Logs and counts the outcome.
    pub async fn reload_file(&self, path: Option<&std::path::Path>) -> ReloadOutcome {
        let text = match path.map(std::fs::read_to_string).transpose() {
            Ok(text) => text,
            Err(error) => {
                let outcome = ReloadOutcome::Invalid(vec![format!(
                    "cannot read config file {}: {error}",
                    path.map(|p| p.display().to_string()).unwrap_or_default()
                )]);
                self.report(&outcome);
                return outcome;
            }
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        self.reload_text(text.as_deref(), env).await
    }

    /// [`Reloader::reload_file`] on a file's text and an environment.
    pub async fn reload_text(
        &self,
        file_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> ReloadOutcome {
        let outcome = self.apply(file_text, env).await;
        self.report(&outcome);
        outcome
    }

    async fn apply(
        &self,
        file_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> ReloadOutcome {
        let (settings, tree) = match config::load_with_tree(file_text, env) {
            Ok(loaded) => loaded,
            Err(ConfigErrors(problems)) => return ReloadOutcome::Invalid(problems),
        };
        let mut in_force = self.inner.in_force.lock().await;
        let fixed = diff::changed_keys(&in_force.tree, &tree, LIVE_KEYS);
        if !fixed.is_empty() {
            return ReloadOutcome::Refused(fixed);
        }
        let (providers, fresh) = match build_providers(&settings, Some(&in_force.providers)) {
            Ok(built) => built,
            Err(error) => return ReloadOutcome::Failed(error.to_string()),
        };
        let state = match build_state(&settings, providers.clone(), &self.inner.lasting) {
            Ok(state) => state,
            Err(error) => return ReloadOutcome::Failed(error.to_string()),
        };
        // A provider added or changed can log users in as soon as the reload is done.
        for provider in &fresh {
            let what = match in_force.providers.by_name.contains_key(provider.name()) {
                true => "changed: its client is built anew",
                false => "added",
            };
            tracing::info!(provider = %provider.name(), "reload: provider {what}");
            let bound = provider.settings.http_timeout + Duration::from_secs(1);
            if let Ok(Err(error)) = tokio::time::timeout(bound, provider.discover()).await {
                tracing::warn!(provider = %provider.name(), %error, "reload: provider discovery failed; it retries in the background");
            }
            tokio::spawn(provider.clone().keep_discovered());
        }
        self.inner.lasting.metrics.configuration_changed(
            settings
                .routes
                .iter()
                .map(|route| route.prefix.as_str())
                .chain(settings.providers.keys().map(String::as_str)),
            providers.clone(),
        );
        self.inner.live.store(state);
        *in_force = InForce { tree, providers };
        ReloadOutcome::Applied {
            sha256: sha256_hex(file_text),
        }
    }

    fn report(&self, outcome: &ReloadOutcome) {
        let metrics = &self.inner.lasting.metrics;
        metrics.config_reload(outcome.result());
        match outcome {
            ReloadOutcome::Applied { sha256 } => {
                metrics.config_in_force(sha256);
                tracing::info!(sha256 = %sha256, "configuration reloaded");
            }
            ReloadOutcome::Invalid(problems) => {
                for problem in problems {
                    tracing::error!(problem = %problem, "configuration reload: problem");
                }
                tracing::error!(
                    problems = problems.len(),
                    "configuration not reloaded: it has problems; the configuration in force stays"
                );
            }
            ReloadOutcome::Refused(keys) => tracing::error!(
                keys = %keys.join(", "),
                "configuration not reloaded: these keys cannot change while gatehouse runs \
                 (restart for them); the configuration in force stays"
            ),
            ReloadOutcome::Failed(error) => tracing::error!(
                error = %error,
                "configuration not reloaded: it cannot be put in force; the configuration in \
                 force stays"
            ),
        }
    }
}

/// SHA-256 of the configuration file's text, hex (as `sha256sum` prints it); of nothing
/// when there is no file.
pub fn sha256_hex(file_text: Option<&str>) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(file_text.unwrap_or("").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
