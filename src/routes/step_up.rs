//! The step-up answer the SPA gets (RFC 9470 at the edge): 401 problem+json
//! `step-up-required` with `WWW-Authenticate: Bearer error="insufficient_user_authentication"`
//! and a `login_url` on gatehouse that asks the provider for what the call lacks, then comes
//! back to the page the SPA names (`X-Return-To`, else its same-origin `Referer`, else `/`).

use actix_web::http::header;
use actix_web::HttpRequest;
use url::Url;

use crate::error::{ApiError, Problem};
use crate::observability::telemetry::{SecurityEvent, SecurityLog};
use crate::oidc::return_to::validate_return_to;
use crate::proxy::step_up::StepUpChallenge;
use crate::session::LoadedSession;

/// The request header in which the SPA names the page to come back to after a step-up
/// login: a local path, validated as `/auth/login`'s `returnTo` is.
pub const RETURN_TO_HEADER: &str = "x-return-to";

/// The problem for a call whose session must step up; logs `authz.step_up_required`.
pub fn step_up_problem(
    req: &HttpRequest,
    public_url: &Url,
    events: &SecurityLog,
    session: &LoadedSession,
    challenge: StepUpChallenge,
) -> ApiError {
    events.log(
        SecurityEvent::StepUpRequired,
        Some(&session.data.sub),
        Some(&session.store_key),
        Some(challenge.reason),
    );
    let return_to = return_to(req, public_url);
    let mut error = ApiError::new(Problem::StepUpRequired)
        .detail("This call needs a stronger or more recent sign-in: follow login_url.")
        .header("WWW-Authenticate", challenge.www_authenticate())
        .extension(
            "login_url",
            login_url(&challenge, &session.data.provider, &return_to),
        );
    if !challenge.acr_values.is_empty() {
        error = error.extension("acr_values", challenge.acr_values.join(" "));
    }
    if let Some(max_age) = challenge.max_age {
        error = error.extension("max_age", max_age);
    }
    error.cause(challenge.reason)
}

/// `/auth/login` with what the call lacks: `acr_values`, `max_age`, and `prompt=login`
/// when only a fresh authentication helps.
fn login_url(challenge: &StepUpChallenge, provider: &str, return_to: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("returnTo", return_to);
    query.append_pair("provider", provider);
    if !challenge.acr_values.is_empty() {
        query.append_pair("acr_values", &challenge.acr_values.join(" "));
    }
    if let Some(max_age) = challenge.max_age {
        query.append_pair("max_age", &max_age.to_string());
    }
    if challenge.reauthenticate {
        query.append_pair("prompt", "login");
    }
    format!("/auth/login?{}", query.finish())
}

/// The page to come back to: `X-Return-To` when it is a valid local path, else the path of
/// a `Referer` on this site, else `/`.
fn return_to(req: &HttpRequest, public_url: &Url) -> String {
    let single = |name| {
        let mut values = req.headers().get_all(name);
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok(),
            _ => None,
        }
    };
    if let Some(path) = single(header::HeaderName::from_static(RETURN_TO_HEADER))
        .and_then(|path| validate_return_to(path).ok())
    {
        return path;
    }
    let own_origin = public_url.origin();
    single(header::REFERER)
        .and_then(|referer| url::Url::parse(referer).ok())
        .filter(|referer| referer.origin() == own_origin)
        .and_then(|referer| {
            let path = match referer.query() {
                Some(query) => format!("{}?{query}", referer.path()),
                None => referer.path().to_owned(),
            };
            validate_return_to(&path).ok()
        })
        .unwrap_or_else(|| "/".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_url_asks_for_what_the_call_lacks() {
        let challenge = StepUpChallenge {
            acr_values: vec!["urn:a".into(), "b".into()],
            max_age: Some(300),
            reauthenticate: false,
            reason: "test",
        };
        assert_eq!(
            login_url(&challenge, "main", "/pay?x=1"),
            "/auth/login?returnTo=%2Fpay%3Fx%3D1&provider=main&acr_values=urn%3Aa+b&max_age=300"
        );
        let age_only = StepUpChallenge {
            acr_values: vec![],
            reauthenticate: true,
            ..challenge
        };
        assert_eq!(
            login_url(&age_only, "main", "/"),
            "/auth/login?returnTo=%2F&provider=main&max_age=300&prompt=login"
        );
    }
}
