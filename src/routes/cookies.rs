//! The two cookies gatehouse sets: the session cookie (SameSite=Strict) and the short-lived
//! login-binding cookie (SameSite=Lax, so it survives the provider's top-level redirect back).

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::HttpRequest;
use secrecy::{ExposeSecret, SecretString};

use crate::state::CookieSettings;

fn base<'c>(name: &str, value: String, settings: &CookieSettings) -> Cookie<'c> {
    let mut cookie = Cookie::new(name.to_owned(), value);
    cookie.set_http_only(true);
    cookie.set_secure(settings.secure);
    cookie.set_path("/");
    cookie
}

pub fn session_cookie<'c>(value: &SecretString, settings: &CookieSettings) -> Cookie<'c> {
    let mut cookie = base(
        &settings.session_name,
        value.expose_secret().to_owned(),
        settings,
    );
    cookie.set_same_site(SameSite::Strict);
    cookie.set_max_age(time::Duration::seconds(
        settings.session_max_age.as_secs() as i64
    ));
    cookie
}

pub fn expired_session_cookie<'c>(settings: &CookieSettings) -> Cookie<'c> {
    let mut cookie = base(&settings.session_name, String::new(), settings);
    cookie.set_same_site(SameSite::Strict);
    cookie.make_removal();
    cookie
}

pub fn login_cookie<'c>(value: &SecretString, settings: &CookieSettings) -> Cookie<'c> {
    let mut cookie = base(
        &settings.login_name,
        value.expose_secret().to_owned(),
        settings,
    );
    cookie.set_same_site(SameSite::Lax);
    cookie.set_max_age(time::Duration::seconds(
        settings.login_max_age.as_secs() as i64
    ));
    cookie
}

pub fn expired_login_cookie<'c>(settings: &CookieSettings) -> Cookie<'c> {
    let mut cookie = base(&settings.login_name, String::new(), settings);
    cookie.set_same_site(SameSite::Lax);
    cookie.make_removal();
    cookie
}

/// The value of a cookie the browser sent; `None` when absent or sent twice (ambiguous).
///
/// Names are compared byte for byte as the browser sent them, never percent-decoded: a
/// browser applies the `__Host-` prefix's rules to the literal name, so `__%48ost-gatehouse`
/// is a cookie any sibling subdomain (or a man in the middle on plain http) could have set,
/// not the session cookie. Such look-alikes are ignored, so they neither stand in for the
/// real cookie nor make it ambiguous. Values are not decoded either: gatehouse's own are
/// base64url and dots. The header is read as bytes and split as RFC 6265 §5.2 does (pairs at
/// `;`, name and value at the first `=`, whitespace around each trimmed); only the value
/// asked for is copied.
pub fn read(req: &HttpRequest, name: &str) -> Option<String> {
    let mut found: Option<&[u8]> = None;
    for header in req.headers().get_all(actix_web::http::header::COOKIE) {
        for pair in header.as_bytes().split(|byte| *byte == b';') {
            let Some(at) = pair.iter().position(|byte| *byte == b'=') else {
                continue; // no name at all
            };
            if pair[..at].trim_ascii() != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return None;
            }
            found = Some(pair[at + 1..].trim_ascii());
        }
    }
    found
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn read_from(headers: &[&[u8]], name: &str) -> Option<String> {
        let mut request = TestRequest::default();
        for value in headers {
            request = request.append_header((
                "cookie",
                actix_web::http::header::HeaderValue::from_bytes(value).expect("value"),
            ));
        }
        read(&request.to_http_request(), name)
    }

    #[test]
    fn reads_one_cookie_by_its_exact_name() {
        let cases: &[(&[&[u8]], Option<&str>)] = &[
            (&[], None),
            (&[b"gh=abc.def"], Some("abc.def")),
            (&[b"a=1; gh=abc.def; b=2"], Some("abc.def")),
            (&[b"a=1", b"gh=x"], Some("x")),
            (&[b";;  ; gh=x ;"], Some("x")),
            (&[b"=v; gh=x"], Some("x")),
            (&[b"gh="], Some("")),
            (&[b"gh=a=b"], Some("a=b")),
            (&[b"gh"], None),
            (&[b"GH=x"], None),
            (&[b"gh2=x; xgh=y"], None),
            // Sent twice: ambiguous, whichever header or pair holds the second one.
            (&[b"gh=one", b"gh=two"], None),
            (&[b"a=1; gh=one; gh=two"], None),
            // Bytes that are not UTF-8 elsewhere in the header do not hide the cookie.
            (&[b"gh=x", b"\xff=1"], Some("x")),
            (&[b"\xffbad", b"gh=x"], Some("x")),
            (&[b"gh=\xff"], None),
            // Values are taken as sent.
            (&[b"gh=enc%2Eoded"], Some("enc%2Eoded")),
            (&[b"gh=%zz"], Some("%zz")),
        ];
        for (headers, expected) in cases {
            assert_eq!(
                read_from(headers, "gh").as_deref(),
                *expected,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn look_alike_names_are_ignored_not_decoded() {
        let name = "__Host-gatehouse";
        for look_alike in [
            "__%48ost-gatehouse",
            "%5F%5FHost-gatehouse",
            "%5f%5fHost-gatehouse",
            "__Host%2Dgatehouse",
            "__Host%2dgatehouse",
            "__host-gatehouse",
            "__HOST-gatehouse",
            "__Host-gatehous%65",
            "%5F_Host-gatehouse",
            "__Host-gatehouse%20",
            "\"__Host-gatehouse\"",
        ] {
            let alone = format!("{look_alike}=attacker.session");
            assert_eq!(read_from(&[alone.as_bytes()], name), None, "{look_alike}");
            // Next to the real cookie, in either order or header: the real one counts.
            let before = format!("{look_alike}=attacker.session; {name}=victim.session");
            let after = format!("{name}=victim.session; {look_alike}=attacker.session");
            for headers in [
                vec![before.as_bytes()],
                vec![after.as_bytes()],
                vec![
                    alone.as_bytes(),
                    b"__Host-gatehouse=victim.session".as_slice(),
                ],
            ] {
                assert_eq!(
                    read_from(&headers, name).as_deref(),
                    Some("victim.session"),
                    "{look_alike}"
                );
            }
        }
    }
}
