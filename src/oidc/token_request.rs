//! Token requests gatehouse words itself (the openidconnect client has no resource
//! indicator on a refresh, no token exchange and no DPoP): a form POST to the token
//! endpoint with the client's authentication, and the answer read as RFC 6749 says.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{token_endpoint, OidcError, Provider};
use crate::dpop::{wall_clock_secs, DpopKey, ProofTarget};

/// What a token endpoint granted.
pub struct GrantedToken {
    pub access_token: SecretString,
    /// `Bearer`, `DPoP`, or (RFC 8693) `N_A` and the like.
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh_token: Option<SecretString>,
    /// Keycloak's and Entra ID's spellings of the refresh token's lifetime.
    pub refresh_expires_in: Option<u64>,
    pub scope: Option<String>,
    pub id_token: Option<SecretString>,
}

#[derive(Deserialize)]
struct RawGranted {
    access_token: String,
    token_type: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
    refresh_expires_in: Option<u64>,
    refresh_token_expires_in: Option<u64>,
    scope: Option<String>,
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct RawRefusal {
    error: String,
    error_description: Option<String>,
}

/// The most of a token response that is read: an answer larger is not a token response.
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

impl Provider {
    /// POSTs `form` (the grant and its parameters) to the token endpoint, authenticated as
    /// the client. With `dpop`, each attempt carries a fresh proof of that key; a
    /// `use_dpop_nonce` refusal is answered once with the nonce the provider sent (RFC 9449
    /// §8), and the latest nonce is kept for the next request.
    pub(super) async fn token_request(
        &self,
        form: Vec<(&'static str, String)>,
        dpop: Option<&DpopKey>,
    ) -> Result<GrantedToken, OidcError> {
        let discovered = self.current()?;
        let endpoint = token_endpoint(&discovered)?;
        let Some(key) = dpop else {
            return self.send_token_request(endpoint, form, None).await;
        };
        let mut retried = false;
        loop {
            let (proof, nonce) = self.token_endpoint_proof(key, "POST", endpoint)?;
            match self
                .send_token_request(endpoint, form.clone(), Some(proof))
                .await
            {
                Err(OidcError::Rejected { error, .. })
                    if error == "use_dpop_nonce" && !retried && self.dpop_nonce() != nonce =>
                {
                    retried = true;
                }
                outcome => return outcome,
            }
        }
    }

    /// A fresh proof of `key` for a request to the provider, with the provider's latest
    /// `DPoP-Nonce`; and that nonce, to tell a new one from it when the answer asks for one.
    fn token_endpoint_proof(
        &self,
        key: &DpopKey,
        method: &str,
        url: &str,
    ) -> Result<(String, Option<String>), OidcError> {
        let nonce = self.dpop_nonce();
        let proof = key
            .proof(
                &ProofTarget {
                    method,
                    url,
                    nonce: nonce.as_deref(),
                    access_token: None,
                },
                wall_clock_secs(),
            )
            .map_err(|e| OidcError::ClientAssertion(e.to_string()))?;
        Ok((proof, nonce))
    }

    async fn send_token_request(
        &self,
        endpoint: &str,
        form: Vec<(&'static str, String)>,
        proof: Option<String>,
    ) -> Result<GrantedToken, OidcError> {
        let mut request = self.authenticated_form_post(endpoint, form)?;
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| OidcError::transport("token endpoint", e))?;
        let status = response.status();
        if let Some(nonce) = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
        {
            self.remember_dpop_nonce(nonce);
        }
        let bytes = read_bounded(response).await?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<RawRefusal>(&bytes) {
                Ok(refusal) => OidcError::Rejected {
                    error: refusal.error,
                    description: refusal.error_description,
                },
                Err(_) => OidcError::Transport {
                    what: format!("token endpoint answered {status}"),
                    source: None,
                },
            });
        }
        let granted: RawGranted = serde_json::from_slice(&bytes).map_err(|e| {
            OidcError::BadResponse(format!("token response: {}", e.classify_name()))
        })?;
        Ok(GrantedToken {
            access_token: SecretString::from(granted.access_token),
            token_type: granted.token_type,
            expires_in: granted.expires_in.map(Duration::from_secs),
            refresh_token: granted.refresh_token.map(SecretString::from),
            refresh_expires_in: granted
                .refresh_expires_in
                .or(granted.refresh_token_expires_in)
                .filter(|secs| *secs > 0),
            scope: granted.scope,
            id_token: granted.id_token.map(SecretString::from),
        })
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// What went wrong, without the text (which may quote the token).
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "a member is missing or of the wrong type",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OidcError::transport("token endpoint", e))?
    {
        if bytes.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(OidcError::BadResponse("token response too large".into()));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

impl Provider {
    /// The HTTP client the openidconnect requests go through when the session has a DPoP
    /// key: each attempt carries a fresh proof; `use_dpop_nonce` gets one retry with the
    /// provider's nonce. (The body is sent again as it was: a `private_key_jwt` assertion in
    /// it is then presented twice, which a provider that refuses replayed assertions turns
    /// down; the nonce it sent is kept, so the next request carries it from the start.)
    pub(super) async fn send_with_proof(
        &self,
        request: openidconnect::HttpRequest,
        key: &DpopKey,
    ) -> Result<openidconnect::HttpResponse, OidcError> {
        let url = crate::dpop::htu(
            &url::Url::parse(&request.uri().to_string())
                .map_err(|_| OidcError::Discovery("token endpoint is not a URL".into()))?,
        );
        let mut retried = false;
        loop {
            let (proof, nonce) = self.token_endpoint_proof(key, request.method().as_str(), &url)?;
            let mut outgoing = self
                .http
                .request(request.method().clone(), request.uri().to_string())
                .header("dpop", proof)
                .body(request.body().clone());
            for (name, value) in request.headers() {
                outgoing = outgoing.header(name, value);
            }
            let response = outgoing
                .send()
                .await
                .map_err(|e| OidcError::transport("token endpoint", e))?;
            let status = response.status();
            let headers = response.headers().clone();
            if let Some(nonce) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
                self.remember_dpop_nonce(nonce);
            }
            let body = read_bounded(response).await?;
            let wants_nonce = status == reqwest::StatusCode::BAD_REQUEST
                && serde_json::from_slice::<RawRefusal>(&body)
                    .is_ok_and(|refusal| refusal.error == "use_dpop_nonce");
            if wants_nonce && !retried && self.dpop_nonce() != nonce {
                retried = true;
                continue;
            }
            let mut answer = http::Response::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            return Ok(answer);
        }
    }
}
