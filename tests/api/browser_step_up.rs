//! The demo SPA's step-up in headless Chromium: a call that needs the second factor shows
//! a button; following it through the provider's password and one-time-code forms brings
//! the browser back to the page, where the call now passes.

use crate::browser::{console_problems, log_in_on_the_demo_page};
use crate::helpers::echo::spawn_echo;
use crate::helpers::processes::repo_root;
use crate::helpers::webdriver::Chrome;
use crate::helpers::{spawn_app_with, AppOptions, Frontend, Route, TestApp};

const MFA_ACR: &str = "urn:gatehouse:test:mfa";

#[tokio::test]
async fn the_demo_offers_a_stronger_sign_in_and_the_call_then_passes() {
    let echo = spawn_echo().await;
    let app = spawn_app_with(AppOptions {
        frontend: Some(Frontend::dir(repo_root().join("static"))),
        routes: vec![
            Route::new("/api/payments", &format!("{}/payments", echo.base)).require_acr(&[MFA_ACR]),
        ],
        env: vec![(
            "GATEHOUSE_PROVIDERS__MAIN__ALLOWED_ACR_VALUES".to_owned(),
            format!("[\"{MFA_ACR}\"]"),
        )],
        ..AppOptions::default()
    })
    .await;
    let chrome = Chrome::start().await;
    let outcome = chrome
        .run_scenario("browser-step-up", scenario(&chrome, &app, &echo))
        .await;
    chrome.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(chrome: &Chrome, app: &TestApp, echo: &crate::helpers::echo::EchoUpstream) {
    log_in_on_the_demo_page(chrome, app, "fay").await;
    chrome.click("#call-payments").await;
    assert!(chrome
        .wait_for_visible("step-up")
        .await
        .contains("This call needs a stronger sign-in"));
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());

    chrome.click("#step-up-login").await;
    sign_in_with_the_second_factor(chrome, app, "fay").await;
    chrome.wait_for_visible("user").await;
    chrome.click("#call-payments").await;
    chrome
        .wait_for(
            "the API's answer",
            "return document.getElementById('payments-result').innerText.includes('\"path\"') || null;",
        )
        .await;
    assert_eq!(echo.seen(), vec!["/payments"]);
    let problems = console_problems(chrome, app).await;
    assert!(
        problems.is_empty(),
        "console problems:\n{}",
        problems.join("\n")
    );
}

/// The provider's pages after a step-up: the password form, the one-time-code form (the
/// test provider's code), consent when asked; until the browser is back at gatehouse.
async fn sign_in_with_the_second_factor(chrome: &Chrome, app: &TestApp, user: &str) {
    let mut acted_on = (String::new(), "");
    let mut code_given = false;
    for _ in 0..300 {
        let url = chrome.url().await;
        if url.starts_with(&app.base) {
            assert!(code_given, "back at gatehouse without the second factor");
            return;
        }
        let page = chrome
            .eval(
                "if (document.readyState !== 'complete') return null; \
                 if (document.querySelector('input[name=otp]')) return 'otp'; \
                 if (document.querySelector('input[name=login]')) return 'login'; \
                 if (document.querySelector('input[name=prompt][value=consent]')) return 'consent'; \
                 return null;",
                vec![],
            )
            .await;
        let page = page.as_str().unwrap_or_default();
        if url.starts_with(&app.issuer) && !page.is_empty() && acted_on != (url.clone(), page) {
            let page: &'static str = match page {
                "login" => {
                    chrome.type_into("input[name=login]", user).await;
                    chrome
                        .type_into("input[name=password]", "any password")
                        .await;
                    "login"
                }
                "otp" => {
                    chrome.type_into("input[name=otp]", "123456").await;
                    code_given = true;
                    "otp"
                }
                _ => "consent",
            };
            chrome.click("button[type=submit]").await;
            acted_on = (url, page);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "the step-up did not come back to gatehouse (at {})",
        chrome.url().await
    );
}
