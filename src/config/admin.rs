//! `[admin]`: the operator's listener (`/metrics`, `/healthz`, `/readyz`). Nothing listens
//! unless `bind` is set.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawAdmin {
    pub(super) bind: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Where the admin listener binds; `None`: no admin listener.
    pub bind: Option<SocketAddr>,
}

/// The admin listener serves metrics, not browsers: it must not share the public address.
pub(super) fn validate_admin(
    raw: RawAdmin,
    server_bind: Option<SocketAddr>,
    problems: &mut Vec<String>,
) -> AdminSettings {
    let Some(text) = raw.bind else {
        return AdminSettings::default();
    };
    let bind = match text.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(e) => {
            problems.push(format!("admin.bind: `{text}`: {e}"));
            None
        }
    };
    if bind.is_some() && bind == server_bind && bind.is_some_and(|a| a.port() != 0) {
        problems.push("admin.bind must differ from server.bind".into());
    }
    AdminSettings { bind }
}
