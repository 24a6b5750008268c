//! The tokens a session holds: its own (`TokenSet`) and its routes' (`RouteTokens`). Only
//! ever serialized into a sealed payload.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::secret_serde;
use crate::clock::UnixMillis;
use crate::dpop::DpopKey;

/// The tokens of one session. Only ever serialized into a sealed payload.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenSet {
    #[serde(with = "secret_serde")]
    pub access_token: SecretString,
    /// When the access token expires, if the provider said.
    pub access_token_expires_at: Option<UnixMillis>,
    /// How long the access token lives (the provider's `expires_in`): the refresh skew never
    /// exceeds half of it. Absent in sessions written before it was recorded.
    #[serde(default)]
    pub access_token_lifetime_ms: Option<i64>,
    #[serde(with = "secret_serde::option", default)]
    pub refresh_token: Option<SecretString>,
    /// When the refresh token expires, if the provider said; the session ends by then.
    #[serde(default)]
    pub refresh_token_expires_at: Option<UnixMillis>,
    #[serde(with = "secret_serde")]
    pub id_token: SecretString,
    /// Scopes the provider granted (space separated), when it said.
    pub scope: Option<String>,
    /// `token_type` was DPoP (RFC 9449): calls carry `Authorization: DPoP` and a proof.
    /// Written only when true (19 bytes less in every other session).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dpop_bound: bool,
}

impl TokenSet {
    /// The bytes of its tokens (access, refresh, ID) as the sealed payload holds them.
    pub fn token_bytes(&self) -> usize {
        self.access_token.expose_secret().len()
            + self
                .refresh_token
                .as_ref()
                .map_or(0, |token| token.expose_secret().len())
            + self.id_token.expose_secret().len()
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<present>")
            .field("access_token_expires_at", &self.access_token_expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<present>"),
            )
            .field("id_token", &"<present>")
            .field("scope", &self.scope)
            .finish()
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

/// What a route token is for: an RFC 8707 resource, or a route's RFC 8693 exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTokenFor<'a> {
    Resource(&'a str),
    /// By route prefix: each exchange route has its own.
    Exchange(&'a str),
}

impl RouteTokenFor<'_> {
    fn key(&self) -> String {
        match self {
            Self::Resource(uri) => format!("resource {uri}"),
            Self::Exchange(prefix) => format!("exchange {prefix}"),
        }
    }
}

/// One route token.
#[derive(Clone, Serialize, Deserialize)]
pub struct RouteToken {
    #[serde(with = "secret_serde")]
    pub access_token: SecretString,
    pub expires_at: Option<UnixMillis>,
    /// The provider's `expires_in`: the refresh skew never exceeds half of it.
    pub lifetime_ms: Option<i64>,
    /// `token_type` was DPoP: calls carry `Authorization: DPoP` and a proof.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dpop_bound: bool,
}

impl fmt::Debug for RouteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteToken")
            .field("access_token", &"<present>")
            .field("expires_at", &self.expires_at)
            .field("dpop_bound", &self.dpop_bound)
            .finish()
    }
}

/// The route tokens of a session, by what they are for.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouteTokens(BTreeMap<String, RouteToken>);

impl RouteTokens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, what: RouteTokenFor<'_>) -> Option<&RouteToken> {
        self.0.get(&what.key())
    }

    pub fn insert(&mut self, what: RouteTokenFor<'_>, token: RouteToken) {
        self.0.insert(what.key(), token);
    }

    pub fn remove(&mut self, what: RouteTokenFor<'_>) {
        self.0.remove(&what.key());
    }

    /// The bytes of the route tokens as the sealed payload holds them.
    pub fn token_bytes(&self) -> usize {
        self.0
            .values()
            .map(|token| token.access_token.expose_secret().len())
            .sum()
    }
}

impl fmt::Debug for RouteTokens {
    /// What they are for, never the tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

/// A session's DPoP key as it is sealed (PKCS#8, base64url), with the parsed key kept
/// beside it once used: the opened session is cached, so a call pays for a signature only.
#[derive(Clone)]
pub struct SessionDpopKey {
    stored: SecretString,
    parsed: OnceLock<Option<Arc<DpopKey>>>,
}

impl SessionDpopKey {
    pub fn new(stored: SecretString, parsed: DpopKey) -> Self {
        Self {
            stored,
            parsed: OnceLock::from(Some(Arc::new(parsed))),
        }
    }

    /// The sealed-away form (for tests that look for it where it must not be).
    pub fn stored(&self) -> &SecretString {
        &self.stored
    }

    /// The key; `None` when the stored form does not parse (a corrupt session).
    pub fn key(&self) -> Option<&DpopKey> {
        self.parsed
            .get_or_init(|| DpopKey::from_stored(&self.stored).ok().map(Arc::new))
            .as_deref()
    }
}

impl fmt::Debug for SessionDpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionDpopKey(<redacted>)")
    }
}

impl Serialize for SessionDpopKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        secret_serde::serialize(&self.stored, serializer)
    }
}

impl<'de> Deserialize<'de> for SessionDpopKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self {
            stored: secret_serde::deserialize(deserializer)?,
            parsed: OnceLock::new(),
        })
    }
}
