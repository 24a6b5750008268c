//! `preset = "…"` in `[providers.<name>]`: what each well-known provider needs, as data.
//!
//! A preset fills in defaults (scopes, authorization parameters) and refuses settings the
//! provider cannot work with. The flows never ask which preset is in use; they read the
//! settings a preset produced, plus the one capability that has no other setting: an
//! issuer template with a `{tenantid}` placeholder (Entra ID multi-tenant). docs/providers.md
//! says where each entry comes from.

/// One provider's defaults and refusals.
#[derive(Debug, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    /// The scopes used when `scopes` is not configured.
    pub default_scopes: &'static [&'static str],
    /// Authorization request parameters added unless `extra_authorize_params` sets the key.
    pub authorize_params: &'static [(&'static str, &'static str)],
    /// Scopes the provider does not understand, and what to do instead.
    pub refused_scopes: &'static [(&'static str, &'static str)],
    /// The discovery document of a multi-tenant issuer names a template with
    /// `{tenantid}`; ID tokens carry the concrete issuer and a `tid` claim.
    pub tenant_issuer_template: bool,
    /// The first path segments of an issuer that serves many tenants (the template case).
    pub multi_tenant_segments: &'static [&'static str],
}

pub const PLACEHOLDER: &str = "{tenantid}";

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "keycloak",
        // Keycloak sends a refresh token without `offline_access`; that scope asks for an
        // *offline* token instead (not bound to the SSO session), which a session server
        // does not want by default.
        default_scopes: &["openid", "profile", "email"],
        authorize_params: &[],
        refused_scopes: &[],
        tenant_issuer_template: false,
        multi_tenant_segments: &[],
    },
    Preset {
        name: "entra",
        default_scopes: &["openid", "profile", "email", "offline_access"],
        authorize_params: &[],
        refused_scopes: &[],
        tenant_issuer_template: true,
        multi_tenant_segments: &["common", "organizations"],
    },
    Preset {
        name: "auth0",
        default_scopes: &["openid", "profile", "email", "offline_access"],
        authorize_params: &[],
        refused_scopes: &[],
        tenant_issuer_template: false,
        multi_tenant_segments: &[],
    },
    Preset {
        name: "google",
        default_scopes: &["openid", "profile", "email"],
        authorize_params: &[("access_type", "offline"), ("prompt", "consent")],
        refused_scopes: &[(
            "offline_access",
            "Google issues refresh tokens for access_type=offline (which the preset sends), \
             not for this scope",
        )],
        tenant_issuer_template: false,
        multi_tenant_segments: &[],
    },
    Preset {
        name: "okta",
        default_scopes: &["openid", "profile", "email", "offline_access"],
        authorize_params: &[],
        refused_scopes: &[],
        tenant_issuer_template: false,
        multi_tenant_segments: &[],
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

pub fn names() -> String {
    PRESETS
        .iter()
        .map(|preset| preset.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Preset {
    /// Whether `issuer` serves many tenants (its first path segment is one of the
    /// multi-tenant names), so that its discovery issuer is a template.
    pub fn is_multi_tenant(&self, issuer: &str) -> bool {
        self.tenant_issuer_template
            && url::Url::parse(issuer)
                .ok()
                .and_then(|url| {
                    url.path_segments()
                        .and_then(|mut segments| segments.next().map(str::to_owned))
                })
                .is_some_and(|first| self.multi_tenant_segments.contains(&first.as_str()))
    }
}

/// The template a multi-tenant `issuer` must announce in discovery: its first path segment
/// replaced by `{tenantid}` (`…/organizations/v2.0` → `…/{tenantid}/v2.0`).
pub fn issuer_template(issuer: &str) -> Option<String> {
    let scheme_end = issuer.find("://")? + 3;
    let path_start = scheme_end + issuer[scheme_end..].find('/')?;
    let rest = &issuer[path_start + 1..];
    let segment_end = rest.find('/').unwrap_or(rest.len());
    Some(format!(
        "{}/{PLACEHOLDER}{}",
        &issuer[..path_start],
        &rest[segment_end..]
    ))
}

/// Checks a concrete issuer against the template for `tenant`, and the tenant against the
/// allowed ones (none listed: any tenant).
pub fn check_tenant_issuer(
    template: &str,
    iss: &str,
    tenant: Option<&str>,
    allowed: &[String],
) -> Result<(), String> {
    let tenant = tenant
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .ok_or_else(|| "no usable tid claim for the tenant-specific issuer".to_owned())?;
    if template.replace(PLACEHOLDER, tenant) != iss {
        return Err(format!(
            "iss `{iss}` is not the issuer of tenant `{tenant}` (template `{template}`)"
        ));
    }
    if !allowed.is_empty() && !allowed.iter().any(|a| a == tenant) {
        return Err(format!("tenant `{tenant}` is not in allowed_tenants"));
    }
    Ok(())
}

/// The tenant a concrete issuer names under a template (for an authorization response's
/// `iss`, which comes without a `tid`).
pub fn tenant_of(template: &str, iss: &str) -> Option<String> {
    let (before, after) = template.split_once(PLACEHOLDER)?;
    let tenant = iss.strip_prefix(before)?.strip_suffix(after)?;
    (!tenant.is_empty() && !tenant.contains('/')).then(|| tenant.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_can_be_found_by_name() {
        for preset in PRESETS {
            assert_eq!(find(preset.name), Some(preset));
            assert!(preset.default_scopes.contains(&"openid"));
        }
        assert_eq!(find("azure"), None);
    }

    #[test]
    fn multi_tenant_issuers_have_a_template() {
        let entra = find("entra").unwrap();
        let multi = "https://login.microsoftonline.com/organizations/v2.0";
        assert!(entra.is_multi_tenant(multi));
        assert!(entra.is_multi_tenant("https://login.microsoftonline.com/common/v2.0"));
        assert!(!entra.is_multi_tenant(
            "https://login.microsoftonline.com/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/v2.0"
        ));
        assert!(!find("okta").unwrap().is_multi_tenant(multi));
        assert_eq!(
            issuer_template(multi).as_deref(),
            Some("https://login.microsoftonline.com/{tenantid}/v2.0")
        );
    }

    #[test]
    fn a_tenant_issuer_must_match_its_tid_and_the_allowed_tenants() {
        let template = "https://login.example/{tenantid}/v2.0";
        let iss = "https://login.example/t1/v2.0";
        assert!(check_tenant_issuer(template, iss, Some("t1"), &[]).is_ok());
        assert!(check_tenant_issuer(template, iss, Some("t1"), &["t1".into()]).is_ok());
        assert!(check_tenant_issuer(template, iss, Some("t1"), &["t2".into()]).is_err());
        assert!(check_tenant_issuer(template, iss, Some("t2"), &[]).is_err());
        assert!(check_tenant_issuer(template, iss, None, &[]).is_err());
        assert!(check_tenant_issuer(template, iss, Some("t1/x"), &[]).is_err());
        assert_eq!(tenant_of(template, iss).as_deref(), Some("t1"));
        assert_eq!(tenant_of(template, "https://login.example/a/b/v2.0"), None);
        assert_eq!(tenant_of(template, "https://other.example/t1/v2.0"), None);
    }
}
