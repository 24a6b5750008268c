//! The route table: longest prefix wins, matched on whole path segments.

use crate::config::RouteSettings;

pub struct RouteTable {
    /// Longest prefix first.
    routes: Vec<RouteSettings>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<RouteSettings>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Self { routes }
    }

    /// The route for a path and the rest of the path after its prefix (`""` or `/…`).
    pub fn find<'a, 'p>(&'a self, path: &'p str) -> Option<(&'a RouteSettings, &'p str)> {
        self.routes.iter().find_map(|route| {
            let rest = path.strip_prefix(route.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((route, rest))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RouteSettings> {
        self.routes.iter()
    }
}

/// The upstream URL path: the route's base path with the rest appended.
pub fn upstream_path(base: &url::Url, rest: &str) -> String {
    let base_path = base.path().trim_end_matches('/');
    let joined = format!("{base_path}{rest}");
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenPolicy;
    use std::time::Duration;

    fn route(prefix: &str, upstream: &str) -> RouteSettings {
        RouteSettings {
            prefix: prefix.into(),
            upstream: url::Url::parse(upstream).expect("url"),
            token: TokenPolicy::User,
            methods: vec![],
            required_scopes: vec![],
            required_claims: Default::default(),
            timeout: Duration::from_secs(1),
            max_body_bytes: 1,
            provider: "main".into(),
            client_scopes: vec![],
            pass_set_cookie: false,
            send_user_id_header: false,
            rate_limit: crate::config::RouteRateLimit::Default,
            tls: None,
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let table = RouteTable::new(vec![
            route("/api", "http://a/"),
            route("/api/orders", "http://b/v1/orders"),
        ]);
        let (r, rest) = table.find("/api/orders/7").expect("match");
        assert_eq!((r.prefix.as_str(), rest), ("/api/orders", "/7"));
        let (r, rest) = table.find("/api/orders").expect("match");
        assert_eq!((r.prefix.as_str(), rest), ("/api/orders", ""));
        let (r, rest) = table.find("/api/ordersX").expect("falls back to /api");
        assert_eq!((r.prefix.as_str(), rest), ("/api", "/ordersX"));
        assert!(table.find("/apix").is_none());
        assert!(table.find("/").is_none());
        assert_eq!(upstream_path(&r.upstream, "/ordersX"), "/ordersX");
        assert_eq!(
            upstream_path(&url::Url::parse("http://b/v1/orders").expect("url"), ""),
            "/v1/orders"
        );
        assert_eq!(
            upstream_path(&url::Url::parse("http://b/v1/orders/").expect("url"), "/7"),
            "/v1/orders/7"
        );
        assert_eq!(
            upstream_path(&url::Url::parse("http://b").expect("url"), ""),
            "/"
        );
    }
}
