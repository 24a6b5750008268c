//! Per-session encryption: the key comes from a secret that only the browser's cookie holds,
//! so a dump of the store alone reveals no token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// 256 random bits.
pub type RandomBytes = [u8; 32];

pub fn random_bytes() -> RandomBytes {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64_32(text: &str) -> Option<RandomBytes> {
    if text.len() != 43 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

/// A domain-separated SHA-256, base64url: store keys and index keys are derived with it so a
/// raw identifier never appears in the store.
pub fn hash_id(domain: &str, parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(domain.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    b64(&hasher.finalize())
}

/// Short, non-reversible tag for a token in logs (never the token).
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    b64(&digest[..6])
}

#[derive(Debug, thiserror::Error)]
#[error("ciphertext could not be decrypted with this key")]
pub struct DecryptError;

fn cipher(secret: &SecretBox<RandomBytes>, purpose: &str) -> XChaCha20Poly1305 {
    let mut hasher = Sha256::new();
    hasher.update(purpose.as_bytes());
    hasher.update(secret.expose_secret());
    XChaCha20Poly1305::new(&hasher.finalize())
}

/// Encrypts `plaintext`; `bound_to` (the store key) is authenticated so a ciphertext cannot be
/// moved under another key.
pub fn seal(
    secret: &SecretBox<RandomBytes>,
    purpose: &str,
    bound_to: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(secret, purpose)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: bound_to,
            },
        )
        // Encryption only fails for messages beyond the cipher's length limit (256 GiB).
        .unwrap_or_default();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

pub fn open(
    secret: &SecretBox<RandomBytes>,
    purpose: &str,
    bound_to: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_VERSION {
        return Err(DecryptError);
    }
    let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
    cipher(secret, purpose)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: bound_to,
            },
        )
        .map_err(|_| DecryptError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = SecretBox::new(Box::new(random_bytes()));
        let other = SecretBox::new(Box::new(random_bytes()));
        let sealed = seal(&key, "p", b"key-a", b"hello");
        assert_eq!(open(&key, "p", b"key-a", &sealed).expect("opens"), b"hello");
        assert!(
            open(&other, "p", b"key-a", &sealed).is_err(),
            "wrong secret"
        );
        assert!(
            open(&key, "p", b"key-b", &sealed).is_err(),
            "moved to another key"
        );
        assert!(open(&key, "q", b"key-a", &sealed).is_err(), "other purpose");
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("non-empty") ^= 1;
        assert!(open(&key, "p", b"key-a", &tampered).is_err());
    }
}
