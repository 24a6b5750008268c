//! `config::load` for what a route may ask beyond its token: tokens per upstream and
//! policy decisions.

use super::*;

#[test]
fn route_tokens_name_their_resource_or_exchange_and_the_login_asks_for_the_resources() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let good = format!(
        r#"{MINIMAL}
        [[routes]]
        prefix = "/orders"
        upstream = "https://orders.internal"
        resource = "https://orders.example"
        scopes = ["orders:read"]
        [[routes]]
        prefix = "/reports"
        upstream = "https://reports.internal"
        token = "exchange"
        [routes.exchange]
        audience = "https://reports.internal"
        scope = "reports:read"
    "#
    );
    let settings = load(Some(&good), secret.clone()).expect("valid");
    let provider = &settings.providers["main"];
    assert_eq!(
        provider.resources,
        vec!["https://orders.example".to_owned()]
    );
    assert_eq!(provider.resource_scopes, vec!["orders:read".to_owned()]);
    assert!(!provider.dpop, "off by default");
    let exchange = settings.routes[1].exchange.as_ref().expect("exchange");
    assert_eq!(settings.routes[1].token, TokenPolicy::Exchange);
    assert_eq!(exchange.requested_token_type, ACCESS_TOKEN_TYPE);

    let bad = format!(
        r#"{MINIMAL}
        [[routes]]
        prefix = "/a"
        upstream = "https://a.internal"
        token = "client"
        resource = "https://a.example#frag"
        [[routes]]
        prefix = "/b"
        upstream = "https://b.internal"
        scopes = ["b:read"]
        [[routes]]
        prefix = "/c"
        upstream = "https://c.internal"
        token = "exchange"
        [[routes]]
        prefix = "/d"
        upstream = "https://d.internal"
        [routes.exchange]
        audience = ""
    "#
    );
    let problems = load(Some(&bad), secret).expect_err("invalid").to_string();
    for expected in [
        "routes[0].resource: `https://a.example#frag` must be an absolute URI without a fragment",
        "routes[0].resource: a resource token stands in for the user's token",
        "routes[1].scopes applies only with `resource`",
        "routes[2].exchange: token = \"exchange\" needs a [routes.exchange] table",
        "routes[3].exchange applies only with token = \"exchange\"",
        "routes[3].exchange.audience must not be empty",
    ] {
        assert!(
            problems.contains(expected),
            "`{expected}` missing from: {problems}"
        );
    }
}

#[test]
fn policy_routes_need_a_user_token_a_policies_table_and_valid_templates() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let route = |keys: &str| {
        format!("\n[[routes]]\nprefix = \"/api/orders\"\nupstream = \"http://127.0.0.1:9000\"\n{keys}\n")
    };
    let settings = load(
        Some(&format!(
            "{MINIMAL}{}",
            route("path = [\"/{id}\", \"/{id}/refund\"]")
        )),
        secret.clone(),
    )
    .expect("valid");
    let orders = &settings.routes[0];
    assert_eq!(orders.name, "/api/orders", "the prefix is the default name");
    assert_eq!(orders.templates.len(), 2);
    assert!(!orders.policy);
    assert!(settings.policies.is_none());

    let problems = |text: String| load(Some(&text), secret.clone()).expect_err("invalid").0;
    let found = problems(format!(
        "{MINIMAL}{}{}{}",
        route("policy = true\ntoken = \"client\"\npath = \"{id}\""),
        route("name = \"/api/orders\""),
        "[policies]\nfiles = []\nroles_claim = \"\"\n"
    ));
    for expected in [
        "routes[0].policy: a policy route needs token = \"user\"",
        "routes[0].path: `{id}` must start with `/`",
        "routes[1].name: `/api/orders` is used by another route",
        "policies.files: name at least one Cedar policy file",
        "policies.schema is required",
        "policies.roles_claim must not be empty",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected} not in {found:#?}"
        );
    }
    let found = problems(format!("{MINIMAL}{}", route("policy = true")));
    assert!(
        found.iter().any(|p| p.contains("need a [policies] table")),
        "{found:#?}"
    );
}

#[test]
fn a_claim_requirement_on_a_protocol_claim_is_refused_for_it_could_never_hold() {
    let secret = env(&[("GATEHOUSE_PROVIDERS__MAIN__CLIENT_SECRET", "s")]);
    let config = format!(
        r#"{MINIMAL}
        [[routes]]
        prefix = "/refunds"
        upstream = "https://refunds.internal"
        [routes.require.claims]
        acr = "urn:example:mfa"
        department = "sales"
    "#
    );
    let problems = load(Some(&config), secret.clone())
        .expect_err("invalid")
        .to_string();
    assert!(
        problems.contains("routes[0].require.claims: `acr` is a protocol claim"),
        "{problems}"
    );
    assert!(problems.contains("require.acr"), "{problems}");
    assert!(!problems.contains("`department`"), "{problems}");
    let fine = config.replace("acr = \"urn:example:mfa\"\n", "");
    load(Some(&fine), secret).expect("an ordinary claim is fine");
}
