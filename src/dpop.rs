//! RFC 9449 DPoP: a session's own P-256 key pair, and the proofs it signs — for the
//! provider's token endpoint and for every proxied call. Built on `ring` like the client
//! assertions (`client_key`): one algorithm and one token shape.
//!
//! The private key lives only sealed in its session (PKCS#8, base64url); a parsed copy is
//! kept with the opened session so that a call pays for a signature, not for a key parse.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The one algorithm gatehouse signs proofs with.
pub const DPOP_ALG: &str = "ES256";

#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    #[error("cannot make a DPoP key")]
    Generate,
    #[error("the session's DPoP key does not parse")]
    Unusable,
    #[error("cannot sign a DPoP proof")]
    Sign,
}

/// A session's DPoP key, parsed; Debug shows the thumbprint only.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// The proof header (typ, alg, the public JWK), base64url, made once.
    header: String,
    /// RFC 7638 thumbprint of the public key (`jkt`).
    thumbprint: String,
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("jkt", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// What a proof is for.
pub struct ProofTarget<'a> {
    pub method: &'a str,
    /// The URL the receiver sees, without query and fragment.
    pub url: &'a str,
    /// A server's `DPoP-Nonce`, when it asked for one.
    pub nonce: Option<&'a str>,
    /// The access token presented with the proof (its hash becomes `ath`).
    pub access_token: Option<&'a SecretString>,
}

impl DpopKey {
    /// A new key pair, and its sealed-away form (PKCS#8, base64url).
    pub fn generate() -> Result<(Self, SecretString), DpopError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DpopError::Generate)?;
        let stored = SecretString::from(URL_SAFE_NO_PAD.encode(pkcs8.as_ref()));
        let key = Self::from_stored(&stored).map_err(|_| DpopError::Generate)?;
        Ok((key, stored))
    }

    /// The key from the form a session stores it in.
    pub fn from_stored(stored: &SecretString) -> Result<Self, DpopError> {
        let pkcs8 = URL_SAFE_NO_PAD
            .decode(stored.expose_secret())
            .map_err(|_| DpopError::Unusable)?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| DpopError::Unusable)?;
        // The public key is the uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err(DpopError::Unusable);
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"{DPOP_ALG}","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#
        );
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        Ok(Self {
            pair,
            rng,
            header: URL_SAFE_NO_PAD.encode(header),
            thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())),
        })
    }

    /// RFC 7638 thumbprint of the public key: what a bound token's `cnf.jkt` names.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A fresh proof for one request, issued at `iat` (seconds since the epoch).
    pub fn proof(&self, target: &ProofTarget<'_>, iat: i64) -> Result<String, DpopError> {
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| DpopError::Sign)?;
        let mut payload = format!(
            r#"{{"jti":"{}","htm":{},"htu":{},"iat":{iat}"#,
            URL_SAFE_NO_PAD.encode(jti),
            json_string(target.method),
            json_string(target.url),
        );
        if let Some(token) = target.access_token {
            let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.expose_secret().as_bytes()));
            payload.push_str(r#","ath":""#);
            payload.push_str(&ath);
            payload.push('"');
        }
        if let Some(nonce) = target.nonce {
            payload.push_str(r#","nonce":"#);
            payload.push_str(&json_string(nonce));
        }
        payload.push('}');
        let mut jws = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 100);
        jws.push_str(&self.header);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(payload.as_bytes(), &mut jws);
        let signature = self
            .pair
            .sign(&self.rng, jws.as_bytes())
            .map_err(|_| DpopError::Sign)?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        Ok(jws)
    }
}

/// A proof's `iat`: the wall clock, which is what its receiver compares it with (a test's
/// offset clock, moved on to expire tokens, must not date proofs into the future).
pub fn wall_clock_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The URL a proof names for a request to `url`: without query and fragment (RFC 9449 §4.2).
pub fn htu(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(jws: &str, index: usize) -> serde_json::Value {
        let text = jws.split('.').nth(index).expect("part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).expect("b64")).expect("json")
    }

    #[test]
    fn a_proof_names_its_request_and_verifies_with_its_own_key() {
        let (key, stored) = DpopKey::generate().expect("key");
        let again = DpopKey::from_stored(&stored).expect("parses");
        assert_eq!(key.thumbprint(), again.thumbprint());
        let token = SecretString::from("the-token".to_owned());
        let target = ProofTarget {
            method: "GET",
            url: "https://api.example/orders",
            nonce: Some("n-1"),
            access_token: Some(&token),
        };
        let first = key.proof(&target, 1_700_000_000).expect("proof");
        let second = key.proof(&target, 1_700_000_000).expect("proof");
        let header = part(&first, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        let claims = part(&first, 1);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example/orders");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"the-token"))
        );
        assert_ne!(claims["jti"], part(&second, 1)["jti"]);
        let jwk = &header["jwk"];
        let mut point = vec![4u8];
        for member in ["x", "y"] {
            point.extend(
                URL_SAFE_NO_PAD
                    .decode(jwk[member].as_str().expect("coordinate"))
                    .expect("b64"),
            );
        }
        let (input, signature) = first.rsplit_once('.').expect("signature");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).expect("b64"),
            )
            .expect("the proof verifies with the key in its header");
    }

    #[test]
    fn htu_leaves_out_query_and_fragment() {
        let url = url::Url::parse("https://api.example/a/b?x=1#f").expect("url");
        assert_eq!(htu(&url), "https://api.example/a/b");
    }
}
