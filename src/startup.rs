//! Wiring: builds the store, the providers and the HTTP server from settings.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Settings, StoreSettings};
use crate::error::{ApiError, Problem};
use crate::frontend::{self, Frontend};
use crate::oidc::flows::AuthFlows;
use crate::oidc::refresh::TokenRefresher;
use crate::oidc::{OidcError, Provider, Providers};
use crate::proxy::Proxy;
use crate::ratelimit::RateLimiter;
use crate::routes::{self, AppState};
use crate::session::memory::MemoryStore;
use crate::session::redis::RedisStore;
use crate::session::{IdlePolicy, SessionManager, SessionStore, StoreError};
use crate::{edge, telemetry};

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
}

pub struct Application {
    port: u16,
    server: Server,
}

/// rustls may see more than one crypto provider in the dependency tree; pick ring explicitly
/// so it never has to guess (and panic).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn build_store(settings: &Settings) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match &settings.store {
        StoreSettings::Memory => Arc::new(MemoryStore::new()),
        StoreSettings::Redis(redis) => Arc::new(RedisStore::new(redis)?),
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

        let store = build_store(&settings)?;
        let limiter = RateLimiter::new(store.clone(), clock.clone());
        let sessions = session_manager(&settings, store);

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

        let proxy = Proxy::new(settings.routes.clone(), &providers).map_err(|e| {
            StartupError::Oidc(OidcError::Transport(format!(
                "cannot build the proxy client: {e}"
            )))
        })?;
        let refresher = TokenRefresher::new(
            sessions.clone(),
            providers.clone(),
            clock.clone(),
            &settings.session,
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
            frontend::security_headers(&settings.frontend, &settings.server.public_url);

        let settings = Arc::new(settings);
        let state = web::Data::new(AppState {
            proxy,
            refresher,
            flows: AuthFlows {
                providers,
                sessions,
                session_settings: settings.session.clone(),
            },
            settings: settings.clone(),
            clock,
            frontend,
            dev_server_http,
            limiter,
        });

        let mut server = HttpServer::new(move || {
            // Outermost, so that it also sees the problem responses the request context
            // renders; it adds each header only where the response has none.
            let defaults = security_headers.iter().fold(
                middleware::DefaultHeaders::new(),
                |defaults, (name, value)| defaults.add((*name, value.as_str())),
            );
            App::new()
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    ApiError::new(Problem::InvalidRequest).cause(err).into()
                }))
                .wrap(middleware::from_fn(routes::path_guard))
                .wrap(middleware::from_fn(edge::guard))
                .wrap(middleware::from_fn(telemetry::request_context))
                .wrap(defaults)
                .service(
                    web::scope("/auth")
                        .wrap(middleware::DefaultHeaders::new().add(("Cache-Control", "no-store")))
                        .configure(routes::configure_auth),
                )
                .configure(routes::configure)
                .default_service(web::to(routes::proxy::dispatch))
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            address: format!("port {port}"),
            source,
        })?
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
        // Slowloris: a client that trickles its request head is answered 408 and
        // disconnected once this passes.
        .client_request_timeout(settings.server.header_timeout)
        // Without TCP_NODELAY a response written in more than one piece (a streamed or
        // chunked upstream body) waits for the client's delayed ACK: ~40 ms per response on a
        // kept-alive connection. nginx sets it for the same reason.
        .tcp_nodelay(true);
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers.max(1));
        }
        Ok(Self {
            port,
            server: server.run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
