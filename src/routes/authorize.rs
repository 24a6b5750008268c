//! A `policy = true` route's call, decided by the Cedar policy set (after the route's
//! scopes, claims and step-up, before the token goes out): 403 `forbidden-by-policy` and an
//! `authz.denied` event naming the policies that decided, never a claim's value.

use actix_web::HttpRequest;

use crate::config::RouteSettings;
use crate::edge::ClientIp;
use crate::error::{ApiError, Problem};
use crate::observability::telemetry::{SecurityEvent, SecurityLog};
use crate::policy::{CallFacts, PolicyStore, Verdict};
use crate::proxy::template::PathParameters;
use crate::session::LoadedSession;
use crate::state::Clock;

pub struct PolicyCheck<'a> {
    pub policies: Option<&'a PolicyStore>,
    pub clock: &'a Clock,
    pub events: &'a SecurityLog,
}

impl PolicyCheck<'_> {
    pub fn require(
        &self,
        req: &HttpRequest,
        route: &RouteSettings,
        parameters: &PathParameters<'_>,
        session: Option<&LoadedSession>,
    ) -> Result<(), ApiError> {
        if !route.policy {
            return Ok(());
        }
        // Config makes a policy route a user route and start-up refuses a missing set: both
        // are here, but a refusal is the answer should they not be.
        let (Some(policies), Some(session)) = (self.policies, session) else {
            return Err(ApiError::new(Problem::ForbiddenByPolicy));
        };
        let facts = CallFacts {
            session: &session.data,
            method: req.method().as_str(),
            route_name: &route.name,
            parameters,
            client_ip: ClientIp::of(req),
            now: self.clock.now(),
            roles_claim: &policies.settings().roles_claim,
        };
        match policies.decide(&facts) {
            Verdict::Allow => Ok(()),
            Verdict::Deny(reason) => {
                self.events.log(
                    SecurityEvent::AuthorizationDenied,
                    Some(session.data.sub.as_str()),
                    Some(session.store_key.as_str()),
                    Some(&reason.describe()),
                );
                Err(ApiError::new(Problem::ForbiddenByPolicy))
            }
        }
    }
}
