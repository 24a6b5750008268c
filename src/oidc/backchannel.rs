//! OpenID Connect Back-Channel Logout 1.0: validating the provider's logout token.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::CoreJwsSigningAlgorithm;
use openidconnect::JsonWebKey;
use serde_json::{Map, Value};

use super::{Provider, Providers};
use crate::clock::UnixMillis;

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token older than this is refused (and its `jti` need not be remembered longer).
pub const MAX_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("not a signed JWT")]
    Malformed,
    #[error("issuer is not a configured provider")]
    UnknownIssuer,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("signature does not verify")]
    Signature,
    #[error("the provider is not ready")]
    NotReady,
    #[error("claim check failed: {0}")]
    Claims(&'static str),
}

/// Whom a valid logout token logs out.
pub struct LogoutRequest {
    pub provider: Arc<Provider>,
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
}

fn decode_json(part: &str) -> Result<Map<String, Value>, LogoutTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| LogoutTokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| LogoutTokenError::Malformed)
}

impl Providers {
    /// Checks signature, `iss`, `aud`, `iat`, `exp`, `events`, the absence of `nonce`, and
    /// that `sid` or `sub` is there. Replay (`jti`) is the caller's check, after this one,
    /// so a forged token cannot burn a real token's `jti`.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        now: UnixMillis,
    ) -> Result<LogoutRequest, LogoutTokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LogoutTokenError::Malformed);
        };
        let header_json = decode_json(header)?;
        let claims = decode_json(payload)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| LogoutTokenError::Malformed)?;

        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(LogoutTokenError::Claims("iss missing"))?;
        let provider = self
            .by_name
            .values()
            .find(|p| p.settings.issuer == issuer)
            .cloned()
            .ok_or(LogoutTokenError::UnknownIssuer)?;

        if let Some(typ) = header_json.get("typ") {
            let typ = typ.as_str().unwrap_or("").to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            // `JWT` is what providers predating the explicit type send.
            if typ != "logout+jwt" && typ != "jwt" {
                return Err(LogoutTokenError::Claims("typ is not logout+jwt"));
            }
        }
        let alg: CoreJwsSigningAlgorithm = header_json
            .get("alg")
            .cloned()
            .and_then(|alg| serde_json::from_value(alg).ok())
            .ok_or(LogoutTokenError::Algorithm)?;
        let kid = header_json.get("kid").and_then(Value::as_str);
        let message = &token[..header.len() + 1 + payload.len()];
        // An unknown key may mean the provider rotated: refetch once (rate-limited), retry.
        let verified = provider.verify_jws(&alg, kid, message.as_bytes(), &signature)?
            || (provider.refetch_jwks_if_due().await
                && provider.verify_jws(&alg, kid, message.as_bytes(), &signature)?);
        if !verified {
            return Err(LogoutTokenError::Signature);
        }

        let client_id = &provider.settings.client_id;
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == client_id,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
            _ => false,
        };
        if !audience_ok {
            return Err(LogoutTokenError::Claims("aud is not this client"));
        }
        let skew = provider.settings.clock_skew.as_millis() as i64;
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or(LogoutTokenError::Claims("iat missing"))?
            * 1000;
        if iat > now + skew {
            return Err(LogoutTokenError::Claims("iat in the future"));
        }
        if iat < now - skew - MAX_AGE.as_millis() as i64 {
            return Err(LogoutTokenError::Claims("iat too old"));
        }
        if let Some(exp) = claims.get("exp") {
            let exp = exp
                .as_i64()
                .ok_or(LogoutTokenError::Claims("exp not a number"))?
                * 1000;
            if exp + skew <= now {
                return Err(LogoutTokenError::Claims("expired"));
            }
        }
        let events_ok = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_EVENT))
            .is_some_and(Value::is_object);
        if !events_ok {
            return Err(LogoutTokenError::Claims(
                "events lacks the back-channel logout event",
            ));
        }
        if claims.contains_key("nonce") {
            return Err(LogoutTokenError::Claims(
                "a logout token must not have a nonce",
            ));
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty())
            .ok_or(LogoutTokenError::Claims("jti missing"))?
            .to_owned();
        let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        if sid.is_none() && sub.is_none() {
            return Err(LogoutTokenError::Claims("neither sid nor sub"));
        }
        Ok(LogoutRequest {
            provider,
            sid,
            sub,
            jti,
        })
    }
}

impl Provider {
    /// Verifies a JWS with the provider's keys: only advertised asymmetric algorithms, and
    /// only keys whose `kid` (when given) matches. Ok(false) when no key verifies it.
    fn verify_jws(
        &self,
        alg: &CoreJwsSigningAlgorithm,
        kid: Option<&str>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, LogoutTokenError> {
        let discovered = self.current().map_err(|_| LogoutTokenError::NotReady)?;
        if !discovered.signing_algs.contains(alg) {
            return Err(LogoutTokenError::Algorithm);
        }
        let verified = discovered
            .metadata
            .jwks()
            .keys()
            .iter()
            .filter(|key| kid.is_none() || key.key_id().map(|k| k.as_str()) == kid)
            .any(|key| key.verify_signature(alg, message, signature).is_ok());
        Ok(verified)
    }
}
