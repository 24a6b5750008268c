//! A test upstream that checks tokens the way a real API does, and records what it saw:
//! the access token's signature against the provider's JWKS (RS256), its `aud` (this
//! upstream's audience) and `exp`; and when the token is bound (`cnf.jkt`), the DPoP proof
//! (RFC 9449 §4.3): ES256 signature with the key in its header, that key's thumbprint,
//! `htm`, `htu` (this upstream's URL), `ath`, `iat`, a `jti` never seen before and, when it
//! asks for them, its current nonce (a `use_dpop_nonce` challenge otherwise).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One request as the upstream judged it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `Bearer` or `DPoP` (as sent).
    pub scheme: String,
    pub token: String,
    /// The access token's claims (when it was a readable JWT).
    pub claims: Value,
    /// The DPoP proof's claims, when one came.
    pub proof: Option<Value>,
    /// `None`: accepted; else why it was refused.
    pub refusal: Option<String>,
}

/// RSA public keys (modulus, exponent) by key id.
type ProviderKeys = BTreeMap<String, (Vec<u8>, Vec<u8>)>;

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    jtis: HashSet<String>,
    /// The nonce this upstream requires in proofs, once `require_nonce` is on.
    nonce: Option<String>,
}

#[derive(Clone)]
pub struct TokenUpstream {
    pub base: String,
    /// The `aud` tokens must carry here.
    pub audience: String,
    keys: Arc<ProviderKeys>,
    state: Arc<Mutex<State>>,
}

impl TokenUpstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    /// From now on proofs must carry this nonce; one without gets a `use_dpop_nonce`
    /// challenge naming it.
    pub fn require_nonce(&self, nonce: &str) {
        self.state.lock().expect("state").nonce = Some(nonce.to_owned());
    }

    /// Judges a request the way the server does (for a test that replays a token itself).
    pub fn judge(
        &self,
        method: &str,
        path: &str,
        headers: &reqwest::header::HeaderMap,
    ) -> Option<String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.check(method, path, header("authorization"), header("dpop"))
            .refusal
    }

    fn check(
        &self,
        method: &str,
        path: &str,
        authorization: Option<String>,
        dpop: Option<String>,
    ) -> Seen {
        let mut seen = Seen {
            scheme: String::new(),
            token: String::new(),
            claims: Value::Null,
            proof: None,
            refusal: None,
        };
        let refusal = self
            .verdict(method, path, authorization, dpop, &mut seen)
            .err();
        seen.refusal = refusal;
        self.state.lock().expect("state").seen.push(seen.clone());
        seen
    }

    fn verdict(
        &self,
        method: &str,
        path: &str,
        authorization: Option<String>,
        dpop: Option<String>,
        seen: &mut Seen,
    ) -> Result<(), String> {
        let authorization = authorization.ok_or("no Authorization")?;
        let (scheme, token) = authorization
            .split_once(' ')
            .ok_or("malformed Authorization")?;
        seen.scheme = scheme.to_owned();
        seen.token = token.to_owned();
        let (header, claims) = verify_rs256(token, &self.keys)?;
        seen.claims = claims.clone();
        if header["typ"] != "at+jwt" && header["typ"] != "JWT" && !header["typ"].is_null() {
            return Err(format!("unexpected typ {}", header["typ"]));
        }
        let audience_ok = match &claims["aud"] {
            Value::String(aud) => *aud == self.audience,
            Value::Array(auds) => auds.len() == 1 && auds[0] == self.audience.as_str(),
            _ => false,
        };
        if !audience_ok {
            return Err(format!("aud {} is not {}", claims["aud"], self.audience));
        }
        let now = unix_now();
        if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
            return Err("expired".into());
        }
        let jkt = claims["cnf"]["jkt"].as_str();
        match (scheme, jkt) {
            ("Bearer", None) => return Ok(()),
            ("Bearer", Some(_)) => return Err("a DPoP-bound token sent as Bearer".into()),
            ("DPoP", None) => return Err("DPoP scheme with an unbound token".into()),
            ("DPoP", Some(_)) => {}
            _ => return Err(format!("unknown scheme {scheme}")),
        }
        let proof = dpop.ok_or("no DPoP proof")?;
        let (proof_header, proof_claims) = verify_proof(&proof)?;
        seen.proof = Some(proof_claims.clone());
        if Some(thumbprint(&proof_header["jwk"]).as_str()) != jkt {
            return Err("proof key is not the token's cnf.jkt".into());
        }
        if proof_claims["htm"] != method {
            return Err(format!("htm {} is not {method}", proof_claims["htm"]));
        }
        let htu = format!("{}{}", self.base, path);
        if proof_claims["htu"] != htu.as_str() {
            return Err(format!("htu {} is not {htu}", proof_claims["htu"]));
        }
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        if proof_claims["ath"] != ath.as_str() {
            return Err("ath does not match the token".into());
        }
        if proof_claims["iat"]
            .as_i64()
            .is_none_or(|iat| (iat - now).abs() > 60)
        {
            return Err("iat too far from now".into());
        }
        let jti = proof_claims["jti"].as_str().ok_or("no jti")?.to_owned();
        let mut state = self.state.lock().expect("state");
        if let Some(nonce) = &state.nonce {
            if proof_claims["nonce"] != nonce.as_str() {
                return Err("use_dpop_nonce".into());
            }
        }
        if !state.jtis.insert(jti) {
            return Err("jti replayed".into());
        }
        Ok(())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

fn part(jwt: &str, index: usize) -> Result<Value, String> {
    let text = jwt.split('.').nth(index).ok_or("not a JWT")?;
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| "not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "not JSON".to_owned())
}

fn signed_parts(jwt: &str) -> Result<(&str, Vec<u8>), String> {
    let (input, signature) = jwt.rsplit_once('.').ok_or("not a JWT")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "bad signature encoding")?;
    Ok((input, signature))
}

fn verify_rs256(jwt: &str, keys: &ProviderKeys) -> Result<(Value, Value), String> {
    let header = part(jwt, 0)?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} is not RS256", header["alg"]));
    }
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let (n, e) = keys.get(kid).ok_or("unknown kid")?;
    let (input, signature) = signed_parts(jwt)?;
    RsaPublicKeyComponents { n, e }
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            input.as_bytes(),
            &signature,
        )
        .map_err(|_| "bad signature")?;
    Ok((header, part(jwt, 1)?))
}

fn verify_proof(proof: &str) -> Result<(Value, Value), String> {
    let header = part(proof, 0)?;
    if header["typ"] != "dpop+jwt" || header["alg"] != "ES256" {
        return Err("proof is not a dpop+jwt ES256".into());
    }
    let jwk = &header["jwk"];
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || !jwk["d"].is_null() {
        return Err("proof key is not a public P-256 key".into());
    }
    let mut point = vec![4u8];
    for member in ["x", "y"] {
        let coordinate = jwk[member].as_str().ok_or("no coordinate")?;
        point.extend(
            URL_SAFE_NO_PAD
                .decode(coordinate)
                .map_err(|_| "bad coordinate")?,
        );
    }
    let (input, signature) = signed_parts(proof)?;
    UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(input.as_bytes(), &signature)
        .map_err(|_| "bad proof signature")?;
    Ok((header, part(proof, 1)?))
}

/// RFC 7638 thumbprint of an EC public JWK.
pub fn thumbprint(jwk: &Value) -> String {
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap_or_default(),
        jwk["y"].as_str().unwrap_or_default()
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

async fn handle(req: HttpRequest, upstream: web::Data<TokenUpstream>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen = upstream.check(
        req.method().as_str(),
        req.path(),
        header("authorization"),
        header("dpop"),
    );
    match seen.refusal.as_deref() {
        None => HttpResponse::Ok().json(json!({ "claims": seen.claims, "proof": seen.proof })),
        Some("use_dpop_nonce") => {
            let nonce = upstream
                .state
                .lock()
                .expect("state")
                .nonce
                .clone()
                .unwrap_or_default();
            HttpResponse::Unauthorized()
                .insert_header((
                    "www-authenticate",
                    r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#,
                ))
                .insert_header(("dpop-nonce", nonce))
                .json(json!({ "error": "use_dpop_nonce" }))
        }
        Some(refusal) => HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", r#"Bearer error="invalid_token""#))
            .json(json!({ "error": "invalid_token", "why": refusal })),
    }
}

/// The provider's signing keys (RSA), by key id.
async fn provider_keys(issuer: &str) -> ProviderKeys {
    let http = reqwest::Client::new();
    let discovery: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON");
    let jwks: Value = http
        .get(discovery["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks JSON");
    let decode = |v: &Value| {
        URL_SAFE_NO_PAD
            .decode(v.as_str().expect("member"))
            .expect("b64")
    };
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|key| key["kty"] == "RSA")
        .map(|key| {
            (
                key["kid"].as_str().expect("kid").to_owned(),
                (decode(&key["n"]), decode(&key["e"])),
            )
        })
        .collect()
}

/// An upstream whose tokens must be the provider's (`issuer`) and name `audience`; the
/// audience `None` is the upstream's own base URL.
pub async fn spawn_token_upstream(issuer: &str, audience: Option<&str>) -> TokenUpstream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let upstream = TokenUpstream {
        audience: audience.map_or_else(|| base.clone(), str::to_owned),
        base,
        keys: Arc::new(provider_keys(issuer).await),
        state: Arc::default(),
    };
    let data = web::Data::new(upstream.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(handle))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen");
    tokio::spawn(server.run());
    upstream
}
