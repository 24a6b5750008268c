//! Wiring: builds the store, the providers and the HTTP server from settings.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{middleware, web, App, HttpServer};
use url::Url;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Settings, StoreSettings};
use crate::edge;
use crate::error::{ApiError, Problem};
use crate::frontend::{self, Frontend};
use crate::observability::metrics::{self, Metrics, Timed};
use crate::observability::telemetry::SecurityLog;
use crate::oidc::flows::AuthFlows;
use crate::oidc::refresh::TokenRefresher;
use crate::oidc::{OidcError, Provider, Providers};
use crate::policy::{self, PolicyStore};
use crate::proxy::Proxy;
use crate::ratelimit::RateLimiter;
use crate::routes;
use crate::session::memory::MemoryStore;
use crate::session::redis::RedisStore;
use crate::session::{IdlePolicy, SessionManager, SessionStore, StoreError};
use crate::state::{AntiForgery, AppState, Clock, CookieSettings, EdgeSettings, RateLimits};
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
    #[error("policies: {0}")]
    Policies(#[source] crate::policy::PolicyProblems),
    #[error("cannot build the proxy's upstream client: {0}")]
    ProxyClient(#[source] crate::proxy::ProxyBuildError),
}

pub struct Application {
    port: u16,
    server: Server,
    /// The plain-http listener that redirects to https, and its port.
    redirect: Option<(u16, Server)>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`), and its port.
    admin: Option<(u16, Server)>,
    store: Arc<dyn SessionStore>,
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
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let address = settings.server.bind;
        let listener = TcpListener::bind(address).map_err(|source| StartupError::Bind {
            address: address.to_string(),
            source,
        })?;
        Self::build_with_listener(settings, listener, Arc::new(SystemClock)).await
    }

    /// For callers that must know the port before the settings are final (the redirect URI
    /// contains it), and for tests that drive time.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
        clock: SharedClock,
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
        let mut by_name = BTreeMap::new();
        for (name, provider_settings) in &settings.providers {
            let provider = Arc::new(Provider::new(provider_settings.clone())?);
            tokio::spawn(provider.clone().keep_discovered());
            by_name.insert(name.clone(), provider);
        }
        let providers = Arc::new(Providers {
            by_name,
            default: settings.default_provider.clone(),
        });

        let metrics = Metrics::new(
            settings
                .routes
                .iter()
                .map(|route| route.prefix.as_str())
                .chain(settings.providers.keys().map(String::as_str)),
            providers.clone(),
            store.clone(),
        );
        // With an admin listener, every store operation is timed (the cache statistics pass
        // through) and every request counted; without one nobody can scrape, so the hot
        // path skips both.
        let measured = settings.admin.bind.is_some();
        let store: Arc<dyn SessionStore> = if measured {
            Arc::new(Timed::new(store, metrics.clone()))
        } else {
            store
        };
        // Security events are counted on the same terms: only where someone can read them.
        let events = SecurityLog::new(measured.then(|| metrics.clone()));
        let store_handle = store.clone();
        let limiter = RateLimiter::new(store.clone(), clock.clone());
        let sessions = session_manager(&settings, store.clone());

        let policies = match &settings.policies {
            Some(policy_settings) => {
                let store = Arc::new(
                    PolicyStore::load(
                        policy_settings.clone(),
                        settings.routes.clone(),
                        metrics.clone(),
                        crate::clock::Clock::now_millis(clock.as_ref()),
                    )
                    .map_err(StartupError::Policies)?,
                );
                policy::watch::spawn_reloader(&store, clock.clone())
                    .map_err(StartupError::Signal)?;
                Some(store)
            }
            None => None,
        };
        let proxy = Proxy::new(
            settings.routes.clone(),
            &providers,
            &settings.server.public_url,
        )
        .map_err(StartupError::ProxyClient)?;
        let refresher = TokenRefresher::new(
            sessions.clone(),
            store.clone(),
            providers.clone(),
            clock.clone(),
            &settings.session,
            metrics.clone(),
            events.clone(),
        );
        let frontend =
            Frontend::new(&settings.frontend).map_err(|e| StartupError::Frontend(e.to_string()))?;
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
        let dev_server_http = routes::frontend::dev_server_client().map_err(|e| {
            StartupError::Frontend(format!("cannot build the dev-server client: {e}"))
        })?;
        let security_headers =
            frontend::security_headers(&settings.frontend, &settings.server.public_url)
                .into_iter()
                .map(|(name, value)| {
                    match (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        (Ok(name), Ok(value)) => Ok((name, value)),
                        _ => Err(StartupError::Frontend(format!(
                            "{name}: not a valid header value"
                        ))),
                    }
                })
                .collect::<Result<Vec<_>, StartupError>>()?;

        let state = web::Data::new(AppState {
            proxy,
            refresher,
            flows: AuthFlows {
                providers,
                sessions,
                replay: store.clone(),
                session_settings: settings.session.clone(),
                events: events.clone(),
            },
            limits: RateLimits::new(
                limiter,
                settings.rate_limits,
                metrics.clone(),
                events.clone(),
            ),
            cookie_settings: CookieSettings::new(&settings.session),
            anti_forgery: AntiForgery::new(&settings.csrf, events.clone()),
            public_url: settings.server.public_url.clone(),
            edge: EdgeSettings::new(&settings.server, security_headers),
            clock: Clock(clock),
            frontend,
            dev_server_http,
            store_health: store.clone(),
            websockets: crate::proxy::websocket::SocketSlots::new(
                settings.session.websocket_max_per_session,
            ),
            metrics,
            measured,
            events,
            policies,
        });
        let admin = match settings.admin.bind {
            Some(address) => Some(admin_server(address, state.clone())?),
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
        })
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

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
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
        let result = self.server.await;
        for (handle, task) in companions {
            handle.stop(true).await;
            let _ = task.await;
        }
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

/// The operator's listener: `/metrics` and the health checks, nothing else. It shares the
/// application's state (readiness reads the store and the providers) but none of its routes,
/// middleware or security headers, and its requests are not counted.
fn admin_server(
    address: SocketAddr,
    state: web::Data<AppState>,
) -> Result<(u16, Server), StartupError> {
    let bind_error = |source| StartupError::Bind {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).map_err(bind_error)?;
    let port = listener.local_addr().map_err(bind_error)?.port();
    let metrics = web::Data::new(state.metrics.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(metrics.clone())
            .route("/metrics", web::get().to(metrics::metrics))
            .route("/healthz", web::get().to(routes::health::healthz))
            .route("/readyz", web::get().to(routes::health::readyz))
            .default_service(web::to(|| async {
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
