//! `[admin]`: the operator's listener (`/metrics`, `/healthz`, `/readyz`, and the admin API
//! when `api_token_file` is set). Nothing listens unless `bind` is set.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawAdmin {
    pub(super) bind: Option<String>,
    /// A file of `name:token` lines, one per operator (or tool); the admin API is off
    /// without it.
    pub(super) api_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Where the admin listener binds; `None`: no admin listener.
    pub bind: Option<SocketAddr>,
    /// The bearer tokens the admin API accepts, each with the name its events carry; empty:
    /// the admin API is off.
    pub api_tokens: Vec<OperatorToken>,
}

/// One operator's bearer token for the admin API, and the name that the security events of
/// its calls carry (the token itself never appears anywhere).
#[derive(Clone)]
pub struct OperatorToken {
    pub name: String,
    pub token: SecretString,
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A token shorter than this is refused: it must not be guessable (256 bits in base64url is
/// 43 characters).
pub const MIN_OPERATOR_TOKEN_CHARS: usize = 32;

/// The admin listener serves metrics, not browsers: it must not share the public address.
pub(super) fn validate_admin(
    raw: RawAdmin,
    server_bind: Option<SocketAddr>,
    problems: &mut Vec<String>,
) -> AdminSettings {
    let api_tokens = match &raw.api_token_file {
        Some(path) => read_operator_tokens(path, problems),
        None => Vec::new(),
    };
    let Some(text) = raw.bind else {
        if raw.api_token_file.is_some() {
            problems.push(
                "admin.api_token_file is set but admin.bind is not: the admin API is served \
                 on the admin listener only"
                    .into(),
            );
        }
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
    AdminSettings { bind, api_tokens }
}

/// `name:token` per line; blank lines and `#` comments are skipped. Names are unique and
/// plain (they go into log lines); tokens are long and unique.
fn read_operator_tokens(path: &Path, problems: &mut Vec<String>) -> Vec<OperatorToken> {
    let what = "admin.api_token_file";
    let Some(text) = read_secret_file(path, what, problems) else {
        return Vec::new();
    };
    let mut tokens: Vec<OperatorToken> = Vec::new();
    for (number, line) in text.expose_secret().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The line number, never the line: it holds a token.
        let at = format!("{what}: line {}", number + 1);
        let Some((name, token)) = line.split_once(':') else {
            problems.push(format!("{at}: expected `name:token`"));
            continue;
        };
        let (name, token) = (name.trim(), token.trim());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            problems.push(format!(
                "{at}: the name must be letters, digits and - _ . @ only"
            ));
            continue;
        }
        if token.len() < MIN_OPERATOR_TOKEN_CHARS {
            problems.push(format!(
                "{at}: the token of `{name}` is shorter than {MIN_OPERATOR_TOKEN_CHARS} \
                 characters (e.g. `openssl rand 32 | basenc --base64url`)"
            ));
            continue;
        }
        if tokens.iter().any(|t| t.name == name) {
            problems.push(format!("{at}: the name `{name}` appears twice"));
            continue;
        }
        if tokens.iter().any(|t| t.token.expose_secret() == token) {
            problems.push(format!("{at}: `{name}` has the token of another name"));
            continue;
        }
        tokens.push(OperatorToken {
            name: name.to_owned(),
            token: SecretString::from(token.to_owned()),
        });
    }
    if tokens.is_empty() && problems.iter().all(|p| !p.starts_with(what)) {
        problems.push(format!(
            "{what}: {} holds no `name:token` line",
            path.display()
        ));
    }
    tokens
}
