//! Sessions: the model, the cookie handle, and the manager that seals sessions under the
//! per-session secret before any store sees them. Free of HTTP framework types.

pub mod authentication;
pub mod crypto;
pub mod device;
pub mod held_locks;
pub mod memo;
pub mod memory;
mod one_time;
pub mod redis;
mod secret_serde;
pub mod store;
mod tokens;

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
pub use authentication::Authentication;
use crypto::{b64, hash_id, open, random_bytes, seal, unb64_32, RandomBytes};
pub use one_time::{
    LoginBinding, LoginBindings, LoginState, LoginStateError, LogoutContinuation,
    MAX_LOGINS_IN_FLIGHT,
};
pub use store::{
    FetchedSession, IdlePolicy, Locks, OneTimeRecords, RateBuckets, ReplayMemory, SessionRecord,
    SessionRecords, SessionStore, SessionSummary, StoreError, StoreHealth,
};
pub use tokens::{RouteToken, RouteTokenFor, RouteTokens, SessionDpopKey, TokenSet};

const SESSION_PURPOSE: &str = "gatehouse/session/v1";
const REVOCATION_PURPOSE: &str = "gatehouse/session-revocation/v1";
const PUBLIC_ID_DOMAIN: &str = "gatehouse/session/public-id";

/// A session's id as the user's list of sessions shows it: derived one way from the store
/// key, so it neither is nor reveals the store key, and needs no storage of its own.
pub fn public_id(store_key: &str) -> String {
    hash_id(PUBLIC_ID_DOMAIN, &[store_key.as_bytes()])
}

/// The server-held key (`session.revocation_key`) that seals each session's refresh token a
/// second time, so that a session ended from another one can still have its refresh token
/// revoked at the provider. 256 bits; never printed.
#[derive(Clone)]
pub struct RevocationKey(Arc<SecretBox<RandomBytes>>);

impl RevocationKey {
    /// From its configured form: 32 bytes, base64url (padding allowed).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_end_matches('=');
        unb64_32(text).map(|bytes| Self(Arc::new(SecretBox::new(Box::new(bytes)))))
    }
}

impl fmt::Debug for RevocationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevocationKey(<redacted>)")
    }
}

/// What a revocation envelope holds: enough to revoke the refresh token, nothing more.
#[derive(Serialize, Deserialize)]
struct RevocationEnvelope {
    provider: String,
    #[serde(with = "secret_serde")]
    refresh_token: SecretString,
}

/// A refresh token to revoke, taken from a session that was just ended.
pub struct Revocable {
    pub provider: String,
    pub refresh_token: SecretString,
}

impl fmt::Debug for Revocable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocable")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// A session as the user's list shows it: no key, no secret.
#[derive(Debug, Clone, Serialize)]
pub struct SessionListing {
    pub id: String,
    pub provider: String,
    pub device: String,
    pub created_at: UnixMillis,
    pub last_used_at: UnixMillis,
    pub current: bool,
}

/// Everything gatehouse knows about a logged-in browser.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionData {
    pub provider: String,
    pub sub: String,
    /// The provider's session id (`sid` claim), for back-channel logout.
    pub provider_sid: Option<String>,
    /// ID-token and userinfo claims, protocol-only ones left out.
    pub claims: Claims,
    /// What the login proved (`acr`, `amr`, `auth_time`); a refresh leaves it as it is.
    #[serde(default)]
    pub authentication: Authentication,
    pub tokens: TokenSet,
    /// Public value the SPA passes to `GET /auth/logout?sid=` (a CSRF guard, not a secret).
    pub logout_sid: String,
    pub created_at: UnixMillis,
    pub absolute_expires_at: UnixMillis,
    /// The coarse device label taken from the User-Agent at login (see `device`).
    #[serde(default)]
    pub device: String,
    /// The tokens of its routes beyond its own: per resource (RFC 8707) and exchanged
    /// (RFC 8693). Written only under the refresh lock, like `tokens`.
    #[serde(default, skip_serializing_if = "RouteTokens::is_empty")]
    pub route_tokens: RouteTokens,
    /// RFC 9449: the session's own DPoP private key (PKCS#8, base64url), when its provider
    /// binds tokens. Sealed with the rest; never leaves the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<SessionDpopKey>,
    /// What the policy layer derives from this session once (never sealed).
    #[serde(skip)]
    pub memo: memo::SessionMemo,
}

impl SessionData {
    /// The bytes of every token the session carries, its own and its routes' (what a
    /// measure of the session "beyond its tokens" leaves out; the DPoP key is not a token).
    pub fn token_bytes(&self) -> usize {
        self.tokens.token_bytes() + self.route_tokens.token_bytes()
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionData")
            .field("provider", &self.provider)
            .field("sub", &self.sub)
            .field(
                "provider_sid",
                &self.provider_sid.as_ref().map(|_| "<present>"),
            )
            .field("claims", &self.claims)
            .field("authentication", &self.authentication)
            .field("tokens", &self.tokens)
            .field("created_at", &self.created_at)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .field("device", &self.device)
            .field("route_tokens", &self.route_tokens)
            .field("dpop_key", &self.dpop_key.as_ref().map(|_| "<present>"))
            .finish_non_exhaustive()
    }
}

/// A session's claims as the JSON object they were stored as, parsed only by what reads them
/// (`/auth/user`, a route's `require.claims`): a proxied call that needs none of them does
/// not build a map of them on every session load.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Claims(Box<serde_json::value::RawValue>);

impl Claims {
    pub fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> Self {
        Self(serde_json::value::to_raw_value(map).expect("a JSON map always serializes"))
    }

    /// The claims as a map (parsed now, on every call).
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        // Checked to be an object when it was read, and written from a map otherwise.
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// The stored JSON text, to embed in an answer without parsing it.
    pub fn as_raw(&self) -> &serde_json::value::RawValue {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        // As strict as the map it replaces: anything but an object fails the decode.
        if raw.get().trim_start().starts_with('{') {
            Ok(Self(raw))
        } else {
            Err(serde::de::Error::custom("claims must be a JSON object"))
        }
    }
}

impl fmt::Debug for Claims {
    /// Names only, never values (the map's keys, as before).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_map().keys()).finish()
    }
}

/// A session ends at its absolute lifetime, or earlier when its refresh token does.
pub fn absolute_expiry(
    created_at: UnixMillis,
    absolute_timeout: std::time::Duration,
    refresh_token_expires_at: Option<UnixMillis>,
) -> UnixMillis {
    let absolute = created_at + absolute_timeout.as_millis() as i64;
    refresh_token_expires_at.map_or(absolute, |refresh| refresh.min(absolute))
}

/// What a session cookie carries: `<id>.<secret>`, 256 random bits each. The store key is a
/// hash of the id; the secret is the encryption key and lives only in the browser.
pub struct SessionHandle {
    id: RandomBytes,
    secret: SecretBox<RandomBytes>,
}

impl SessionHandle {
    fn generate() -> Self {
        Self {
            id: random_bytes(),
            secret: SecretBox::new(Box::new(random_bytes())),
        }
    }

    pub fn parse(cookie_value: &str) -> Option<Self> {
        let (id, secret) = cookie_value.split_once('.')?;
        Some(Self {
            id: unb64_32(id)?,
            secret: SecretBox::new(Box::new(unb64_32(secret)?)),
        })
    }

    pub fn cookie_value(&self) -> SecretString {
        SecretString::from(format!(
            "{}.{}",
            b64(&self.id),
            b64(self.secret.expose_secret())
        ))
    }

    /// The store key: a hash, so neither the id nor the secret is in the store.
    pub fn store_key(&self) -> String {
        hash_id("gatehouse/session-key", &[&self.id])
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionHandle(<redacted>)")
    }
}

/// A session as a request sees it.
#[derive(Debug)]
pub struct LoadedSession {
    pub store_key: String,
    /// Shared with the store's cache while the record there is unchanged.
    pub data: Arc<SessionData>,
    pub idle_expires_at: UnixMillis,
}

/// What a cached record opened to, and for which cookie: only a cookie with the same secret
/// gets it (any other must open the sealed record itself, and fails).
struct OpenedSession {
    secret: SecretBox<RandomBytes>,
    data: Arc<SessionData>,
}

impl OpenedSession {
    fn opens_for(&self, secret: &SecretBox<RandomBytes>) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            &self.secret.expose_secret()[..],
            &secret.expose_secret()[..],
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("session payload could not be encoded: {0}")]
    Encoding(String),
}

/// Seals sessions under their own secret and keeps the store unaware of any plaintext.
#[derive(Clone)]
pub struct SessionManager {
    store: Arc<dyn SessionRecords>,
    /// Login states and logout continuations (`one_time`).
    one_time: Arc<dyn OneTimeRecords>,
    idle: IdlePolicy,
    revocation_key: Option<RevocationKey>,
}

impl SessionManager {
    /// A manager of the sessions and one-time records of `store` (it uses no other part).
    pub fn new(store: Arc<dyn SessionStore>, idle: IdlePolicy) -> Self {
        Self {
            store: store.clone(),
            one_time: store,
            idle,
            revocation_key: None,
        }
    }

    /// Sessions written from now on also carry a revocation envelope under `key`.
    pub fn with_revocation_key(mut self, key: Option<RevocationKey>) -> Self {
        self.revocation_key = key;
        self
    }

    /// The refresh token sealed under the revocation key, bound to the store key; `None`
    /// without a key or without a refresh token.
    fn revocation_envelope(
        &self,
        key: &str,
        data: &SessionData,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let (Some(revocation_key), Some(refresh_token)) =
            (&self.revocation_key, &data.tokens.refresh_token)
        else {
            return Ok(None);
        };
        let envelope = RevocationEnvelope {
            provider: data.provider.clone(),
            refresh_token: refresh_token.clone(),
        };
        let plaintext =
            serde_json::to_vec(&envelope).map_err(|e| SessionError::Encoding(e.to_string()))?;
        Ok(Some(seal(
            &revocation_key.0,
            REVOCATION_PURPOSE,
            key.as_bytes(),
            &plaintext,
        )))
    }

    /// Opens a record's revocation envelope with the server-held key; `None` without a key,
    /// without an envelope, or when it does not open (another key, tampered).
    fn open_revocation(&self, key: &str, record: &SessionRecord) -> Option<Revocable> {
        let revocation_key = self.revocation_key.as_ref()?;
        let sealed = record.revocation.as_ref()?;
        let plaintext = open(
            &revocation_key.0,
            REVOCATION_PURPOSE,
            key.as_bytes(),
            sealed,
        )
        .ok()?;
        let envelope: RevocationEnvelope = serde_json::from_slice(&plaintext).ok()?;
        Some(Revocable {
            provider: envelope.provider,
            refresh_token: envelope.refresh_token,
        })
    }

    /// The sessions of a user at a provider, for that user: `current` is the caller's own.
    pub async fn list_for_user(
        &self,
        provider: &str,
        sub: &str,
        current_key: &str,
        now: UnixMillis,
    ) -> Result<Vec<SessionListing>, SessionError> {
        let keys = self.store.keys_by_sub(provider, sub, now).await?;
        let mut listed = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(summary) = self.store.summary(&key).await? else {
                continue;
            };
            // The index is the user's own; this only guards against a corrupt one.
            if summary.provider != provider || summary.sub != sub {
                continue;
            }
            listed.push(SessionListing {
                id: public_id(&key),
                provider: summary.provider,
                device: if summary.device.is_empty() {
                    device::UNKNOWN_DEVICE.to_owned()
                } else {
                    summary.device
                },
                created_at: summary.created_at,
                last_used_at: summary.last_seen_at,
                current: key == current_key,
            });
        }
        listed.sort_by(|a, b| {
            b.current
                .cmp(&a.current)
                .then(b.last_used_at.cmp(&a.last_used_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(listed)
    }

    /// The store key of the user's session with this public id, if there is one.
    pub async fn find_by_public_id(
        &self,
        provider: &str,
        sub: &str,
        id: &str,
        now: UnixMillis,
    ) -> Result<Option<String>, SessionError> {
        let keys = self.store.keys_by_sub(provider, sub, now).await?;
        Ok(keys.into_iter().find(|key| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                public_id(key).as_bytes(),
                id.as_bytes(),
            ))
        }))
    }

    /// Ends a session that is not the caller's own (whose secret this server does not hold):
    /// reads its revocation envelope, deletes it, and hands back the refresh token to revoke
    /// when the envelope opened. `None` when the session was already gone.
    pub async fn end_other(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<Option<Revocable>>, SessionError> {
        let revocable = match self.store.fetch(key, now, self.idle).await? {
            Some(fetched) => self.open_revocation(key, &fetched.record),
            None => None,
        };
        if self.store.remove(key).await? {
            Ok(Some(revocable))
        } else {
            Ok(None)
        }
    }

    /// The session records, for the operator commands and the user's list of sessions.
    pub fn records(&self) -> &Arc<dyn SessionRecords> {
        &self.store
    }

    pub fn idle_policy(&self) -> IdlePolicy {
        self.idle
    }

    pub async fn create(
        &self,
        data: &SessionData,
        now: UnixMillis,
    ) -> Result<SessionHandle, SessionError> {
        let handle = SessionHandle::generate();
        let key = handle.store_key();
        let plaintext =
            serde_json::to_vec(data).map_err(|e| SessionError::Encoding(e.to_string()))?;
        let record = SessionRecord {
            sealed: seal(&handle.secret, SESSION_PURPOSE, key.as_bytes(), &plaintext),
            provider: data.provider.clone(),
            sub: data.sub.clone(),
            provider_sid: data.provider_sid.clone(),
            created_at: data.created_at,
            absolute_expires_at: data.absolute_expires_at,
            device: data.device.clone(),
            revocation: self.revocation_envelope(&key, data)?,
        };
        self.store.insert(&key, &record, now, self.idle).await?;
        Ok(handle)
    }

    /// The session a cookie names, or `None` when it is unknown, expired, or the cookie's
    /// secret does not open it (a forged or truncated cookie looks exactly like no session).
    pub async fn load(
        &self,
        cookie_value: &str,
        now: UnixMillis,
    ) -> Result<Option<LoadedSession>, SessionError> {
        let Some(handle) = SessionHandle::parse(cookie_value) else {
            return Ok(None);
        };
        let key = handle.store_key();
        let Some(fetched) = self.store.fetch(&key, now, self.idle).await? else {
            return Ok(None);
        };
        // A cached record this cookie opened before: no decryption, no parse.
        let memo = fetched.memo.as_ref().and_then(|memo| memo.get());
        if let Some(opened) = memo.and_then(|any| any.downcast_ref::<OpenedSession>()) {
            if opened.opens_for(&handle.secret) {
                return Ok(Some(LoadedSession {
                    store_key: key,
                    data: opened.data.clone(),
                    idle_expires_at: fetched.idle_expires_at,
                }));
            }
        }
        let Ok(plaintext) = open(
            &handle.secret,
            SESSION_PURPOSE,
            key.as_bytes(),
            &fetched.record.sealed,
        ) else {
            return Ok(None);
        };
        let data: SessionData = serde_json::from_slice(&plaintext)
            .map_err(|e| SessionError::Encoding(format!("stored session does not decode: {e}")))?;
        let data = Arc::new(data);
        if let Some(memo) = &fetched.memo {
            let opened = OpenedSession {
                secret: SecretBox::new(Box::new(*handle.secret.expose_secret())),
                data: data.clone(),
            };
            let _ = memo.set(Arc::new(opened));
        }
        Ok(Some(LoadedSession {
            store_key: key,
            data,
            idle_expires_at: fetched.idle_expires_at,
        }))
    }

    /// Writes new tokens into an existing session (only ever under the refresh lock).
    pub async fn replace(
        &self,
        cookie_value: &str,
        data: &SessionData,
        now: UnixMillis,
    ) -> Result<bool, SessionError> {
        let Some(handle) = SessionHandle::parse(cookie_value) else {
            return Ok(false);
        };
        let key = handle.store_key();
        let plaintext =
            serde_json::to_vec(data).map_err(|e| SessionError::Encoding(e.to_string()))?;
        let sealed = seal(&handle.secret, SESSION_PURPOSE, key.as_bytes(), &plaintext);
        // The envelope follows the rotated refresh token, in the same write.
        let revocation = self.revocation_envelope(&key, data)?;
        Ok(self
            .store
            .replace_sealed(
                &key,
                &sealed,
                revocation.as_deref(),
                data.absolute_expires_at,
                now,
            )
            .await?)
    }

    pub async fn delete(&self, store_key: &str) -> Result<bool, SessionError> {
        Ok(self.store.remove(store_key).await?)
    }

    /// Ends every session of a user at a provider; returns how many ended.
    pub async fn delete_by_sub(
        &self,
        provider: &str,
        sub: &str,
        now: UnixMillis,
    ) -> Result<usize, SessionError> {
        let keys = self.store.keys_by_sub(provider, sub, now).await?;
        self.delete_all(keys).await
    }

    /// Ends the sessions opened under one provider session (`sid`).
    pub async fn delete_by_provider_sid(
        &self,
        provider: &str,
        sid: &str,
        now: UnixMillis,
    ) -> Result<usize, SessionError> {
        let keys = self.store.keys_by_sid(provider, sid, now).await?;
        self.delete_all(keys).await
    }

    async fn delete_all(&self, keys: Vec<String>) -> Result<usize, SessionError> {
        let mut ended = 0;
        for key in keys {
            if self.store.remove(&key).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests;
