//! Authorization policies: the Cedar set `[policies]` names, evaluated in process for every
//! call of a `policy = true` route (docs/policies.md).
//!
//! The set is an immutable value ([`LoadedSet`]) behind [`PolicyStore`]; a reload (SIGHUP,
//! a changed file, see `watch`) reads and validates a whole new set and swaps it in, or
//! keeps the live one and says why. A call holds the set it started with.

pub mod load;
pub mod request;
pub mod subsets;
pub mod watch;

use std::sync::{Arc, RwLock};

pub use cedar_policy::Authorizer;
use cedar_policy::{AuthorizationError, Decision};

pub use load::{load_set, LoadedSet, PolicyProblems};
pub use request::CallFacts;

use crate::clock::UnixMillis;
use crate::config::{PolicySettings, RouteSettings};
use crate::observability::metrics::Metrics;
pub use request::TypeNames;

/// The live set and what it was loaded from.
pub struct PolicyStore {
    settings: PolicySettings,
    /// The routes the set must serve (checked at every load).
    routes: Vec<RouteSettings>,
    live: RwLock<Arc<LoadedSet>>,
    names: TypeNames,
    authorizer: Authorizer,
    metrics: Metrics,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// A new set is live (its digest).
    Swapped(String),
    /// The files hold the set that is already live.
    Unchanged(String),
}

/// The decision on one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Why, for the security event: policy ids only, never a claim or parameter value.
    Deny(DenyReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// No `permit` applied.
    NoPermit,
    /// These `forbid` policies applied.
    Forbidden(Vec<String>),
    /// These policies failed to evaluate (a claim of an unexpected type): the call is
    /// refused rather than decided without them.
    Errors(Vec<String>),
    /// The request could not be put together.
    Unbuildable,
}

impl DenyReason {
    /// For the `reason` field of `authz.denied`.
    pub fn describe(&self) -> String {
        match self {
            DenyReason::NoPermit => "policy: no policy permits".into(),
            DenyReason::Forbidden(ids) => format!("policy: forbidden by {}", ids.join(", ")),
            DenyReason::Errors(ids) => {
                format!("policy: refused, evaluation failed in {}", ids.join(", "))
            }
            DenyReason::Unbuildable => "policy: the request could not be built".into(),
        }
    }
}

impl PolicyStore {
    /// Reads the set; the problems when it is not valid (start-up refuses to serve then).
    pub fn load(
        settings: PolicySettings,
        routes: Vec<RouteSettings>,
        metrics: Metrics,
        now: UnixMillis,
    ) -> Result<Self, PolicyProblems> {
        let set = load_set(&settings, &routes)?;
        metrics.policy_set_loaded(&set.digest, now);
        tracing::info!(
            digest = %set.digest,
            policies = set.sources.len(),
            "policy set loaded"
        );
        Ok(Self {
            settings,
            routes,
            live: RwLock::new(Arc::new(set)),
            names: TypeNames::new(),
            authorizer: Authorizer::new(),
            metrics,
        })
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The live set.
    pub fn live(&self) -> Arc<LoadedSet> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again: a valid new set goes live; an invalid one leaves the live set
    /// as it is and its problems are returned (and logged, and counted).
    pub fn reload(&self, now: UnixMillis, reason: &str) -> Result<Reloaded, PolicyProblems> {
        let live = self.live();
        match load_set(&self.settings, &self.routes) {
            Ok(set) if set.digest == live.digest => {
                self.metrics.policy_reload(true);
                Ok(Reloaded::Unchanged(set.digest))
            }
            Ok(set) => {
                let digest = set.digest.clone();
                let policies = set.sources.len();
                *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                self.metrics.policy_reload(true);
                self.metrics.policy_set_loaded(&digest, now);
                tracing::info!(reason, %digest, policies, "policy set reloaded");
                Ok(Reloaded::Swapped(digest))
            }
            Err(problems) => {
                self.metrics.policy_reload(false);
                tracing::error!(
                    reason,
                    live = %live.digest,
                    problems = %problems,
                    "policy set not reloaded; the previous set stays live"
                );
                Err(problems)
            }
        }
    }

    /// Decides one call against the live set.
    pub fn decide(&self, facts: &CallFacts<'_>) -> Verdict {
        evaluate(&self.authorizer, &self.names, &self.live(), facts)
    }
}

/// One decision of `set` on a call (what [`PolicyStore::decide`] does with the live set).
pub fn evaluate(
    authorizer: &Authorizer,
    names: &TypeNames,
    set: &LoadedSet,
    facts: &CallFacts<'_>,
) -> Verdict {
    let set_facts = request::SetFacts {
        digest: &set.digest,
        user_attributes: set.user_attributes.as_ref(),
    };
    let Ok(built) = request::build(names, &set_facts, facts) else {
        return Verdict::Deny(DenyReason::Unbuildable);
    };
    // The route's subset for the method when the set has one (a route the set was loaded
    // for), else the whole set; of it, the policies whose principal scope the user meets.
    let call = set
        .by_call
        .get(facts.route_name)
        .and_then(|by_method| by_method.get(facts.method))
        .unwrap_or(&set.whole);
    let policies = call.for_principal(&built.principal.as_principal(names));
    let response = authorizer.is_authorized(&built.request, &policies, &built.entities);
    let diagnostics = response.diagnostics();
    let mut failed: Vec<String> = diagnostics
        .errors()
        .map(|error| match error {
            AuthorizationError::PolicyEvaluationError(e) => e.policy_id().to_string(),
        })
        .collect();
    if !failed.is_empty() {
        failed.sort();
        return Verdict::Deny(DenyReason::Errors(failed));
    }
    match response.decision() {
        Decision::Allow => Verdict::Allow,
        Decision::Deny => {
            let mut forbidding: Vec<String> =
                diagnostics.reason().map(ToString::to_string).collect();
            if forbidding.is_empty() {
                Verdict::Deny(DenyReason::NoPermit)
            } else {
                forbidding.sort();
                Verdict::Deny(DenyReason::Forbidden(forbidding))
            }
        }
    }
}
