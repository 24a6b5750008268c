//! One call as Cedar sees it: the principal (the session's user, its claims as attributes,
//! its roles as parents), the action (the method), the resource (the route, its path
//! parameters as attributes) and the context (client IP, time, what the login proved).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;

use super::subsets::Principal;
use crate::clock::UnixMillis;
use crate::session::SessionData;

pub const USER: &str = "User";
pub const ROLE: &str = "Role";
pub const ROUTE: &str = "Route";
pub const ACTION: &str = "Action";

/// Claims nested deeper than this are left out (a record of records of …).
const MAX_CLAIM_DEPTH: usize = 4;

/// `Type::"id"`; `None` when `kind` is not a type name.
pub fn entity_uid(kind: &str, id: &str) -> Option<EntityUid> {
    Some(EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(kind).ok()?,
        EntityId::new(id),
    ))
}

/// The entity type names, parsed once.
pub struct TypeNames {
    user: EntityTypeName,
    role: EntityTypeName,
    route: EntityTypeName,
    action: EntityTypeName,
}

impl TypeNames {
    pub fn new() -> Self {
        let parse = |name| EntityTypeName::from_str(name).expect("a plain type name");
        Self {
            user: parse(USER),
            role: parse(ROLE),
            route: parse(ROUTE),
            action: parse(ACTION),
        }
    }

    fn uid(&self, kind: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
    }
}

impl Default for TypeNames {
    fn default() -> Self {
        Self::new()
    }
}

/// What a call brings to the decision, borrowed from the request and the session.
pub struct CallFacts<'a> {
    pub session: &'a SessionData,
    pub method: &'a str,
    pub route_name: &'a str,
    pub parameters: &'a [(&'a str, String)],
    pub client_ip: IpAddr,
    pub now: UnixMillis,
    pub roles_claim: &'a str,
}

/// The request and the entities it refers to. The principal's part (the user entity, the
/// context the login decided) is derived once per opened session and set, and kept with
/// the session; a call adds its route, its client address and the time.
pub fn build(
    names: &TypeNames,
    set: &SetFacts<'_>,
    facts: &CallFacts<'_>,
) -> Result<Built, BuildError> {
    let principal = facts.session.memo.get_or_make(
        |kept: &SessionPrincipal| {
            kept.digest == set.digest && kept.roles_claim == facts.roles_claim
        },
        || SessionPrincipal::new(names, set, facts),
    );
    let user = principal.entities.as_ref().ok_or(BuildError)?;

    let resource = names.uid(&names.route, facts.route_name);
    // A route without parameters has no attributes: absent from the store, Cedar sees it
    // the same (no attribute, no parent), and the call adds nothing to the user's entities.
    let entities = if facts.parameters.is_empty() {
        user.clone()
    } else {
        let route_attributes: HashMap<String, RestrictedExpression> = facts
            .parameters
            .iter()
            .map(|(name, value)| {
                (
                    (*name).to_owned(),
                    RestrictedExpression::new_string(value.clone()),
                )
            })
            .collect();
        let route = Entity::new(resource.clone(), route_attributes, HashSet::new())
            .map_err(|_| BuildError)?;
        user.clone()
            .add_entities([route], None)
            .map_err(|_| BuildError)?
    };

    let action = names.uid(&names.action, facts.method);
    let context = principal.context(facts)?;
    let request = Request::new(principal.uid.clone(), action, resource, context, None)
        .map_err(|_| BuildError)?;
    Ok(Built {
        request,
        entities,
        principal,
    })
}

/// A call as Cedar is asked it, and the session's principal it was built for.
pub struct Built {
    pub request: Request,
    pub entities: Entities,
    pub principal: Arc<SessionPrincipal>,
}

/// What of the live set the principal depends on.
pub struct SetFacts<'a> {
    /// Which set (its schema decides the attributes).
    pub digest: &'a str,
    /// The attributes the schema declares for `User`; `None`: every claim.
    pub user_attributes: Option<&'a HashSet<String>>,
}

/// A session's user as the live set sees it, kept with the opened session.
pub struct SessionPrincipal {
    /// The set (by digest: its schema decides the attributes) and roles claim it was made for.
    digest: String,
    roles_claim: String,
    uid: EntityUid,
    roles: HashSet<EntityUid>,
    /// The user entity alone; `None` when it cannot be built (every call is then refused).
    entities: Option<Entities>,
    /// The context attributes the login decided: `amr`, `provider`, `acr`.
    login_context: Vec<(String, RestrictedExpression)>,
    last_call: Mutex<LastCall>,
}

impl SessionPrincipal {
    fn new(names: &TypeNames, set: &SetFacts<'_>, facts: &CallFacts<'_>) -> Self {
        let session = facts.session;
        let uid = names.uid(&names.user, &session.sub);
        let claims = session.claims.to_map();
        let roles: HashSet<EntityUid> = match claims.get(facts.roles_claim) {
            Some(Value::String(role)) => HashSet::from([names.uid(&names.role, role)]),
            Some(Value::Array(roles)) => roles
                .iter()
                .filter_map(Value::as_str)
                .map(|role| names.uid(&names.role, role))
                .collect(),
            _ => HashSet::new(),
        };
        // Only what the schema declares: strict validation lets no policy name another
        // claim, and `has` then answers as the validator typed it.
        let mut attributes: HashMap<String, RestrictedExpression> = claims
            .iter()
            .filter(|(name, _)| {
                set.user_attributes
                    .is_none_or(|declared| declared.contains(name.as_str()))
            })
            .filter_map(|(name, value)| Some((name.clone(), expression(value, 0)?)))
            .collect();
        attributes.insert(
            "sub".into(),
            RestrictedExpression::new_string(session.sub.clone()),
        );
        let entities = Entity::new(uid.clone(), attributes, roles.clone())
            .ok()
            .and_then(|user| Entities::from_entities([user], None).ok());
        Self {
            digest: set.digest.to_owned(),
            roles_claim: facts.roles_claim.to_owned(),
            uid,
            roles,
            entities,
            login_context: login_context(session),
            last_call: Mutex::default(),
        }
    }

    /// As a principal scope sees it.
    pub fn as_principal<'a>(&'a self, names: &'a TypeNames) -> Principal<'a> {
        Principal {
            uid: &self.uid,
            kind: &names.user,
            roles: &self.roles,
        }
    }

    fn context(&self, facts: &CallFacts<'_>) -> Result<Context, BuildError> {
        let second = facts.now.div_euclid(1000);
        let mut last = self.last_call.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ip, at, context)) = last.context.as_ref() {
            if *ip == facts.client_ip && *at == second {
                return Ok(context.clone());
            }
        }
        let ip = match last.ip.as_ref() {
            Some((ip, value)) if *ip == facts.client_ip => value.clone(),
            _ => {
                let value = RestrictedExpression::new_ip(facts.client_ip.to_string());
                last.ip = Some((facts.client_ip, value.clone()));
                value
            }
        };
        let context = Context::from_pairs(context_pairs(facts, ip, &self.login_context))
            .map_err(|_| BuildError)?;
        last.context = Some((facts.client_ip, second, context.clone()));
        Ok(context)
    }
}

/// What the session's last call had that the next is likely to have again.
#[derive(Default)]
struct LastCall {
    /// The client address as a Cedar value (`ip(…)` costs a parse of the function's name).
    ip: Option<(IpAddr, RestrictedExpression)>,
    /// The context, by client address and second: each of its values is a function of the
    /// session, the address and the second (`auth_age` too), so the calls of one second
    /// from one address share it.
    context: Option<(IpAddr, i64, Context)>,
}

/// The request could not be put together (a claim Cedar cannot hold, which the conversion
/// leaves out, should never cause it). Never carries a value.
#[derive(Debug, thiserror::Error)]
#[error("the authorization request could not be built")]
pub struct BuildError;

/// A claim as a Cedar value: strings, integers, booleans, and lists and objects of them;
/// anything else (a fraction, null, a too deep nesting) is left out.
fn expression(value: &Value, depth: usize) -> Option<RestrictedExpression> {
    match value {
        Value::String(text) => Some(RestrictedExpression::new_string(text.clone())),
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => n.as_i64().map(RestrictedExpression::new_long),
        Value::Array(items) if depth < MAX_CLAIM_DEPTH => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| expression(item, depth + 1)),
        )),
        Value::Object(members) if depth < MAX_CLAIM_DEPTH => RestrictedExpression::new_record(
            members
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), expression(v, depth + 1)?))),
        )
        .ok(),
        _ => None,
    }
}

/// Hour (0–23) and ISO weekday (1 = Monday … 7 = Sunday) in UTC.
fn hour_and_weekday(now: UnixMillis) -> (i64, i64) {
    let secs = now.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3600;
    // 1970-01-01 was a Thursday (4).
    let weekday = (days + 3).rem_euclid(7) + 1;
    (hour, weekday)
}

fn login_context(session: &SessionData) -> Vec<(String, RestrictedExpression)> {
    let authentication = &session.authentication;
    let mut pairs = vec![
        (
            "amr".to_owned(),
            RestrictedExpression::new_set(
                authentication
                    .amr
                    .iter()
                    .map(|method| RestrictedExpression::new_string(method.clone())),
            ),
        ),
        (
            "provider".to_owned(),
            RestrictedExpression::new_string(session.provider.clone()),
        ),
    ];
    if let Some(acr) = &authentication.acr {
        pairs.push((
            "acr".to_owned(),
            RestrictedExpression::new_string(acr.clone()),
        ));
    }
    pairs
}

fn context_pairs(
    facts: &CallFacts<'_>,
    ip: RestrictedExpression,
    login_context: &[(String, RestrictedExpression)],
) -> Vec<(String, RestrictedExpression)> {
    let (hour, weekday) = hour_and_weekday(facts.now);
    let mut pairs = Vec::with_capacity(login_context.len() + 5);
    pairs.extend([
        ("ip".to_owned(), ip),
        (
            "now".to_owned(),
            RestrictedExpression::new_long(facts.now.div_euclid(1000)),
        ),
        ("hour".to_owned(), RestrictedExpression::new_long(hour)),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(weekday),
        ),
    ]);
    pairs.extend(login_context.iter().cloned());
    if let Some(age) = facts.session.authentication.age_secs(facts.now) {
        pairs.push(("auth_age".to_owned(), RestrictedExpression::new_long(age)));
    }
    pairs
}

/// Every context attribute, with sample values, for the check of a schema.
pub fn sample_context_pairs() -> Vec<(String, RestrictedExpression)> {
    vec![
        ("ip".into(), RestrictedExpression::new_ip("127.0.0.1")),
        ("now".into(), RestrictedExpression::new_long(0)),
        ("hour".into(), RestrictedExpression::new_long(0)),
        ("weekday".into(), RestrictedExpression::new_long(1)),
        (
            "amr".into(),
            RestrictedExpression::new_set([RestrictedExpression::new_string("pwd".into())]),
        ),
        (
            "provider".into(),
            RestrictedExpression::new_string("main".into()),
        ),
        ("acr".into(), RestrictedExpression::new_string("x".into())),
        ("auth_age".into(), RestrictedExpression::new_long(0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_weekdays_in_utc() {
        // 2024-01-01 was a Monday; 13:05 UTC.
        let monday = 1_704_114_300_000;
        assert_eq!(hour_and_weekday(monday), (13, 1));
        assert_eq!(hour_and_weekday(monday + 6 * 86_400_000), (13, 7));
        assert_eq!(hour_and_weekday(0), (0, 4));
    }

    fn session() -> SessionData {
        serde_json::from_value(serde_json::json!({
            "provider": "main", "sub": "u-1", "provider_sid": null,
            "claims": {
                "sub": "u-1", "email": "u-1@example.test", "department": "sales",
                "roles": ["support"]
            },
            "authentication": { "acr": "mfa", "amr": ["pwd", "otp"], "auth_time": 1_700_000_000 },
            "tokens": {
                "access_token": "a", "access_token_expires_at": null, "refresh_token": null,
                "id_token": "i", "scope": "openid"
            },
            "logout_sid": "l", "created_at": 0, "absolute_expires_at": 0
        }))
        .expect("a session")
    }

    fn facts<'a>(session: &'a SessionData, now: UnixMillis, ip: [u8; 4]) -> CallFacts<'a> {
        CallFacts {
            session,
            method: "GET",
            route_name: "orders",
            parameters: &[],
            client_ip: IpAddr::from(ip),
            now,
            roles_claim: "roles",
        }
    }

    fn user_attribute(entities: &Entities, name: &str) -> Option<String> {
        let uid = entity_uid(USER, "u-1").expect("uid");
        let user = entities.get(&uid).expect("the user is in the store");
        user.attr(name)
            .map(|value| format!("{:?}", value.expect("a value")))
    }

    fn context_of(request: &Request) -> Vec<String> {
        let mut pairs: Vec<String> = request
            .context()
            .expect("a context")
            .clone()
            .into_iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn the_principal_holds_the_declared_claims_and_is_made_again_for_another_set() {
        let names = TypeNames::new();
        let session = session();
        let declared = HashSet::from(["department".to_owned()]);
        let first_set = SetFacts {
            digest: "first",
            user_attributes: Some(&declared),
        };
        let now = 1_700_000_600_000;
        let entities = build(&names, &first_set, &facts(&session, now, [10, 0, 0, 1]))
            .expect("built")
            .entities;
        assert!(user_attribute(&entities, "department").is_some());
        assert!(user_attribute(&entities, "sub").is_some());
        assert_eq!(user_attribute(&entities, "email"), None, "not declared");
        let uid = entity_uid(USER, "u-1").expect("uid");
        let support = entity_uid(ROLE, "support").expect("role");
        assert!(entities.is_ancestor_of(&support, &uid));

        // Another set (a reload) whose schema this code cannot read: every claim.
        let second_set = SetFacts {
            digest: "second",
            user_attributes: None,
        };
        let entities = build(&names, &second_set, &facts(&session, now, [10, 0, 0, 1]))
            .expect("built")
            .entities;
        assert!(user_attribute(&entities, "email").is_some());
        // A copy of the session (what a change makes) keeps nothing of the memo.
        let copy = session.clone();
        let kept = copy.memo.get_or_make(
            |_: &SessionPrincipal| true,
            || SessionPrincipal::new(&names, &first_set, &facts(&copy, now, [10, 0, 0, 1])),
        );
        assert_eq!(kept.digest, "first");
    }

    #[test]
    fn the_calls_of_one_second_from_one_address_share_a_context_and_others_make_theirs() {
        let names = TypeNames::new();
        let session = session();
        let set = SetFacts {
            digest: "set",
            user_attributes: None,
        };
        let at = |now, ip| {
            let built = build(&names, &set, &facts(&session, now, ip)).expect("built");
            context_of(&built.request)
        };
        let start = 1_700_000_600_000;
        let has = |context: &[String], name: &str, value: &str| {
            context
                .iter()
                .any(|pair| pair.starts_with(&format!("{name}=")) && pair.contains(value))
        };
        let first = at(start, [10, 0, 0, 1]);
        assert!(has(&first, "auth_age", "Long(600)"), "{first:?}");
        assert!(has(&first, "acr", "\"mfa\""), "{first:?}");
        assert!(has(&first, "ip", "\"10.0.0.1\""), "{first:?}");
        assert_eq!(at(start + 999, [10, 0, 0, 1]), first);
        let next_second = at(start + 1000, [10, 0, 0, 1]);
        assert!(
            has(&next_second, "auth_age", "Long(601)"),
            "{next_second:?}"
        );
        assert!(has(
            &next_second,
            "now",
            &format!("Long({})", start / 1000 + 1)
        ));
        let other_address = at(start + 1000, [10, 0, 0, 2]);
        assert!(
            has(&other_address, "ip", "\"10.0.0.2\""),
            "{other_address:?}"
        );
        assert_eq!(at(start + 1000, [10, 0, 0, 1]), next_second);
    }
}
