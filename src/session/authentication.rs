//! How the user authenticated, as the login's ID token proved it (`acr`, `amr`,
//! `auth_time`): kept in the sealed session so that a route can require a stronger or a more
//! recent authentication (step-up). Protocol claims: `/auth/user` does not show them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authentication {
    /// The authentication context class (`acr`), when the ID token named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The authentication methods (`amr`), when the ID token listed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// When the user authenticated (`auth_time`), in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl Authentication {
    /// From a verified ID token's claims; members of the wrong type count as absent.
    pub fn from_id_token(claims: &Map<String, Value>) -> Self {
        Self {
            acr: claims
                .get("acr")
                .and_then(Value::as_str)
                .filter(|acr| !acr.is_empty())
                .map(str::to_owned),
            amr: match claims.get("amr") {
                Some(Value::Array(methods)) => methods
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            },
            auth_time: claims.get("auth_time").and_then(|time| {
                time.as_i64()
                    .or_else(|| time.as_f64().filter(|t| t.is_finite()).map(|t| t as i64))
            }),
        }
    }

    /// How old the authentication is at `now_millis`, in whole seconds; `None` when the
    /// ID token did not say when it happened.
    pub fn age_secs(&self, now_millis: i64) -> Option<i64> {
        self.auth_time
            .map(|auth_time| now_millis.div_euclid(1000) - auth_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_id_token_proved_and_ignores_the_wrong_types() {
        let claims = serde_json::json!({
            "acr": "urn:mfa", "amr": ["pwd", 7, "otp"], "auth_time": 1_700_000_000
        });
        let auth = Authentication::from_id_token(claims.as_object().expect("object"));
        assert_eq!(auth.acr.as_deref(), Some("urn:mfa"));
        assert_eq!(auth.amr, vec!["pwd", "otp"]);
        assert_eq!(auth.auth_time, Some(1_700_000_000));
        assert_eq!(auth.age_secs(1_700_000_090_500), Some(90));

        let claims = serde_json::json!({ "acr": 1, "amr": "pwd", "auth_time": "now" });
        let auth = Authentication::from_id_token(claims.as_object().expect("object"));
        assert_eq!(auth, Authentication::default());
        assert_eq!(auth.age_secs(0), None);
        // A session stored before this record existed reads as "nothing proved".
        let old: Authentication = serde_json::from_str("{}").expect("empty");
        assert_eq!(old, Authentication::default());
    }
}
