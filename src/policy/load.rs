//! Reading a policy set: the schema, every policy file, each policy named, the whole set
//! validated (strictly) against the schema, and what the `policy = true` routes will ask of
//! it. Every problem is reported, each with its file and line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Context, Entities, Entity, PolicyId, PolicySet, ResourceConstraint,
    RestrictedExpression, Schema, SchemaFragment, ValidationMode, Validator,
};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

use super::request::{entity_uid, ACTION, ROUTE, USER};
use super::subsets::CallPolicies;
use crate::config::{PolicySettings, RouteSettings};

/// Every problem found in a policy set, each naming its file (and line, where one applies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy set has {} problem(s):\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct PolicyProblems(pub Vec<String>);

/// A set read and validated: immutable; a reload makes a new one.
pub struct LoadedSet {
    pub policies: PolicySet,
    pub schema: Schema,
    /// The first 12 hex digits of the SHA-256 of the schema and files as read: which set is
    /// live (a metric label, a log field).
    pub digest: String,
    /// Each policy's id and where it is (`file:line`).
    pub sources: HashMap<String, String>,
    /// By route name and method: the policies whose scope can match such a call (the others
    /// name another route or action with `==`, so they can neither apply nor fail). Cedar
    /// builds and evaluates each policy's condition per call; the ones left out cost nothing.
    pub by_call: HashMap<String, HashMap<String, CallPolicies>>,
    /// The whole set, for a call of a route it was not loaded for (added by a live reload).
    pub whole: CallPolicies,
    /// The attributes the schema declares for `User` (`None`: it does not say in a form
    /// read here, so every claim becomes one).
    pub user_attributes: Option<HashSet<String>>,
}

/// The methods a route without a method list may see, for the check of what the schema
/// declares.
const ALL_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// `file:line: message` for each labelled span of a diagnostic (or `file: message`).
fn located(file: &Path, text: &str, error: &dyn Diagnostic, problems: &mut Vec<String>) {
    let message = error.to_string();
    let help = error
        .help()
        .map(|help| format!(" ({help})"))
        .unwrap_or_default();
    let line = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| line_of(text, label.offset()));
    match line {
        Some(line) => problems.push(format!("{}:{line}: {message}{help}", file.display())),
        None => problems.push(format!("{}: {message}{help}", file.display())),
    }
}

fn read(path: &Path, what: &str, problems: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            problems.push(format!("{what} {}: cannot read: {e}", path.display()));
            None
        }
    }
}

/// Reads and validates the set `settings` names, and checks it against `routes`' needs.
pub fn load_set(
    settings: &PolicySettings,
    routes: &[RouteSettings],
) -> Result<LoadedSet, PolicyProblems> {
    let mut problems = Vec::new();
    let mut hasher = Sha256::new();
    let schema_text = read(&settings.schema, "schema", &mut problems);
    let schema = schema_text.as_deref().and_then(|text| {
        hasher.update(text.as_bytes());
        match Schema::from_cedarschema_str(text) {
            Ok((schema, _warnings)) => Some(schema),
            Err(error) => {
                located(&settings.schema, text, &error, &mut problems);
                None
            }
        }
    });

    let mut policies = PolicySet::new();
    let mut sources: HashMap<String, String> = HashMap::new();
    // Each policy's file and its text, for the lines of validation errors.
    let mut texts: BTreeMap<String, (PathBuf, std::sync::Arc<str>)> = BTreeMap::new();
    for file in &settings.files {
        let Some(text) = read(file, "policy file", &mut problems) else {
            continue;
        };
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
        let shared: std::sync::Arc<str> = std::sync::Arc::from(text.as_str());
        let parsed = match PolicySet::from_str(&text) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for error in errors.iter() {
                    located(file, &text, error, &mut problems);
                }
                continue;
            }
        };
        // Parsed in file order as policy0, policy1, …
        let mut in_file: Vec<_> = parsed.policies().collect();
        in_file.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(usize::MAX)
        });
        let mut cursor = 0;
        for policy in in_file {
            // Its own text, found after the policies before it: where it starts.
            let source = policy.to_string();
            let source = source.trim();
            let line = match text[cursor..].find(source) {
                Some(at) => {
                    let start = cursor + at;
                    cursor = start + source.len();
                    line_of(&text, start)
                }
                None => line_of(&text, cursor),
            };
            let place = format!("{}:{line}", file.display());
            let id = policy
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| place.clone());
            if let Some(other) = sources.get(&id) {
                problems.push(format!("{place}: policy id `{id}` is also used at {other}"));
                continue;
            }
            if let Err(e) = policies.add(policy.new_id(PolicyId::new(&id))) {
                problems.push(format!("{place}: {e}"));
                continue;
            }
            sources.insert(id.clone(), place);
            texts.insert(id, (file.clone(), shared.clone()));
        }
    }

    if let Some(schema) = &schema {
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        for error in validation.validation_errors() {
            let id = error.policy_id().to_string();
            match texts.get(&id) {
                Some((file, text)) => located(file, text, error, &mut problems),
                None => problems.push(format!("policy `{id}`: {error}")),
            }
        }
        check_routes(schema, &settings.schema, routes, &mut problems);
    }

    let digest: String = hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    match schema {
        Some(schema) if problems.is_empty() => Ok(LoadedSet {
            by_call: by_call(&policies, routes),
            whole: CallPolicies::new(policies.clone()),
            user_attributes: schema_text.as_deref().and_then(declared_user_attributes),
            policies,
            schema,
            digest,
            sources,
        }),
        _ => Err(PolicyProblems(problems)),
    }
}

/// The subsets of `policies` each policy route's calls are decided by, per method.
fn by_call(
    policies: &PolicySet,
    routes: &[RouteSettings],
) -> HashMap<String, HashMap<String, CallPolicies>> {
    let mut by_route = HashMap::new();
    for route in routes.iter().filter(|route| route.policy) {
        let Some(resource) = entity_uid(ROUTE, &route.name) else {
            continue;
        };
        let methods: Vec<&str> = if route.methods.is_empty() {
            ALL_METHODS.to_vec()
        } else {
            route.methods.iter().map(String::as_str).collect()
        };
        let mut by_method = HashMap::new();
        for method in methods {
            let Some(action) = entity_uid(ACTION, method) else {
                continue;
            };
            let mut subset = PolicySet::new();
            for policy in policies.policies() {
                let resource_fits = match policy.resource_constraint() {
                    ResourceConstraint::Eq(uid) => uid == resource,
                    _ => true,
                };
                let action_fits = match policy.action_constraint() {
                    ActionConstraint::Eq(uid) => uid == action,
                    _ => true,
                };
                if resource_fits && action_fits && subset.add(policy.clone()).is_err() {
                    // Cannot happen (the ids are unique in `policies`); the whole set then.
                    subset = policies.clone();
                    break;
                }
            }
            by_method.insert(method.to_owned(), CallPolicies::new(subset));
        }
        by_route.insert(route.name.clone(), by_method);
    }
    by_route
}

/// The attributes the schema declares for `User`, when it declares them as a record in
/// place; `None` for a shape this does not read (a common type), where every claim stays.
fn declared_user_attributes(schema_text: &str) -> Option<HashSet<String>> {
    let (fragment, _warnings) = SchemaFragment::from_cedarschema_str(schema_text).ok()?;
    let json = fragment.to_json_value().ok()?;
    let user = json.get("")?.get("entityTypes")?.get(USER)?;
    let Some(shape) = user.get("shape") else {
        return Some(HashSet::new());
    };
    if shape.get("type")?.as_str()? != "Record" {
        return None;
    }
    Some(
        shape
            .get("attributes")?
            .as_object()?
            .keys()
            .cloned()
            .collect(),
    )
}

/// What each `policy = true` route will ask: its resource (with its template parameters as
/// attributes) and one request per method it allows, with the full context, must be what
/// the schema declares.
fn check_routes(
    schema: &Schema,
    schema_file: &Path,
    routes: &[RouteSettings],
    problems: &mut Vec<String>,
) {
    let schema_file = schema_file.display();
    for route in routes.iter().filter(|route| route.policy) {
        let at = format!("route `{}` ({})", route.name, route.prefix);
        let Some(resource) = entity_uid(ROUTE, &route.name) else {
            problems.push(format!("{at}: the name is not a Cedar entity id"));
            continue;
        };
        let mut parameters: Vec<&str> = route
            .templates
            .iter()
            .flat_map(|template| template.parameters())
            .collect();
        parameters.sort_unstable();
        parameters.dedup();
        let attributes = parameters.iter().map(|name| {
            (
                (*name).to_owned(),
                RestrictedExpression::new_string("x".into()),
            )
        });
        match Entity::new(resource.clone(), attributes.collect(), Default::default()) {
            Ok(entity) => {
                if let Err(e) = Entities::from_entities([entity], Some(schema)) {
                    problems.push(format!(
                        "{at}: its path parameters {parameters:?} as attributes of {ROUTE}: {e} \
                         (declare them in {schema_file}, as optional String attributes)"
                    ));
                }
            }
            Err(e) => problems.push(format!("{at}: {e}")),
        }
        let methods: Vec<&str> = if route.methods.is_empty() {
            ALL_METHODS.to_vec()
        } else {
            route.methods.iter().map(String::as_str).collect()
        };
        let Some(principal) = entity_uid(USER, "check-config") else {
            continue;
        };
        for method in methods {
            let Some(action) = entity_uid(ACTION, method) else {
                continue;
            };
            let Some(context) = sample_context() else {
                continue;
            };
            if let Err(e) = cedar_policy::Request::new(
                principal.clone(),
                action,
                resource.clone(),
                context,
                Some(schema),
            ) {
                problems.push(format!(
                    "{at}: a {method} call cannot be asked of {schema_file}: {e}"
                ));
            }
        }
    }
}

/// A context with every attribute gatehouse may send, for the schema check.
fn sample_context() -> Option<Context> {
    Context::from_pairs(super::request::sample_context_pairs()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "entity User; entity Route; action \"GET\" appliesTo { principal: [User], resource: [Route] };";

    fn settings(files: &[(&str, &str)]) -> PolicySettings {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-policy-load-{}-{}",
            std::process::id(),
            files.len()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("schema.cedarschema"), SCHEMA).expect("schema");
        PolicySettings {
            files: files
                .iter()
                .map(|(name, text)| {
                    std::fs::write(dir.join(name), text).expect("file");
                    dir.join(name)
                })
                .collect(),
            schema: dir.join("schema.cedarschema"),
            roles_claim: "roles".into(),
            poll_interval: std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn policies_are_named_by_their_id_annotation_or_their_file_and_line() {
        let text =
            "// two policies\npermit (principal, action == Action::\"GET\", resource);\n\n\n\
                    @id(\"named\")\npermit (principal, action, resource);\n\
                    permit (principal, action, resource);\n";
        let settings = settings(&[("a.cedar", text)]);
        let set = load_set(&settings, &[]).expect("valid");
        let file = settings.files[0].display().to_string();
        let mut ids: Vec<&String> = set.sources.keys().collect();
        ids.sort();
        let mut expected = [format!("{file}:2"), format!("{file}:7"), "named".to_owned()];
        expected.sort();
        assert_eq!(ids, expected.iter().collect::<Vec<_>>());
        assert_eq!(set.sources["named"], format!("{file}:5"));
        assert_eq!(set.digest.len(), 12);
    }

    #[test]
    fn the_user_attributes_are_read_from_the_schema_where_it_declares_them_in_place() {
        let declared = declared_user_attributes(
            "entity Role; entity User in [Role] { sub: String, email?: String };",
        );
        let expected: HashSet<String> = ["sub", "email"].map(str::to_owned).into();
        assert_eq!(declared, Some(expected));
        assert_eq!(
            declared_user_attributes("entity User;"),
            Some(HashSet::new())
        );
        assert_eq!(
            declared_user_attributes("type Person = { sub: String }; entity User = Person;"),
            None,
            "a common type: every claim stays"
        );
    }
}
