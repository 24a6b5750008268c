//! The login and logout flows: OIDC plus sessions, still free of HTTP framework types.

use std::sync::Arc;

use secrecy::SecretString;

use super::return_to::{validate_return_to, InvalidReturnTo};
use super::{OidcError, Provider, Providers};
use crate::clock::UnixMillis;
use crate::config::SessionSettings;
use crate::session::crypto::{b64, random_bytes};
use crate::session::{
    absolute_expiry, Claims, LoadedSession, LoginBinding, LoginStateError, SessionData,
    SessionError, SessionListing, SessionManager,
};

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    ReturnTo(#[from] InvalidReturnTo),
    #[error("unknown identity provider")]
    UnknownProvider,
    #[error("prompt must be one or more of none, login, consent, select_account, create")]
    InvalidPrompt,
    #[error("the callback has no state parameter")]
    MissingState,
    #[error("the callback has no code parameter")]
    MissingCode,
    #[error(transparent)]
    LoginState(#[from] LoginStateError),
    /// The provider redirected back with `error=…` (after the state checked out): the
    /// browser goes back to the app's `return_to`, which is told the code.
    #[error("the identity provider returned `{code}`")]
    ProviderDenied { code: String, return_to: String },
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

pub struct LoginStart {
    pub authorization_url: url::Url,
    pub binding_cookie: SecretString,
}

pub struct CallbackParams<'a> {
    pub code: Option<&'a str>,
    pub state: Option<&'a str>,
    pub error: Option<&'a str>,
    pub iss: Option<&'a str>,
}

pub struct LoginDone {
    pub session_cookie: SecretString,
    pub return_to: String,
    pub sub: String,
    pub provider: String,
}

/// A session the user ended from their list.
#[derive(Debug)]
pub struct EndedByUser {
    pub store_key: String,
    /// Whether it was the caller's own session (its cookie is to be expired).
    pub current: bool,
    /// Whether its refresh token went to the provider's revocation endpoint.
    pub revoked: bool,
}

pub struct LogoutDone {
    pub redirect: url::Url,
    /// Whether a session existed and was ended.
    pub ended: Option<(String, String)>,
}

const PROMPTS: &[&str] = &["none", "login", "consent", "select_account", "create"];

pub struct AuthFlows {
    pub providers: Arc<Providers>,
    pub sessions: SessionManager,
    pub session_settings: SessionSettings,
}

impl AuthFlows {
    pub async fn begin_login(
        &self,
        return_to: Option<&str>,
        prompt: Option<&str>,
        provider: Option<&str>,
        now: UnixMillis,
    ) -> Result<LoginStart, FlowError> {
        let return_to = validate_return_to(return_to.unwrap_or("/"))?;
        if let Some(prompt) = prompt {
            if prompt.is_empty() || !prompt.split(' ').all(|p| PROMPTS.contains(&p)) {
                return Err(FlowError::InvalidPrompt);
            }
        }
        let provider = self
            .providers
            .get(provider)
            .ok_or(FlowError::UnknownProvider)?;
        let mut request = provider.begin_login(return_to, prompt.map(str::to_owned), now)?;
        request.url = provider.push_authorization(request.url).await?;
        let binding = LoginBinding::generate();
        self.sessions
            .put_login_state(
                &request.state,
                &binding,
                &request.login,
                self.session_settings.login_state_ttl,
                now,
            )
            .await?;
        Ok(LoginStart {
            authorization_url: request.url,
            binding_cookie: binding.cookie_value(),
        })
    }

    /// Consumes the login state first, so that whatever happens next the same callback can
    /// never be replayed.
    pub async fn complete_login(
        &self,
        params: CallbackParams<'_>,
        binding_cookie: Option<&str>,
        previous_session_cookie: Option<&str>,
        device: String,
        now: UnixMillis,
    ) -> Result<LoginDone, FlowError> {
        let state = params
            .state
            .filter(|s| !s.is_empty())
            .ok_or(FlowError::MissingState)?;
        let binding = binding_cookie.and_then(LoginBinding::parse);
        let login = self
            .sessions
            .take_login_state(state, binding.as_ref(), now)
            .await?;
        let provider = self
            .providers
            .get(Some(&login.provider))
            .ok_or(FlowError::UnknownProvider)?;
        provider.check_response_issuer(params.iss)?;
        if let Some(error) = params.error {
            return Err(FlowError::ProviderDenied {
                code: sanitize_error_code(error),
                return_to: login.return_to,
            });
        }
        let code = params
            .code
            .filter(|c| !c.is_empty())
            .ok_or(FlowError::MissingCode)?;
        let outcome = provider.complete_login(code, &login, now).await?;

        let refresh_token_expires_at = outcome.tokens.refresh_token_expires_at;
        let data = SessionData {
            provider: login.provider.clone(),
            sub: outcome.sub.clone(),
            provider_sid: outcome.provider_sid,
            claims: Claims::from_map(&outcome.claims),
            tokens: outcome.tokens,
            logout_sid: b64(&random_bytes()[..16]),
            created_at: now,
            absolute_expires_at: absolute_expiry(
                now,
                self.session_settings.absolute_timeout,
                refresh_token_expires_at,
            ),
            device,
        };
        // A new login always gets a new session id (no fixation); the one it replaces ends.
        if let Some(previous) = previous_session_cookie {
            if let Ok(Some(old)) = self.sessions.load(previous, now).await {
                let _ = self.sessions.delete(&old.store_key).await;
            }
        }
        let handle = self.sessions.create(&data, now).await?;
        Ok(LoginDone {
            session_cookie: handle.cookie_value(),
            return_to: login.return_to,
            sub: outcome.sub,
            provider: login.provider,
        })
    }

    pub async fn current_session(
        &self,
        cookie: Option<&str>,
        now: UnixMillis,
    ) -> Result<Option<LoadedSession>, FlowError> {
        match cookie {
            Some(cookie) => Ok(self.sessions.load(cookie, now).await?),
            None => Ok(None),
        }
    }

    /// Revokes the refresh token at the provider (best effort: a provider outage must not
    /// keep the user logged in here), deletes the session and its indices, and says where the
    /// browser goes next.
    /// `hint_allowed`: whether the redirect may carry `id_token_hint`. Only a 302 to the
    /// browser may; an answer that the SPA's JavaScript reads must not hold the ID token.
    pub async fn logout(
        &self,
        session: Option<LoadedSession>,
        hint_allowed: bool,
    ) -> Result<LogoutDone, FlowError> {
        let Some(session) = session else {
            let provider = self.providers.get(None).ok_or(FlowError::UnknownProvider)?;
            return Ok(LogoutDone {
                redirect: provider.logout_redirect(None),
                ended: None,
            });
        };
        let provider = self
            .providers
            .get(Some(&session.data.provider))
            .ok_or(FlowError::UnknownProvider)?;
        if let Some(refresh_token) = &session.data.tokens.refresh_token {
            if let Err(error) = provider.revoke_refresh_token(refresh_token).await {
                tracing::warn!(provider = %provider.name(), %error, "refresh token revocation failed; session ends anyway");
            }
        }
        self.sessions.delete(&session.store_key).await?;
        Ok(LogoutDone {
            redirect: provider
                .logout_redirect(Some(&session.data.tokens.id_token).filter(|_| hint_allowed)),
            ended: Some((session.data.sub.clone(), session.store_key.clone())),
        })
    }

    /// The caller's sessions (same provider and `sub`) at every instance.
    pub async fn list_sessions(
        &self,
        current: &LoadedSession,
        now: UnixMillis,
    ) -> Result<Vec<SessionListing>, FlowError> {
        Ok(self
            .sessions
            .list_for_user(
                &current.data.provider,
                &current.data.sub,
                &current.store_key,
                now,
            )
            .await?)
    }

    /// Ends the caller's session with this public id, revoking its refresh token at the
    /// provider (best effort, as logout does). `None` when no session of the caller's has
    /// that id: another user's, an unknown or a malformed id all look the same.
    pub async fn end_session(
        &self,
        current: &LoadedSession,
        public_id: &str,
        now: UnixMillis,
    ) -> Result<Option<EndedByUser>, FlowError> {
        let data = &current.data;
        let Some(key) = self
            .sessions
            .find_by_public_id(&data.provider, &data.sub, public_id, now)
            .await?
        else {
            return Ok(None);
        };
        if key == current.store_key {
            // The caller's own: its tokens are at hand, as at logout.
            let revoked = match &data.tokens.refresh_token {
                Some(token) => self.revoke_best_effort(&data.provider, token).await,
                None => false,
            };
            let existed = self.sessions.delete(&key).await?;
            return Ok(existed.then_some(EndedByUser {
                store_key: key,
                current: true,
                revoked,
            }));
        }
        self.end_other(key, now).await
    }

    /// Ends every session of the caller's but the current one.
    pub async fn end_other_sessions(
        &self,
        current: &LoadedSession,
        now: UnixMillis,
    ) -> Result<Vec<EndedByUser>, FlowError> {
        let data = &current.data;
        let keys = self
            .sessions
            .store()
            .keys_by_sub(&data.provider, &data.sub, now)
            .await
            .map_err(SessionError::from)?;
        let mut ended = Vec::new();
        for key in keys.into_iter().filter(|key| *key != current.store_key) {
            if let Some(done) = self.end_other(key, now).await? {
                ended.push(done);
            }
        }
        Ok(ended)
    }

    /// Another session of the user's: its refresh token is revoked when the server-held
    /// revocation key opens its envelope; it is deleted either way.
    async fn end_other(
        &self,
        key: String,
        now: UnixMillis,
    ) -> Result<Option<EndedByUser>, FlowError> {
        let Some(revocable) = self.sessions.end_other(&key, now).await? else {
            return Ok(None);
        };
        let revoked = match revocable {
            Some(revocable) => {
                self.revoke_best_effort(&revocable.provider, &revocable.refresh_token)
                    .await
            }
            None => false,
        };
        Ok(Some(EndedByUser {
            store_key: key,
            current: false,
            revoked,
        }))
    }

    /// Whether the provider took the refresh token back; a failure is logged, never fatal.
    async fn revoke_best_effort(&self, provider: &str, refresh_token: &SecretString) -> bool {
        let Some(provider) = self.providers.get(Some(provider)) else {
            tracing::warn!(%provider, "refresh token not revoked: the provider is no longer configured");
            crate::telemetry::provider_security_event(
                crate::telemetry::SecurityEvent::TokenRevocationFailed,
                Some(provider),
                None,
                None,
                Some("provider no longer configured"),
            );
            return false;
        };
        match provider.revoke_refresh_token(refresh_token).await {
            Ok(revoked) => revoked,
            Err(error) => {
                tracing::warn!(provider = %provider.name(), %error, "refresh token revocation failed; session ends anyway");
                false
            }
        }
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(Some(name))
    }
}

/// Provider error codes are ASCII words; anything else is not echoed.
pub fn sanitize_error_code(raw: &str) -> String {
    if !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        raw.to_owned()
    } else {
        "invalid_error_code".to_owned()
    }
}
