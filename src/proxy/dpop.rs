//! RFC 9449 on proxied calls: `Authorization: DPoP <token>` with a fresh proof of the
//! session's key for the very request the upstream sees, and the upstreams' nonces
//! (`use_dpop_nonce`, §9), kept per upstream origin.

use std::collections::HashMap;
use std::sync::Mutex;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::dpop::{wall_clock_secs, DpopKey, ProofTarget};

const DPOP: HeaderName = HeaderName::from_static("dpop");
const DPOP_NONCE: &str = "dpop-nonce";

/// The latest nonce each upstream origin asked for. Its keys are the routes' upstream
/// origins, so it is bounded by the route table.
#[derive(Default)]
pub struct UpstreamNonces(Mutex<HashMap<String, String>>);

impl UpstreamNonces {
    pub fn get(&self, origin: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(origin)
            .cloned()
    }

    fn set(&self, origin: &str, nonce: String) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(origin.to_owned(), nonce);
    }

    /// An upstream's answer: a `DPoP-Nonce` is kept for its origin. Whether the answer is a
    /// `use_dpop_nonce` challenge (a 401 naming that error) with a nonce other than `sent`:
    /// the call may then be made once more.
    pub fn learn(
        &self,
        origin: &str,
        status: http::StatusCode,
        headers: &HeaderMap,
        sent: Option<&str>,
    ) -> bool {
        let Some(nonce) = headers
            .get(DPOP_NONCE)
            .and_then(|v| v.to_str().ok())
            .filter(|n| is_nonce(n))
        else {
            return false;
        };
        self.set(origin, nonce.to_owned());
        status == http::StatusCode::UNAUTHORIZED
            && Some(nonce) != sent
            && headers
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("use_dpop_nonce"))
    }
}

/// RFC 9449 §8: NQCHAR, bounded.
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= 512
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// The URL a proof names for `uri`: scheme, authority and path (no query).
pub fn htu(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default(),
        uri.path()
    )
}

/// `Authorization: DPoP <token>` and a proof for `method` on `htu`; `false` when the proof
/// could not be made (the call then goes without a token and the upstream refuses it).
pub fn attach(
    headers: &mut HeaderMap,
    token: &SecretString,
    key: &DpopKey,
    method: &str,
    htu: &str,
    nonce: Option<&str>,
) -> bool {
    let target = ProofTarget {
        method,
        url: htu,
        nonce,
        access_token: Some(token),
    };
    let Ok(proof) = key.proof(&target, wall_clock_secs()) else {
        return false;
    };
    let (Ok(mut authorization), Ok(mut proof)) = (
        HeaderValue::try_from(format!("DPoP {}", token.expose_secret())),
        HeaderValue::try_from(proof),
    ) else {
        return false;
    };
    authorization.set_sensitive(true);
    proof.set_sensitive(true);
    headers.insert(http::header::AUTHORIZATION, authorization);
    headers.insert(DPOP, proof);
    true
}
