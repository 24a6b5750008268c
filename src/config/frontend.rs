//! `[frontend]`: what answers the paths that are neither gatehouse's nor a route's, and the
//! security headers on every response.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawFrontend {
    pub(super) dir: Option<PathBuf>,
    pub(super) dev_server: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) content_security_policy: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) referrer_policy: Option<String>,
}

/// What gatehouse serves for the paths that are neither its own nor a proxy route, and the
/// security headers it puts on every response.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    pub source: FrontendSource,
    /// `None` when configured as "" (no header at all).
    pub content_security_policy: Option<String>,
    pub referrer_policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendSource {
    /// A built frontend on disk. `configured` is false for the default `static/`, which may
    /// be missing (an API-only deployment); a configured directory must exist.
    Dir { path: PathBuf, configured: bool },
    /// Every request no gatehouse route takes goes to this dev server (Vite and the like),
    /// WebSocket upgrades included. An origin: scheme, host and port only.
    DevServer(Url),
}

/// The Content-Security-Policy for a built frontend: same-origin everything, no plugins, no
/// framing (`frame-ancestors 'none'` is the clickjacking defence).
pub const DEFAULT_CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Dev servers inject inline scripts and styles and open a WebSocket for hot reload; framing
/// stays forbidden.
pub const DEFAULT_DEV_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; \
     object-src 'none'; base-uri 'self'; frame-ancestors 'none'";

pub(super) const REFERRER_POLICIES: &[&str] = &[
    "no-referrer",
    "no-referrer-when-downgrade",
    "origin",
    "origin-when-cross-origin",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];

pub(super) fn validate_frontend(
    raw: RawFrontend,
    problems: &mut Vec<String>,
) -> Option<FrontendSettings> {
    let start = problems.len();
    let source = match (raw.dir, raw.dev_server) {
        (Some(_), Some(_)) => {
            problems.push("frontend.dir and frontend.dev_server are both set: choose one".into());
            None
        }
        (None, Some(text)) => match Url::parse(&text) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(FrontendSource::DevServer(url))
            }
            Ok(_) => {
                problems.push(format!(
                    "frontend.dev_server: `{text}` must be an http(s) origin like \
                     http://127.0.0.1:5173 (no path, query or credentials)"
                ));
                None
            }
            Err(e) => {
                problems.push(format!("frontend.dev_server: `{text}`: {e}"));
                None
            }
        },
        (Some(path), None) => {
            if !path.is_dir() {
                problems.push(format!(
                    "frontend.dir: {} is not a directory",
                    path.display()
                ));
            }
            Some(FrontendSource::Dir {
                path,
                configured: true,
            })
        }
        (None, None) => Some(FrontendSource::Dir {
            path: PathBuf::from("static"),
            configured: false,
        }),
    };

    let content_security_policy = match raw.content_security_policy {
        Some(text) if text.trim().is_empty() => None,
        Some(text) => Some(text.trim().to_owned()),
        None => Some(
            match source {
                Some(FrontendSource::DevServer(_)) => DEFAULT_DEV_CSP,
                _ => DEFAULT_CSP,
            }
            .to_owned(),
        ),
    };
    if let Some(csp) = &content_security_policy {
        if actix_web::http::header::HeaderValue::from_str(csp).is_err() || csp.contains(',') {
            problems.push(
                "frontend.content_security_policy must be one policy on one line of visible \
                 ASCII (directives separated by `;`)"
                    .into(),
            );
        }
    }

    let referrer_policy = raw
        .referrer_policy
        .map(|p| p.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "no-referrer".into());
    if referrer_policy
        .split(',')
        .any(|token| !REFERRER_POLICIES.contains(&token.trim()))
    {
        problems.push(format!(
            "frontend.referrer_policy: `{referrer_policy}` is not one of {}",
            REFERRER_POLICIES.join(", ")
        ));
    }

    if problems.len() > start {
        return None;
    }
    Some(FrontendSettings {
        source: source?,
        content_security_policy,
        referrer_policy,
    })
}
