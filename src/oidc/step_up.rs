//! Step-up at login: the `acr_values` and `max_age` a login asks the provider for
//! (`/auth/login?acr_values=…&max_age=…`), and the callback's check that the ID token proves
//! them (OIDC Core 3.1.2.1 and 3.1.3.7), before any session is created or replaced.

use std::time::Duration;

use crate::clock::UnixMillis;
use crate::config::{is_auth_value, ProviderSettings};
use crate::session::{Authentication, LoginState};

/// What a login asks of the user's authentication, validated against the provider's
/// `allowed_acr_values`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginRequirements {
    /// Any one of these (space separated in the request), in the order asked.
    pub acr_values: Vec<String>,
    /// The authentication at most this many seconds old.
    pub max_age: Option<u64>,
}

/// Why a login's step-up parameters were refused (400, before the provider is contacted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginParameterError {
    #[error("acr_values must be one or more values separated by single spaces")]
    MalformedAcrValues,
    #[error("acr_values asks for `{0}`, which this identity provider is not configured to allow")]
    AcrNotAllowed(String),
    #[error("max_age must be a whole number of seconds")]
    MalformedMaxAge,
}

/// Why a completed login does not count: it proved less than it asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Shortfall {
    #[error("the ID token's acr is not one of those requested")]
    Acr,
    #[error("the ID token has no auth_time, although max_age was requested")]
    NoAuthTime,
    #[error("the ID token's auth_time is older than the requested max_age")]
    TooOld,
}

impl LoginRequirements {
    pub fn parse(
        acr_values: Option<&str>,
        max_age: Option<&str>,
        provider: &ProviderSettings,
    ) -> Result<Self, LoginParameterError> {
        let acr_values = match acr_values {
            None => Vec::new(),
            Some(text) => {
                let values: Vec<String> = text.split(' ').map(str::to_owned).collect();
                if values.iter().any(|v| !is_auth_value(v)) {
                    return Err(LoginParameterError::MalformedAcrValues);
                }
                if let Some(refused) = values
                    .iter()
                    .find(|v| !provider.allowed_acr_values.contains(v))
                {
                    return Err(LoginParameterError::AcrNotAllowed(refused.clone()));
                }
                values
            }
        };
        let max_age = match max_age {
            None => None,
            Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => Some(
                text.parse()
                    .map_err(|_| LoginParameterError::MalformedMaxAge)?,
            ),
            Some(_) => return Err(LoginParameterError::MalformedMaxAge),
        };
        Ok(Self {
            acr_values,
            max_age,
        })
    }

    /// The authorization request's parameters (pushed ones too, with PAR).
    pub fn authorize_params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if !self.acr_values.is_empty() {
            params.push(("acr_values", self.acr_values.join(" ")));
        }
        if let Some(max_age) = self.max_age {
            params.push(("max_age", max_age.to_string()));
        }
        params
    }

    /// Whether this login sets `key` itself (a provider's `extra_authorize_params` then
    /// gives way).
    pub fn sets(&self, key: &str) -> bool {
        (key == "acr_values" && !self.acr_values.is_empty())
            || (key == "max_age" && self.max_age.is_some())
    }
}

/// OIDC Core 3.1.3.7: the `acr` must be one of those requested, and with `max_age` the
/// `auth_time` must be there and recent enough (the provider's clock skew allowed).
pub fn check_login(
    login: &LoginState,
    proved: &Authentication,
    now: UnixMillis,
    skew: Duration,
) -> Result<(), Shortfall> {
    if !login.acr_values.is_empty()
        && !proved
            .acr
            .as_ref()
            .is_some_and(|acr| login.acr_values.contains(acr))
    {
        return Err(Shortfall::Acr);
    }
    if let Some(max_age) = login.max_age {
        let age = proved.age_secs(now).ok_or(Shortfall::NoAuthTime)?;
        if age > i64::try_from(max_age.saturating_add(skew.as_secs())).unwrap_or(i64::MAX) {
            return Err(Shortfall::TooOld);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn login(acr_values: &[&str], max_age: Option<u64>) -> LoginState {
        LoginState {
            provider: "main".into(),
            pkce_verifier: SecretString::from("v"),
            nonce: SecretString::from("n"),
            return_to: "/".into(),
            prompt: None,
            created_at: 0,
            acr_values: acr_values.iter().map(|s| s.to_string()).collect(),
            max_age,
        }
    }

    fn proved(acr: Option<&str>, auth_time: Option<i64>) -> Authentication {
        Authentication {
            acr: acr.map(str::to_owned),
            amr: vec![],
            auth_time,
        }
    }

    #[test]
    fn the_callback_holds_the_id_token_to_what_the_login_asked() {
        let skew = Duration::from_secs(60);
        let now = 1_000_000_000;
        let mfa = login(&["mfa", "hwk"], None);
        assert_eq!(
            check_login(&mfa, &proved(Some("hwk"), None), now, skew),
            Ok(())
        );
        assert_eq!(
            check_login(&mfa, &proved(Some("pwd"), None), now, skew),
            Err(Shortfall::Acr)
        );
        assert_eq!(
            check_login(&mfa, &proved(None, None), now, skew),
            Err(Shortfall::Acr)
        );
        // Nothing asked, nothing checked.
        assert_eq!(
            check_login(&login(&[], None), &proved(None, None), now, skew),
            Ok(())
        );

        let recent = login(&[], Some(300));
        let secs = now / 1000;
        assert_eq!(
            check_login(&recent, &proved(None, Some(secs - 360)), now, skew),
            Ok(())
        );
        assert_eq!(
            check_login(&recent, &proved(None, Some(secs - 361)), now, skew),
            Err(Shortfall::TooOld)
        );
        assert_eq!(
            check_login(&recent, &proved(None, None), now, skew),
            Err(Shortfall::NoAuthTime)
        );
    }
}
