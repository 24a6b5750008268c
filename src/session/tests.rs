//! The session model's own rules.

use super::*;

#[test]
fn claims_keep_the_stored_json_shape() {
    let mut map = serde_json::Map::new();
    map.insert("name".into(), serde_json::json!("Alice"));
    map.insert("roles".into(), serde_json::json!(["a", "b"]));
    let claims = Claims::from_map(&map);
    assert_eq!(claims.to_map(), map);
    // Written as the object the map was written as, and a map reads it back.
    let text = serde_json::to_string(&claims).expect("serialize");
    assert_eq!(text, serde_json::to_string(&map).expect("serialize"));
    let back: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).expect("a map reads it");
    assert_eq!(back, map);
    // What an older gatehouse stored (a map) loads as claims.
    let loaded: Claims =
        serde_json::from_str(" {\"name\": \"Alice\", \"roles\": [\"a\",\"b\"]}").expect("object");
    assert_eq!(loaded.to_map(), map);
    assert_eq!(format!("{loaded:?}"), r#"["name", "roles"]"#);
    for not_an_object in ["[]", "null", "\"x\"", "1"] {
        assert!(
            serde_json::from_str::<Claims>(not_an_object).is_err(),
            "{not_an_object}"
        );
    }
    assert_eq!(
        serde_json::to_value(&claims).expect("value"),
        serde_json::Value::Object(map)
    );
}

#[test]
fn a_token_bound_to_no_key_is_written_without_saying_so_and_reads_as_unbound() {
    let tokens = |dpop_bound| TokenSet {
        access_token: SecretString::from("at"),
        access_token_expires_at: None,
        access_token_lifetime_ms: None,
        refresh_token: None,
        refresh_token_expires_at: None,
        id_token: SecretString::from("it"),
        scope: None,
        dpop_bound,
    };
    let unbound = serde_json::to_string(&tokens(false)).expect("serialize");
    assert!(!unbound.contains("dpop_bound"), "{unbound}");
    assert!(
        !serde_json::from_str::<TokenSet>(&unbound)
            .expect("reads")
            .dpop_bound
    );
    // As sessions written before were: `"dpop_bound":false` spelled out.
    let spelled = unbound.replace('}', ",\"dpop_bound\":false}");
    assert!(
        !serde_json::from_str::<TokenSet>(&spelled)
            .expect("reads")
            .dpop_bound
    );
    let bound = serde_json::to_string(&tokens(true)).expect("serialize");
    assert!(
        serde_json::from_str::<TokenSet>(&bound)
            .expect("reads")
            .dpop_bound
    );
    assert_eq!(tokens(true).token_bytes(), 4);

    let mut routes = RouteTokens::default();
    let route = |dpop_bound| RouteToken {
        access_token: SecretString::from("route"),
        expires_at: None,
        lifetime_ms: None,
        dpop_bound,
    };
    routes.insert(RouteTokenFor::Resource("https://api.example"), route(false));
    let written = serde_json::to_string(&routes).expect("serialize");
    assert!(!written.contains("dpop_bound"), "{written}");
    routes.insert(RouteTokenFor::Exchange("/x"), route(true));
    let written = serde_json::to_string(&routes).expect("serialize");
    let read: RouteTokens = serde_json::from_str(&written).expect("reads");
    let exchange = read.get(RouteTokenFor::Exchange("/x")).expect("exchange");
    assert!(exchange.dpop_bound);
    assert_eq!(read.token_bytes(), 10);
}
