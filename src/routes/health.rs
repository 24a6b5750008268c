use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the session store answers and every provider's metadata is loaded.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // Shutting down: out of the load balancer at once, whatever else holds.
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"ready": false, "draining": true}));
    }
    let store = state.store_health.ping().await;
    let providers: serde_json::Map<String, serde_json::Value> = state
        .flows
        .providers
        .by_name
        .iter()
        .map(|(name, p)| {
            let status = if p.is_ready() {
                json!({"ready": true})
            } else {
                json!({"ready": false, "reason": p.last_error().unwrap_or_else(|| "discovery pending".into())})
            };
            (name.clone(), status)
        })
        .collect();
    let ready = store.is_ok() && state.flows.providers.all_ready();
    let body = json!({
        "ready": ready,
        "store": match &store { Ok(()) => json!({"ready": true}), Err(e) => json!({"ready": false, "reason": e.to_string()}) },
        "providers": providers,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}
