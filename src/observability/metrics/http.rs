//! The public listener's requests: what to call each one, and its measurement.

use super::*;

/// The standard methods by name; any other is `other` (a client may send any token).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------------------
// The public listener's requests
// ---------------------------------------------------------------------------------------

/// What to call a public-listener request: its kind and a bounded route label (`None`: the
/// frontend, named once the status is known).
fn classify(
    path: &str,
    routes: &crate::proxy::routes::RouteTable,
    metrics: &Metrics,
) -> (&'static str, Option<Text>) {
    if let Some(endpoint) = path.strip_prefix("/auth/") {
        let name = match endpoint {
            "login" => "login",
            "callback" => "callback",
            "user" => "user",
            "providers" => "providers",
            "logout" => "logout",
            "logout/continue" => "logout_continue",
            "backchannel-logout" => "backchannel_logout",
            "frontchannel-logout" => "frontchannel_logout",
            _ => "unmatched",
        };
        return (KIND_AUTH, Some(Text::Static(name)));
    }
    match path {
        "/healthz" => return (KIND_HEALTH, Some(Text::Static("healthz"))),
        "/readyz" => return (KIND_HEALTH, Some(Text::Static("readyz"))),
        _ => {}
    }
    if let Ok(Some((route, _))) = routes.find(path) {
        return (KIND_PROXY, Some(metrics.name(&route.prefix)));
    }
    (KIND_FRONTEND, None)
}

/// One public-listener request being measured (only with an admin listener): started when
/// it came in, counted and timed with its final status by the edge middleware
/// (`edge::front`).
pub struct RequestMeasure {
    started: Instant,
    method: &'static str,
    kind: &'static str,
    route: Option<Text>,
}

impl RequestMeasure {
    pub fn begin(
        method: &Method,
        path: &str,
        routes: &crate::proxy::routes::RouteTable,
        metrics: &Metrics,
    ) -> Self {
        let (kind, route) = classify(path, routes, metrics);
        Self {
            started: Instant::now(),
            method: method_label(method),
            kind,
            route,
        }
    }

    pub fn finish(self, metrics: &Metrics, status: u16) {
        // The SPA's files; a path nothing serves is one series however many there are.
        let route = self.route.unwrap_or(Text::Static(if status == 404 {
            "unmatched"
        } else {
            "frontend"
        }));
        metrics.http_request(
            self.kind,
            route,
            self.method,
            status,
            self.started.elapsed(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_beyond_the_standard_ones_are_other() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let brew = Method::from_bytes(b"BREW").expect("a token");
        assert_eq!(method_label(&brew), "other");
    }
}
