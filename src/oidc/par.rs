//! Pushed authorization requests (RFC 9126): the authorization request's parameters go to
//! the provider over the back channel, authenticated as the client; the browser is sent to
//! the authorization endpoint with only `client_id` and the `request_uri` the provider
//! handed back. The parameters can then neither be read nor altered in the browser.

use tracing::Instrument;

use crate::observability::spans;
use secrecy::ExposeSecret;
use serde::Deserialize;
use url::Url;

use super::provider::Discovered;
use super::{OidcError, Provider};
use crate::config::{ClientAuthMethod, PushedAuthorization};

#[derive(Deserialize)]
struct PushedResponse {
    request_uri: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// The endpoint this login pushes to, if it pushes at all.
pub(super) fn par_endpoint(setting: PushedAuthorization, discovered: &Discovered) -> Option<&Url> {
    match setting {
        PushedAuthorization::Never => None,
        PushedAuthorization::Auto | PushedAuthorization::Always => discovered
            .extra
            .pushed_authorization_request_endpoint
            .as_ref(),
    }
}

/// RFC 6749 §2.3.1: the id and secret are form-encoded before they go into Basic auth.
fn form_encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl Provider {
    /// The URL to send the browser to: `authorization_url` itself, or, when pushing, the
    /// authorization endpoint with the `request_uri` the provider returned for its
    /// parameters.
    pub async fn push_authorization(&self, authorization_url: Url) -> Result<Url, OidcError> {
        let discovered = self.current()?;
        let Some(endpoint) = par_endpoint(self.settings.pushed_authorization, &discovered) else {
            return Ok(authorization_url);
        };
        let mut form: Vec<(String, String)> =
            authorization_url.query_pairs().into_owned().collect();
        let client_id = &self.settings.client_id;
        let secret = self.settings.client_secret.expose_secret();
        let mut request = self.http.post(endpoint.as_str());
        match self.settings.client_auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                request = request.basic_auth(form_encoded(client_id), Some(form_encoded(secret)));
            }
            ClientAuthMethod::ClientSecretPost => {
                form.retain(|(key, _)| key != "client_id");
                form.push(("client_id".into(), client_id.clone()));
                form.push(("client_secret".into(), secret.to_owned()));
            }
            ClientAuthMethod::PrivateKeyJwt => {
                form.retain(|(key, _)| key != "client_id");
                form.push(("client_id".into(), client_id.clone()));
                for (key, value) in self.assertion_params(endpoint.as_str())? {
                    form.push((key.into(), value));
                }
            }
        }
        let response = request
            .form(&form)
            .send()
            .instrument(spans::provider_call("par", self.name()))
            .await
            .map_err(|e| OidcError::transport("pushed authorization request", e))?;
        let status = response.status();
        if status.is_success() {
            let pushed: PushedResponse = response.json().await.map_err(|_| {
                OidcError::BadResponse("pushed authorization response is not JSON".into())
            })?;
            let mut url = discovered.metadata.authorization_endpoint().url().clone();
            url.query_pairs_mut()
                .clear()
                .append_pair("client_id", client_id)
                .append_pair("request_uri", &pushed.request_uri);
            return Ok(url);
        }
        match response.json::<ErrorResponse>().await {
            Ok(error) if status.is_client_error() => Err(OidcError::Rejected {
                error: error.error,
                description: error.error_description,
            }),
            _ => Err(OidcError::Transport {
                what: format!("pushed authorization request answered {status}"),
                source: None,
            }),
        }
    }
}
