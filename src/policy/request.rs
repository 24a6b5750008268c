//! One call as Cedar sees it: the principal (the session's user, its claims as attributes,
//! its roles as parents), the action (the method), the resource (the route, its path
//! parameters as attributes) and the context (client IP, time, what the login proved).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde_json::Value;

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

/// The request and the entities it refers to.
pub fn build(names: &TypeNames, facts: &CallFacts<'_>) -> Result<(Request, Entities), BuildError> {
    let session = facts.session;
    let principal = names.uid(&names.user, &session.sub);
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
    let mut attributes: HashMap<String, RestrictedExpression> = claims
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), expression(value, 0)?)))
        .collect();
    attributes.insert(
        "sub".into(),
        RestrictedExpression::new_string(session.sub.clone()),
    );
    let user = Entity::new(principal.clone(), attributes, roles).map_err(|_| BuildError)?;

    let resource = names.uid(&names.route, facts.route_name);
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
    let route =
        Entity::new(resource.clone(), route_attributes, HashSet::new()).map_err(|_| BuildError)?;

    let action = names.uid(&names.action, facts.method);
    let context = Context::from_pairs(context_pairs(facts)).map_err(|_| BuildError)?;
    let request =
        Request::new(principal, action, resource, context, None).map_err(|_| BuildError)?;
    let entities = Entities::from_entities([user, route], None).map_err(|_| BuildError)?;
    Ok((request, entities))
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

fn context_pairs(facts: &CallFacts<'_>) -> Vec<(String, RestrictedExpression)> {
    let authentication = &facts.session.authentication;
    let (hour, weekday) = hour_and_weekday(facts.now);
    let mut pairs = vec![
        (
            "ip".to_owned(),
            RestrictedExpression::new_ip(facts.client_ip.to_string()),
        ),
        (
            "now".to_owned(),
            RestrictedExpression::new_long(facts.now.div_euclid(1000)),
        ),
        ("hour".to_owned(), RestrictedExpression::new_long(hour)),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(weekday),
        ),
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
            RestrictedExpression::new_string(facts.session.provider.clone()),
        ),
    ];
    if let Some(acr) = &authentication.acr {
        pairs.push((
            "acr".to_owned(),
            RestrictedExpression::new_string(acr.clone()),
        ));
    }
    if let Some(age) = authentication.age_secs(facts.now) {
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
}
