//! Logout tokens as a provider sends them (back-channel logout): signed by the test
//! provider's key, posted to gatehouse.

use serde_json::{json, Value};

use super::{Resp, TestApp};

pub async fn sign(issuer: &str, header: Value, payload: Value) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{issuer}/__test/sign"))
        .json(&json!({"header": header, "payload": payload}))
        .send()
        .await
        .expect("sign")
        .json()
        .await
        .expect("json");
    answer["jwt"].as_str().expect("jwt").to_owned()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

/// A well-formed logout token's claims for one provider session.
pub fn logout_claims(app: &TestApp, sid: &str, jti: &str, iat: u64) -> Value {
    json!({
        "iss": app.issuer, "aud": app.client_id, "iat": iat, "jti": jti, "sid": sid,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    })
}

pub async fn post_logout_token(app: &TestApp, token: &str) -> Resp {
    let response = app
        .http
        .post(format!("{}/auth/backchannel-logout", app.base))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    Resp {
        status,
        headers,
        body,
    }
}
