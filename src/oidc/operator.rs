//! What the admin API does to a user's sessions on an operator's behalf: list them, and end
//! them (revoking each refresh token at its provider where `session.revocation_key` lets
//! gatehouse open it). Sessions are found through the store's per-user index at every
//! configured provider; an operator's session id is the store key, which the security
//! events' `session` field shows the start of.

use crate::clock::UnixMillis;
use crate::session::SessionSummary;

use super::flows::{AuthFlows, FlowError};

/// One session as the admin API lists it.
#[derive(Debug)]
pub struct OperatorListing {
    /// The store key (a hash of the session id; it opens nothing).
    pub id: String,
    pub provider: String,
    pub device: String,
    pub created_at: UnixMillis,
    pub last_used_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// A session the admin API ended.
#[derive(Debug)]
pub struct EndedByOperator {
    pub store_key: String,
    pub provider: String,
    pub sub: String,
    /// Whether its refresh token went back to the provider.
    pub revoked: bool,
}

impl AuthFlows {
    /// Every live session of `sub`, at every configured provider, newest use first.
    pub async fn sessions_of(
        &self,
        sub: &str,
        now: UnixMillis,
    ) -> Result<Vec<OperatorListing>, FlowError> {
        let mut listed = Vec::new();
        for summary in self.summaries_of(sub, now).await? {
            listed.push(OperatorListing {
                device: if summary.device.is_empty() {
                    crate::session::device::UNKNOWN_DEVICE.to_owned()
                } else {
                    summary.device
                },
                id: summary.key,
                provider: summary.provider,
                created_at: summary.created_at,
                last_used_at: summary.last_seen_at,
                expires_at: summary.absolute_expires_at,
            });
        }
        listed.sort_by(|a, b| b.last_used_at.cmp(&a.last_used_at).then(a.id.cmp(&b.id)));
        Ok(listed)
    }

    /// Ends every session of `sub` at every configured provider.
    pub async fn end_sessions_of(
        &self,
        sub: &str,
        now: UnixMillis,
    ) -> Result<Vec<EndedByOperator>, FlowError> {
        let mut ended = Vec::new();
        for summary in self.summaries_of(sub, now).await? {
            if let Some(done) = self.end_for_operator(summary, now).await? {
                ended.push(done);
            }
        }
        Ok(ended)
    }

    /// Ends the session stored under `store_key`; `None` when there is none.
    pub async fn end_session_by_key(
        &self,
        store_key: &str,
        now: UnixMillis,
    ) -> Result<Option<EndedByOperator>, FlowError> {
        let summary = self
            .sessions
            .records()
            .summary(store_key)
            .await
            .map_err(crate::session::SessionError::from)?;
        match summary {
            Some(summary) => self.end_for_operator(summary, now).await,
            None => Ok(None),
        }
    }

    async fn end_for_operator(
        &self,
        summary: SessionSummary,
        now: UnixMillis,
    ) -> Result<Option<EndedByOperator>, FlowError> {
        Ok(self
            .end_other(summary.key, now)
            .await?
            .map(|done| EndedByOperator {
                store_key: done.store_key,
                provider: summary.provider,
                sub: summary.sub,
                revoked: done.revoked,
            }))
    }

    /// The summaries the per-user index lists at each provider, checked against the index
    /// (a corrupt index must not hand another user's session to the operator).
    async fn summaries_of(
        &self,
        sub: &str,
        now: UnixMillis,
    ) -> Result<Vec<SessionSummary>, FlowError> {
        let records = self.sessions.records();
        let mut found = Vec::new();
        for provider in self.providers.by_name.keys() {
            let keys = records
                .keys_by_sub(provider, sub, now)
                .await
                .map_err(crate::session::SessionError::from)?;
            for key in keys {
                let summary = records
                    .summary(&key)
                    .await
                    .map_err(crate::session::SessionError::from)?;
                if let Some(summary) = summary {
                    if summary.provider == *provider && summary.sub == sub {
                        found.push(summary);
                    }
                }
            }
        }
        Ok(found)
    }
}
