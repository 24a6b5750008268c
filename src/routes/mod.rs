//! HTTP handlers: thin translations between requests and the flows.

pub mod admin;
pub mod auth;
pub mod authorize;
pub mod cookies;
pub mod frontend;
pub mod health;
pub mod logout;
pub mod proxy;
pub mod step_up;

use actix_web::{web, HttpRequest};

use crate::error::{ApiError, Problem};
use crate::proxy::path::NormalPath;
use crate::state::AppState;

/// The `/auth` scope's routes (the scope itself is made in startup, with its headers).
pub fn configure_auth(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(auth::login))
        .route("/callback", web::get().to(auth::callback))
        .route("/user", web::get().to(auth::user))
        .route("/providers", web::get().to(auth::providers))
        .route("/sessions", web::get().to(auth::sessions))
        .route(
            "/sessions/end-others",
            web::post().to(auth::end_other_sessions),
        )
        .route("/sessions/{id}", web::delete().to(auth::end_session))
        .route("/logout", web::post().to(logout::logout_post))
        .route("/logout", web::get().to(logout::logout_get))
        .route("/logout/continue", web::get().to(logout::logout_continue))
        .route(
            "/backchannel-logout",
            web::post().to(logout::backchannel_logout),
        )
        .route(
            "/frontchannel-logout",
            web::get().to(logout::frontchannel_logout),
        )
        .default_service(web::to(not_found));
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        // Metrics are the admin listener's only; never the SPA fallback's index.html either.
        .route("/metrics", web::route().to(not_found))
        // The admin API is the admin listener's only.
        .route("/admin", web::route().to(not_found))
        .route("/admin/{rest:.*}", web::route().to(not_found));
}

/// The default service: an API route when one matches, else the frontend.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let path = NormalPath::of(&req)?;
    match state.proxy.table.find(&path)? {
        Some((route, rest)) => proxy::forward(&req, payload, &state, route, rest).await,
        None => {
            let served = (&state.frontend, &state.dev_server_http);
            frontend::serve(&req, &path, payload, served, &state.anti_forgery.header).await
        }
    }
}

/// A 302 to `location`.
pub(crate) fn redirect(location: &str) -> actix_web::HttpResponseBuilder {
    let mut response = actix_web::HttpResponse::Found();
    response.insert_header((actix_web::http::header::LOCATION, location.to_owned()));
    response
}

pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(Problem::NotFound))
}

/// Query parameters, each at most once: a repeated parameter is a request to refuse, not to
/// guess about.
pub fn single_params(
    req: &HttpRequest,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let mut params = std::collections::HashMap::new();
    for (key, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        if params
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::new(Problem::InvalidRequest)
                .detail(format!("parameter `{key}` appears more than once")));
        }
    }
    Ok(params)
}
