//! Wiring: builds the store, the providers and the HTTP server from settings.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use prometheus_client::metrics::counter::Counter;
use url::Url;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Settings, StoreSettings};
use crate::drain::Drain;
use crate::edge;
use crate::error::{ApiError, Problem};
use crate::live::{self, LastingParts, LiveState, Reloader};
use crate::observability::metrics::{self, Metrics, Timed};
use crate::observability::telemetry::SecurityLog;
use crate::oidc::OidcError;
use crate::policy::{self, PolicyStore};
use crate::proxy::websocket::SocketSlots;
use crate::ratelimit::RateLimiter;
use crate::routes;
use crate::session::held_locks::HeldLocks;
use crate::session::memory::MemoryStore;
use crate::session::redis::RedisStore;
use crate::session::{IdlePolicy, SessionManager, SessionStore, StoreError};
use crate::state::OperatorTokens;
use crate::tls::{self, CertResolver, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error("frontend: {0}")]
    Frontend(String),
    #[error("server.tls: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot watch for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    State(#[from] live::BuildError),
    #[error("policies: {0}")]
    Policies(#[source] crate::policy::PolicyProblems),
}

/// What the settings were loaded from: the key tree (the file with the environment over
/// it) and the file's text.
#[derive(Debug, Default)]
pub struct ConfigSource {
    pub tree: toml::Table,
    pub file_text: Option<String>,
}

pub struct Application {
    port: u16,
    reloader: Reloader,
    server: Server,
    /// The plain-http listener that redirects to https, and its port.
    redirect: Option<(u16, Server)>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`), and its port.
    admin: Option<(u16, Server)>,
    store: Arc<dyn SessionStore>,
    /// Set on SIGTERM; the handlers and the WebSocket relays read it.
    drain: Drain,
    /// The refresh locks in-flight calls hold, released if the drain cuts them off.
    held_locks: HeldLocks,
    shutdown_timeout: std::time::Duration,
}

/// rustls may see more than one crypto provider in the dependency tree; pick ring explicitly
/// so it never has to guess (and panic).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The configured store; `serving`: for the server, with the session cache when it is on
/// (an operator command reads Redis directly).
pub fn build_store(
    settings: &Settings,
    serving: bool,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match (&settings.store, settings.session.cache_entries) {
        (StoreSettings::Memory, _) => Arc::new(MemoryStore::new()),
        (StoreSettings::Redis(redis), Some(entries)) if serving => {
            Arc::new(RedisStore::with_cache(redis, entries)?)
        }
        (StoreSettings::Redis(redis), _) => Arc::new(RedisStore::new(redis)?),
    })
}

pub fn session_manager(settings: &Settings, store: Arc<dyn SessionStore>) -> SessionManager {
    SessionManager::new(
        store,
        IdlePolicy {
            idle_timeout: settings.session.idle_timeout,
            touch_interval: settings.session.touch_interval,
        },
    )
    .with_revocation_key(settings.session.revocation_key.clone())
}

impl Application {
    /// Binds `settings.server.bind` (port 0 picks a free port) and prepares the server.
    /// Binds `settings.server.bind` and prepares the server; `source` is what the settings
    /// were loaded from (a reload compares against it), `spans_dropped` the trace export's
    /// count of dropped spans, when it runs (a metric).
    pub async fn build(
        settings: Settings,
        source: ConfigSource,
        spans_dropped: Option<Counter>,
    ) -> Result<Self, StartupError> {
        let address = settings.server.bind;
        let listener = TcpListener::bind(address).map_err(|source| StartupError::Bind {
            address: address.to_string(),
            source,
        })?;
        Self::assemble(
            settings,
            source,
            listener,
            Arc::new(SystemClock),
            spans_dropped,
        )
        .await
    }

    /// For callers that must know the port before the settings are final (the redirect URI
    /// contains it), and for tests that drive time. A reload compares against no source:
    /// see [`Application::build_with_source`].
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
        clock: SharedClock,
    ) -> Result<Self, StartupError> {
        Self::assemble(settings, ConfigSource::default(), listener, clock, None).await
    }

    /// [`Application::build_with_listener`] with the configuration's source.
    pub async fn build_with_source(
        settings: Settings,
        source: ConfigSource,
        listener: TcpListener,
        clock: SharedClock,
    ) -> Result<Self, StartupError> {
        Self::assemble(settings, source, listener, clock, None).await
    }

    async fn assemble(
        settings: Settings,
        source: ConfigSource,
        listener: TcpListener,
        clock: SharedClock,
        spans_dropped: Option<Counter>,
    ) -> Result<Self, StartupError> {
        install_crypto_provider();
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind {
                address: "listener".into(),
                source,
            })?
            .port();
        if settings.server.insecure_http {
            tracing::warn!(
                "DANGER: server.insecure_http is on: session cookies are sent without Secure and \
                 without the __Host- prefix. Use this for local development only."
            );
        }
        if matches!(settings.store, StoreSettings::Memory) {
            tracing::warn!(
                "no redis.url configured: sessions live in this process's memory, are lost on \
                 restart and are not shared with other instances (one instance only)"
            );
        }

        let store = build_store(&settings, true)?;
        let (providers, fresh) = live::build_providers(&settings, None)?;
        for provider in fresh {
            tokio::spawn(provider.keep_discovered());
        }

        let exporting = spans_dropped.is_some();
        let metrics = Metrics::with_spans_dropped(
            settings
                .routes
                .iter()
                .map(|route| route.prefix.as_str())
                .chain(settings.providers.keys().map(String::as_str)),
            providers.clone(),
            store.clone(),
            spans_dropped.unwrap_or_default(),
        );
        // With an admin listener, every store operation is timed (the cache statistics pass
        // through) and every request counted; without one nobody can scrape, so the hot
        // path skips both.
        let measured = settings.admin.bind.is_some();
        // The decorator also makes the store's client spans for the trace export.
        let store: Arc<dyn SessionStore> = if measured || exporting {
            Arc::new(Timed::new(store, metrics.clone()))
        } else {
            store
        };
        // Security events are counted on the same terms: only where someone can read them.
        let events = SecurityLog::new(measured.then(|| metrics.clone()));
        let store_handle = store.clone();
        // The policy set lives for the process: its files reload on their own (SIGHUP, a
        // changed file); `[policies]` itself is not a live key.
        let policies = match &settings.policies {
            Some(policy_settings) => {
                let policy_store = Arc::new(
                    PolicyStore::load(
                        policy_settings.clone(),
                        settings.routes.clone(),
                        metrics.clone(),
                        crate::clock::Clock::now_millis(clock.as_ref()),
                    )
                    .map_err(StartupError::Policies)?,
                );
                policy::watch::spawn_reloader(&policy_store, clock.clone())
                    .map_err(StartupError::Signal)?;
                Some(policy_store)
            }
            None => None,
        };
        let dev_server_http = routes::frontend::dev_server_client().map_err(|e| {
            StartupError::Frontend(format!("cannot build the dev-server client: {e}"))
        })?;
        let events_for_admin = events.clone();
        let drain = Drain::new();
        let held_locks = HeldLocks::default();
        let lasting = LastingParts {
            limiter: Arc::new(RateLimiter::new(store.clone(), clock.clone())),
            sessions: session_manager(&settings, store.clone()),
            store,
            clock,
            metrics,
            measured,
            events,
            dev_server_http,
            websockets: SocketSlots::new(settings.session.websocket_max_per_session),
            drain: drain.clone(),
            held_locks: held_locks.clone(),
            policies,
        };
        let first = live::build_state(&settings, providers.clone(), &lasting)?;
        let live_state = Arc::new(LiveState::new(first));
        let reloader = Reloader::new(
            live_state.clone(),
            lasting,
            source.tree,
            providers,
            source.file_text.as_deref(),
        );
        let state = web::Data::from(live_state);
        let admin = match settings.admin.bind {
            Some(address) => {
                let operators = (!settings.admin.api_tokens.is_empty())
                    .then(|| OperatorTokens::new(&settings.admin.api_tokens, events_for_admin));
                Some(admin_server(address, state.clone(), operators)?)
            }
            None => None,
        };

        let header_timeout = settings.server.header_timeout;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    ApiError::new(Problem::InvalidRequest).cause(err).into()
                }))
                .wrap(middleware::from_fn(edge::front))
                .service(
                    web::scope("/auth")
                        .wrap(middleware::DefaultHeaders::new().add(("Cache-Control", "no-store")))
                        .configure(routes::configure_auth),
                )
                .configure(routes::configure)
                .default_service(web::to(routes::dispatch))
        })
        // Before `listen`: actix takes the hook when it binds.
        .on_connect(move |io, data| edge::watch_connection(io, data, header_timeout));
        let server = match &settings.server.tls {
            Some(files) => {
                let resolver = Arc::new(CertResolver::new(tls::load_certified_key(files)?));
                tls::spawn_reloader(&resolver, files.clone()).map_err(StartupError::Signal)?;
                server.listen_rustls_0_23(listener, tls::server_config(resolver)?)
            }
            None => server.listen(listener),
        };
        let mut server = server
            .map_err(|source| StartupError::Bind {
                address: format!("port {port}"),
                source,
            })?
            .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
            // SIGTERM, SIGINT and SIGQUIT are watched by `run_until_stopped`, which marks
            // the drain before the listener closes.
            .disable_signals()
            // Slowloris: a client that trickles its first request head is answered 408 and
            // disconnected once this passes.
            .client_request_timeout(settings.server.header_timeout)
            .keep_alive(edge::KEEP_ALIVE)
            // Without TCP_NODELAY a response written in more than one piece (a streamed or
            // chunked upstream body) waits for the client's delayed ACK: ~40 ms per response on a
            // kept-alive connection. nginx sets it for the same reason.
            .tcp_nodelay(true);
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers.max(1));
        }
        let redirect = match settings.server.http_redirect_bind {
            Some(address) => Some(redirect_server(address, &settings.server.public_url)?),
            None => None,
        };
        Ok(Self {
            port,
            server: server.run(),
            redirect,
            admin,
            store: store_handle,
            drain,
            held_locks,
            shutdown_timeout: settings.server.shutdown_timeout,
            reloader,
        })
    }

    /// What re-reads the configuration and puts it in force (SIGHUP, tests).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The session store this instance serves from (its cache statistics, for tests).
    pub fn session_store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    /// The port of the http-to-https redirect listener, when one is configured.
    pub fn redirect_port(&self) -> Option<u16> {
        self.redirect.as_ref().map(|(port, _)| *port)
    }

    /// The port of the admin listener, when one is configured.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(port, _)| *port)
    }

    /// Serves until a signal stops the server. SIGTERM drains: readiness answers 503 at
    /// once, the public listener closes (new connections are refused), calls in flight get
    /// `server.shutdown_timeout_secs` to finish (each answer closes its connection),
    /// WebSockets are closed with 1001; refresh locks still held after that are released.
    /// SIGINT and SIGQUIT stop at once. The admin listener (readiness, metrics) stays up
    /// until the public one is done.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut quit = signal(SignalKind::quit())?;
        // The redirect and admin listeners have no signal handling of their own: they stop
        // with the server.
        let companions: Vec<_> = [self.redirect, self.admin]
            .into_iter()
            .flatten()
            .map(|(_, server)| {
                let handle = server.handle();
                (handle, tokio::spawn(server))
            })
            .collect();
        let handle = self.server.handle();
        let mut serving = tokio::spawn(self.server);
        let result = tokio::select! {
            served = &mut serving => served,
            _ = terminate.recv() => {
                tracing::info!(
                    timeout_secs = self.shutdown_timeout.as_secs(),
                    "SIGTERM: draining; readiness fails, new connections are refused, calls in \
                     flight may finish"
                );
                self.drain.start();
                handle.stop(true).await;
                serving.await
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: stopping now");
                handle.stop(false).await;
                serving.await
            }
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: stopping now");
                handle.stop(false).await;
                serving.await
            }
        };
        let result = result.unwrap_or_else(|joined| Err(std::io::Error::other(joined)));
        if self.held_locks.count() > 0 {
            let released = self.held_locks.release_all(self.store.as_ref()).await;
            tracing::info!(
                released,
                "refresh locks of calls cut off by the shutdown released"
            );
        }
        for (handle, task) in companions {
            handle.stop(true).await;
            let _ = task.await;
        }
        tracing::info!("gatehouse stopped");
        result
    }
}

/// Answers every plain-http request with 308 to the same path and query under the https
/// public URL. It shares nothing with the application: no state, no session, no routes.
fn redirect_server(address: SocketAddr, public_url: &Url) -> Result<(u16, Server), StartupError> {
    let bind_error = |source| StartupError::Bind {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let target = web::Data::new(public_url.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(target.clone())
            .default_service(web::to(tls::redirect_to_https))
    })
    .listen(listener)
    .map_err(bind_error)?
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .run();
    Ok((port, server))
}

/// The operator's listener: `/metrics`, the health checks, and the admin API when operator
/// tokens are configured; nothing else. It shares the application's state (readiness reads
/// the store and the providers) but none of its routes, middleware or security headers, and
/// its requests are not counted.
fn admin_server(
    address: SocketAddr,
    state: web::Data<LiveState>,
    operators: Option<OperatorTokens>,
) -> Result<(u16, Server), StartupError> {
    let bind_error = |source| StartupError::Bind {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let metrics = web::Data::new(state.load_full().metrics.clone());
    let operators = operators.map(web::Data::new);
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(metrics.clone())
            .wrap(middleware::from_fn(edge::with_live_state))
            .route("/metrics", web::get().to(metrics::metrics))
            .route("/healthz", web::get().to(routes::health::healthz))
            .route("/readyz", web::get().to(routes::health::readyz));
        // Without operator tokens the admin API does not exist: its paths answer 404.
        if let Some(operators) = &operators {
            app = app
                .app_data(operators.clone())
                .configure(routes::admin::configure);
        }
        app.default_service(web::to(|| async {
            actix_web::HttpResponse::NotFound().finish()
        }))
    })
    .listen(listener)
    .map_err(bind_error)?
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .run();
    Ok((port, server))
}
