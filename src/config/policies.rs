//! `[policies]`: the Cedar policy files and schema that decide the calls of `policy = true`
//! routes (src/policy/ loads and evaluates them).

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawPolicies {
    pub(super) files: Option<Vec<PathBuf>>,
    pub(super) schema: Option<PathBuf>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) roles_claim: Option<String>,
    pub(super) poll_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// Cedar policy files, read in this order.
    pub files: Vec<PathBuf>,
    /// The Cedar schema (human-readable `.cedarschema` syntax) every policy is validated
    /// against.
    pub schema: PathBuf,
    /// The session claim whose values (a string or a list of strings) become the user's
    /// parents, `Role::"<value>"`.
    pub roles_claim: String,
    /// How often the files are looked at for a change (SIGHUP reloads at once).
    pub poll_interval: Duration,
}

pub(super) fn validate_policies(
    raw: Option<RawPolicies>,
    routes: &[RouteSettings],
    problems: &mut Vec<String>,
) -> Option<PolicySettings> {
    let policy_routes = routes.iter().filter(|route| route.policy).count();
    let Some(raw) = raw else {
        if policy_routes > 0 {
            problems.push(
                "routes with `policy = true` need a [policies] table (files and schema)".into(),
            );
        }
        return None;
    };
    let start = problems.len();
    let files = raw.files.unwrap_or_default();
    if files.is_empty() {
        problems.push("policies.files: name at least one Cedar policy file".into());
    }
    for file in &files {
        if !file.is_file() {
            problems.push(format!(
                "policies.files: {} is not a readable file",
                file.display()
            ));
        }
    }
    let schema = raw.schema.unwrap_or_default();
    if schema.as_os_str().is_empty() {
        problems.push("policies.schema is required (a Cedar schema file)".into());
    } else if !schema.is_file() {
        problems.push(format!(
            "policies.schema: {} is not a readable file",
            schema.display()
        ));
    }
    let roles_claim = raw.roles_claim.unwrap_or_else(|| "roles".into());
    if roles_claim.is_empty() {
        problems.push("policies.roles_claim must not be empty".into());
    }
    let poll_interval = Duration::from_secs(raw.poll_secs.unwrap_or(5));
    if poll_interval.is_zero() {
        problems.push("policies.poll_secs must be greater than zero".into());
    }
    if problems.len() > start {
        return None;
    }
    Some(PolicySettings {
        files,
        schema,
        roles_claim,
        poll_interval,
    })
}
