//! RP-initiated logout at the test provider, as the user goes through it: oidc-provider
//! shows a confirmation form, which the user submits.

/// Opens the provider's end-session page at `end_session_url` (with the provider's
/// cookies) and confirms it; returns where the provider sends the browser afterwards.
pub async fn confirm_end_session(
    provider_http: &reqwest::Client,
    issuer: &str,
    end_session_url: &str,
) -> String {
    let page = provider_http
        .get(end_session_url)
        .send()
        .await
        .expect("end session")
        .text()
        .await
        .expect("page");
    let xsrf = page
        .split("name=\"xsrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no confirmation form in {page}"))
        .to_owned();
    let confirm = provider_http
        .post(format!("{issuer}/session/end/confirm"))
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .expect("confirm");
    assert!(
        confirm.status().is_redirection(),
        "logout confirm: {}",
        confirm.status()
    );
    confirm.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}
