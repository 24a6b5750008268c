//! The client's own signing key for `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core
//! §9): a fresh, short-lived signed assertion for each call that authenticates the client at
//! the provider, and the public JWK to register there.
//!
//! The compact JWS is built by hand on `ring` (already in the tree through rustls): two
//! algorithms and one token shape do not justify a JOSE crate.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde_json::{json, Value};

/// `client_assertion_type` for a JWT bearer client assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: long enough for one call, short enough to be useless
/// when it leaks.
const LIFETIME_SECS: u64 = 60;

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct Inner {
    kid: String,
    pair: Pair,
    rng: SystemRandom,
}

/// A private signing key and its key id. Cloning shares the key; Debug shows only the
/// algorithm and key id.
#[derive(Clone)]
pub struct ClientKey(Arc<Inner>);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg())
            .field("kid", &self.0.kid)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Reads a PEM private key: RSA (PKCS#1 or PKCS#8, 2048 bits or more) or EC P-256
    /// (PKCS#8). The error says why the file is unusable and never quotes it.
    pub fn load(path: &Path, kid: &str) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(&pem, kid).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_pem(pem: &[u8], kid: &str) -> Result<Self, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| "no PEM private key found".to_owned())?;
        let rng = SystemRandom::new();
        let pair = match &der {
            PrivateKeyDer::Pkcs1(key) => RsaKeyPair::from_der(key.secret_pkcs1_der())
                .map(Pair::Rsa)
                .map_err(|e| format!("unusable RSA key: {e}"))?,
            PrivateKeyDer::Pkcs8(key) => {
                let bytes = key.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(bytes) {
                    Ok(pair) => Pair::Rsa(pair),
                    Err(rsa_error) => {
                        match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes, &rng)
                        {
                            Ok(pair) => Pair::Ec(pair),
                            Err(ec_error) => {
                                return Err(format!(
                                "neither a usable RSA key ({rsa_error}) nor an EC P-256 key ({ec_error})"
                            ))
                            }
                        }
                    }
                }
            }
            PrivateKeyDer::Sec1(_) => {
                return Err(
                    "an EC key in SEC1 form (BEGIN EC PRIVATE KEY): convert it to \
                     PKCS#8 (openssl pkcs8 -topk8 -nocrypt)"
                        .into(),
                )
            }
            _ => return Err("unsupported private key type".into()),
        };
        Ok(Self(Arc::new(Inner {
            kid: kid.to_owned(),
            pair,
            rng,
        })))
    }

    pub fn kid(&self) -> &str {
        &self.0.kid
    }

    /// The JWS algorithm the key signs with.
    pub fn alg(&self) -> &'static str {
        match self.0.pair {
            Pair::Rsa(_) => "RS256",
            Pair::Ec(_) => "ES256",
        }
    }

    /// The public key as a JWK, to register at the provider.
    pub fn public_jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.0.pair {
            Pair::Rsa(pair) => {
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({ "kty": "RSA", "n": b64(&public.n), "e": b64(&public.e) })
            }
            Pair::Ec(pair) => {
                // The uncompressed point: 0x04 || x || y, 32 bytes each.
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(&point[1..33]),
                    "y": b64(&point[33..65]),
                })
            }
        };
        jwk["kid"] = json!(self.0.kid);
        jwk["alg"] = json!(self.alg());
        jwk["use"] = json!("sig");
        jwk
    }

    /// A signed client assertion for one call to `audience` (the URL of the endpoint
    /// called), valid for 60 seconds from now by the system clock (the provider's clock, not
    /// the session clock, judges it).
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "system clock before 1970".to_owned())?
            .as_secs();
        let mut jti = [0u8; 18];
        self.0
            .rng
            .fill(&mut jti)
            .map_err(|_| "no randomness".to_owned())?;
        let header = json!({ "alg": self.alg(), "kid": self.0.kid, "typ": "JWT" });
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.0.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &self.0.rng,
                    signing_input.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| "RSA signing failed".to_owned())?;
                signature
            }
            Pair::Ec(pair) => pair
                .sign(&self.0.rng, signing_input.as_bytes())
                .map_err(|_| "ECDSA signing failed".to_owned())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_key() -> ClientKey {
        let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
        ClientKey::from_pem(pem.as_bytes(), "k1").expect("EC key")
    }

    fn part(token: &str, index: usize) -> Value {
        let segment = token.split('.').nth(index).expect("segment");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
    }

    #[test]
    fn ec_assertion_verifies_with_the_published_key() {
        let key = ec_key();
        let token = key
            .assertion("client-1", "https://id.example/token")
            .expect("sign");
        let header = part(&token, 0);
        assert_eq!(header, json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}));
        let claims = part(&token, 1);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "https://id.example/token");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        let other = key
            .assertion("client-1", "https://id.example/token")
            .unwrap();
        assert_ne!(part(&other, 1)["jti"], claims["jti"], "jti must be fresh");

        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["use"], "sig");
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        let (input, signature) = token.rsplit_once('.').unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .expect("signature verifies");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let text = format!("{:?}", ec_key());
        assert_eq!(text, r#"ClientKey { alg: "ES256", kid: "k1", .. }"#);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(ClientKey::from_pem(b"not a key", "k").is_err());
    }
}
