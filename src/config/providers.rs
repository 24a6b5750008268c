//! `[providers.<name>]`: the OpenID Providers gatehouse logs users in at.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawProvider {
    pub(super) issuer: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) client_id: Option<String>,
    #[serde(default, deserialize_with = "secret_from_scalar")]
    pub(super) client_secret: Option<SecretString>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_auth_method: Option<String>,
    pub(super) client_key_file: Option<PathBuf>,
    pub(super) client_key_id: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    #[serde(default)]
    pub(super) extra_authorize_params: BTreeMap<String, String>,
    pub(super) post_logout_redirect: Option<String>,
    pub(super) http_timeout_secs: Option<u64>,
    pub(super) clock_skew_secs: Option<u64>,
    pub(super) end_session_id_token_hint: Option<bool>,
    pub(super) pushed_authorization: Option<String>,
    pub(super) preset: Option<String>,
    pub(super) allowed_tenants: Option<Vec<String>>,
    /// The `acr_values` a login may ask this provider for (step-up).
    pub(super) allowed_acr_values: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) revocation_endpoint: Option<String>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) end_session_endpoint: Option<String>,
    /// RFC 9449: sender-constrained tokens, a key per session.
    pub(super) dpop: Option<bool>,
}

/// Pushed authorization requests (RFC 9126): the authorization parameters go to the
/// provider over the back channel, and the browser carries only a reference to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushedAuthorization {
    /// When the provider advertises a pushed authorization request endpoint.
    Auto,
    /// Always; a provider without the endpoint is not ready (and fails `check-config
    /// --online`).
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523: a JWT signed with the client's own key (`client_key`); no secret.
    PrivateKeyJwt,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    /// Kept as written: the provider's `iss` must match it exactly (a trailing slash counts).
    pub issuer: String,
    pub client_id: String,
    /// Empty with `private_key_jwt`, which uses `client_key` instead.
    pub client_secret: SecretString,
    pub client_auth_method: ClientAuthMethod,
    /// The signing key for `private_key_jwt` (and only then).
    pub client_key: Option<crate::client_key::ClientKey>,
    pub scopes: Vec<String>,
    pub extra_authorize_params: BTreeMap<String, String>,
    pub redirect_uri: Url,
    /// Absolute URL the provider sends the browser to after logout.
    pub post_logout_redirect: Url,
    pub http_timeout: Duration,
    pub clock_skew: Duration,
    pub end_session_id_token_hint: bool,
    pub pushed_authorization: PushedAuthorization,
    /// `preset = "…"`: the provider's defaults and refusals (already applied to the rest).
    pub preset: Option<&'static super::presets::Preset>,
    /// Entra ID multi-tenant: discovery names `issuer_template`, and each ID token's `iss`
    /// must be it with the token's `tid`.
    pub issuer_template: Option<String>,
    /// With `issuer_template`: the tenants whose users may log in (empty: any).
    pub allowed_tenants: Vec<String>,
    /// The `acr_values` a login (`/auth/login?acr_values=`) may ask for; any other is 400.
    pub allowed_acr_values: Vec<String>,
    /// RFC 7009 revocation endpoint, set by the operator: wins over what the provider
    /// advertises (for a provider that advertises none, or the wrong one).
    pub revocation_endpoint: Option<Url>,
    /// RP-initiated logout endpoint, set by the operator: wins over discovery.
    pub end_session_endpoint: Option<Url>,
    /// RFC 8707: the resources of this provider's routes, asked for at login so that the
    /// grant covers them (each route's token is then one refresh away).
    pub resources: Vec<String>,
    /// The scopes those routes ask for, added to the login's scopes.
    pub resource_scopes: Vec<String>,
    /// RFC 9449: each session gets its own key, token requests and proxied calls carry
    /// proofs, and the provider's tokens are bound to the key.
    pub dpop: bool,
}

impl ProviderSettings {
    /// Whether `other` configures the very same client, its credentials included: a live
    /// reload keeps a provider only then. `Debug` shows every setting but the credentials
    /// (redacted), so those are compared here besides: the secret in constant time, the
    /// client key by its public half (a new key under the old `kid` is a change). A
    /// credential field added later must join this comparison.
    pub fn same_client_as(&self, other: &Self) -> bool {
        let same_secret: bool = subtle::ConstantTimeEq::ct_eq(
            self.client_secret.expose_secret().as_bytes(),
            other.client_secret.expose_secret().as_bytes(),
        )
        .into();
        let same_key = match (&self.client_key, &other.client_key) {
            (None, None) => true,
            (Some(mine), Some(theirs)) => mine.public_jwk() == theirs.public_jwk(),
            _ => false,
        };
        same_secret && same_key && format!("{self:?}") == format!("{other:?}")
    }
}

/// An endpoint URL set in the configuration: absolute, https (plain http only on loopback,
/// as for the issuer), and without a fragment.
fn endpoint_url(field: &str, raw: Option<&str>, problems: &mut Vec<String>) -> Option<Url> {
    let text = raw?;
    match Url::parse(text) {
        Ok(url)
            if (url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)))
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none() =>
        {
            Some(url)
        }
        Ok(_) => {
            problems.push(format!(
                "{field} must be an https URL (plain http only on loopback), without user \
                 info or fragment"
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{field}: `{text}` is not an absolute URL ({e})"));
            None
        }
    }
}

pub(super) fn validate_provider(
    name: &str,
    raw: RawProvider,
    public_url: Option<&Url>,
    problems: &mut Vec<String>,
) -> Option<ProviderSettings> {
    let start = problems.len();
    let at = |field: &str| format!("providers.{name}.{field}");

    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(format!(
            "provider name `{name}` may only use letters, digits, - and _"
        ));
    }
    let preset = match raw.preset.as_deref() {
        None => None,
        Some(text) => {
            let found = super::presets::find(text);
            if found.is_none() {
                problems.push(format!(
                    "{}: `{text}` is not one of {}",
                    at("preset"),
                    super::presets::names()
                ));
            }
            found
        }
    };
    let issuer = match raw.issuer.as_deref().map(|text| (text, Url::parse(text))) {
        None => {
            problems.push(format!("{} is required", at("issuer")));
            None
        }
        Some((text, Ok(url)))
            if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) =>
        {
            Some(text.to_owned())
        }
        Some((_, Ok(_))) => {
            problems.push(format!(
                "{} must be an https URL (plain http only on loopback)",
                at("issuer")
            ));
            None
        }
        Some((_, Err(e))) => {
            problems.push(format!("{}: {e}", at("issuer")));
            None
        }
    };
    let client_id = raw.client_id.filter(|id| !id.is_empty());
    if client_id.is_none() {
        problems.push(format!("{} is required", at("client_id")));
    }
    let client_auth_method = match raw
        .client_auth_method
        .as_deref()
        .unwrap_or("client_secret_basic")
    {
        "client_secret_basic" => Some(ClientAuthMethod::ClientSecretBasic),
        "client_secret_post" => Some(ClientAuthMethod::ClientSecretPost),
        "private_key_jwt" => Some(ClientAuthMethod::PrivateKeyJwt),
        other => {
            problems.push(format!(
                "{}: `{other}` is not one of client_secret_basic, client_secret_post, \
                 private_key_jwt",
                at("client_auth_method")
            ));
            None
        }
    };
    // An empty secret (e.g. an empty environment variable) counts as unset.
    let secret_given = raw
        .client_secret
        .filter(|secret| !secret.expose_secret().is_empty());
    let (client_secret, client_key) = if client_auth_method == Some(ClientAuthMethod::PrivateKeyJwt)
    {
        if secret_given.is_some() || raw.client_secret_file.is_some() {
            problems.push(format!(
                "{} is set, but client_auth_method = \"private_key_jwt\" authenticates with a \
                 key and no secret: remove the secret",
                if raw.client_secret_file.is_some() {
                    at("client_secret_file")
                } else {
                    at("client_secret")
                }
            ));
        }
        let kid = raw.client_key_id.filter(|kid| !kid.is_empty());
        if kid.is_none() {
            problems.push(format!(
                "{} is required with client_auth_method = \"private_key_jwt\" (the `kid` of \
                 the key registered at the provider)",
                at("client_key_id")
            ));
        }
        let key = match raw.client_key_file {
            None => {
                problems.push(format!(
                    "{} is required with client_auth_method = \"private_key_jwt\" (a PEM \
                     private key: RSA, or EC P-256 as PKCS#8)",
                    at("client_key_file")
                ));
                None
            }
            Some(path) => {
                match crate::client_key::ClientKey::load(&path, kid.as_deref().unwrap_or_default())
                {
                    Ok(key) => Some(key),
                    Err(e) => {
                        problems.push(format!("{} (private_key_jwt): {e}", at("client_key_file")));
                        None
                    }
                }
            }
        };
        (Some(SecretString::from(String::new())), key)
    } else {
        for (value, key) in [
            (raw.client_key_file.is_some(), "client_key_file"),
            (raw.client_key_id.is_some(), "client_key_id"),
        ] {
            if value {
                problems.push(format!(
                    "{} is only used with client_auth_method = \"private_key_jwt\"",
                    at(key)
                ));
            }
        }
        let secret = match (secret_given, raw.client_secret_file) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{} and {} are both set: choose one",
                    at("client_secret"),
                    at("client_secret_file")
                ));
                None
            }
            (Some(secret), None) => Some(secret),
            (None, Some(path)) => read_secret_file(&path, &at("client_secret_file"), problems),
            (None, None) => {
                problems.push(format!(
                    "{} is required: set {ENV_PREFIX}PROVIDERS__{}__CLIENT_SECRET or {}",
                    at("client_secret"),
                    name.to_uppercase(),
                    at("client_secret_file")
                ));
                None
            }
        };
        (secret, None)
    };
    let pushed_authorization = match raw.pushed_authorization.as_deref().unwrap_or("auto") {
        "auto" => PushedAuthorization::Auto,
        "always" => PushedAuthorization::Always,
        "never" => PushedAuthorization::Never,
        other => {
            problems.push(format!(
                "{}: `{other}` is not one of auto, always, never",
                at("pushed_authorization")
            ));
            PushedAuthorization::Auto
        }
    };
    let scopes = raw.scopes.unwrap_or_else(|| match preset {
        Some(preset) => preset
            .default_scopes
            .iter()
            .map(|s| s.to_string())
            .collect(),
        None => vec!["openid".into(), "profile".into(), "email".into()],
    });
    if let Some(preset) = preset {
        for (scope, instead) in preset.refused_scopes {
            if scopes.iter().any(|s| s == scope) {
                problems.push(format!(
                    "{}: `{scope}` does not work with preset = \"{}\": {instead}",
                    at("scopes"),
                    preset.name
                ));
            }
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        problems.push(format!("{} must include `openid`", at("scopes")));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        problems.push(format!("{}: `{bad}` is not a single scope", at("scopes")));
    }
    const RESERVED: &[&str] = &[
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ];
    for key in raw.extra_authorize_params.keys() {
        if RESERVED.contains(&key.as_str()) {
            problems.push(format!(
                "{}: `{key}` is set by gatehouse itself",
                at("extra_authorize_params")
            ));
        }
    }

    let mut extra_authorize_params = raw.extra_authorize_params;
    if let Some(preset) = preset {
        for (key, value) in preset.authorize_params {
            extra_authorize_params
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    let issuer_template = match (preset, issuer.as_deref()) {
        (Some(preset), Some(issuer)) if preset.is_multi_tenant(issuer) => {
            super::presets::issuer_template(issuer)
        }
        _ => None,
    };
    let allowed_tenants = raw.allowed_tenants.unwrap_or_default();
    if !allowed_tenants.is_empty() {
        if !preset.is_some_and(|p| p.tenant_issuer_template) {
            problems.push(format!(
                "{} is only used with preset = \"entra\"",
                at("allowed_tenants")
            ));
        } else if issuer.is_some() && issuer_template.is_none() {
            problems.push(format!(
                "{} needs a multi-tenant issuer (…/organizations/v2.0 or …/common/v2.0); \
                 {} names a single tenant already",
                at("allowed_tenants"),
                at("issuer")
            ));
        }
        if let Some(bad) = allowed_tenants
            .iter()
            .find(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            problems.push(format!(
                "{}: `{bad}` is not a tenant id",
                at("allowed_tenants")
            ));
        }
    }

    let allowed_acr_values = raw.allowed_acr_values.unwrap_or_default();
    if let Some(bad) = allowed_acr_values
        .iter()
        .find(|v| !super::routes::is_auth_value(v))
    {
        problems.push(format!(
            "{}: `{bad}` is not an acr value gatehouse can send (visible ASCII, no spaces or quotes)",
            at("allowed_acr_values")
        ));
    }

    let redirect_uri = public_url.and_then(|base| base.join("auth/callback").ok());
    let post_logout_redirect = public_url.and_then(|base| {
        let target = raw.post_logout_redirect.as_deref().unwrap_or("/");
        let joined = if target.starts_with('/') && !target.starts_with("//") {
            base.join(&target[1..]).ok()
        } else {
            Url::parse(target)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
        };
        if joined.is_none() {
            problems.push(format!(
                "{}: `{target}` is neither a local path nor an absolute http(s) URL",
                at("post_logout_redirect")
            ));
        }
        joined
    });

    let revocation_endpoint = endpoint_url(
        &at("revocation_endpoint"),
        raw.revocation_endpoint.as_deref(),
        problems,
    );
    let end_session_endpoint = endpoint_url(
        &at("end_session_endpoint"),
        raw.end_session_endpoint.as_deref(),
        problems,
    );

    if problems.len() > start {
        return None;
    }
    Some(ProviderSettings {
        name: name.to_owned(),
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        client_auth_method: client_auth_method?,
        client_key,
        scopes,
        extra_authorize_params,
        redirect_uri: redirect_uri?,
        post_logout_redirect: post_logout_redirect?,
        http_timeout: Duration::from_secs(raw.http_timeout_secs.unwrap_or(10)),
        clock_skew: Duration::from_secs(raw.clock_skew_secs.unwrap_or(60)),
        end_session_id_token_hint: raw.end_session_id_token_hint.unwrap_or(true),
        pushed_authorization,
        preset,
        issuer_template,
        allowed_tenants,
        allowed_acr_values,
        revocation_endpoint,
        end_session_endpoint,
        resources: Vec::new(),
        resource_scopes: Vec::new(),
        dpop: raw.dpop.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::super::load;

    fn main_with(extra: &str, env: &[(&str, &str)]) -> super::ProviderSettings {
        let toml = format!(
            "[server]\npublic_url = \"https://app.example.com\"\n[providers.main]\n\
             issuer = \"https://id.example.com\"\nclient_id = \"spa\"\n{extra}\n"
        );
        let env = env.iter().map(|(name, value)| {
            (
                format!("GATEHOUSE_PROVIDERS__MAIN__{name}"),
                value.to_string(),
            )
        });
        load(Some(&toml), env).expect("valid").providers["main"].clone()
    }

    #[test]
    fn the_same_client_means_the_same_credentials_too() {
        let secret = |value| main_with("", &[("CLIENT_SECRET", value)]);
        assert!(secret("s1").same_client_as(&secret("s1")));
        // Debug cannot tell these apart (it redacts the secret); the comparison does.
        assert_eq!(format!("{:?}", secret("s1")), format!("{:?}", secret("s2")));
        assert!(!secret("s1").same_client_as(&secret("s2")));
        assert!(!secret("s1").same_client_as(&secret("s1-longer")));
        assert!(!secret("s1").same_client_as(&main_with(
            "scopes = [\"openid\"]",
            &[("CLIENT_SECRET", "s1")]
        )));

        // private_key_jwt: a new key in the file under the same key id is another client.
        let dir = std::env::temp_dir().join(format!("gatehouse-same-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key_file = dir.join("client.pem");
        let keyed = || {
            main_with(
                "client_auth_method = \"private_key_jwt\"\nclient_key_id = \"k1\"",
                &[("CLIENT_KEY_FILE", key_file.to_str().expect("utf-8"))],
            )
        };
        let new_key = || rcgen::KeyPair::generate().expect("key").serialize_pem();
        std::fs::write(&key_file, new_key()).expect("key");
        let (first, again) = (keyed(), keyed());
        std::fs::write(&key_file, new_key()).expect("key");
        let rotated = keyed();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(first.same_client_as(&again), "the same key read twice");
        assert_eq!(format!("{first:?}"), format!("{rotated:?}"));
        assert!(!first.same_client_as(&rotated));
        assert!(!first.same_client_as(&secret("s1")));
    }

    fn with(extra: &str) -> Result<super::ProviderSettings, Vec<String>> {
        let toml = format!(
            "[server]\npublic_url = \"https://app.example.com\"\n[providers.main]\n\
             issuer = \"https://id.example.com\"\nclient_id = \"spa\"\n{extra}\n"
        );
        let env = vec![(
            "GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET".to_owned(),
            "s".to_owned(),
        )];
        load(Some(&toml), env)
            .map(|settings| settings.providers["main"].clone())
            .map_err(|errors| errors.0)
    }

    #[test]
    fn endpoints_set_in_the_config_are_checked_like_the_issuer_and_all_reported() {
        let provider = with("").expect("valid");
        assert!(provider.revocation_endpoint.is_none() && provider.end_session_endpoint.is_none());

        let provider = with(
            "revocation_endpoint = \"https://id.example.com/o/revoke_token/\"\n\
             end_session_endpoint = \"http://127.0.0.1:9000/logout\"",
        )
        .expect("https, and http on loopback");
        assert_eq!(
            provider.revocation_endpoint.map(String::from).as_deref(),
            Some("https://id.example.com/o/revoke_token/")
        );
        assert_eq!(
            provider.end_session_endpoint.map(String::from).as_deref(),
            Some("http://127.0.0.1:9000/logout")
        );

        let problems = with(
            "revocation_endpoint = \"http://id.example.com/revoke\"\n\
             end_session_endpoint = \"/logout\"",
        )
        .expect_err("plain http off loopback, and a relative URL");
        assert!(
            problems.iter().any(|p| p.starts_with(
                "providers.main.revocation_endpoint must be an https URL (plain http only on loopback)"
            )),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with(
                "providers.main.end_session_endpoint: `/logout` is not an absolute URL"
            )),
            "{problems:?}"
        );
        let problems = with("revocation_endpoint = \"https://u:p@id.example.com/revoke#x\"")
            .expect_err("user info and fragment");
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
