//! Step-up per route (RFC 9470): whether the session's authentication meets a route's
//! `[routes.require] acr, amr, max_auth_age_secs`, and an upstream's own
//! `WWW-Authenticate: Bearer error="insufficient_user_authentication"` challenge, read
//! robustly from any number of challenges and header lines.

use crate::clock::UnixMillis;
use crate::config::{is_auth_value, StepUpRequirement};
use crate::session::Authentication;

/// The RFC 9470 error code.
pub const INSUFFICIENT_USER_AUTHENTICATION: &str = "insufficient_user_authentication";

/// What a call needs before it may go on: a new login asking for these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpChallenge {
    /// Any one of these `acr` values (empty: whatever the provider does by default).
    pub acr_values: Vec<String>,
    /// The authentication at most this many seconds old.
    pub max_age: Option<u64>,
    /// The strength is fine (or not asked for) and only a fresh authentication helps:
    /// the login goes with `prompt=login`, so that the provider does not answer from the
    /// session it already has.
    pub reauthenticate: bool,
    /// What fell short, for the security event (never shown to the browser).
    pub reason: &'static str,
}

impl StepUpChallenge {
    /// `WWW-Authenticate` as RFC 9470 writes it (values were checked to need no escaping).
    pub fn www_authenticate(&self) -> String {
        let mut header = format!("Bearer error=\"{INSUFFICIENT_USER_AUTHENTICATION}\"");
        header.push_str(
            ", error_description=\"A stronger or more recent authentication is required\"",
        );
        if !self.acr_values.is_empty() {
            header.push_str(&format!(", acr_values=\"{}\"", self.acr_values.join(" ")));
        }
        if let Some(max_age) = self.max_age {
            header.push_str(&format!(", max_age={max_age}"));
        }
        header
    }
}

/// Whether the session's authentication meets the route's step-up requirements.
pub fn check(
    required: &StepUpRequirement,
    proved: &Authentication,
    now: UnixMillis,
) -> Result<(), StepUpChallenge> {
    let acr_short = !required.acr.is_empty()
        && !proved
            .acr
            .as_ref()
            .is_some_and(|acr| required.acr.contains(acr));
    let amr_short = !required
        .amr
        .iter()
        .all(|method| proved.amr.contains(method));
    let age_short = required.max_auth_age_secs.is_some_and(|max| {
        proved
            .age_secs(now)
            .is_none_or(|age| age > i64::try_from(max).unwrap_or(i64::MAX))
    });
    let reason = match (acr_short, amr_short, age_short) {
        (false, false, false) => return Ok(()),
        (true, _, _) => "acr not among those the route requires",
        (false, true, _) => "amr lacks a method the route requires",
        (false, false, true) => "authentication older than the route allows",
    };
    Err(StepUpChallenge {
        acr_values: required.acr.clone(),
        max_age: required.max_auth_age_secs,
        reauthenticate: !acr_short,
        reason,
    })
}

/// An upstream's RFC 9470 challenge among its `WWW-Authenticate` headers: a `Bearer`
/// challenge with `error="insufficient_user_authentication"`. Its `acr_values` and
/// `max_age` are kept when well formed (a malformed one is left out, not guessed at).
pub fn upstream_challenge<'h>(
    www_authenticate: impl Iterator<Item = &'h [u8]>,
) -> Option<StepUpChallenge> {
    for value in www_authenticate {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for (scheme, params) in parse_challenges(text) {
            let param = |name: &str| {
                params
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value.as_str())
            };
            if !scheme.eq_ignore_ascii_case("bearer")
                || param("error") != Some(INSUFFICIENT_USER_AUTHENTICATION)
            {
                continue;
            }
            let acr_values: Vec<String> = param("acr_values")
                .map(|text| text.split(' ').map(str::to_owned).collect())
                .filter(|values: &Vec<String>| values.iter().all(|v| is_auth_value(v)))
                .unwrap_or_default();
            let max_age = param("max_age")
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse().ok());
            return Some(StepUpChallenge {
                reauthenticate: acr_values.is_empty(),
                acr_values,
                max_age,
                reason: "the upstream asked for it",
            });
        }
    }
    None
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// RFC 9110 §11.6.1: `scheme [ token68 / #auth-param ]`, challenges separated by commas.
/// Stops at the first thing it cannot read, keeping what it read so far.
fn parse_challenges(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut cursor = Cursor { rest: text };
    let mut challenges = Vec::new();
    loop {
        cursor.skip(|c| c == ',' || c == ' ' || c == '\t');
        let Some(scheme) = cursor.token() else { break };
        let mut params = Vec::new();
        // A token68 right after the scheme (`Basic abc==`), when the challenge ends there.
        let before = cursor.rest;
        cursor.skip(|c| c == ' ' || c == '\t');
        let token68 = cursor.token68().is_some() && {
            cursor.skip(|c| c == ' ' || c == '\t');
            cursor.rest.is_empty() || cursor.rest.starts_with(',')
        };
        if !token68 {
            cursor.rest = before;
            loop {
                let save = cursor.rest;
                cursor.skip(|c| c == ',' || c == ' ' || c == '\t');
                let Some(name) = cursor.token() else {
                    cursor.rest = save;
                    break;
                };
                cursor.skip(|c| c == ' ' || c == '\t');
                if !cursor.eat('=') {
                    // The next challenge's scheme.
                    cursor.rest = save;
                    break;
                }
                cursor.skip(|c| c == ' ' || c == '\t');
                let value = if cursor.rest.starts_with('"') {
                    match cursor.quoted() {
                        Some(value) => value,
                        None => return challenges,
                    }
                } else {
                    match cursor.token() {
                        Some(value) => value.to_owned(),
                        None => return challenges,
                    }
                };
                params.push((name.to_owned(), value));
            }
        }
        challenges.push((scheme.to_owned(), params));
        let save = cursor.rest;
        cursor.skip(|c| c == ' ' || c == '\t');
        if !(cursor.rest.is_empty() || cursor.rest.starts_with(',')) && cursor.rest == save {
            break;
        }
    }
    challenges
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip(&mut self, what: impl Fn(char) -> bool) {
        self.rest = self.rest.trim_start_matches(what);
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let end = self.rest.find(|c| !is_tchar(c)).unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(token)
    }

    fn token68(&mut self) -> Option<&'a str> {
        let body = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/".contains(c)))
            .unwrap_or(self.rest.len());
        if body == 0 {
            return None;
        }
        let padding = self.rest[body..].len() - self.rest[body..].trim_start_matches('=').len();
        let (token, rest) = self.rest.split_at(body + padding);
        self.rest = rest;
        Some(token)
    }

    fn quoted(&mut self) -> Option<String> {
        let mut chars = self.rest.char_indices().skip(1);
        let mut value = String::new();
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[index + 1..];
                    return Some(value);
                }
                '\\' => value.push(chars.next()?.1),
                c => value.push(c),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(headers: &[&str]) -> Option<StepUpChallenge> {
        upstream_challenge(headers.iter().map(|h| h.as_bytes()))
    }

    #[test]
    fn reads_the_rfc_9470_challenge_wherever_it_is() {
        let found = challenge(&[
            r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="myACR""#,
        ])
        .expect("RFC 9470's example");
        assert_eq!(found.acr_values, vec!["myACR"]);
        assert_eq!(found.max_age, None);
        assert!(!found.reauthenticate);

        let found = challenge(&[
            "Basic realm=\"x\"",
            "DPoP algs=\"ES256 PS256\", Bearer realm=\"api\",error=insufficient_user_authentication , MAX_AGE = 5",
        ])
        .expect("second header, second challenge, token values, odd spacing and case");
        assert_eq!(found.max_age, Some(5));
        assert!(found.acr_values.is_empty() && found.reauthenticate);

        let found = challenge(&[
            r#"Negotiate abc+/==, bearer error="insufficient_user_authentication", acr_values="a b\"c", max_age="30""#,
        ])
        .expect("after a token68 challenge; a bad acr value drops the list");
        assert!(found.acr_values.is_empty());
        assert_eq!(found.max_age, Some(30));

        for other in [
            r#"Bearer error="invalid_token""#,
            r#"Bearer realm="insufficient_user_authentication""#,
            r#"Basic error="insufficient_user_authentication""#,
            r#"Bearer error="insufficient_user_authentication"#,
            "",
            "Bearer",
        ] {
            assert_eq!(challenge(&[other]), None, "{other}");
        }
    }

    #[test]
    fn a_route_asks_for_what_the_session_lacks() {
        let required = StepUpRequirement {
            acr: vec!["mfa".into()],
            amr: vec!["otp".into()],
            max_auth_age_secs: Some(300),
        };
        let now = 10_000_000;
        let strong = Authentication {
            acr: Some("mfa".into()),
            amr: vec!["pwd".into(), "otp".into()],
            auth_time: Some(now / 1000 - 300),
        };
        assert_eq!(check(&required, &strong, now), Ok(()));

        let weak = Authentication {
            acr: Some("pwd".into()),
            amr: vec!["pwd".into()],
            ..strong.clone()
        };
        let asked = check(&required, &weak, now).expect_err("acr");
        assert_eq!(asked.acr_values, vec!["mfa"]);
        assert_eq!(asked.max_age, Some(300));
        assert!(!asked.reauthenticate);
        assert_eq!(
            asked.www_authenticate(),
            "Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger \
             or more recent authentication is required\", acr_values=\"mfa\", max_age=300"
        );

        let old = Authentication {
            auth_time: Some(now / 1000 - 301),
            ..strong.clone()
        };
        let asked = check(&required, &old, now).expect_err("age");
        assert!(asked.reauthenticate);
        let unknown_age = Authentication {
            auth_time: None,
            ..strong
        };
        assert!(check(&required, &unknown_age, now).is_err());
        assert_eq!(
            check(
                &StepUpRequirement::default(),
                &Authentication::default(),
                now
            ),
            Ok(())
        );
    }
}
