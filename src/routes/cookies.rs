//! The two cookies gatehouse sets: the session cookie (SameSite=Strict) and the short-lived
//! login-binding cookie (SameSite=Lax, so it survives the provider's top-level redirect back).

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::HttpRequest;
use secrecy::{ExposeSecret, SecretString};

use crate::config::SessionSettings;

fn base<'c>(name: &str, value: String, settings: &SessionSettings) -> Cookie<'c> {
    let mut cookie = Cookie::new(name.to_owned(), value);
    cookie.set_http_only(true);
    cookie.set_secure(settings.secure_cookies);
    cookie.set_path("/");
    cookie
}

pub fn session_cookie<'c>(value: &SecretString, settings: &SessionSettings) -> Cookie<'c> {
    let mut cookie = base(
        &settings.cookie_name,
        value.expose_secret().to_owned(),
        settings,
    );
    cookie.set_same_site(SameSite::Strict);
    cookie.set_max_age(time::Duration::seconds(
        settings.absolute_timeout.as_secs() as i64
    ));
    cookie
}

pub fn expired_session_cookie<'c>(settings: &SessionSettings) -> Cookie<'c> {
    let mut cookie = base(&settings.cookie_name, String::new(), settings);
    cookie.set_same_site(SameSite::Strict);
    cookie.make_removal();
    cookie
}

pub fn login_cookie<'c>(value: &SecretString, settings: &SessionSettings) -> Cookie<'c> {
    let mut cookie = base(
        &settings.login_cookie_name,
        value.expose_secret().to_owned(),
        settings,
    );
    cookie.set_same_site(SameSite::Lax);
    cookie.set_max_age(time::Duration::seconds(
        settings.login_state_ttl.as_secs() as i64
    ));
    cookie
}

pub fn expired_login_cookie<'c>(settings: &SessionSettings) -> Cookie<'c> {
    let mut cookie = base(&settings.login_cookie_name, String::new(), settings);
    cookie.set_same_site(SameSite::Lax);
    cookie.make_removal();
    cookie
}

/// The value of a cookie the browser sent; `None` when absent or sent twice (ambiguous).
pub fn read(req: &HttpRequest, name: &str) -> Option<String> {
    let cookies = req.cookies().ok()?;
    let mut matching = cookies.iter().filter(|c| c.name() == name);
    let first = matching.next()?;
    if matching.next().is_some() {
        return None;
    }
    Some(first.value().to_owned())
}
