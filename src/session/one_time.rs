//! One-time records in the store, each sealed under a secret that only the browser holds and
//! taken (read and deleted in one step) when used: logins in flight, bound to the browser by
//! the login cookie, and logout continuations, carried by a URL.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use super::crypto::{b64, hash_id, open, random_bytes, seal, unb64_32, RandomBytes};
use super::{secret_serde, SessionError, SessionManager, StoreError};
use crate::clock::UnixMillis;

const LOGIN_STATE_PURPOSE: &str = "gatehouse/login-state/v1";
const LOGOUT_CONTINUATION_PURPOSE: &str = "gatehouse/logout-continuation/v1";

/// How many logins one browser may have in flight (tabs that each started one); the
/// oldest binding is dropped for a newer one.
pub const MAX_LOGINS_IN_FLIGHT: usize = 8;

/// Server-side state of a login in flight, sealed under the browser-binding secret that only
/// the login cookie holds.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginState {
    pub provider: String,
    #[serde(with = "secret_serde")]
    pub pkce_verifier: SecretString,
    #[serde(with = "secret_serde")]
    pub nonce: SecretString,
    pub return_to: String,
    pub prompt: Option<String>,
    pub created_at: UnixMillis,
    /// Step-up: the `acr_values` this login asked for; the ID token's `acr` must be one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// Step-up: the `max_age` this login asked for; the ID token's `auth_time` must meet it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

impl fmt::Debug for LoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginState")
            .field("provider", &self.provider)
            .field("return_to", &self.return_to)
            .finish_non_exhaustive()
    }
}

/// What the store holds for a login: the local path it came from in the clear (so that a
/// callback this browser can no longer open still lands in the app), then the sealed
/// state: `<length of return_to, 2 bytes big-endian><return_to><sealed>`.
fn stored_login(return_to: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    let length = u16::try_from(return_to.len()).ok()?;
    let mut stored = Vec::with_capacity(2 + return_to.len() + sealed.len());
    stored.extend_from_slice(&length.to_be_bytes());
    stored.extend_from_slice(return_to.as_bytes());
    stored.extend_from_slice(sealed);
    Some(stored)
}

/// The return path and the sealed state of a stored login.
fn split_stored_login(stored: &[u8]) -> Option<(String, &[u8])> {
    let (length, rest) = stored.split_first_chunk::<2>()?;
    let length = usize::from(u16::from_be_bytes(*length));
    let return_to = std::str::from_utf8(rest.get(..length)?).ok()?;
    Some((return_to.to_owned(), &rest[length..]))
}

/// Binds a login state to one browser: one value of the short-lived login cookie.
pub struct LoginBinding(SecretBox<RandomBytes>);

impl LoginBinding {
    pub fn generate() -> Self {
        Self(SecretBox::new(Box::new(random_bytes())))
    }

    pub fn parse(cookie_value: &str) -> Option<Self> {
        unb64_32(cookie_value).map(|bytes| Self(SecretBox::new(Box::new(bytes))))
    }

    pub fn cookie_value(&self) -> SecretString {
        SecretString::from(b64(self.0.expose_secret()))
    }
}

/// The bindings of the logins a browser has in flight, oldest first, as its login cookie
/// carries them (`b1.b2.…`): each tab's login completes with its own, in any order.
#[derive(Default)]
pub struct LoginBindings(Vec<LoginBinding>);

impl fmt::Debug for LoginBindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoginBindings({} in flight)", self.0.len())
    }
}

impl LoginBindings {
    /// A cookie's bindings; values that do not parse are dropped, and so are all but the
    /// newest [`MAX_LOGINS_IN_FLIGHT`].
    pub fn parse(cookie_value: Option<&str>) -> Self {
        let mut bindings: Vec<LoginBinding> = cookie_value
            .unwrap_or_default()
            .split('.')
            .filter_map(LoginBinding::parse)
            .collect();
        let excess = bindings.len().saturating_sub(MAX_LOGINS_IN_FLIGHT);
        bindings.drain(..excess);
        Self(bindings)
    }

    /// Adds a new login's binding, dropping the oldest when there are too many.
    pub fn push(&mut self, binding: LoginBinding) {
        self.0.push(binding);
        let excess = self.0.len().saturating_sub(MAX_LOGINS_IN_FLIGHT);
        self.0.drain(..excess);
    }

    /// Drops the binding of a login that completed.
    pub fn remove(&mut self, index: usize) {
        if index < self.0.len() {
            self.0.remove(index);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The cookie value; `None` when no login is in flight any more.
    pub fn cookie_value(&self) -> Option<SecretString> {
        if self.0.is_empty() {
            return None;
        }
        let values: Vec<String> = self
            .0
            .iter()
            .map(|binding| b64(binding.0.expose_secret()))
            .collect();
        Some(SecretString::from(values.join(".")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginStateError {
    #[error("unknown, expired or already used login state")]
    NotFound,
    /// The state exists but none of this browser's bindings opens it: another browser's
    /// login, or one of this browser's whose binding was dropped for newer ones. It is
    /// used up all the same.
    #[error("login state belongs to another browser, or to a login this browser gave up")]
    WrongBrowser { return_to: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a logout continuation carries to the provider's end-session endpoint.
pub struct LogoutContinuation {
    pub provider: String,
    pub id_token: SecretString,
}

#[derive(Serialize, Deserialize)]
struct StoredContinuation {
    provider: String,
    #[serde(with = "secret_serde")]
    id_token: SecretString,
    expires_at: UnixMillis,
}

/// The store key of a one-time record: a hash of its public id, never the id itself.
fn record_key(purpose: &str, id: &[u8]) -> String {
    hash_id(purpose, &[id])
}

impl SessionManager {
    /// Stores a login state under a hash of `state`, sealed under the browser binding.
    pub async fn put_login_state(
        &self,
        state: &str,
        binding: &LoginBinding,
        login: &LoginState,
        ttl: std::time::Duration,
        now: UnixMillis,
    ) -> Result<(), SessionError> {
        let key = record_key("gatehouse/login-state", state.as_bytes());
        let plaintext =
            serde_json::to_vec(login).map_err(|e| SessionError::Encoding(e.to_string()))?;
        let sealed = seal(&binding.0, LOGIN_STATE_PURPOSE, key.as_bytes(), &plaintext);
        let stored = stored_login(&login.return_to, &sealed)
            .ok_or_else(|| SessionError::Encoding("return path too long".into()))?;
        Ok(self
            .one_time
            .put_login_state(&key, &stored, ttl, now)
            .await?)
    }

    /// Consumes the login state: whatever the outcome, it cannot be used again. Returns it
    /// with the position of the binding that opened it.
    pub async fn take_login_state(
        &self,
        state: &str,
        bindings: &LoginBindings,
        now: UnixMillis,
    ) -> Result<(LoginState, usize), LoginStateError> {
        let key = record_key("gatehouse/login-state", state.as_bytes());
        let stored = self
            .one_time
            .take_login_state(&key, now)
            .await?
            .ok_or(LoginStateError::NotFound)?;
        let (return_to, sealed) = split_stored_login(&stored).ok_or(LoginStateError::NotFound)?;
        let opened = bindings.0.iter().enumerate().find_map(|(index, binding)| {
            open(&binding.0, LOGIN_STATE_PURPOSE, key.as_bytes(), sealed)
                .ok()
                .map(|plaintext| (index, plaintext))
        });
        let Some((index, plaintext)) = opened else {
            return Err(LoginStateError::WrongBrowser { return_to });
        };
        let login = serde_json::from_slice(&plaintext).map_err(|_| LoginStateError::NotFound)?;
        Ok((login, index))
    }

    /// Stores what a logout continuation needs for `ttl` and returns its token
    /// (`<id>.<secret>`, each 256 random bits): the record is sealed under the secret,
    /// which only the URL holds, and found by a hash of the id.
    pub async fn put_logout_continuation(
        &self,
        continuation: LogoutContinuation,
        ttl: std::time::Duration,
        now: UnixMillis,
    ) -> Result<SecretString, SessionError> {
        let id = random_bytes();
        let secret = SecretBox::new(Box::new(random_bytes()));
        let key = record_key("gatehouse/logout-continuation", &id);
        let plaintext = serde_json::to_vec(&StoredContinuation {
            provider: continuation.provider,
            id_token: continuation.id_token,
            expires_at: now + ttl.as_millis() as i64,
        })
        .map_err(|e| SessionError::Encoding(e.to_string()))?;
        let sealed = seal(
            &secret,
            LOGOUT_CONTINUATION_PURPOSE,
            key.as_bytes(),
            &plaintext,
        );
        self.one_time
            .put_login_state(&key, &sealed, ttl, now)
            .await?;
        Ok(SecretString::from(format!(
            "{}.{}",
            b64(&id),
            b64(secret.expose_secret())
        )))
    }

    /// Takes a logout continuation: `None` for a token that is malformed, unknown, used,
    /// expired or forged (all alike to the caller).
    pub async fn take_logout_continuation(
        &self,
        token: &str,
        now: UnixMillis,
    ) -> Result<Option<LogoutContinuation>, SessionError> {
        let Some((id, secret)) = token.split_once('.') else {
            return Ok(None);
        };
        let (Some(id), Some(secret)) = (unb64_32(id), unb64_32(secret)) else {
            return Ok(None);
        };
        let key = record_key("gatehouse/logout-continuation", &id);
        let Some(sealed) = self.one_time.take_login_state(&key, now).await? else {
            return Ok(None);
        };
        let secret = SecretBox::new(Box::new(secret));
        let Ok(plaintext) = open(
            &secret,
            LOGOUT_CONTINUATION_PURPOSE,
            key.as_bytes(),
            &sealed,
        ) else {
            return Ok(None);
        };
        let Ok(stored) = serde_json::from_slice::<StoredContinuation>(&plaintext) else {
            return Ok(None);
        };
        // The store's own expiry runs on its clock; this one on gatehouse's.
        if now >= stored.expires_at {
            return Ok(None);
        }
        Ok(Some(LogoutContinuation {
            provider: stored.provider,
            id_token: stored.id_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(bindings: &LoginBindings) -> Vec<String> {
        bindings
            .cookie_value()
            .map(|v| v.expose_secret().split('.').map(str::to_owned).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_browser_keeps_the_newest_bindings_and_drops_what_does_not_parse() {
        let mut bindings = LoginBindings::parse(None);
        assert!(bindings.cookie_value().is_none());
        let mut pushed = Vec::new();
        for _ in 0..(MAX_LOGINS_IN_FLIGHT + 2) {
            let binding = LoginBinding::generate();
            pushed.push(binding.cookie_value().expose_secret().to_owned());
            bindings.push(binding);
        }
        assert_eq!(
            values(&bindings),
            pushed[2..].to_vec(),
            "the two oldest dropped"
        );

        let cookie = format!("junk.{}..%41.{}", pushed[0], pushed[1]);
        assert_eq!(
            values(&LoginBindings::parse(Some(&cookie))),
            pushed[..2].to_vec()
        );
        let long = pushed.join(".");
        assert_eq!(
            values(&LoginBindings::parse(Some(&long))),
            pushed[2..].to_vec()
        );
    }
}
