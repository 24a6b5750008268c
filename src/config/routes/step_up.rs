//! `[routes.require] acr, amr, max_auth_age_secs`: what a route needs of the user's
//! authentication itself (step-up), and the values gatehouse can carry for it.

use super::{RawProvider, RawRequire};

/// What a route needs of the user's authentication itself (`[routes.require] acr, amr,
/// max_auth_age_secs`); a session that falls short is asked to step up (401).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUpRequirement {
    /// Any one of these `acr` values (empty: any).
    pub acr: Vec<String>,
    /// All of these `amr` values (empty: any).
    pub amr: Vec<String>,
    /// The authentication at most this many seconds old.
    pub max_auth_age_secs: Option<u64>,
}

impl StepUpRequirement {
    pub fn is_empty(&self) -> bool {
        self.acr.is_empty() && self.amr.is_empty() && self.max_auth_age_secs.is_none()
    }
}

/// An `acr` or `amr` value gatehouse can carry in a query and in a quoted header parameter:
/// visible ASCII without `"` and `\`, at most 256 bytes.
pub fn is_auth_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// `acr`, `amr`, `max_auth_age_secs`: well-formed values, a positive age, and `acr` values
/// the route's provider accepts in a login (`allowed_acr_values`), else the step-up login
/// the route asks for would be refused.
pub(super) fn validate_step_up(
    at: &str,
    raw: &RawRequire,
    provider: Option<&RawProvider>,
    provider_name: &str,
    problems: &mut Vec<String>,
) -> StepUpRequirement {
    for (key, values) in [("acr", &raw.acr), ("amr", &raw.amr)] {
        if let Some(bad) = values.iter().find(|v| !is_auth_value(v)) {
            problems.push(format!(
                "{at}.{key}: `{bad}` is not a value gatehouse can send (visible ASCII, no spaces or quotes)"
            ));
        }
    }
    if raw.max_auth_age_secs == Some(0) {
        problems.push(format!("{at}.max_auth_age_secs must be greater than zero"));
    }
    if let Some(provider) = provider {
        let allowed = provider.allowed_acr_values.as_deref().unwrap_or_default();
        for acr in raw.acr.iter().filter(|acr| !allowed.contains(acr)) {
            problems.push(format!(
                "{at}.acr: `{acr}` is not in providers.{provider_name}.allowed_acr_values (the step-up login would be refused)"
            ));
        }
    }
    StepUpRequirement {
        acr: raw.acr.clone(),
        amr: raw.amr.clone(),
        max_auth_age_secs: raw.max_auth_age_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::load;

    fn with(provider: &str, route: &str) -> Result<super::super::Settings, Vec<String>> {
        let toml = format!(
            "[server]\npublic_url = \"https://app.example.com\"\n[providers.main]\n\
             issuer = \"https://id.example.com\"\nclient_id = \"spa\"\n{provider}\n\
             [[routes]]\nprefix = \"/api/pay\"\nupstream = \"https://pay.internal\"\n{route}\n"
        );
        let env = vec![(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".to_owned(),
            "s".to_owned(),
        )];
        load(Some(&toml), env).map_err(|errors| errors.0)
    }

    #[test]
    fn step_up_requirements_are_checked_and_all_reported() {
        let settings = with(
            "allowed_acr_values = [\"urn:mfa\", \"urn:pwd\"]",
            "[routes.require]\nacr = [\"urn:mfa\"]\namr = [\"otp\"]\nmax_auth_age_secs = 300",
        )
        .expect("valid");
        let step_up = &settings.routes[0].step_up;
        assert_eq!(step_up.acr, vec!["urn:mfa"]);
        assert_eq!(step_up.amr, vec!["otp"]);
        assert_eq!(step_up.max_auth_age_secs, Some(300));
        assert_eq!(
            settings.providers["main"].allowed_acr_values,
            vec!["urn:mfa", "urn:pwd"]
        );

        let problems = with(
            "allowed_acr_values = [\"urn:pwd\", \"two words\"]",
            "token = \"optional\"\n[routes.require]\nacr = [\"urn:mfa\"]\namr = [\"o\\\"tp\"]\n\
             max_auth_age_secs = 0",
        )
        .expect_err("five problems");
        for expected in [
            "providers.main.allowed_acr_values: `two words` is not an acr value",
            "routes[0].require.amr: `o\"tp` is not a value gatehouse can send",
            "routes[0].require.max_auth_age_secs must be greater than zero",
            "routes[0].require.acr: `urn:mfa` is not in providers.main.allowed_acr_values",
            "routes[0].require: scope, claim and step-up requirements need token = \"user\"",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected}: {problems:?}"
            );
        }
    }
}
