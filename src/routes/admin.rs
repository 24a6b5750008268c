//! The admin API on the admin listener (`admin.api_token_file`): an operator's tooling
//! lists and ends a user's sessions. Every call needs an operator's bearer token; every
//! answer is a security event carrying that operator's name.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::{ApiError, Problem};
use crate::observability::telemetry::SecurityEvent;
use crate::oidc::operator::EndedByOperator;
use crate::state::{AppState, OperatorTokens};

use super::auth::unix_seconds;
use super::single_params;

/// The admin API's routes, under `/admin` (registered only when tokens are configured).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/sessions", web::get().to(list_sessions))
        .route("/admin/sessions", web::delete().to(end_user_sessions))
        .route("/admin/sessions/{id}", web::delete().to(end_session));
}

/// The `sub` query parameter, required, once.
fn sub_param(req: &HttpRequest) -> Result<String, ApiError> {
    single_params(req)?
        .remove("sub")
        .filter(|sub| !sub.is_empty())
        .ok_or_else(|| ApiError::new(Problem::InvalidRequest).detail("`sub` is required."))
}

/// `GET /admin/sessions?sub=…`: the user's sessions at every provider.
pub async fn list_sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
    operators: web::Data<OperatorTokens>,
) -> Result<HttpResponse, ApiError> {
    let operator = operators.authorize(&req)?;
    let sub = sub_param(&req)?;
    let AppState {
        flows,
        clock,
        events,
        ..
    } = &**state;
    let listed = flows.sessions_of(&sub, clock.now()).await?;
    events.log_by_operator(
        SecurityEvent::AdminSessionsListed,
        operator,
        None,
        Some(&sub),
        None,
        Some(&format!("listed {} session(s)", listed.len())),
    );
    let sessions: Vec<_> = listed
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "provider": s.provider,
                "device": s.device,
                "created_at": unix_seconds(s.created_at),
                "last_used_at": unix_seconds(s.last_used_at),
                "expires_at": unix_seconds(s.expires_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "sub": sub, "sessions": sessions })))
}

/// `DELETE /admin/sessions?sub=…`: ends every session of the user; answers how many ended
/// and how many of their refresh tokens the providers took back.
pub async fn end_user_sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
    operators: web::Data<OperatorTokens>,
) -> Result<HttpResponse, ApiError> {
    let operator = operators.authorize(&req)?;
    let sub = sub_param(&req)?;
    let ended = state.flows.end_sessions_of(&sub, state.clock.now()).await?;
    report(&state, operator, &ended);
    Ok(HttpResponse::Ok().json(json!({
        "sub": sub,
        "ended": ended.len(),
        "revoked": ended.iter().filter(|done| done.revoked).count(),
    })))
}

/// `DELETE /admin/sessions/{id}`: ends one session, by the id the list gives; 404 when
/// there is none.
pub async fn end_session(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
    operators: web::Data<OperatorTokens>,
) -> Result<HttpResponse, ApiError> {
    let operator = operators.authorize(&req)?;
    let not_found = || ApiError::new(Problem::NotFound).detail("No session has this id.");
    // A store key is a 43-character base64url hash; nothing else is looked up.
    if !well_formed_key(&id) {
        return Err(not_found());
    }
    let done = state
        .flows
        .end_session_by_key(&id, state.clock.now())
        .await?
        .ok_or_else(not_found)?;
    let answer = json!({ "ended": 1, "revoked": usize::from(done.revoked) });
    report(&state, operator, &[done]);
    Ok(HttpResponse::Ok().json(answer))
}

fn well_formed_key(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn report(
    AppState {
        metrics, events, ..
    }: &AppState,
    operator: &str,
    ended: &[EndedByOperator],
) {
    for done in ended {
        metrics.logouts(
            &done.provider,
            crate::observability::metrics::LogoutKind::Operator,
            1,
        );
        events.log_by_operator(
            SecurityEvent::AdminSessionEnded,
            operator,
            Some(&done.provider),
            Some(&done.sub),
            Some(&done.store_key),
            Some(if done.revoked {
                "revoked"
            } else {
                "deleted only"
            }),
        );
    }
}
