//! The login and logout flows: OIDC plus sessions, still free of HTTP framework types.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::return_to::{validate_return_to, InvalidReturnTo};
use super::step_up::{check_login, LoginParameterError, LoginRequirements, Shortfall};
use super::{OidcError, Provider, Providers};
use crate::clock::UnixMillis;
use crate::config::SessionSettings;
use crate::observability::telemetry::{SecurityEvent, SecurityLog};
use crate::session::crypto::{b64, random_bytes};
use crate::session::{
    absolute_expiry, Claims, LoadedSession, LoginBinding, LoginBindings, LoginStateError,
    LogoutContinuation, ReplayMemory, SessionData, SessionError, SessionListing, SessionManager,
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
    ProviderDenied {
        code: String,
        return_to: String,
        /// The browser's other logins in flight (its login cookie's new value).
        bindings: LoginBindings,
    },
    #[error(transparent)]
    LoginParameter(#[from] LoginParameterError),
    /// The login completed but proved less than it asked for (`acr`, `auth_time`): no
    /// session is created, the browser's existing one stays, and it goes back to the app.
    #[error("the login falls short of what it asked for: {shortfall}")]
    InsufficientAuthentication {
        shortfall: Shortfall,
        return_to: String,
        bindings: LoginBindings,
    },
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// What `/auth/login` was asked for.
#[derive(Default)]
pub struct LoginRequest<'a> {
    pub return_to: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub provider: Option<&'a str>,
    /// Step-up: space-separated `acr` values, each on the provider's `allowed_acr_values`.
    pub acr_values: Option<&'a str>,
    /// Step-up: the most seconds since the user's authentication.
    pub max_age: Option<&'a str>,
}

pub struct LoginStart {
    pub authorization_url: url::Url,
    /// The login cookie's new value: this login's binding after the others in flight.
    pub bindings_cookie: SecretString,
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
    /// The browser's other logins still in flight.
    pub bindings: LoginBindings,
    /// The session this login replaced, ended (its refresh token revoked).
    pub replaced: Option<(String, String)>,
}

/// A session the user ended from their list.
#[derive(Debug)]
pub struct EndedByUser {
    pub store_key: String,
    /// Whether it was the caller's own session (its cookie is to be expired).
    pub current: bool,
    /// Whether its refresh token went to the provider's revocation endpoint.
    pub revoked: bool,
    /// For the caller's own session: where the browser goes next, as after a logout.
    pub redirect: Option<url::Url>,
}

pub struct LogoutDone {
    /// Where the browser goes next: the provider's end-session endpoint, a continuation on
    /// gatehouse that carries the ID token there, or `post_logout_redirect`.
    pub redirect: url::Url,
    /// Whether a session existed and was ended.
    pub ended: Option<(String, String)>,
}

const PROMPTS: &[&str] = &["none", "login", "consent", "select_account", "create"];

/// How long a logout continuation can be followed.
pub const LOGOUT_CONTINUATION_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// How the ID token reaches the provider's end-session endpoint as `id_token_hint`.
pub enum HintDelivery<'a> {
    /// In the redirect itself: the answer is a 302 the browser follows, never read by
    /// JavaScript.
    Redirect,
    /// Through a one-time continuation on gatehouse (`base` is the public URL): the answer
    /// is JSON that the SPA reads, which must not hold the ID token.
    Continuation { base: &'a url::Url },
}

pub struct AuthFlows {
    pub providers: Arc<Providers>,
    pub sessions: SessionManager,
    /// Logout tokens seen lately, to refuse a replayed back-channel logout.
    pub replay: Arc<dyn ReplayMemory>,
    pub session_settings: SessionSettings,
    /// The flows' security events (revocations): logged, and counted with an admin listener.
    pub events: SecurityLog,
}

impl AuthFlows {
    /// `bindings`: the logins this browser already has in flight (its login cookie), which
    /// stay valid beside the new one.
    pub async fn begin_login(
        &self,
        asked: LoginRequest<'_>,
        mut bindings: LoginBindings,
        now: UnixMillis,
    ) -> Result<LoginStart, FlowError> {
        let return_to = validate_return_to(asked.return_to.unwrap_or("/"))?;
        let prompt = asked.prompt;
        if let Some(prompt) = prompt {
            if prompt.is_empty() || !prompt.split(' ').all(|p| PROMPTS.contains(&p)) {
                return Err(FlowError::InvalidPrompt);
            }
        }
        let provider = self
            .providers
            .get(asked.provider)
            .ok_or(FlowError::UnknownProvider)?;
        // Refused here, before the provider is contacted.
        let step_up =
            LoginRequirements::parse(asked.acr_values, asked.max_age, &provider.settings)?;
        let mut request =
            provider.begin_login(return_to, prompt.map(str::to_owned), step_up, now)?;
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
        bindings.push(binding);
        Ok(LoginStart {
            authorization_url: request.url,
            bindings_cookie: bindings
                .cookie_value()
                .unwrap_or_else(|| SecretString::from("")),
        })
    }

    /// Consumes the login state first, so that whatever happens next the same callback can
    /// never be replayed.
    pub async fn complete_login(
        &self,
        params: CallbackParams<'_>,
        mut bindings: LoginBindings,
        previous_session_cookie: Option<&str>,
        device: String,
        now: UnixMillis,
    ) -> Result<LoginDone, FlowError> {
        let state = params
            .state
            .filter(|s| !s.is_empty())
            .ok_or(FlowError::MissingState)?;
        let (login, opened_by) = self
            .sessions
            .take_login_state(state, &bindings, now)
            .await?;
        bindings.remove(opened_by);
        let provider = self
            .providers
            .get(Some(&login.provider))
            .ok_or(FlowError::UnknownProvider)?;
        provider.check_response_issuer(params.iss)?;
        if let Some(error) = params.error {
            return Err(FlowError::ProviderDenied {
                code: sanitize_error_code(error),
                return_to: login.return_to,
                bindings,
            });
        }
        let code = params
            .code
            .filter(|c| !c.is_empty())
            .ok_or(FlowError::MissingCode)?;
        let outcome = provider.complete_login(code, &login, now).await?;
        // Before anything replaces the browser's session: a login that proved less than it
        // asked for changes nothing.
        if let Err(shortfall) = check_login(
            &login,
            &outcome.authentication,
            now,
            provider.settings.clock_skew,
        ) {
            return Err(FlowError::InsufficientAuthentication {
                shortfall,
                return_to: login.return_to,
                bindings,
            });
        }

        let refresh_token_expires_at = outcome.tokens.refresh_token_expires_at;
        let data = SessionData {
            provider: login.provider.clone(),
            sub: outcome.sub.clone(),
            provider_sid: outcome.provider_sid,
            claims: Claims::from_map(&outcome.claims),
            authentication: outcome.authentication,
            tokens: outcome.tokens,
            logout_sid: b64(&random_bytes()[..16]),
            created_at: now,
            absolute_expires_at: absolute_expiry(
                now,
                self.session_settings.absolute_timeout,
                refresh_token_expires_at,
            ),
            device,
            route_tokens: Default::default(),
            dpop_key: outcome.dpop_key,
            memo: Default::default(),
        };
        // A new login always gets a new session id (no fixation); the one it replaces ends.
        // Its refresh token is revoked only when it came from another provider session:
        // within one, providers issue every login's tokens under the same grant, and most
        // (oidc-provider, Keycloak) revoke the whole grant with any of its refresh tokens,
        // which would end the new session as well (docs/decisions.md).
        let mut replaced = None;
        if let Some(previous) = previous_session_cookie {
            if let Ok(Some(old)) = self.sessions.load(previous, now).await {
                let old = &old;
                let another_grant = old.data.provider != data.provider
                    || old.data.sub != data.sub
                    || matches!(
                        (&old.data.provider_sid, &data.provider_sid),
                        (Some(before), Some(now)) if before != now
                    );
                if let (true, Some(token)) = (another_grant, &old.data.tokens.refresh_token) {
                    self.revoke_best_effort(&old.data.provider, token).await;
                }
                if self.sessions.delete(&old.store_key).await.unwrap_or(false) {
                    replaced = Some((old.data.sub.clone(), old.store_key.clone()));
                }
            }
        }
        let handle = self.sessions.create(&data, now).await?;
        Ok(LoginDone {
            session_cookie: handle.cookie_value(),
            return_to: login.return_to,
            sub: outcome.sub,
            provider: login.provider,
            bindings,
            replaced,
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
    pub async fn logout(
        &self,
        session: Option<LoadedSession>,
        hint: HintDelivery<'_>,
        now: UnixMillis,
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
            self.revoke_best_effort(provider.name(), refresh_token)
                .await;
        }
        self.sessions.delete(&session.store_key).await?;
        let ended = Some((session.data.sub.clone(), session.store_key.clone()));
        let redirect = self
            .end_session_redirect(provider, session.data.tokens.id_token.clone(), hint, now)
            .await?;
        Ok(LogoutDone { redirect, ended })
    }

    /// Where a browser whose session ended goes: the provider's end-session endpoint with
    /// `id_token_hint` — directly, on a 302, or through a one-time continuation on
    /// gatehouse when the answer is one that JavaScript reads.
    async fn end_session_redirect(
        &self,
        provider: &Provider,
        id_token: SecretString,
        hint: HintDelivery<'_>,
        now: UnixMillis,
    ) -> Result<url::Url, FlowError> {
        if !provider.wants_id_token_hint() {
            return Ok(provider.logout_redirect(None));
        }
        match hint {
            HintDelivery::Redirect => Ok(provider.logout_redirect(Some(&id_token))),
            HintDelivery::Continuation { base } => {
                let continuation = LogoutContinuation {
                    provider: provider.name().to_owned(),
                    id_token,
                };
                let token = self
                    .sessions
                    .put_logout_continuation(continuation, LOGOUT_CONTINUATION_TTL, now)
                    .await?;
                let mut url = base.join("/auth/logout/continue").map_err(|_| {
                    FlowError::Oidc(OidcError::Discovery(
                        "the public URL cannot take a path".into(),
                    ))
                })?;
                url.query_pairs_mut()
                    .append_pair("t", token.expose_secret());
                Ok(url)
            }
        }
    }

    /// `GET /auth/logout/continue?t=`: the provider's end-session URL with the ID token of
    /// the continuation `token`, once; for anything else (unknown, used, expired, forged),
    /// `post_logout_redirect` of the default provider, without a word to any provider.
    pub async fn continue_logout(
        &self,
        token: &str,
        now: UnixMillis,
    ) -> Result<url::Url, FlowError> {
        let default = self.providers.get(None).ok_or(FlowError::UnknownProvider)?;
        let Some(continuation) = self.sessions.take_logout_continuation(token, now).await? else {
            return Ok(default.settings.post_logout_redirect.clone());
        };
        Ok(match self.providers.get(Some(&continuation.provider)) {
            Some(provider) => provider.logout_redirect(Some(&continuation.id_token)),
            None => default.settings.post_logout_redirect.clone(),
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
        continuation_base: &url::Url,
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
            if !self.sessions.delete(&key).await? {
                return Ok(None);
            }
            let provider = self
                .providers
                .get(Some(&data.provider))
                .ok_or(FlowError::UnknownProvider)?;
            let hint = HintDelivery::Continuation {
                base: continuation_base,
            };
            let redirect = self
                .end_session_redirect(provider, data.tokens.id_token.clone(), hint, now)
                .await?;
            return Ok(Some(EndedByUser {
                store_key: key,
                current: true,
                revoked,
                redirect: Some(redirect),
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
            .records()
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
    pub(super) async fn end_other(
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
            redirect: None,
        }))
    }

    /// Whether the provider took the refresh token back; a failure is logged, never fatal.
    async fn revoke_best_effort(&self, provider: &str, refresh_token: &SecretString) -> bool {
        let Some(provider) = self.providers.get(Some(provider)) else {
            tracing::warn!(%provider, "refresh token not revoked: the provider is no longer configured");
            self.events.log_for_provider(
                SecurityEvent::TokenRevocationFailed,
                Some(provider),
                None,
                None,
                Some("provider no longer configured"),
            );
            return false;
        };
        match provider
            .revoke_refresh_token(refresh_token, &self.events)
            .await
        {
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
