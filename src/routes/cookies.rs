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
///
/// Reads the `Cookie` headers as `HttpRequest::cookies` does (a header that is not UTF-8
/// means no cookies, one that does not parse is skipped, names and values percent-decoded)
/// but borrows from the header instead of copying every cookie into a list: only the value
/// asked for is copied.
pub fn read(req: &HttpRequest, name: &str) -> Option<String> {
    let mut found: Option<Cookie<'_>> = None;
    for header in req.headers().get_all(actix_web::http::header::COOKIE) {
        let text = std::str::from_utf8(header.as_bytes()).ok()?;
        for cookie_str in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let Ok(cookie) = Cookie::parse_encoded(cookie_str) else {
                continue;
            };
            if cookie.name() == name {
                if found.is_some() {
                    return None;
                }
                found = Some(cookie);
            }
        }
    }
    found.map(|cookie| cookie.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    /// The reader as it was: through actix's parsed and copied list of cookies.
    fn former_read(req: &HttpRequest, name: &str) -> Option<String> {
        let cookies = req.cookies().ok()?;
        let mut matching = cookies.iter().filter(|c| c.name() == name);
        let first = matching.next()?;
        if matching.next().is_some() {
            return None;
        }
        Some(first.value().to_owned())
    }

    #[test]
    fn reads_as_the_former_reader_did() {
        let cases: &[&[&[u8]]] = &[
            &[],
            &[b"gh=abc.def"],
            &[b"a=1; gh=abc.def; b=2"],
            &[b"gh=one", b"gh=two"],
            &[b"a=1; gh=one; gh=two"],
            &[b"a=1", b"gh=x"],
            &[b"gh=x", b"\xff=1"],
            &[b"\xffbad", b"gh=x"],
            &[b"g%68=enc%2Eoded"],
            &[b"gh"],
            &[b";;  ; gh=x ;"],
            &[b"=v; gh=x"],
            &[b"gh=\"quoted\""],
            &[b"gh="],
            &[b"GH=x"],
            &[b"gh=a=b"],
            &[b"gh=%zz"],
        ];
        for headers in cases {
            let mut request = TestRequest::default();
            for value in *headers {
                request = request.append_header((
                    "cookie",
                    actix_web::http::header::HeaderValue::from_bytes(value).expect("value"),
                ));
            }
            let req = request.to_http_request();
            let new = read(&req, "gh");
            assert_eq!(new, former_read(&req, "gh"), "{headers:?}");
        }
    }
}
