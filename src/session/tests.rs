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
