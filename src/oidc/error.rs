//! The OIDC layer's error, and how an OAuth token-endpoint error becomes one.

use openidconnect::core::CoreErrorResponseType;
use openidconnect::RequestTokenError;

use super::provider::{self, without_url};

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("identity provider `{0}` is not ready (discovery has not succeeded yet)")]
    NotReady(String),
    #[error("provider discovery failed: {0}")]
    Discovery(String),
    /// The provider could not be reached, or answered with a transport-level failure. The
    /// source, when there is one, is the HTTP client's error without its URL.
    #[error("cannot reach the identity provider: {what}")]
    Transport {
        what: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    /// gatehouse could not sign its own client assertion (`private_key_jwt`): a local
    /// failure, not the provider's.
    #[error("cannot sign the client assertion: {0}")]
    ClientAssertion(String),
    /// The HTTP client for the provider could not be built (its TLS settings): a local
    /// failure at start-up.
    #[error("cannot build the HTTP client for the identity provider")]
    HttpClient(#[source] reqwest::Error),
    /// The provider answered with an OAuth error (`invalid_grant`, …).
    #[error("identity provider refused: {error}")]
    Rejected {
        error: String,
        description: Option<String>,
    },
    #[error("identity provider answered unexpectedly: {0}")]
    BadResponse(String),
    #[error("ID token rejected: {0}")]
    InvalidIdToken(String),
    #[error("authorization response issuer does not match the provider")]
    IssuerMismatch,
}

impl OidcError {
    /// A failed call to the provider: what was being done, and the client's error (kept as
    /// the source, without its URL).
    pub fn transport(what: &str, error: reqwest::Error) -> Self {
        OidcError::Transport {
            what: format!("{what}: {}", provider::without_url(&error)),
            source: Some(error.without_url()),
        }
    }

    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, OidcError::Rejected { error, .. } if error == "invalid_grant")
    }
}

pub(super) fn token_error(
    error: RequestTokenError<
        impl std::error::Error + 'static,
        openidconnect::StandardErrorResponse<CoreErrorResponseType>,
    >,
) -> OidcError {
    match error {
        RequestTokenError::ServerResponse(response) => OidcError::Rejected {
            error: response.error().as_ref().to_owned(),
            description: response.error_description().cloned(),
        },
        // Generic over the client's error, which cannot be moved out as a reqwest::Error:
        // its kind is kept in the text.
        RequestTokenError::Request(e) => OidcError::Transport {
            what: format!("token endpoint: {}", source_kind(&e)),
            source: None,
        },
        RequestTokenError::Parse(e, _) => {
            OidcError::BadResponse(format!("token response: {}", e.path()))
        }
        RequestTokenError::Other(text) => OidcError::BadResponse(format!("token response: {text}")),
    }
}

/// Describes a transport error by its cause, never by its text (which may carry a URL).
fn source_kind(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(reqwest_error) = e.downcast_ref::<reqwest::Error>() {
            return without_url(reqwest_error);
        }
        current = e.source();
    }
    "request failed".to_owned()
}
