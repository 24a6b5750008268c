//! The security event catalogue: stable names, levels and fields that alerting keys on.
//! It depends on nothing else of gatehouse's, so that whatever counts or writes events
//! (metrics, the audit file, the log) can name them without importing each other.

use tracing::Level;

/// The target of every security event (and of nothing else): alerting and the audit file
/// select on it.
pub const SECURITY_TARGET: &str = "gatehouse::security";

/// The event's own fields, beside `event` (the request span adds request id, trace id,
/// method, path and client IP).
pub const SUB: &str = "sub";
pub const SESSION: &str = "session";
pub const REASON: &str = "reason";
pub const PROVIDER: &str = "provider";
/// The name of the operator token an admin API call came with.
pub const OPERATOR: &str = "operator";

/// Declares the catalogue once: the enum, `ALL` (in the order docs/events.md lists them),
/// and each event's name, level and fields. A new event cannot be left out of `ALL`.
macro_rules! catalogue {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $level:ident, [$($field:ident),*];)*) => {
        /// The security event catalogue: stable names that alerting can key on.
        /// docs/events.md lists each one (when it fires, its level and fields); a test keeps
        /// the two in step.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum SecurityEvent {
            $($(#[$doc])* $variant,)*
        }

        impl SecurityEvent {
            /// Every event, in the order docs/events.md lists them.
            pub const ALL: &'static [SecurityEvent] = &[$(SecurityEvent::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(SecurityEvent::$variant => $name,)*
                }
            }

            /// Info for what goes as planned, warn for a refusal or a failure.
            pub fn level(self) -> Level {
                match self {
                    $(SecurityEvent::$variant => Level::$level,)*
                }
            }

            /// The fields this event may carry a value in (the others are always empty).
            pub fn fields(self) -> &'static [&'static str] {
                match self {
                    $(SecurityEvent::$variant => &[$($field),*],)*
                }
            }
        }
    };
}

catalogue! {
    LoginStarted => "login.started", INFO, [];
    LoginSucceeded => "login.succeeded", INFO, [SUB, REASON];
    LoginFailed => "login.failed", WARN, [REASON];
    LogoutCompleted => "logout.completed", INFO, [SUB, SESSION, REASON];
    CsrfRejected => "csrf.rejected", WARN, [SUB, SESSION, REASON];
    SessionRejected => "session.rejected", WARN, [SUB, SESSION, REASON];
    BackchannelLogout => "backchannel_logout.received", INFO, [SUB, REASON];
    RefreshSucceeded => "refresh.succeeded", INFO, [SUB, SESSION, REASON];
    RefreshFailed => "refresh.failed", WARN, [SUB, SESSION, REASON];
    AuthorizationDenied => "authz.denied", WARN, [SUB, SESSION, REASON];
    StepUpRequired => "authz.step_up_required", WARN, [SUB, SESSION, REASON];
    RateLimited => "rate_limit.hit", WARN, [SESSION, REASON];
    SessionEndedByUser => "session.ended_by_user", INFO, [SUB, SESSION, REASON];
    TokenRevoked => "token.revoked", INFO, [PROVIDER, REASON];
    TokenRevocationFailed => "token.revocation_failed", WARN, [PROVIDER, REASON];
    FrontchannelLogout => "logout.frontchannel", INFO, [PROVIDER, REASON];
    AdminSessionsListed => "admin.sessions_listed", INFO, [OPERATOR, SUB, REASON];
    AdminSessionEnded => "admin.session_ended", INFO, [OPERATOR, PROVIDER, SUB, SESSION, REASON];
    AdminRejected => "admin.rejected", WARN, [REASON];
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS_MD: &str = include_str!("../../docs/events.md");

    /// docs/events.md's catalogue table: (name, level, fields) per row.
    fn documented() -> Vec<(String, String, Vec<String>)> {
        let table = EVENTS_MD
            .split("<!-- catalogue:begin -->")
            .nth(1)
            .and_then(|rest| rest.split("<!-- catalogue:end -->").next())
            .expect("docs/events.md has the catalogue markers");
        table
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
                assert_eq!(cells.len(), 3, "row {line}");
                let name = cells[0].trim_matches('`').to_owned();
                let fields = match cells[2] {
                    "—" => Vec::new(),
                    list => list
                        .split(',')
                        .map(|f| f.trim().trim_matches('`').to_owned())
                        .collect(),
                };
                (name, cells[1].to_owned(), fields)
            })
            .collect()
    }

    fn in_code() -> Vec<(String, String, Vec<String>)> {
        SecurityEvent::ALL
            .iter()
            .map(|event| {
                (
                    event.name().to_owned(),
                    event.level().as_str().to_ascii_lowercase(),
                    event.fields().iter().map(|f| (*f).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn docs_events_md_lists_exactly_the_catalogue() {
        let documented = documented();
        let code = in_code();
        for event in &code {
            assert!(
                documented.iter().any(|d| d.0 == event.0),
                "`{}` is in the code but not in docs/events.md",
                event.0
            );
        }
        for row in &documented {
            assert!(
                code.iter().any(|c| c.0 == row.0),
                "`{}` is in docs/events.md but not in SecurityEvent::ALL",
                row.0
            );
        }
        assert_eq!(documented, code, "docs/events.md and the code disagree");
        for (name, _, _) in &code {
            assert!(
                EVENTS_MD.contains(&format!("### `{name}`")),
                "docs/events.md has no section on `{name}`"
            );
        }
    }

    #[test]
    fn the_catalogue_names_are_unique() {
        let mut names: Vec<&str> = SecurityEvent::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SecurityEvent::ALL.len(), "a name twice");
    }
}
