//! The policies one call is decided by. At load, per route and method: those whose scope can
//! match such a call (see `load::by_call`). Per call, of those: the ones whose principal scope
//! the session's user meets (anyone, this user, one of their roles). A policy left out could
//! neither apply nor fail (its scope is false, and Cedar's `&&` stops there), so the decision
//! is the same; Cedar builds and evaluates every condition it is given, about 1 µs each.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cedar_policy::{EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint};

/// How many distinct principal subsets a route's method keeps (each a set of role
/// combinations); past it, a call builds its own.
const MAX_KEPT: usize = 1024;

pub struct CallPolicies {
    /// Every policy that can apply, with its principal scope when it names someone.
    policies: Vec<(Policy, Option<PrincipalConstraint>)>,
    all: Arc<PolicySet>,
    /// By which of the scoped policies a principal meets: the subset it is decided by.
    by_principal: Mutex<HashMap<Vec<bool>, Arc<PolicySet>>>,
}

/// The session's user, as a principal scope sees it.
pub struct Principal<'a> {
    pub uid: &'a EntityUid,
    pub kind: &'a EntityTypeName,
    /// Its parents (the user entity has no other ancestors).
    pub roles: &'a HashSet<EntityUid>,
}

impl CallPolicies {
    pub fn new(subset: PolicySet) -> Self {
        let policies = subset
            .policies()
            .map(|policy| {
                let scope = match policy.principal_constraint() {
                    PrincipalConstraint::Any => None,
                    scope => Some(scope),
                };
                (policy.clone(), scope)
            })
            .collect();
        Self {
            policies,
            all: Arc::new(subset),
            by_principal: Mutex::default(),
        }
    }

    /// Every policy that can apply to such a call.
    pub fn all(&self) -> &PolicySet {
        &self.all
    }

    /// Those of them whose principal scope `principal` meets.
    pub fn for_principal(&self, principal: &Principal<'_>) -> Arc<PolicySet> {
        let meets: Vec<bool> = self
            .policies
            .iter()
            .filter_map(|(_, scope)| scope.as_ref())
            .map(|scope| principal.meets(scope))
            .collect();
        if meets.iter().all(|meets| *meets) {
            return self.all.clone();
        }
        let mut kept = self.by_principal.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(subset) = kept.get(&meets) {
            return subset.clone();
        }
        let mut scoped = meets.iter();
        let mut subset = PolicySet::new();
        for (policy, scope) in &self.policies {
            let keep = scope.is_none() || scoped.next().copied().unwrap_or(true);
            if keep && subset.add(policy.clone()).is_err() {
                // Cannot happen (the ids are unique in the subset); all of it then.
                return self.all.clone();
            }
        }
        let subset = Arc::new(subset);
        if kept.len() < MAX_KEPT {
            kept.insert(meets, subset.clone());
        }
        subset
    }
}

impl Principal<'_> {
    fn is_or_is_in(&self, uid: &EntityUid) -> bool {
        uid == self.uid || self.roles.contains(uid)
    }

    fn meets(&self, scope: &PrincipalConstraint) -> bool {
        match scope {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(uid) => uid == self.uid,
            PrincipalConstraint::In(uid) => self.is_or_is_in(uid),
            PrincipalConstraint::Is(kind) => kind == self.kind,
            PrincipalConstraint::IsIn(kind, uid) => kind == self.kind && self.is_or_is_in(uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn uid(kind: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(
            EntityTypeName::from_str(kind).expect("type"),
            cedar_policy::EntityId::new(id),
        )
    }

    fn ids(set: &PolicySet) -> Vec<String> {
        let mut ids: Vec<String> = set.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_principal_is_decided_by_the_policies_whose_scope_it_meets() {
        let set = PolicySet::from_str(
            r#"
            @id("anyone") permit (principal, action, resource);
            @id("alice") permit (principal == User::"alice", action, resource);
            @id("support") permit (principal in Role::"support", action, resource);
            @id("users") forbid (principal is User, action, resource) when { false };
            @id("user-support") permit (principal is User in Role::"support", action, resource);
            @id("roles") permit (principal is Role, action, resource);
            "#,
        )
        .expect("policies");
        let mut named = PolicySet::new();
        for policy in set.policies() {
            let id = policy.annotation("id").expect("id").to_owned();
            named
                .add(policy.new_id(cedar_policy::PolicyId::new(id)))
                .expect("unique");
        }
        let call = CallPolicies::new(named);
        let user = EntityTypeName::from_str("User").expect("type");
        let alice = uid("User", "alice");
        let bob = uid("User", "bob");
        let support = HashSet::from([uid("Role", "support")]);
        let none = HashSet::new();
        let decided_by = |uid: &EntityUid, roles: &HashSet<EntityUid>| {
            ids(&call.for_principal(&Principal {
                uid,
                kind: &user,
                roles,
            }))
        };
        assert_eq!(decided_by(&alice, &none), ["alice", "anyone", "users"]);
        assert_eq!(
            decided_by(&bob, &support),
            ["anyone", "support", "user-support", "users"]
        );
        // The same principal again: the kept subset.
        assert_eq!(decided_by(&alice, &none), ["alice", "anyone", "users"]);
        assert_eq!(call.by_principal.lock().expect("lock").len(), 2);
        assert_eq!(call.all().policies().count(), 6);
    }
}
